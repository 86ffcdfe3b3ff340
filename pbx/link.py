"""The PBX link: keeps Asterisk's running configuration equal to the database, and says so.

One ``PbxLink`` runs per deployment (see ``rayanpbx.lease``; in the embedded default, inside the
server process). It

* holds the AMI connection (``pbx.ami``), and publishes ``pbx.link`` when it changes;
* watches the live stream for ``extension.*`` / ``trunk.*`` events: every committed change,
  whatever made it (API, UI, admin, shell, or raw SQL caught by the poller), reaches the
  stream, so the stream is the one place to learn that Asterisk needs an apply;
* applies (``pbx.apply``): debounced (see ``BATCH_QUIET``), one at a time, and again after every (re)connect and
  every ``FullyBooted`` so a restarted Asterisk is verified too (see ``pbx.apply``);
* keeps the shared status (``pbx.status``) that ``GET /api/pbx`` and the pages read;
* feeds every AMI event to the live PBX state (``pbx.feed``): registrations, calls, trunk
  registrations and failed SIP logins, as stream events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from live.bus import get_bus
from live.events import timestamp
from live.publisher import publish_event
from pbx import status
from pbx.ami import AmiClient, Message
from pbx.apply import Applier, ApplyResult
from pbx.feed import StateFeed
from rayanpbx import metrics

logger = logging.getLogger(__name__)

GROUP = "rayanpbx.pbx"
OWNED_KEY = "pbx:owned"
#: The stream events that mean the configuration changed (``extension.registration`` and
#: ``trunk.registration`` are Asterisk's own news, not changes to apply).
CONFIGURATION_EVENTS = frozenset(
    f"{topic}.{op}" for topic in ("extension", "trunk") for op in ("created", "updated", "deleted")
)
#: One transaction's changes are published together: their events' ``timestamp``s (stamped
#: by the publisher, so free of delivery jitter) lie within ``BATCH_GAP`` of each other. An
#: apply waits ``BATCH_QUIET`` after such a batch; a change stamped further apart is another
#: write, so a burst of separate writes waits for ``PBX_APPLY_DEBOUNCE`` of quiet instead and
#: gives one apply.
BATCH_GAP = 0.002
BATCH_QUIET = 0.05
#: Channel-layer groups expire (channels_redis: a day); the link re-joins well before.
REJOIN_EVERY = 3600.0

_local: PbxLink | None = None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None


class PbxLink:
    def __init__(self, ami: AmiClient | None = None) -> None:
        self.ami = ami or AmiClient(
            settings.AMI_HOST, settings.AMI_PORT, settings.AMI_USERNAME, settings.AMI_SECRET, events="on"
        )
        self.status = status.empty_status()
        self.pending = 0
        self._due: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._first_change = 0.0
        self._last_change = 0.0
        self._quiet = BATCH_QUIET
        self._last_published = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.applier: Applier | None = None
        self.feed = StateFeed(self.ami, is_trunk=self._is_trunk)
        self._published_link: tuple[Any, ...] | None = None

    # --- running ----------------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled; raises when one of its parts fails (the supervisor restarts it)."""
        global _local
        self._loop = asyncio.get_running_loop()
        self._due, self._connected = asyncio.Event(), asyncio.Event()
        previous = await cache.aget(status.KEY)
        last_apply_id = (previous or {}).get("apply", {}) or {}
        owned = await cache.aget(OWNED_KEY) or {}
        self.applier = Applier(self.ami, owned=owned, next_id=int(last_apply_id.get("id", 0)) + 1)
        if previous and previous.get("apply"):
            self.status["apply"] = previous["apply"]
        self.ami.add_state_listener(self._on_state)
        self.ami.add_event_listener(self._on_event)
        self.ami.add_event_listener(self.feed.on_event)
        self.ami.add_connect_listener(self._on_connect)
        _local = self
        parts = [self.ami.run(), self._watch_changes(), self._apply_loop(), self._heartbeat(), self.feed.run()]
        if settings.REDIS_URL:
            parts.append(self._control())
        tasks = [asyncio.ensure_future(part) for part in parts]
        try:
            await self._publish_link()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            if _local is self:
                _local = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self.ami.close()
            metrics.ami_state(None)  # the link no longer runs here (after close's last state)

    def _is_trunk(self, endpoint: str) -> bool:
        """An endpoint RayanPBX generated for a trunk (the site's own are not ours to judge)."""
        return self.applier is not None and self.applier.owned.get(endpoint, "").startswith("trunk ")

    def request_apply(self) -> None:
        """Apply now (``POST /api/pbx/apply``), even with nothing pending: a re-verification."""
        self._note_change(0, now=True)

    # --- AMI --------------------------------------------------------------------------

    def _on_state(self, state: str, error: str | None) -> None:
        assert self._connected is not None
        metrics.ami_state(state)
        if state == "connected":
            return  # announced by _on_connect, once the version is known
        self._connected.clear()
        self.status["link"] = {**self.status["link"], "state": state, "error": error}
        self._spawn(self._publish_link())

    def _on_event(self, message: Message) -> None:
        if message.event == "FullyBooted":
            now = datetime.now(UTC)
            with contextlib.suppress(TypeError, ValueError):
                self.status["asterisk"]["startup_at"] = _iso(now - timedelta(seconds=int(message.get("Uptime"))))
                self.status["asterisk"]["reload_at"] = _iso(now - timedelta(seconds=int(message.get("LastReload"))))

    async def _on_connect(self) -> None:
        """After each login and each FullyBooted: read what Asterisk is, then verify/apply."""
        settings_ = await self.ami.action("CoreSettings")
        version = settings_.get("AsteriskVersion")
        self.status["asterisk"]["version"] = version
        if not self.status["asterisk"].get("startup_at"):
            core = await self.ami.action("CoreStatus")
            asterisk = self.status["asterisk"]
            asterisk["startup_at"] = _local_time(core.get("CoreStartupDate"), core.get("CoreStartupTime"))
            asterisk["reload_at"] = _local_time(core.get("CoreReloadDate"), core.get("CoreReloadTime"))
        assert self.applier is not None
        self.applier.connected()
        self.feed.connected()
        self.status["link"] = {**self.status["link"], "state": "connected", "asterisk_version": version, "error": None}
        await self._publish_link()
        assert self._connected is not None
        self._connected.set()
        self._note_change(0, now=True)

    async def _publish_link(self) -> None:
        link = self.status["link"]
        current = (link["state"], link["asterisk_version"], link["error"])
        if current == self._published_link:  # e.g. a FullyBooted that changed nothing
            await status.write(self.status)
            return
        link["since"] = timestamp()
        self._published_link = current
        await status.write(self.status)
        await self._publish("pbx.link", dict(link))

    # --- changes and applies ----------------------------------------------------------

    async def _watch_changes(self) -> None:
        async for frame in get_bus().frames():
            if frame is None:  # (re)subscribed: a change may have been missed, so re-apply
                self._note_change(0)
                continue
            event = json.loads(frame)
            if event.get("type", "") in CONFIGURATION_EVENTS:
                self._note_change(1, published=_epoch(event.get("timestamp")))

    def _note_change(self, count: int, *, now: bool = False, published: float | None = None) -> None:
        """Count a change and make an apply due; ``now`` skips the quiet wait."""
        assert self._due is not None and self.applier is not None
        moment = time.monotonic()
        if not self._due.is_set():
            self._first_change, self._quiet = moment, BATCH_QUIET
        elif count and (published is None or abs(published - self._last_published) > BATCH_GAP):
            # Not the rest of one transaction's batch but another write: a burst of writes,
            # so wait for it to end (PBX_APPLY_DEBOUNCE of quiet, at most PBX_APPLY_MAX_DELAY).
            self._quiet = max(self._quiet, settings.PBX_APPLY_DEBOUNCE)
        if published is not None:
            self._last_published = published
        self._last_change = moment - (self._quiet if now else 0.0)
        was_pending = self.pending
        self.pending += count
        self._due.set()
        if count and not was_pending:
            self.status["pending_changes"] = self.pending
            self._spawn(self._announce(self.applier.pending_event(self.pending)))

    async def _apply_loop(self) -> None:
        assert self._due is not None and self._connected is not None and self.applier is not None
        while True:
            await self._due.wait()
            await self._debounce()
            if not self._connected.is_set():
                await self._connected.wait()  # changes stay pending until Asterisk is back
                continue
            self._due.clear()
            taken, self.pending = self.pending, 0
            result = await self.applier.apply(taken, on_start=self._announce)
            await self._finish(result, taken)

    async def _debounce(self) -> None:
        """Wait for a quiet moment after the last change, but never longer than the cap."""
        while True:
            deadline = min(self._last_change + self._quiet, self._first_change + settings.PBX_APPLY_MAX_DELAY)
            delay = deadline - time.monotonic()
            if delay <= 0:
                return
            await asyncio.sleep(delay)

    async def _finish(self, result: ApplyResult, taken: int) -> None:
        assert self.applier is not None
        if result.retry:  # the link dropped mid-apply: the changes are still to be applied
            self.pending += taken
            self._note_change(0)
        if result.reloaded:
            self.status["asterisk"]["reload_at"] = timestamp()
        await cache.aset(OWNED_KEY, self.applier.owned, timeout=None)
        self.status["site_endpoints"] = result.site_endpoints
        await self._announce(result.event)
        if result.retry:
            await self._announce(self.applier.pending_event(self.pending))
        if result.drift is not None and result.drift != self.status["drift"]:
            self.status["drift"] = result.drift
            await status.write(self.status)
            await self._publish("pbx.drift", result.drift)

    async def _announce(self, event: dict[str, Any]) -> None:
        """Record and publish one ``pbx.apply`` event."""
        done = event["state"] in ("applied", "failed")
        self.status["apply"] = {**event, "finished_at": timestamp() if done else None}
        # Not yet in Asterisk: what waits, plus what the running apply is writing now.
        self.status["pending_changes"] = self.pending + (
            event["pending_changes"] if event["state"] == "applying" else 0
        )
        await status.write(self.status)
        await self._publish("pbx.apply", event)

    # --- housekeeping -----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(status.HEARTBEAT)
            await status.write(self.status)

    async def _control(self) -> None:
        """Requests from other processes (``POST /api/pbx/apply``) through the channel layer."""
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = await layer.new_channel()
        joined = 0.0
        while True:
            if time.monotonic() - joined > REJOIN_EVERY:
                await layer.group_add(GROUP, channel)
                joined = time.monotonic()
            try:
                message = await asyncio.wait_for(layer.receive(channel), REJOIN_EVERY)
            except TimeoutError:
                continue
            if message.get("type") == "pbx.apply_now":
                self.request_apply()

    async def _publish(self, type_: str, payload: dict[str, Any]) -> None:
        await sync_to_async(publish_event, thread_sensitive=False)(type_, payload)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("PBX link: publishing a state change failed", exc_info=task.exception())


def _epoch(stamp: Any) -> float | None:
    """A frame's ``timestamp`` (ISO-8601, ``Z``) in seconds since 1970, or None."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _local_time(date: str | None, clock: str | None) -> str | None:
    """``CoreStatus`` dates are in Asterisk's local time, taken to be this host's."""
    if not date or not clock:
        return None
    try:
        return _iso(datetime.fromisoformat(f"{date}T{clock}").astimezone())
    except ValueError:
        return None


async def run() -> None:
    """The background task: the link, under the Redis lease when there is Redis."""
    if settings.REDIS_URL:
        from rayanpbx.lease import hold_and_run

        await hold_and_run(settings.REDIS_URL, settings.REDIS_KEY_PREFIX + "pbx:lease", lambda: PbxLink().run())
    else:
        await PbxLink().run()


def request_apply() -> None:
    """Ask the deployment's link to apply now, from any process (sync: called by views)."""
    link = _local
    if link is not None and link._loop is not None:
        link._loop.call_soon_threadsafe(link.request_apply)
        return
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)(GROUP, {"type": "pbx.apply_now"})
