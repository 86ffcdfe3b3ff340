"""A TCP proxy on 127.0.0.1 that can freeze its connections, for network faults in tests.

A frozen connection stays open but carries nothing either way: the proxy stops reading
from both of its sockets, so the kernel's buffers fill and the peers see silence, as with
a half-open connection (a NAT or a failover that dropped it without a word) or a network
partition. ``blackhole()`` freezes every connection, including the ones opened meanwhile
(they are accepted, as a blackholed host's TCP often is by a middlebox, then nothing);
``restore()`` lets them all flow again, nothing lost, as TCP does when a partition heals.
``freeze_existing()`` freezes only the connections open now: new ones work, which is how a
half-open subscription looks next to a healthy network.

It runs its own event loop in a thread, so synchronous and asynchronous tests can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from tests.stack import free_port


class _Link:
    def __init__(self, frozen: bool) -> None:
        self.flowing = asyncio.Event()
        if not frozen:
            self.flowing.set()
        self.writers: list[asyncio.StreamWriter] = []


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._links: list[_Link] = []
        self._blackholed = False
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(5):
            raise RuntimeError("the fault proxy did not start")

    # --- control (from the test's thread) ------------------------------------------------

    def freeze_existing(self) -> None:
        self._call(lambda: [link.flowing.clear() for link in self._links])

    def blackhole(self) -> None:
        def go() -> None:
            self._blackholed = True
            for link in self._links:
                link.flowing.clear()

        self._call(go)

    def restore(self) -> None:
        def go() -> None:
            self._blackholed = False
            for link in self._links:
                link.flowing.set()

        self._call(go)

    def close(self) -> None:
        def go() -> None:
            if self._server:
                self._server.close()
            for link in self._links:
                for writer in link.writers:
                    writer.close()

        self._call(go)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- inside the proxy's loop -------------------------------------------------------------

    def _call(self, fn: Any) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        started.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(frozen=self._blackholed)
        self._links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link.writers = [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, link))

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                await link.flowing.wait()
                data = await reader.read(65536)
                if not data:
                    break
                await link.flowing.wait()  # frozen while this was read: hold it back
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()
