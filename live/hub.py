"""The per-process hub: one subscription to the bus, fanned out to this process's sockets.

Each server process holds one ``Hub``. It reads the bus's frames in ``seq`` order and
writes each frame, serialised once, straight to every local socket: one bus delivery per
process per event, and one socket write per client: the frame is encoded and framed once
and the same bytes go to every socket (no channel-layer message, no per-consumer
decoding, no per-message thread hop, no per-socket framing). It repairs gaps from the bus
history; where the history cannot, it tells its clients to resync. Its tasks run under
``rayanpbx.background``'s supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from live import limits
from live.bus import BATCH_FRAMES, get_bus
from live.events import seq_of
from live.revocation import MESSAGE, RIGHTS_MESSAGE
from live.server import prepare
from rayanpbx import audiences, background, metrics

logger = logging.getLogger(__name__)

#: How long a change in the number of sockets may wait before it is reported to /health.
REPORT_DELAY = 0.2
REPORT_EVERY = 5.0
#: Sockets written between two turns of the event loop during a fan-out.
YIELD_EVERY = 200
#: Seconds between re-adding this process to its revocation groups (the channel layer
#: expires group memberships after a day).
GROUP_REFRESH = 3600.0
#: The prefix of every layer channel a server process takes (the hub's and those of sockets
#: with topics). channels_redis 4.3 serves one process-local prefix at a time: a receive on
#: a second prefix waits behind the first one's blocking read, and never gets its messages
#: while the hub listens (measured). With one prefix, one read serves them all.
CHANNEL_PREFIX = "rayanpbx.hub."
GROUP_RETRY = 2.0


class Subscriber(Protocol):
    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any) -> None: ...

    async def resync(self, seq: int) -> None: ...

    def abort(self) -> None:
        """Close the socket because a send to it failed: it reconnects and resumes."""

    #: The revocation groups (``live.revocation``) whose messages close this socket.
    revocation_groups: tuple[str, ...]

    #: The user's audiences (``rayanpbx.audiences``): which restricted events it sees whole.
    sees: frozenset[str]

    def revoke(self, code: int) -> None:
        """Close the socket: its user's or session's access ended."""

    # Optional: ``batched = True`` and ``async deliver_batch(batch: Batch)`` to take
    # consecutive frames as one message (``Batch``); otherwise ``deliver`` per frame.


class Batch:
    """Consecutive frames fanned out together, each form built once for every socket.

    A socket that asked for batches (``?batch=1``) gets them as one message, a JSON array of
    the frames in ``seq`` order (one frame alone is sent as itself); the others get one
    message per frame. The hub never waits to fill a batch: it holds what the bus had
    already received (a bulk change's thousands of events), at most ``BATCH_FRAMES``.
    """

    __slots__ = ("_combined", "_singles", "_source", "frames")

    def __init__(self, frames: list[tuple[int, str]], source: Batch | None = None) -> None:
        self.frames = frames
        #: The batch this one is a view of (``_view``): the frames they share are framed once.
        self._source = source
        self._singles: list[tuple[int, dict[str, Any], Any]] | None = None
        self._combined: tuple[dict[str, Any], Any] | None = None

    @property
    def first(self) -> int:
        return self.frames[0][0]

    @property
    def last(self) -> int:
        return self.frames[-1][0]

    def singles(self) -> list[tuple[int, dict[str, Any], Any]]:
        """``(seq, ASGI message, prepared frame)`` per frame."""
        if self._singles is None:
            shared = self._source.singles() if self._source is not None else None
            self._singles = [
                shared[n] if shared is not None and frame is self._source.frames[n][1]
                else (seq, _message(frame), prepare(frame))
                for n, (seq, frame) in enumerate(self.frames)
            ]  # fmt: skip
        return self._singles

    def combined(self) -> tuple[dict[str, Any], Any]:
        """The ASGI message and the prepared frame of the whole batch."""
        if self._combined is None:
            if len(self.frames) == 1:
                _, message, prepared = self.singles()[0]
                self._combined = (message, prepared)
            else:
                text = batch_text(self.frames)
                self._combined = (_message(text), prepare(text))
        return self._combined


def _view(batch: Batch, sees: frozenset[str]) -> Batch:
    """The batch as sockets with audiences ``sees`` get it (``audiences.view``): itself when
    nothing in it is hidden from them, else a batch sharing the frames they may see."""
    frames = [(seq, audiences.view(frame, sees)) for seq, frame in batch.frames]
    if all(mine is theirs for (_, mine), (_, theirs) in zip(frames, batch.frames, strict=True)):
        return batch
    return Batch(frames, source=batch)


def batch_text(frames: list[tuple[int, str]]) -> str:
    """The message of consecutive ``(seq, frame)``: a lone frame itself, else a JSON array."""
    return frames[0][1] if len(frames) == 1 else "[" + ",".join(frame for _, frame in frames) + "]"


def _message(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


class Hub:
    def __init__(self) -> None:
        self.bus = get_bus()
        self.clients: set[Subscriber] = set()
        self.last_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._changed: asyncio.Event | None = None
        # Revocation (live.revocation): this process's layer channel and its groups,
        # refcounted by the sockets that need them.
        self.control_channel: str | None = None
        self._groups: dict[str, int] = {}
        self._joined: dict[Subscriber, tuple[str, ...]] = {}
        self._groups_stale = False
        self.user_sockets = limits.UserSockets()

    async def start(self) -> None:
        """Start listening (once per event loop) and wait until subscribed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self.clients = set()
            self._groups, self._joined, self.control_channel = {}, {}, None
            self.user_sockets = limits.UserSockets()  # (its Redis client belongs to one loop)
            self._ready = asyncio.Event()
            self._changed = asyncio.Event()
            # Supervised (rayanpbx.background): a listener that fails is restarted with
            # backoff, resubscribes and repairs from the history; /health names it meanwhile.
            self._tasks = [
                background.spawn("live-hub", self._listen),
                background.spawn("live-hub-reporter", self._report),
            ]
            if get_channel_layer() is not None:
                self._tasks.append(background.spawn("live-hub-control", self._control))
        assert self._ready is not None
        await self._ready.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._loop = [], None

    async def admit(self, user_pk: Any, socket_id: str) -> tuple[int, str] | None:
        """A new socket's place (``live.limits``): None, or the close code and reason refusing it."""
        cap = settings.LIVE_MAX_SOCKETS
        if cap and len(self.clients) >= cap:
            metrics.refused("server_full")
            return limits.CLOSE_SERVER_FULL, f"this server holds its maximum of {cap} sockets: retry shortly"
        if not await self.user_sockets.acquire(user_pk, socket_id):
            metrics.refused("per_user")
            most = settings.LIVE_MAX_SOCKETS_PER_USER
            return limits.CLOSE_USER_SOCKETS, f"you have {most} live connections open (the most): close a tab"
        return None

    def add(self, client: Subscriber) -> None:
        self.clients.add(client)
        metrics.set_sockets(len(self.clients))
        if self._changed:
            self._changed.set()

    def discard(self, client: Subscriber) -> None:
        self.clients.discard(client)
        metrics.set_sockets(len(self.clients))
        if self._changed:
            self._changed.set()
        for group in self._joined.pop(client, ()):
            self._groups[group] -= 1
            if self._groups[group] == 0:
                del self._groups[group]
                if self.control_channel:
                    self._layer_call(get_channel_layer().group_discard(group, self.control_channel))

    async def join(self, client: Subscriber) -> None:
        """Put this process in the client's revocation groups (one ``group_add`` per group
        per process, when its first socket joins). Not awaited: a slow or blackholed layer
        never holds up a connect; a failed call is retried by the refresher."""
        if client not in self.clients or client in self._joined:
            return
        groups = tuple(client.revocation_groups)
        self._joined[client] = groups
        for group in groups:
            self._groups[group] = self._groups.get(group, 0) + 1
            if self._groups[group] == 1 and self.control_channel:
                self._layer_call(get_channel_layer().group_add(group, self.control_channel))

    def _layer_call(self, call: Any) -> asyncio.Future[None]:
        async def run() -> None:
            try:
                await call
            except Exception as exc:  # the layer (Redis) away: the refresher re-adds every group
                logger.warning("Channel layer call failed: %s", exc)
                self._groups_stale = True

        return asyncio.ensure_future(run())

    async def _control(self) -> None:
        """This process's channel on the channel layer: revocation messages for its sockets.

        On every (re)start it takes a new channel and puts it in every group its sockets
        need; the refresher does that again every ``GROUP_REFRESH`` seconds (memberships
        expire in the layer) and within seconds of a failed layer call."""
        layer = get_channel_layer()
        self.control_channel = channel = await layer.new_channel(CHANNEL_PREFIX)
        self._groups_stale = True
        refresher = asyncio.ensure_future(self._refresh_groups(layer, channel))
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("type") == MESSAGE:
                    self._on_revoke(message)
                elif message.get("type") == RIGHTS_MESSAGE:
                    self._on_rights(message)
        finally:
            refresher.cancel()
            self.control_channel = None

    async def _refresh_groups(self, layer: Any, channel: str) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            if self._groups_stale or loop.time() - last > GROUP_REFRESH:
                self._groups_stale = False
                try:
                    for group in list(self._groups):
                        await layer.group_add(group, channel)
                    last = loop.time()
                except Exception as exc:  # retried at the next turn, in GROUP_RETRY seconds
                    logger.warning("Could not join the revocation groups: %s", exc)
                    self._groups_stale = True
            await asyncio.sleep(GROUP_RETRY)

    def _on_revoke(self, message: dict[str, Any]) -> None:
        group, code = message.get("group"), message.get("code")
        if not isinstance(group, str) or not isinstance(code, int):
            logger.warning("Ignoring a malformed revocation message")
            return
        closed = 0
        for client, groups in list(self._joined.items()):
            if group in groups:
                client.revoke(code)
                closed += 1
        logger.info("Closed %d socket(s) of %s: %s", closed, group, message.get("reason", ""))

    def _on_rights(self, message: dict[str, Any]) -> None:
        """A user's rights changed: that user's sockets check their topics again."""
        group = message.get("group")
        if not isinstance(group, str):
            logger.warning("Ignoring a malformed rights message")
            return
        for client, groups in list(self._joined.items()):
            if group in groups and hasattr(client, "rights_changed"):
                client.rights_changed()

    async def _listen(self) -> None:
        async for batch in self.bus.batches():
            try:
                if batch is None:  # (re)subscribed
                    if not self._ready.is_set():
                        self.last_seq = await self.bus.position()
                        self._ready.set()
                    else:
                        await self._catch_up()
                    continue
                fresh: list[tuple[int, str]] = []
                for frame in batch:
                    seq = seq_of(frame)
                    last = fresh[-1][0] if fresh else self.last_seq
                    if seq <= last:
                        continue
                    if seq > last + 1:  # a gap: what came before it goes out first, then the repair
                        await self._fan_out(fresh)
                        fresh = []
                        await self._catch_up()
                        if seq <= self.last_seq:
                            continue
                    fresh.append((seq, frame))
                await self._fan_out(fresh)
            except Exception:
                logger.exception("Live hub failed to handle a frame; clients will resync")
                await self._resync_all(await self.bus.position())

    async def _catch_up(self) -> None:
        """Deliver what this process missed (a lost subscription), or tell clients to resync."""
        current, frames = await self.bus.history_after(self.last_seq)
        if frames is None:
            logger.warning("Live hub missed events older than the history; clients resync")
            await self._resync_all(current)
            return
        fresh = [(seq, frame) for frame in frames if (seq := seq_of(frame)) > self.last_seq]
        for start in range(0, len(fresh), BATCH_FRAMES):
            await self._fan_out(fresh[start : start + BATCH_FRAMES])

    async def _resync_all(self, seq: int) -> None:
        self.last_seq = seq
        for client in list(self.clients):
            await client.resync(seq)

    async def _fan_out(self, frames: list[tuple[int, str]]) -> None:
        """Write consecutive frames to every socket: one by one, or as one batch message to
        the sockets that asked for batches (``Batch``)."""
        if not frames:
            return
        self.last_seq = frames[-1][0]
        batch = Batch(frames)
        # Events not for everyone (rayanpbx.audiences) are framed once per set of audiences
        # among the sockets, not per socket; the common case (none) costs one type check
        # per frame.
        whole = batch
        views: dict[frozenset[str], Batch] | None = {} if audiences.restricted(frames) else None
        started = time.perf_counter()
        clients = list(self.clients)
        for n, client in enumerate(clients, 1):
            if views is not None:
                batch = views.get(client.sees) or views.setdefault(client.sees, _view(whole, client.sees))
            try:
                if getattr(client, "batched", False):
                    await client.deliver_batch(batch)
                else:
                    for seq, message, prepared in batch.singles():
                        await client.deliver(seq, message, prepared)
            except Exception:  # a socket that broke mid-send must not stop the others
                # It would never get another event: close it, so it reconnects and resumes
                # from its last seq (nothing lost), rather than leave it open and silent.
                logger.info("Closing a socket whose send failed; it will resume", exc_info=True)
                self.discard(client)
                client.abort()
            if n % YIELD_EVERY == 0:
                # Let the event loop turn: the server flushes the writes made so far (the
                # first clients get the event now, not after the last) and answers HTTP
                # requests meanwhile. Events stay in order: only this task fans out.
                await asyncio.sleep(0)
        # Counted once per fan-out, not per socket (rayanpbx.metrics).
        metrics.fanout_frames(frames, len(clients), time.perf_counter() - started)

    async def _report(self) -> None:
        """Keep this process's socket count fresh in the bus, for /health."""
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), REPORT_EVERY)
                await asyncio.sleep(REPORT_DELAY)
            self._changed.clear()
            try:
                await self.bus.report_clients(len(self.clients))
            except Exception as exc:
                logger.debug("Could not report the socket count: %s", exc)


_hub: Hub | None = None


def get_hub() -> Hub:
    global _hub
    if _hub is None:
        _hub = Hub()
    return _hub
