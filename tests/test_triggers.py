"""Every broadcast table keeps its six triggers (live.changelog) after all migrations: a
migration that rebuilds a table on SQLite drops them silently, and the poller then misses
changes made outside Django and ``status_update`` stops counting that table."""

from __future__ import annotations

import pytest
from django.db import connection

from live import changelog

pytestmark = pytest.mark.django_db


def triggers() -> set[tuple[str, str]]:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")
        else:
            cursor.execute(
                "SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS"
                " WHERE TRIGGER_SCHEMA = DATABASE()"
            )
        return {(name, table) for name, table in cursor.fetchall()}


@pytest.mark.parametrize("table", sorted(changelog.TABLES))
def test_each_broadcast_table_has_its_change_log_and_count_triggers(table: str) -> None:
    expected = {(f"live_{kind}_{table}_{event}", table) for kind in ("cl", "cnt") for event in changelog.EVENTS}
    assert expected <= triggers()


def test_a_raw_insert_into_trunks_is_logged_and_counted() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT total FROM live_rowcount WHERE table_name = 'trunks_trunk'")
        (before,) = cursor.fetchone()
        cursor.execute("SELECT COUNT(*) FROM live_changelog WHERE table_name = 'trunks_trunk'")
        (logged,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO trunks_trunk (name, type, host, port, username, secret, enabled, transport, codecs,"
            " context, priority, prefix, strip_digits, max_channels, notes, created_at, updated_at, version)"
            " VALUES ('raw-trunk', 'peer', '10.0.0.9', 5060, '', 'Raw-secret-12345', 1, 'udp', '[\"ulaw\"]',"
            " 'from-trunk', 1, '', 0, 0, '', '2026-01-01 00:00:00', '2026-01-01 00:00:00', 1)"
        )
        cursor.execute("SELECT total FROM live_rowcount WHERE table_name = 'trunks_trunk'")
        assert cursor.fetchone()[0] == before + 1
        cursor.execute("SELECT COUNT(*) FROM live_changelog WHERE table_name = 'trunks_trunk'")
        assert cursor.fetchone()[0] == logged + 1
