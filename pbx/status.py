"""What every process knows of the PBX link: its state, the last apply, pending changes, drift.

The process that runs the link (``runworker rayanpbx-pbx``, or the server itself in the
embedded default) writes one JSON document through Django's cache (Redis when
``REDIS_URL`` is set, this process's memory otherwise); ``GET /api/pbx`` and the pages read
it. The link refreshes it at least every ``HEARTBEAT`` seconds, so a reader can tell a
link that died (stale ``heartbeat``) from one that is merely disconnected from Asterisk.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache

KEY = "pbx:status"
HEARTBEAT = 5.0
#: A status older than this was written by a link that is no longer running.
STALE_AFTER = 20.0

HOW_TO_CONFIGURE = (
    "Set AMI_USERNAME and AMI_SECRET (an AMI user of manager.conf with read 'system' and write 'system,config'), "
    "AMI_HOST and AMI_PORT if Asterisk is not on 127.0.0.1:5038, and ASTERISK_CONFIG_DIR, then add the two "
    "#include lines (manage.py pbx_includes --add). See README 'The Asterisk link'."
)


def configured() -> bool:
    """Whether this deployment has a PBX link at all."""
    return bool(settings.AMI_USERNAME)


def empty_status() -> dict[str, Any]:
    """The status before the link has said anything."""
    state = "connecting" if configured() else "unconfigured"
    return {
        "configured": configured(),
        "link": {"state": state, "asterisk_version": None, "since": None, "error": None},
        "asterisk": {"version": None, "startup_at": None, "reload_at": None},
        "apply": None,
        "pending_changes": 0,
        "drift": {"in_db_only": [], "in_asterisk_only": []},
        "site_endpoints": [],
        "help": None if configured() else HOW_TO_CONFIGURE,
        "heartbeat": None,
    }


def read() -> dict[str, Any]:
    """The current status, as written by the link (or the empty status)."""
    status = cache.get(KEY)
    if not isinstance(status, dict):
        return empty_status()
    if not configured():
        return empty_status()
    heartbeat = status.get("heartbeat")
    if heartbeat is None or time.time() - heartbeat > STALE_AFTER:
        stale = {"state": "disconnected", "error": "the PBX link is not running (see runworker rayanpbx-pbx)"}
        status = {**status, "link": {**status["link"], **stale}}
    return status


async def write(status: dict[str, Any]) -> None:
    """Store the status (called by the link only)."""
    await cache.aset(KEY, {**status, "heartbeat": time.time()}, timeout=None)
