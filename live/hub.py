"""The per-process hub: one subscription to the bus, fanned out to this process's sockets.

Each server process holds one ``Hub``. It reads the bus's frames in ``seq`` order and
writes each frame, serialised once, straight to every local socket: one bus delivery per
process per event, and one socket write per client: the frame is encoded and framed once
and the same bytes go to every socket (no channel-layer message, no per-consumer
decoding, no per-message thread hop, no per-socket framing). It repairs gaps from the bus
history; where the history cannot, it tells its clients to resync. In the embedded
default it also runs the database poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from live.bus import LocalBus, get_bus
from live.events import seq_of
from live.server import prepare

logger = logging.getLogger(__name__)

#: How long a change in the number of sockets may wait before it is reported to /health.
REPORT_DELAY = 0.2
REPORT_EVERY = 5.0
#: Sockets written between two turns of the event loop during a fan-out.
YIELD_EVERY = 200


class Subscriber(Protocol):
    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any) -> None: ...

    async def resync(self, seq: int) -> None: ...


class Hub:
    def __init__(self) -> None:
        self.bus = get_bus()
        self.clients: set[Subscriber] = set()
        self.last_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._changed: asyncio.Event | None = None

    async def start(self) -> None:
        """Start listening (once per event loop) and wait until subscribed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self.clients = set()
            self._ready = asyncio.Event()
            self._changed = asyncio.Event()
            self._tasks = [loop.create_task(self._listen()), loop.create_task(self._report())]
            if isinstance(self.bus, LocalBus):
                from live import poller

                self._tasks.append(loop.create_task(poller.run_forever()))
        assert self._ready is not None
        await self._ready.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks, self._loop = [], None

    def add(self, client: Subscriber) -> None:
        self.clients.add(client)
        if self._changed:
            self._changed.set()

    def discard(self, client: Subscriber) -> None:
        self.clients.discard(client)
        if self._changed:
            self._changed.set()

    async def _listen(self) -> None:
        async for frame in self.bus.frames():
            try:
                if frame is None:  # (re)subscribed
                    if not self._ready.is_set():
                        self.last_seq = await self.bus.position()
                        self._ready.set()
                    else:
                        await self._catch_up()
                    continue
                seq = seq_of(frame)
                if seq <= self.last_seq:
                    continue
                if seq > self.last_seq + 1:
                    await self._catch_up()
                    if seq <= self.last_seq:
                        continue
                await self._fan_out(seq, frame)
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
        for frame in frames:
            seq = seq_of(frame)
            if seq > self.last_seq:
                await self._fan_out(seq, frame)

    async def _resync_all(self, seq: int) -> None:
        self.last_seq = seq
        for client in list(self.clients):
            await client.resync(seq)

    async def _fan_out(self, seq: int, frame: str) -> None:
        self.last_seq = seq
        # Built once per event, for all sockets: the ASGI message, and the same frame
        # already encoded and framed for sockets that can take it directly (live.server).
        message = {"type": "websocket.send", "text": frame}
        prepared = prepare(frame)
        for n, client in enumerate(list(self.clients), 1):
            try:
                await client.deliver(seq, message, prepared)
            except Exception:  # a socket that broke mid-send must not stop the others
                logger.debug("Dropping a client that failed a send", exc_info=True)
                self.clients.discard(client)
            if n % YIELD_EVERY == 0:
                # Let the event loop turn: the server flushes the writes made so far (the
                # first clients get the event now, not after the last) and answers HTTP
                # requests meanwhile. Events stay in order: only this task fans out.
                await asyncio.sleep(0)

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
