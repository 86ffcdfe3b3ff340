"""The poller follows the database's change log: raw-SQL inserts, updates (also ones that do
not touch ``updated_at``) and deletes are announced once, and a poll's cost follows the
changes, not the rows: with nothing changed, one query and no per-row read from the bus.

Runs on the test database (SQLite, or MariaDB with ``DATABASE_URL``), whose triggers the
migration created, and on the configured bus.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import live.bus
from extensions.models import Extension
from live import poller
from live.bus import get_bus
from tests.live_helpers import frames_after, position

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_bus(settings: Any) -> Iterator[None]:
    """A bus of this test's own (on Redis: its own key prefix)."""
    import uuid

    settings.REDIS_KEY_PREFIX = f"test-poller-{uuid.uuid4().hex[:8]}:"
    previous = live.bus._bus
    live.bus._bus = None
    yield
    live.bus._bus = previous


def raw(sql: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def insert(number: str) -> int:
    raw(
        "INSERT INTO extensions_extension (extension_number, name, email, secret, enabled, context, transport,"
        " codecs, max_contacts, direct_media, qualify_frequency, caller_id, voicemail_enabled, notes,"
        " created_at, updated_at) VALUES (%s, %s, '', 'Raw-secret-12345', 1, 'from-internal', 'udp', '[\"ulaw\"]',"
        " 1, 0, 60, '', 0, '', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        number,
        f"raw {number}",
    )
    return Extension.objects.get(extension_number=number).pk


def types(seq: int) -> list[tuple[str, Any]]:
    return [
        (f["type"], f["payload"].get("extension_number")) for f in frames_after(seq) if f["type"] != "status_update"
    ]


def test_raw_sql_inserts_updates_and_deletes_are_announced_once() -> None:
    Extension.objects.create(extension_number="3001", name="Existing", secret="Strong-secret-123")
    follower = poller.ChangeFollower()
    follower.poll()  # the first poll reconciles (and primes the bus)
    start = position()

    pk = insert("3002")
    follower.poll()
    assert types(start) == [("extension.created", "3002")]

    mark = position()
    # An update that leaves updated_at alone: the trigger still logs it.
    raw("UPDATE extensions_extension SET name = 'renamed behind Django' WHERE id = %s", pk)
    follower.poll()
    frames = [f for f in frames_after(mark) if f["type"] != "status_update"]
    assert [(f["type"], f["payload"]["name"]) for f in frames] == [("extension.updated", "renamed behind Django")]

    mark = position()
    raw("DELETE FROM extensions_extension WHERE id = %s", pk)
    follower.poll()
    assert types(mark) == [("extension.deleted", "3002")]

    # Nothing new: nothing announced, ever again (and a second poller agrees).
    mark = position()
    follower.poll()
    other = poller.ChangeFollower()
    other.cursor = 0  # it reads the whole log: every entry is already announced
    other.poll()
    assert frames_after(mark) == []


def test_a_change_through_django_is_not_announced_again_by_the_poller() -> None:
    follower = poller.ChangeFollower()
    follower.poll()
    ext = Extension.objects.create(extension_number="3101", name="Through Django", secret="Strong-secret-123")
    ext.name = "Renamed"
    ext.save()
    mark = position()
    follower.poll()
    assert frames_after(mark) == []


def test_an_idle_poll_is_one_query_and_reads_nothing_per_row_from_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    Extension.objects.bulk_create(
        [Extension(extension_number=str(40000 + i), name=f"Bulk {i}", secret="Strong-secret-123") for i in range(500)]
    )
    follower = poller.ChangeFollower()
    follower.poll()
    follower.poll()  # the bulk create's log entries: compared, nothing to announce
    bus = get_bus()
    reads: list[str] = []
    monkeypatch.setattr(type(bus), "state", lambda self: reads.append("state") or {})
    original = type(bus).state_of
    monkeypatch.setattr(
        type(bus), "state_of", lambda self, keys: reads.append(f"{len(keys)} keys") or original(self, keys)
    )
    with CaptureQueriesContext(connection) as queries:
        assert follower.poll() == []
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert reads == []

    # k rows changed: only those k are read, from the database and the bus.
    raw("UPDATE extensions_extension SET name = 'k' WHERE extension_number IN ('40001', '40002', '40003')")
    with CaptureQueriesContext(connection) as queries:
        follower.poll()
    assert reads == ["4 keys"]  # three rows and the "primed" marker
    row_reads = [q["sql"] for q in queries if 'FROM "extensions_extension"' in q["sql"].replace("`", '"')]
    assert len(row_reads) == 1 and " IN (" in row_reads[0], row_reads  # just those rows
    assert not any("COUNT(" in q["sql"] for q in queries)  # the counts are read, not counted


def test_an_emptied_bus_state_is_reprimed_without_announcing_old_rows() -> None:
    Extension.objects.create(extension_number="3201", name="Old", secret="Strong-secret-123")
    follower = poller.ChangeFollower()
    follower.poll()
    live.bus._bus = None  # as if Redis restarted: a fresh, empty state table
    if hasattr(get_bus(), "_sync"):
        get_bus()._sync.delete(get_bus().state_key)
    insert("3202")
    mark = position()
    follower.poll()
    assert frames_after(mark) == []  # primed silently: the page resyncs after such a restart
    assert "extension:" + str(Extension.objects.get(extension_number="3202").pk) in get_bus().state()
