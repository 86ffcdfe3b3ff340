"""The no-lost-events guarantee when Redis misbehaves.

Each test starts its own redis-server (so killing or restarting it disturbs nobody else),
or puts a fault proxy (``tests.faults.proxy``) between RayanPBX and Redis, with real
daphne processes and real ``websockets`` clients.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.faults.proxy import FaultProxy
from tests.services import missing, redis_url
from tests.stack import ROOT, Stack, free_port
from tests.test_live_e2e import connect, extension, nothing_arrives, recv, recv_until

pytestmark = pytest.mark.services


class PrivateRedis:
    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server", "the binary is not installed")
        self.binary, self.port, self.tmp = binary, free_port(), tmp
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


async def test_lost_subscription_is_repaired_from_history(private_redis: PrivateRedis, tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", redis_url=private_redis.url)
    try:
        server = stack.start_server()
        token = stack.login(server)
        async with connect(server.ws, token) as ws:
            start = (await recv(ws))["seq"]
            # Cut the server's subscription, and publish while it is gone.
            redis.Redis.from_url(private_redis.url).client_kill_filter(_type="pubsub")
            status, created = stack.request(server, "POST", "/api/extensions", extension("4101"), token)
            assert status == 201
            frames = [await recv(ws, timeout=10) for _ in range(2)]
            assert [f["type"] for f in frames] == ["extension.created", "status_update"]
            assert [f["seq"] for f in frames] == [start + 1, start + 2]
            assert frames[0]["payload"]["id"] == created["id"]
            await nothing_arrives(ws)
    finally:
        stack.close()


async def test_redis_restart_means_resync_then_streams_on(private_redis: PrivateRedis, tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack", redis_url=private_redis.url)
    try:
        server = stack.start_server()
        worker = stack.start_worker()
        token = stack.login(server)
        async with connect(server.ws, token) as ws:
            await recv(ws)
            private_redis.stop()
            # The API keeps working while Redis is down; the event cannot be published.
            status, _ = stack.request(server, "POST", "/api/extensions", extension("4201"), token)
            assert status == 201
            private_redis.start()  # empty: counter and history are gone
            resync = await recv_until(ws, "resync", timeout=15)
            # After the resync the stream goes on, numbered from the resync frame.
            await asyncio.sleep(1.0)  # the worker re-primes its state against the new Redis
            assert worker.poll() is None
            stack.request(server, "POST", "/api/extensions", extension("4202"), token)
            live = await recv_until(ws, "extension.created", timeout=10)
            assert live["payload"]["extension_number"] == "4202" and live["seq"] > resync["seq"]
        # The server's own log says the bus was down once, not once per event or socket.
        log = server.log.read_text()
        assert log.count("Live event bus unavailable") <= 2
    finally:
        stack.close()


# --- a dead subscription, a blackholed Redis ------------------------------------------------


def shell_direct(stack: Stack, code: str, redis: str) -> None:
    """A Django shell of this deployment that reaches Redis directly, not through the proxy."""
    env = {**stack.env, "REDIS_URL": redis}
    subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=60)  # fmt: skip


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Stack, FaultProxy, str]]:
    """A server whose Redis is reached through a fault proxy, and the direct Redis URL."""
    direct = redis_url()
    port = int(direct.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultProxy(port)
    stack = Stack(tmp_path / "stack", redis_url=f"redis://127.0.0.1:{proxy.port}/0")
    try:
        stack.server = stack.start_server()
        yield stack, proxy, direct
    finally:
        proxy.restore()
        stack.close()
        proxy.close()


async def test_a_half_open_subscription_is_noticed_and_repaired(proxied) -> None:
    stack, proxy, direct = proxied
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as ws:
        start = (await recv(ws))["seq"]
        # Every connection the server has to Redis goes silent without closing; new ones work.
        proxy.freeze_existing()
        shell_direct(stack, "from extensions.models import Extension\n"
                     "Extension.objects.create(extension_number='4301', name='After the cut')", direct)  # fmt: skip
        # Noticed within 30 s (a ping unanswered), resubscribed, repaired from the history.
        frames = [await recv(ws, timeout=30) for _ in range(2)]
        assert [f["type"] for f in frames] == ["extension.created", "status_update"]
        assert [f["seq"] for f in frames] == [start + 1, start + 2]
    assert "Live event bus unavailable (subscribe)" in stack.server.log.read_text()


async def test_a_blackholed_redis_costs_a_write_under_2_s_and_changes_arrive_after(proxied) -> None:
    stack, proxy, _ = proxied
    worker = stack.start_worker()  # the poller: it announces what could not be published
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as ws:
        await recv(ws)
        await asyncio.sleep(1.5)  # the worker's first poll primes its state
        proxy.blackhole()
        started = time.monotonic()
        status, created = stack.request(stack.server, "POST", "/api/extensions", extension("4401"), token)
        took = time.monotonic() - started
        assert status == 201 and took < 2.0, (status, took)
        await asyncio.sleep(10 - took)
        proxy.restore()
        returned = time.monotonic()
        frame = await recv_until(ws, "extension.created", timeout=15)
        assert frame["payload"]["id"] == created["id"]
        assert time.monotonic() - returned < 10
        assert worker.poll() is None
