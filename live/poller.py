"""The database poller: catches changes made outside Django (raw SQL, other programs).

Triggers in the database append every insert, update and delete of a broadcast table to
``live_changelog`` (``live.changelog``), whoever makes it. Every ``LIVE_POLL_INTERVAL``
seconds the poller reads the log after its position (:class:`ChangeFollower`), loads just
those rows, compares them with the bus's state table for just those keys (the fingerprint
of each object as last published) and publishes what differs, with compare-and-set
semantics in the bus: a change already announced through Django, or by another poller, is
not announced again. Its cost follows the changes, not the rows: with nothing changed a
poll is one indexed query.

A full comparison of every row (:func:`poll_once`) runs when a poller starts, when the
bus's state table is empty (Redis restarted: it only records the current rows then,
"priming", and announces nothing), and after a failure. Log ids that a poll skipped (a
transaction still open, whose id was taken first) are read again for ``HOLE_TTL`` seconds;
log rows older than ``KEEP`` are pruned.

Runs inside ``manage.py runworker rayanpbx-poller`` when Redis is configured, and inside
the server process in the embedded default.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Max, Q
from django.db.models.functions import Now

from live import broadcasts
from live.bus import Publication, get_bus
from live.publisher import now_version, recount, state_key, state_value, status_publication
from rayanpbx import background

logger = logging.getLogger(__name__)

#: Its name in ``rayanpbx.background`` (registered in ``live.apps``).
TASK = "live-poller"

PRIMED = "__primed__"


def _digest(state: str) -> str:
    return state.split("|", 2)[1]


def poll_once() -> list[int]:
    """Compare every row with the bus and publish what differs; return the seqs (a full
    reconcile: O(rows); the running poller follows the change log instead)."""
    recount()  # the counts too, should something have bypassed the triggers
    bus = get_bus()
    known = bus.state()  # read before the tables: see the module docstring of live.bus
    version = now_version()
    priming = PRIMED not in known
    publications: list[Publication] = []
    for declaration in broadcasts.all_declarations():
        topic = declaration.topic
        seen: set[str] = set()
        for instance in declaration.model._base_manager.all().iterator():
            key = state_key(topic, instance.pk)
            seen.add(key)
            state = state_value(version, declaration.fingerprint(instance), declaration.deleted_payload(instance))
            current = known.get(key, "")
            if current and _digest(current) == _digest(state):
                continue
            op = "updated" if current else "created"
            publications.append(
                Publication(
                    f"{topic}.{op}", declaration.payload(instance), key, state, mode="silent" if priming else "changed"
                )
            )
        for key, current in known.items():
            if key.startswith(f"{topic}:") and key not in seen:
                payload = json.loads(current.split("|", 2)[2])
                publications.append(Publication(f"{topic}.deleted", payload, key, "", mode="expect", expect=current))
    status = status_publication()
    if priming:
        status.mode = "silent"
        publications += [status, Publication("primed", {}, PRIMED, f"{version}|primed|{{}}", mode="silent")]
    else:
        publications.append(status)
    return bus.publish(publications)


#: Seconds a skipped log id is looked for again (a transaction that took it is still open).
HOLE_TTL = 60.0
#: Log rows older than this (seconds) are pruned, at most every PRUNE_EVERY seconds.
KEEP = 3600
PRUNE_EVERY = 60.0
#: Changed rows loaded per query.
CHUNK = 1000


class ChangeFollower:
    """One poller's position in ``live_changelog``, and the polls that follow it."""

    def __init__(self) -> None:
        self.cursor: int | None = None
        self.holes: dict[int, float] = {}  # log id -> when it was first missed
        self.pruned_at = 0.0

    def poll(self) -> list[int]:
        """Publish what changed since the last poll; the first poll reconciles everything."""
        if self.cursor is None:
            # Read the position before the reconcile: changes made during it are read again.
            self.cursor = _log_position()
            return poll_once()
        entries = self._entries()
        self._prune()
        if not entries:
            return []
        return _publish_changed(entries)

    def _entries(self) -> list[tuple[str, int]]:
        from live.models import ChangeLog

        now = time.monotonic()
        self.holes = {i: at for i, at in self.holes.items() if now - at < HOLE_TTL}
        query = Q(id__gt=self.cursor)
        if self.holes:
            query |= Q(id__in=list(self.holes))
        rows = list(ChangeLog.objects.filter(query).order_by("id").values_list("id", "table_name", "row_id"))
        for log_id, _, _ in rows:
            self.holes.pop(log_id, None)
        if rows and rows[-1][0] > self.cursor:
            seen = {log_id for log_id, _, _ in rows}
            for missing in range(self.cursor + 1, rows[-1][0]):
                if missing not in seen:
                    self.holes.setdefault(missing, now)
            self.cursor = rows[-1][0]
        return [(table, row_id) for _, table, row_id in rows]

    def _prune(self) -> None:
        from live.models import ChangeLog

        now = time.monotonic()
        if now - self.pruned_at < PRUNE_EVERY:
            return
        self.pruned_at = now
        ChangeLog.objects.filter(created_at__lt=Now() - timedelta(seconds=KEEP)).delete()


