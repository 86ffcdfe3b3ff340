"""A counts query that fails after commit does not turn the committed write into a 500:
the write answers 2xx, its event leaves, and a later status_update carries the counts."""

from __future__ import annotations

import logging

import pytest
from django.db import OperationalError, connection

from extensions.models import Extension
from live import publisher
from live.bus import get_bus
from live.publisher import status_publication
from tests.live_helpers import frames_after, position

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def counts_in_sync() -> None:
    """The bus remembers the last counts it published; align them with this test's empty tables."""
    get_bus().publish([status_publication()])


def _broken_counts() -> dict[str, int]:
    raise OperationalError("server has gone away")


def _committed(number: str) -> bool:
    """Whether the row is in the database, read on a fresh connection (not this test's)."""
    connection.close()
    return Extension.objects.filter(extension_number=number).exists()


def test_a_failing_counts_query_after_commit_keeps_the_write(staff_client, monkeypatch, caplog) -> None:
    start = position()
    monkeypatch.setattr(publisher, "current_counts", _broken_counts)
    with caplog.at_level(logging.INFO, logger="live.publisher"):
        created = staff_client.post("/api/extensions", {"extension_number": "201", "name": "Desk"}, format="json")
        assert created.status_code == 201, created.content
        toggled = staff_client.post(f"/api/extensions/{created.json()['id']}/toggle")
        assert toggled.status_code == 200, toggled.content
    assert _committed("201") and not Extension.objects.get(extension_number="201").enabled
    # the changes left; the counts did not (they could not be read)
    assert [f["type"] for f in frames_after(start)] == ["extension.created", "extension.updated"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "server has gone away" in warnings[0].getMessage()  # once per streak

    # the next write's status_update corrects the counts
    monkeypatch.undo()
    mark = position()
    with caplog.at_level(logging.INFO, logger="live.publisher"):
        second = staff_client.post("/api/extensions", {"extension_number": "202", "name": "Lobby"}, format="json")
    assert second.status_code == 201
    frames = frames_after(mark)
    assert [f["type"] for f in frames] == ["extension.created", "status_update"]
    assert frames[1]["payload"]["extensions"] == 1 and frames[1]["payload"]["extensions_total"] == 2
    assert any("available again" in r.getMessage() for r in caplog.records)


def test_the_poller_corrects_counts_missed_after_commit(staff_client, monkeypatch) -> None:
    from live import poller

    poller.poll_once()  # a running poller: its first poll primes the bus's state silently
    monkeypatch.setattr(publisher, "current_counts", _broken_counts)
    assert (
        staff_client.post("/api/extensions", {"extension_number": "301", "name": "Desk"}, format="json").status_code
        == 201
    )
    monkeypatch.undo()
    mark = position()
    poller.poll_once()
    status = [f for f in frames_after(mark) if f["type"] == "status_update"]
    assert status and status[-1]["payload"]["extensions_total"] == 1
