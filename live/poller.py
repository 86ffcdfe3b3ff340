"""The database poller: catches changes made outside Django (raw SQL, other programs).

Every ``LIVE_POLL_INTERVAL`` seconds it compares each broadcast table with the bus's state
table (the fingerprint of every object as last published) and publishes what differs, with
compare-and-set semantics in the bus: a change already announced through Django, or by
another poller, is not announced again. The first poll against an empty state table only
records the current rows ("priming"); it announces nothing.

Runs inside ``manage.py runworker rayanpbx-poller`` when Redis is configured, and inside
the server process in the embedded default.
"""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from live import broadcasts
from live.bus import Publication, get_bus
from live.publisher import now_version, state_key, state_value, status_publication

logger = logging.getLogger(__name__)

PRIMED = "__primed__"


def _digest(state: str) -> str:
    return state.split("|", 2)[1]


def poll_once() -> list[int]:
    """Publish what changed in the database since it was last published; return the seqs."""
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


async def run_forever(interval: float | None = None) -> None:
    """Poll until cancelled; a failing poll is logged once per failure streak."""
    interval = settings.LIVE_POLL_INTERVAL if interval is None else interval
    failing = False
    while True:
        try:
            await database_sync_to_async(poll_once)()
            if failing:
                logger.warning("Database poller recovered")
            failing = False
        except Exception:
            if not failing:
                logger.exception("Database poll failed; retrying every %.1f s", interval)
            failing = True
        await asyncio.sleep(interval)
