"""A TCP proxy on 127.0.0.1 whose server can be "stopped": a database outage for tests.

``stop()`` makes the proxied server look down, as a stopped (or crashed) MariaDB does: the
listening socket is closed, so new connections are refused (ECONNREFUSED), and every open
connection is aborted (RST), so a client using one gets "server has gone away" / "lost
connection" at its next query. ``start()`` listens again on the same port; the server
behind it never stopped, so nothing was lost and recovery is immediate.

Why a proxy and not a private ``mariadbd``: a private server costs seconds to initialise
(``mariadb-install-db``) and to start and stop, and its datadir on disk; what the
application sees of a stopped server is exactly these two things (refused connects, broken
links), and the proxy gives both in milliseconds, deterministically, with the shared
server untouched.

Its event loop runs in a thread, so synchronous and asynchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from typing import Any

from tests.stack import free_port


class OutageProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.start()

    # --- control (from the test's thread) ------------------------------------------------

    def start(self) -> None:
        """Listen again (same port): new connections reach the server."""
        self._call(self._listen())

    def stop(self) -> None:
        """Refuse new connections and break every open one."""
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- inside the proxy's loop -------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            transport = writer.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: the close sends RST, as a dead server's kernel does
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._writers -= pair

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()
