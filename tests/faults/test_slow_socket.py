"""A socket that stops reading: bounded memory, a "too slow" close (4009), nothing lost.

A real daphne (``manage.py serve``) with a small per-socket bound, one client that does not
read (a 4 KiB receive buffer and a one-frame queue, so the kernel and the client library
push back at once) and one that reads normally, during a burst of 2,000 registration events
of about 3 KB each (phones with several contacts and long user agents): 6 MB, more than the
kernel's socket buffers (up to 4 MB on loopback) and the bound together.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.services import redis_url
from tests.stack import Stack
from tests.test_live_e2e import connect, recv

pytestmark = pytest.mark.services

BOUND = 256 * 1024  # LIVE_MAX_SOCKET_BUFFER for this server (the default is 1 MiB)
EVENTS = 2000
CLOSE_TOO_SLOW = 4009


def burst(stack: Stack) -> None:
    """2,000 extension.registration events in one publication, as the PBX link sends them."""
    stack.shell(
        "from live.publisher import publish_events\n"
        "contact = lambda n, i: {'uri': f'sip:{n}@192.0.2.{i}:5060', 'ip': f'192.0.2.{i}', 'port': 5060,"
        " 'user_agent': 'Phone firmware ' + 'x' * 500, 'rtt_ms': 1.5, 'expires_at': None}\n"
        "publish_events([('extension.registration', {'extension_number': str(n), 'state': 'registered',"
        f" 'contacts': [contact(n, i) for i in range(5)]}}) for n in range({EVENTS})])\n"
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    # With Redis: the burst is published from another process, as the PBX link's is.
    env = {"LIVE_MAX_SOCKET_BUFFER": str(BOUND), "LIVE_HISTORY_SIZE": "5000"}
    stack = Stack(tmp_path, redis_url=redis_url(), env=env)
    stack.server = stack.start_server()
    yield stack
    stack.close()


async def test_a_socket_that_does_not_read_is_closed_4009_and_resumes_to_everything(stack: Stack) -> None:
    token = stack.login(stack.server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.server.port))
    async with (
        connect(stack.server.ws, token) as healthy,
        connect(stack.server.ws, token, sock=sock, max_queue=1) as slow,
    ):
        start = (await recv(healthy))["seq"]
        assert (await recv(slow))["seq"] == start
        before = rss_mb(stack.server.process.pid)
        # The healthy client reads the whole burst as it comes; the slow one reads nothing.
        publishing = asyncio.create_task(asyncio.to_thread(burst, stack))
        received = [await recv(healthy, timeout=30) for _ in range(EVENTS)]
        await publishing
        assert [f["seq"] for f in received] == list(range(start + 1, start + EVENTS + 1))
        grown = rss_mb(stack.server.process.pid) - before

        # The slow client reads now: what was queued for it, then the close, 4009.
        seen = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                seen.append(json.loads(await asyncio.wait_for(slow.recv(), 10))["seq"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_SLOW, closed.value
        assert seen == list(range(start + 1, start + 1 + len(seen)))  # in order, no gap
        assert len(seen) < EVENTS, "the bound did not apply"
    assert grown < 50, f"the server grew {grown:.1f} MB"

    # It resumes from the last seq it saw and ends with every event, once.
    last = seen[-1] if seen else start
    async with connect(stack.server.ws, token, query=f"?last_seq={last}") as again:
        assert (await recv(again))["type"] == "welcome"
        rest = [(await recv(again, timeout=10))["seq"] for _ in range(start + EVENTS - last)]
    assert seen + rest == list(range(start + 1, start + EVENTS + 1))
    log = stack.server.log.read_text()
    assert "Traceback" not in log
