"""The one publisher: turns committed changes into numbered stream events.

Model changes are published unconditionally and record the object's fingerprint in the
bus's state table; the poller publishes only where the database and that table disagree,
so an object changed through Django is never announced twice, even by two pollers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError
from django.db.models import Count, Q

from live import broadcasts
from live.bus import Publication, get_bus
from live.events import STATUS_UPDATE
from live.models import RowCount
from rayanpbx import metrics

if TYPE_CHECKING:
    from live.outbox import Change

STATUS_KEY = "status"

logger = logging.getLogger(__name__)

#: Whether the last counts query after a commit failed (so a failure streak logs once).
_counts_failing = False


def now_version() -> int:
    """A version stamp in microseconds: later reads of the database get larger stamps."""
    return time.time_ns() // 1000


def state_value(version: int, fingerprint: dict[str, Any], deleted_payload: dict[str, Any]) -> str:
    """``version|digest|deleted-payload``: what the bus remembers of one published object."""
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    return f"{version}|{digest}|{json.dumps(deleted_payload, default=str)}"


def state_key(topic: str, pk: Any) -> str:
    return f"{topic}:{pk}"


def change_publication(change: Change, *, mode: str = "always", expect: str = "") -> Publication:
    topic = change.declaration.topic
    if change.op == "deleted":
        return Publication(
            f"{topic}.deleted", change.deleted_payload, state_key(topic, change.pk), "", mode=mode, expect=expect
        )
    state = state_value(now_version(), change.fingerprint or {}, change.deleted_payload)
    return Publication(f"{topic}.{change.op}", change.payload, state_key(topic, change.pk), state, mode=mode)


#: Other apps' counts in ``status_update`` (the PBX link's ``registered`` and ``active_calls``):
#: functions returning ``{name: int}``, registered with ``register_counts``.
_count_providers: list[Callable[[], dict[str, int]]] = []


def register_counts(provider: Callable[[], dict[str, int]]) -> None:
    """Add ``provider``'s counts to every ``status_update`` (it must be cheap and never raise)."""
    _count_providers.append(provider)


def current_counts() -> dict[str, int]:
    """Enabled and total rows of every broadcast model, plus registered counts: the
    ``status_update`` payload."""
    counts: dict[str, int] = {}
    for provider in _count_providers:
        counts.update(provider())
    declarations = broadcasts.all_declarations()
    # Kept exact by the database's triggers (live.changelog): two numbers, not a table count.
    stored = {row.table_name: row for row in RowCount.objects.filter(table_name__in=[_table(d) for d in declarations])}
    for declaration in declarations:
        row = stored.get(_table(declaration)) or _recount(declaration)
        counts[declaration.count_as] = row.enabled
        counts[f"{declaration.count_as}_total"] = row.total
    return counts


def _table(declaration: broadcasts.Broadcast) -> str:
    return declaration.model._meta.db_table


def _recount(declaration: broadcasts.Broadcast) -> RowCount:
    """A table whose count row is missing (a TRUNCATE emptied live_rowcount): count it once."""
    row = declaration.model._base_manager.aggregate(enabled=Count("pk", filter=Q(enabled=True)), total=Count("pk"))
    counted, _ = RowCount.objects.get_or_create(table_name=_table(declaration), defaults=row)
    return counted


def recount() -> None:
    """Set every broadcast table's counts from the table (the poller's full reconcile does, to
    mend what bypassed the triggers, e.g. a TRUNCATE)."""
    from django.db import connection

    from live.changelog import recount_sql

    with connection.cursor() as cursor:
        for declaration in broadcasts.all_declarations():
            cursor.execute(recount_sql(_table(declaration)))


def status_publication() -> Publication:
    counts = current_counts()
    state = f"{now_version()}|{json.dumps(counts, sort_keys=True)}|{{}}"
    return Publication(STATUS_UPDATE, counts, STATUS_KEY, state, mode="changed")


def publish_changes(changes: list[Change]) -> None:
    """Publish one committed transaction's net changes, then the counts if they moved.

    Two publications: the changes leave before the counts are read, so clients do not
    wait for the count queries to see what changed."""
    global _counts_failing
    bus = get_bus()
    _publish(bus, [change_publication(change) for change in changes])
    try:
        status = status_publication()
    except DatabaseError as exc:
        # This runs in the commit hook: the write is already committed and its events
        # published, so raising would only turn a done write into a 500. Skip this
        # status_update instead: the counts are re-read by the next write's status_update
        # and by the poller every LIVE_POLL_INTERVAL, either of which publishes the right
        # counts (mode "changed" compares with the last counts sent). Logged once per streak.
        if not _counts_failing:
            logger.warning("Counts for status_update unavailable after a commit (%s); clients get them later.", exc)
        _counts_failing = True
        return
    if _counts_failing:
        logger.info("Counts for status_update available again.")
        _counts_failing = False
    _publish(bus, [status])


def publish_event(type_: str, payload: dict[str, Any]) -> list[int]:
    """Publish one stream event that is not a model change (``pbx.link``, ``pbx.apply``...).

    Sync (the bus is); call it from async code through ``sync_to_async``."""
    return publish_events([(type_, payload)])


def publish_events(events: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Publish several such events in order, in one bus call; return their seqs."""
    return _publish(get_bus(), [Publication(t, p, f"event:{t}", "", mode="always") for t, p in events])


def _publish(bus: Any, publications: list[Publication]) -> list[int]:
    """``bus.publish``, counted in ``rayanpbx_live_events_published_total`` by type. Every
    publication here is all-or-nothing (``always``, or one ``changed``): a full answer means
    every one was numbered, an empty one none (unchanged counts, or Redis away)."""
    seqs = bus.publish(publications)
    if seqs and len(seqs) == len(publications):
        metrics.published(pub.type for pub in publications)
    return seqs
