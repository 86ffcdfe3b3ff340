"""Live PBX state on the stream: AMI events -> ``pbx.state.PbxState`` -> numbered events.

The PBX link hands every AMI event to ``StateFeed.on_event`` (sync, fast); the feed's task
publishes what changed in batches through ``live``'s publisher, refreshes the shared
snapshot that ``GET /api/pbx/registrations|calls|trunks|security`` serve, and publishes
``status_update`` when ``registered`` or ``active_calls`` moved. After every (re)connect
and ``FullyBooted`` it reads a fresh snapshot from Asterisk and publishes only the
differences. Raw AMI events never leave this module.

**The snapshot and the stream cannot race.** The snapshot is written only when every
event the state has produced is published, with the ``seq`` of the stream at that moment:
a client that loads it and connects with ``last_seq=seq`` gets every later change once.
It is refreshed every ``REFRESH`` seconds so its ``seq`` stays inside the stream's history,
and rewritten at most every ``SNAPSHOT_EVERY`` seconds: at once after a quiet spell, else at
the end of that interval (building and storing it costs ~3 ms with 1,000 extensions, which
once per event would be most of the link's CPU in a flood). ``status_update`` goes out right
after a rewrite, so it is bounded the same way.

**Bounds.** At most ``QUEUE_BOUND`` events wait for publication; past it, AMI events are no
longer applied one by one: the feed reads a fresh snapshot from Asterisk instead and
publishes the differences (nothing is lost, intermediate states may be skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache

from live.bus import get_bus
from live.publisher import publish_events, status_publication
from pbx.ami import AmiClient, AmiError, Message
from pbx.state import PbxState, Snapshot

logger = logging.getLogger(__name__)

KEY = "pbx:state"
QUEUE_BOUND = 10_000
REFRESH = 5.0
SNAPSHOT_EVERY = 0.1
#: The most often PJSIPShowContacts is re-read for contacts whose details events lack.
DETAILS_EVERY = 1.0

#: Events that change a contact: held while a contacts list is read, then applied after it
#: (each says where one contact stands now, so applying it again after the list is safe).
CONTACT_EVENTS = {"contactstatus", "peerstatus", "devicestatechange"}

SNAPSHOT_ACTIONS = {
    "contacts": "PJSIPShowContacts",
    "endpoints": "PJSIPShowEndpoints",
    "channels": "CoreShowChannels",
    "registrations": "PJSIPShowRegistrationsOutbound",
}


class StateFeed:
    def __init__(self, ami: AmiClient, *, is_trunk: Callable[[str], bool] | None = None) -> None:
        self.ami = ami
        self.state = PbxState(is_trunk=is_trunk)
        self.queue: deque[tuple[str, dict[str, Any]]] = deque()
        self.overflowed = False
        self._resnapshot = False
        self._wake = asyncio.Event()
        self._counts: dict[str, int] | None = None
        self._asked_details: set[str] = set()
        #: Contact events that arrived while a contacts list was read (None: no list read).
        self._held: list[Message] | None = None
        self._details_at = 0.0
        #: When the shared snapshot was last written, and whether events have been published since.
        self._written = 0.0
        self._stale = False

    # --- from the AMI client (sync) ---------------------------------------------------

    def on_event(self, message: Message) -> None:
        if self.overflowed:
            return  # a fresh snapshot will say where things stand
        if self._held is not None and (message.event or "").lower() in CONTACT_EVENTS:
            # A contacts list is being read: it may be older than this event. Applied after
            # the list, so the list cannot overwrite what the event said.
            self._held.append(message)
            if len(self._held) > QUEUE_BOUND:  # bounded like the queue: a fresh snapshot instead
                self._held.clear()
                self.overflowed = True
            return
        self.queue.extend(self.state.handle(message))
        if len(self.queue) > QUEUE_BOUND:
            logger.warning("PBX state: %d events waiting; reading a fresh snapshot instead", len(self.queue))
            self.queue.clear()
            self.overflowed = True
        self._wake.set()

    def connected(self) -> None:
        """A login or FullyBooted: read everything again."""
        self._resnapshot = True
        self._wake.set()

    # --- the task ---------------------------------------------------------------------

    async def run(self) -> None:
        refreshed = 0.0
        while True:
            timeout = 1.0  # every second at least: due() and the refresh
            if self._stale:  # and when the deferred snapshot is due
                timeout = max(0.0, min(timeout, self._written + SNAPSHOT_EVERY - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            if self._resnapshot or self.overflowed:
                await self._snapshot()
            await self._details()
            self.queue.extend(self.state.due())
            now = time.monotonic()
            if self.queue or (self._stale and now - self._written >= SNAPSHOT_EVERY) or now - refreshed > REFRESH:
                await self._publish()
                refreshed = time.monotonic()

    async def _snapshot(self) -> None:
        lists: dict[str, list[Message] | None] = {}
        self._held = []
        try:
            for name, action in SNAPSHOT_ACTIONS.items():
                try:
                    lists[name] = await self.ami.action_list(action)
                except AmiError as exc:  # left as known; the next (re)connect reads it again
                    logger.info("PBX state: %s failed (%s); keeping what was known", action, exc)
                    lists[name] = None
            self._resnapshot = self.overflowed = False
            self.queue.extend(self.state.reconcile(Snapshot(**lists)))
            self._asked_details.clear()
        finally:
            self._replay_held()

    def _replay_held(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            self.queue.extend(self.state.handle(message))

    async def _details(self) -> None:
        """Events lack user agents and addresses: read the contacts again when one is new."""
        wanted = self.state.needs_contact_details() - self._asked_details
        if wanted and time.monotonic() - self._details_at >= DETAILS_EVERY:
            self._details_at = time.monotonic()
            self._asked_details |= wanted
            self._held = []
            try:
                self.queue.extend(self.state.reconcile_contacts(await self.ami.action_list("PJSIPShowContacts")))
            except AmiError as exc:  # the details come with the next snapshot
                logger.debug("PBX state: PJSIPShowContacts failed: %s", exc)
            finally:
                self._replay_held()
        if self.state.trunks.needs_details:
            self._resnapshot = True

    async def _publish(self) -> None:
        events = list(self.queue)
        self.queue.clear()
        if events:
            await sync_to_async(publish_events, thread_sensitive=False)(events)
            self._stale = True
        seq = await get_bus().position()
        if self.queue:  # more changes came meanwhile: write the snapshot once they are out too
            self._wake.set()
            return
        if self._stale and time.monotonic() - self._written < SNAPSHOT_EVERY:
            return  # written a moment ago: run() writes it again at the end of the interval
        self._written, self._stale = time.monotonic(), False
        counts = self.state.counts()
        # Built while nothing waits: the state is exactly what the stream has said up to seq.
        document = {
            "seq": seq,
            "registrations": self.state.snapshot_registrations(),
            "calls": self.state.snapshot_calls(),
            "trunks": self.state.snapshot_trunks(),
            "auth_failures": self.state.snapshot_auth_failures(),
            "counts": counts,
        }
        await cache.aset(KEY, document, timeout=None)
        if counts != self._counts:
            self._counts = counts
            await sync_to_async(_publish_status, thread_sensitive=False)()


def _publish_status() -> None:
    get_bus().publish([status_publication()])


def snapshot() -> dict[str, Any]:
    """The shared snapshot (for the REST API), or an empty one at the current position.

    A stored document missing a part (written by an older version, or by hand) gets that
    part empty rather than failing the request; one without a valid ``seq`` is ignored."""
    empty = {
        "registrations": [],
        "calls": {"active": [], "ended": []},
        "trunks": [],
        "auth_failures": [],
        "counts": {"registered": 0, "active_calls": 0},
    }
    document = cache.get(KEY)
    if isinstance(document, dict) and isinstance(document.get("seq"), int):
        return {**empty, **document}
    return {"seq": get_bus().position_now(), **empty}


def counts() -> dict[str, int]:
    """``registered`` and ``active_calls`` for ``status_update`` (empty without a PBX link)."""
    document = cache.get(KEY)
    return dict(document["counts"]) if isinstance(document, dict) else {}