def _log_position() -> int:
    from live.models import ChangeLog

    return ChangeLog.objects.aggregate(last=Max("id"))["last"] or 0


def _publish_changed(entries: list[tuple[str, int]]) -> list[int]:
    """Publish what differs for the rows named in ``entries``: O(len(entries))."""
    bus = get_bus()
    by_table: dict[str, set[int]] = {}
    for table, row_id in entries:
        by_table.setdefault(table, set()).add(row_id)
    declarations = {d.model._meta.db_table: d for d in broadcasts.all_declarations()}
    keys = [state_key(declarations[t].topic, pk) for t, pks in by_table.items() if t in declarations for pk in pks]
    known = bus.state_of([*keys, PRIMED])  # read before the rows: see live.bus
    if PRIMED not in known:
        return poll_once()  # the bus lost its state (Redis restarted): reconcile and prime
    version = now_version()
    publications: list[Publication] = []
    for table, pks in by_table.items():
        declaration = declarations.get(table)
        if declaration is None:
            continue  # a table no longer broadcast
        topic = declaration.topic
        ordered = sorted(pks)
        found: set[int] = set()
        for start in range(0, len(ordered), CHUNK):
            for instance in declaration.model._base_manager.filter(pk__in=ordered[start : start + CHUNK]):
                found.add(instance.pk)
                key = state_key(topic, instance.pk)
                state = state_value(version, declaration.fingerprint(instance), declaration.deleted_payload(instance))
                current = known.get(key, "")
                if current and _digest(current) == _digest(state):
                    continue
                op = "updated" if current else "created"
                publications.append(Publication(f"{topic}.{op}", declaration.payload(instance), key, state, "changed"))
        for pk in ordered:
            key = state_key(topic, pk)
            if pk not in found and key in known:
                payload = json.loads(known[key].split("|", 2)[2])
                publications.append(Publication(f"{topic}.deleted", payload, key, "", mode="expect", expect=known[key]))
    if not publications:
        return []
    publications.append(status_publication())
    return bus.publish(publications)


async def run_forever(interval: float | None = None) -> None:
    """Poll until cancelled. A failing poll (the database or Redis down) is logged once per
    failure streak and shown in ``/health`` (``live-poller`` failing) until a poll works
    again; it is retried every interval rather than with the supervisor's longer backoff,
    so changes are caught again within one interval of the outage's end."""
    interval = settings.LIVE_POLL_INTERVAL if interval is None else interval
    failing = False
    follower = ChangeFollower()
    while True:
        try:
            if failing:
                follower.cursor = None  # after a failure, reconcile everything once
            await database_sync_to_async(follower.poll)()
            if failing:
                logger.warning("Database poller recovered")
                background.report(TASK, None)
            failing = False
        except Exception as exc:  # retried next interval; visible in /health meanwhile
            if not failing:
                # An outage (the database or Redis unreachable) is one line; anything else
                # is a bug and gets its traceback.
                outage = isinstance(exc, DatabaseError | OSError) or type(exc).__module__.startswith("redis")
                logger.error("Database poll failed: %s; retrying every %.1f s", exc, interval, exc_info=not outage)
            background.report(TASK, f"{type(exc).__name__}: {exc}")
            failing = True
        await asyncio.sleep(interval)
