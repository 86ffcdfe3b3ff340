"""Every event or a resync, checked Jepsen-style: many clients on two daphne processes
while Redis restarts, or while one of the processes is killed.

Each client records what it saw: the ``seq`` of every frame, and its model of the data
(the extension ids it believes exist), built from the events and, after a ``resync``, from
the REST API. At the end the lost set (ids the database has that a client does not know
of, or ids it believes in that are gone) must be empty for every client, and a client that
never had to resync must have seen one unbroken run of ``seq``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.faults.test_redis import PrivateRedis
from tests.stack import Server, Stack
from tests.test_live_e2e import connect

pytestmark = pytest.mark.services

#: Hundreds of one user's sockets from one address within a second (live.limits would refuse them).
MANY_SOCKETS = {"LIVE_CONNECT_RATE": "0", "LIVE_MAX_SOCKETS_PER_USER": "0"}
BATCH = 100  # extensions per transaction (one extension.created each, then a status_update)


class Client:
    """One browser-like client: follows the stream, resumes, reloads on resync."""

    def __init__(self, stack: Stack, servers: list[Server], token: str) -> None:
        self.stack, self.servers, self.token = stack, servers, token
        self.seqs: list[int] = []
        self.ids: set[int] = set()
        self.resyncs = 0
        self.reconnects = 0
        self.last_seq: int | None = None
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            for server in list(self.servers):  # the first that answers; the next if it is gone
                query = f"?last_seq={self.last_seq}" if self.last_seq is not None else ""
                try:
                    async with connect(server.ws, self.token, query=query) as ws:
                        await self._follow(ws)
                except (TimeoutError, OSError, ConnectionClosed):
                    self.reconnects += 1
                    await asyncio.sleep(0.2)

    async def _follow(self, ws: Any) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "welcome":
                if self.last_seq is None:
                    self.last_seq = frame["seq"]
                self.ready.set()
            elif kind == "resync":
                self.resyncs += 1
                self.last_seq = frame["seq"]
                self.ids = await asyncio.to_thread(self._reload)
            elif kind in ("extension.created", "extension.deleted", "status_update", "extension.updated"):
                self.seqs.append(frame["seq"])
                self.last_seq = frame["seq"]
                if kind == "extension.created":
                    self.ids.add(frame["payload"]["id"])
                elif kind == "extension.deleted":
                    self.ids.discard(frame["payload"]["id"])

    def _reload(self) -> set[int]:
        """The extensions now, from the REST API (every page)."""
        ids: set[int] = set()
        path = "/api/extensions?page_size=500"
        while path:
            code, body = self.stack.request(self.servers[0], "GET", path, token=self.token)
            assert code == 200, body
            ids |= {row["id"] for row in body["results"]}
            path = body["next"].split("127.0.0.1", 1)[1].split("/", 1)[1] if body["next"] else None
            path = f"/{path}" if path else None
        return ids


def database_ids(stack: Stack) -> set[int]:
    out = stack.shell(
        "from extensions.models import Extension\nprint(list(Extension.objects.values_list('pk', flat=True)))"
    )
    return set(json.loads(out.strip().splitlines()[-1]))


def write_batch(stack: Stack, n: int) -> None:
    stack.shell(
        "from extensions.models import Extension\n"
        f"Extension.objects.bulk_create([Extension(extension_number=str({70000 + n * BATCH} + i), name=f'Batch {n}',"
        f" secret='Strong-secret-123') for i in range({BATCH})])"
    )


async def start_clients(stack: Stack, servers: list[Server], count: int) -> list[Client]:
    token = stack.login(servers[0])
    clients = []
    for i in range(count):
        # Half start on each server; each falls back to the other.
        order = servers if i % 2 == 0 else servers[::-1]
        client = Client(stack, list(order), token)
        client.task = asyncio.create_task(client.run())
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 60)
    return clients


async def settle(clients: list[Client], expected: set[int], timeout: float = 60) -> None:
    """Until every client knows exactly the database's ids (or the timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and any(c.ids != expected for c in clients):
        await asyncio.sleep(0.2)
    for client in clients:
        client.task.cancel()
    await asyncio.gather(*(c.task for c in clients), return_exceptions=True)


def check(clients: list[Client], expected: set[int]) -> None:
    lost = {i: expected - c.ids for i, c in enumerate(clients) if expected - c.ids}
    phantom = {i: c.ids - expected for i, c in enumerate(clients) if c.ids - expected}
    assert not lost, f"{len(lost)} clients lost events, e.g. {next(iter(lost.items()))}"
    assert not phantom, f"{len(phantom)} clients believe in deleted rows"
    for client in clients:
        if client.resyncs == 0:  # no resync: every event, in order, once
            assert client.seqs == list(range(client.seqs[0], client.seqs[0] + len(client.seqs)))


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


async def test_redis_restarted_mid_stream_loses_nothing_for_200_clients_on_two_servers(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    stack = Stack(tmp_path / "stack", redis_url=private_redis.url, env=MANY_SOCKETS)
    try:
        servers = [stack.start_server(), stack.start_server()]
        stack.start_worker()
        clients = await start_clients(stack, servers, 200)
        for n in range(10):  # 1,000 events
            if n == 5:
                private_redis.stop()
                await asyncio.sleep(1.0)
                private_redis.start()  # empty: the history and the counter are gone
            await asyncio.to_thread(write_batch, stack, n)
        expected = await asyncio.to_thread(database_ids, stack)
        assert len(expected) == 10 * BATCH
        await settle(clients, expected)
        check(clients, expected)
        assert any(c.resyncs for c in clients), "the restart should have forced resyncs"
    finally:
        stack.close()


async def test_a_killed_server_s_clients_resume_on_the_other_with_nothing_lost(tmp_path: Path) -> None:
    from tests.services import redis_url

    stack = Stack(tmp_path / "stack", redis_url=redis_url(), env=MANY_SOCKETS)
    try:
        servers = [stack.start_server(), stack.start_server()]
        clients = await start_clients(stack, servers, 100)
        for n in range(4):
            if n == 2:
                os.killpg(servers[0].process.pid, signal.SIGKILL)  # no goodbye to its clients
                servers[0].process.wait(10)
            await asyncio.to_thread(write_batch, stack, n)
        expected = await asyncio.to_thread(database_ids, stack)
        await settle(clients, expected)
        check(clients, expected)
        moved = [c for c in clients if c.servers[0] is servers[0]]
        assert moved and all(c.reconnects >= 1 and c.resyncs == 0 for c in moved), "resumed, not reloaded"
        assert all(c.resyncs == 0 for c in clients)
    finally:
        stack.close()
