"""Tells every browser when the PBX link's process has stopped, not only the next page load.

With Redis the link runs in ``runworker rayanpbx-pbx``; if that process dies (killed, its
host gone) it cannot say so itself, and its last ``pbx.link`` said "connected". Every server
process runs this watchdog (``rayanpbx.background`` channel ``SERVER``): when the link's
status heartbeat (``pbx.status``) is older than ``STALE_AFTER``, it publishes ``pbx.link``
``disconnected`` with the reason. Several server processes see the same stale heartbeat:
the bus's compare-and-set (mode ``changed``, keyed by that heartbeat) lets one of them
announce it. When the link runs again it publishes its own state.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from asgiref.sync import sync_to_async
from django.core.cache import cache

from live.bus import Publication, get_bus
from live.publisher import now_version
from pbx import status

NOT_RUNNING = "the PBX link is not running (see runworker rayanpbx-pbx)"


def stale_link(document: object, now: float) -> dict | None:
    """The ``pbx.link`` payload to announce for a status document whose writer stopped."""
    if not isinstance(document, dict) or not isinstance(document.get("heartbeat"), int | float):
        return None  # the link never wrote: pages already say "connecting"
    heartbeat = document["heartbeat"]
    if now - heartbeat <= status.STALE_AFTER:
        return None
    since = datetime.fromtimestamp(heartbeat, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    link = document.get("link") or {}
    return {"state": "disconnected", "asterisk_version": link.get("asterisk_version"), "since": since,
            "error": NOT_RUNNING, "_heartbeat": heartbeat}  # fmt: skip


def announce(payload: dict) -> list[int]:
    heartbeat = payload.pop("_heartbeat")
    state = f"{now_version()}|stale-{heartbeat!r}|{{}}"
    return get_bus().publish([Publication("pbx.link", payload, "pbx:link-watchdog", state, mode="changed")])


async def run() -> None:
    """Check the heartbeat every ``status.HEARTBEAT`` seconds, until cancelled."""
    while True:
        await asyncio.sleep(status.HEARTBEAT)
        payload = stale_link(await cache.aget(status.KEY), time.time())
        if payload is not None:
            await sync_to_async(announce)(payload)
