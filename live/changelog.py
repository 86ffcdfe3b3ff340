"""Database triggers that fill ``live_changelog`` and keep ``live_rowcount`` exact, per vendor.

Each broadcast table gets three ``AFTER`` triggers (insert, update, delete) that append the
row's primary key to ``live_changelog`` (``live.models.ChangeLog``), and three that keep its
``live_rowcount`` row (``live.models.RowCount``: total and enabled) in step; the update one
touches the count only when ``enabled`` changed. The counter row is updated inside the
writing transaction: on MariaDB concurrent writers of one table wait for each other's
commit at that row (writes here are short; a bulk write holds it for its duration).

Created by migrations (``live/migrations``) for the tables listed in ``TABLES``; a new
broadcast model adds its table there and a migration calling :func:`create` and
:func:`create_counts`. On SQLite a migration that rebuilds a broadcast table (adding a
column with a default, altering one) drops that table's triggers with it: follow it with a
``live`` migration running :func:`recreate` (``tests/test_triggers.py`` checks that every
table has all six after migrating). SQLite and MySQL/MariaDB are supported (on MariaDB with binary logging
on, creating triggers needs ``SUPER`` or ``log_bin_trust_function_creators=1``).
"""

from __future__ import annotations

from typing import Any

#: The broadcast tables and their primary-key column.
TABLES = {"extensions_extension": "id", "trunks_trunk": "id"}
EVENTS = {"i": ("INSERT", "NEW"), "u": ("UPDATE", "NEW"), "d": ("DELETE", "OLD")}


def trigger_names(table: str) -> list[str]:
    return [f"live_cl_{table}_{suffix}" for suffix in EVENTS]


def create_sql(vendor: str, table: str, pk: str) -> list[str]:
    statements = []
    for suffix, (event, row) in EVENTS.items():
        name = f"live_cl_{table}_{suffix}"
        insert = f"INSERT INTO live_changelog (table_name, row_id) VALUES ('{table}', {row}.{pk})"
        if vendor == "sqlite":
            statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN {insert}; END")
        elif vendor == "mysql":
            statements.append(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {insert}")
        else:
            raise NotImplementedError(f"live_changelog triggers for {vendor!r}: add them to live/changelog.py")
    return statements


def create(apps: Any, schema_editor: Any) -> None:
    for table, pk in TABLES.items():
        for statement in create_sql(schema_editor.connection.vendor, table, pk):
            schema_editor.execute(statement)


def drop(apps: Any, schema_editor: Any) -> None:
    for table in TABLES:
        for name in trigger_names(table):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def count_sql(vendor: str, table: str) -> list[str]:
    """The three counter triggers of ``table`` (its ``enabled`` column counted)."""
    where = f"WHERE table_name = '{table}'"
    if vendor == "sqlite":
        body = {
            "i": f"AFTER INSERT ON {table} FOR EACH ROW BEGIN UPDATE live_rowcount SET total = total + 1, "
            f"enabled = enabled + (CASE WHEN NEW.enabled THEN 1 ELSE 0 END) {where}; END",
            "u": f"AFTER UPDATE OF enabled ON {table} FOR EACH ROW WHEN OLD.enabled IS NOT NEW.enabled BEGIN "
            f"UPDATE live_rowcount SET enabled = enabled + (CASE WHEN NEW.enabled THEN 1 ELSE -1 END) {where}; END",
            "d": f"AFTER DELETE ON {table} FOR EACH ROW BEGIN UPDATE live_rowcount SET total = total - 1, "
            f"enabled = enabled - (CASE WHEN OLD.enabled THEN 1 ELSE 0 END) {where}; END",
        }
    elif vendor == "mysql":
        body = {
            "i": f"AFTER INSERT ON {table} FOR EACH ROW UPDATE live_rowcount SET total = total + 1, "
            f"enabled = enabled + IF(NEW.enabled, 1, 0) {where}",
            "u": f"AFTER UPDATE ON {table} FOR EACH ROW UPDATE live_rowcount SET "
            f"enabled = enabled + IF(NEW.enabled, 1, -1) {where} AND NEW.enabled <> OLD.enabled",
            "d": f"AFTER DELETE ON {table} FOR EACH ROW UPDATE live_rowcount SET total = total - 1, "
            f"enabled = enabled - IF(OLD.enabled, 1, 0) {where}",
        }
    else:
        raise NotImplementedError(f"live_rowcount triggers for {vendor!r}: add them to live/changelog.py")
    return [f"CREATE TRIGGER live_cnt_{table}_{suffix} {sql}" for suffix, sql in body.items()]


def recount_sql(table: str) -> str:
    """Set ``table``'s counts from the table itself, in one statement (no lost increment)."""
    return (
        f"UPDATE live_rowcount SET total = (SELECT COUNT(*) FROM {table}), "
        f"enabled = (SELECT COUNT(*) FROM {table} WHERE enabled) WHERE table_name = '{table}'"
    )


def create_counts(apps: Any, schema_editor: Any) -> None:
    for table in TABLES:
        schema_editor.execute("INSERT INTO live_rowcount (table_name, total, enabled) VALUES (%s, 0, 0)", [table])
        for statement in count_sql(schema_editor.connection.vendor, table):
            schema_editor.execute(statement)
        schema_editor.execute(recount_sql(table))


def drop_counts(apps: Any, schema_editor: Any) -> None:
    for table in TABLES:
        for suffix in EVENTS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS live_cnt_{table}_{suffix}")


def recreate(apps: Any, schema_editor: Any) -> None:
    """Every trigger dropped (where it still exists) and created again, and the counts redone:
    after migrations that rebuilt broadcast tables."""
    drop(apps, schema_editor)
    drop_counts(apps, schema_editor)
    create(apps, schema_editor)
    for table in TABLES:
        for statement in count_sql(schema_editor.connection.vendor, table):
            schema_editor.execute(statement)
        schema_editor.execute(recount_sql(table))
