"""End to end: real daphne processes, a real ``websockets`` client, SQLite or MariaDB,
with and without Redis, and the runworker poller."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.services import redis_url
from tests.stack import Stack

pytestmark = pytest.mark.services
TIMEOUT = 5.0


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["embedded", "redis"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = redis_url() if request.param == "redis" else None
    s = Stack(tmp_path_factory.mktemp(request.param), redis_url=url)
    s.server = s.start_server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("multi"), redis_url=redis_url())
    yield s
    s.close()


def connect(url: str, token: str | None = None, query: str = "", **kwargs: Any):
    protocols = ["rayanpbx", f"bearer.{token}"] if token else None
    return websockets.connect(url + query, subprotocols=protocols, open_timeout=TIMEOUT, **kwargs)


async def recv(ws: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, type_: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The next frame of ``type_``, skipping others (e.g. status_update)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await recv(ws, max(0.01, deadline - loop.time()))
        if frame["type"] == type_:
            return frame


async def nothing_arrives(ws: Any, wait: float = 0.7) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


async def closed_with(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as info:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    return info.value.rcvd.code


def extension(number: str, **fields: Any) -> dict[str, Any]:
    return {"extension_number": number, "name": f"Phone {number}", **fields}


# --- one server -------------------------------------------------------------------------


async def test_rest_writes_reach_the_socket_with_seed_payloads(stack: Stack) -> None:
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as ws:
        assert ws.subprotocol == "rayanpbx"
        welcome = await recv(ws)
        assert welcome["type"] == "welcome" and welcome["payload"]["user"]["username"] == "admin"

        status, created = stack.request(stack.server, "POST", "/api/extensions", extension("2101"), token)
        assert status == 201
        frame = await recv(ws)
        assert frame["type"] == "extension.created"
        assert frame["payload"] == {
            "id": created["id"],
            "extension_number": "2101",
            "name": "Phone 2101",
            "enabled": True,
        }
        assert frame["seq"] == welcome["seq"] + 1
        status_frame = await recv(ws)
        assert status_frame["type"] == "status_update" and status_frame["seq"] == frame["seq"] + 1

        stack.request(stack.server, "PATCH", f"/api/extensions/{created['id']}", {"name": "Lobby"}, token)
        assert (await recv(ws))["payload"]["name"] == "Lobby"
        stack.request(stack.server, "POST", f"/api/extensions/{created['id']}/toggle", None, token)
        toggled = await recv(ws)
        assert toggled["type"] == "extension.updated" and toggled["payload"]["enabled"] is False
        assert (await recv(ws))["type"] == "status_update"

        status, trunk = stack.request(stack.server, "POST", "/api/trunks", {"name": "up-1", "host": "10.1.1.1"}, token)
        frame = await recv(ws)
        assert frame["type"] == "trunk.created"
        assert frame["payload"] == {"id": trunk["id"], "name": "up-1", "host": "10.1.1.1", "enabled": True}
        await recv_until(ws, "status_update")

        stack.request(stack.server, "DELETE", f"/api/extensions/{created['id']}", None, token)
        deleted = await recv(ws)
        assert deleted == {
            **deleted,
            "type": "extension.deleted",
            "payload": {"id": created["id"], "extension_number": "2101"},
        }
        stack.request(stack.server, "DELETE", f"/api/trunks/{trunk['id']}", None, token)
        assert (await recv_until(ws, "trunk.deleted"))["payload"] == {"id": trunk["id"], "name": "up-1"}


async def test_refused_handshakes(stack: Stack) -> None:
    admin_id = stack.request(stack.server, "GET", "/api/auth/user", None, stack.login(stack.server))[1]["id"]
    cases = {
        "no token": (None, 4001),
        "malformed token": ("not-a-jwt", 4001),
        "forged token": (stack.token(admin_id, secret="someone-else-secret-" + "y" * 30), 4001),
        "expired token": (stack.token(admin_id, expires_in=-10), 4002),
        "unknown user": (stack.token(999999), 4003),
    }
    for name, (token, code) in cases.items():
        async with connect(stack.server.ws, token) as ws:
            assert await closed_with(ws) == code, name  # closed before any frame
    with pytest.raises(InvalidStatus) as info:
        async with connect(stack.server.ws, stack.login(stack.server), origin="http://evil.example.com"):
            pass
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        async with connect(stack.server.ws.replace("/ws", "/elsewhere"), stack.login(stack.server)):
            pass
    assert info.value.response.status_code == 403
    origin = f"http://127.0.0.1:{stack.server.port}"
    async with connect(stack.server.ws, stack.login(stack.server), origin=origin) as ws:
        assert (await recv(ws))["type"] == "welcome"


async def test_every_token_source_and_no_token_in_logs(stack: Stack) -> None:
    token = stack.login(stack.server)
    sources = [
        connect(stack.server.ws, token),
        websockets.connect(stack.server.ws, additional_headers={"Authorization": f"Bearer {token}"}),
        websockets.connect(stack.server.ws, additional_headers={"Cookie": f"rayanpbx_access={token}"}),
        websockets.connect(f"{stack.server.ws}?token={token}"),
    ]
    for source in sources:
        async with source as ws:
            assert (await recv(ws))["type"] == "welcome"
    assert token not in stack.server.log.read_text()
    assert token.split(".")[2] not in stack.server.log.read_text()


async def test_client_frames_are_never_relayed(stack: Stack) -> None:
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as sender, connect(stack.server.ws, token) as listener:
        await recv(sender), await recv(listener)
        forged = {
            "type": "extension.created",
            "payload": {"id": 1, "extension_number": "666", "name": "x", "enabled": True},
        }
        for frame in (json.dumps(forged), "not json", json.dumps([1, 2]), json.dumps({"type": "ping"})):
            await sender.send(frame)
        replies = [await recv(sender) for _ in range(4)]
        assert [r["type"] for r in replies] == ["error", "error", "error", "pong"]
        await nothing_arrives(listener)
        stack.request(stack.server, "POST", "/api/extensions", extension("2201"), token)
        assert (await recv(listener))["payload"]["extension_number"] == "2201"


async def test_oversized_frame_closes_with_1009(stack: Stack) -> None:
    async with connect(stack.server.ws, stack.login(stack.server), max_size=None) as ws:
        await recv(ws)
        await ws.send("x" * (64 * 1024 + 1))
        assert await closed_with(ws) == 1009


async def test_resume_after_disconnect_gets_exactly_the_missed_events(stack: Stack) -> None:
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as ws:
        last = (await recv(ws))["seq"]
    ids = [
        stack.request(stack.server, "POST", "/api/extensions", extension(f"23{n:02d}"), token)[1]["id"]
        for n in range(3)
    ]
    stack.request(stack.server, "DELETE", f"/api/extensions/{ids[0]}", None, token)
    async with connect(stack.server.ws, token, query=f"?last_seq={last}") as ws:
        assert (await recv(ws))["type"] == "welcome"
        replayed = [await recv(ws) for _ in range(8)]  # 3 x (created, status), deleted, status
        await nothing_arrives(ws, 0.5)
        assert [f["seq"] for f in replayed] == list(range(last + 1, last + 9))
        created = [f["payload"]["id"] for f in replayed if f["type"] == "extension.created"]
        assert created == ids and replayed[-2]["type"] == "extension.deleted"
        stack.request(stack.server, "PATCH", f"/api/extensions/{ids[1]}", {"name": "live again"}, token)
        live = await recv(ws)
        assert live["seq"] == last + 9 and live["payload"]["name"] == "live again"
    async with connect(stack.server.ws, token, query="?last_seq=1") as ws:
        await recv(ws)
        assert (await recv(ws))["type"] == "resync"


async def test_rolled_back_change_from_another_process_is_never_announced(stack: Stack) -> None:
    token = stack.login(stack.server)
    async with connect(stack.server.ws, token) as ws:
        await recv(ws)
        stack.shell(
            "from django.db import transaction\n"
            "from extensions.models import Extension\n"
            "try:\n"
            "    with transaction.atomic():\n"
            "        Extension.objects.create(extension_number='2401', name='ghost', secret='Ghost-secret-123')\n"
            "        raise RuntimeError\n"
            "except RuntimeError:\n"
            "    pass\n"
            "Extension.objects.create(extension_number='2402', name='real', secret='Real-secret-1234')\n"
        )
        # With Redis the shell publishes itself; embedded, the server's poller finds the row.
        frame = await recv_until(ws, "extension.created", timeout=TIMEOUT)
        assert frame["payload"]["extension_number"] == "2402"
        await recv_until(ws, "status_update")
        await nothing_arrives(ws, 1.0)


async def test_health_counts_sockets(stack: Stack) -> None:
    token = stack.login(stack.server)
    # The stack is shared: an earlier test's socket may close while this one counts, so a
    # count that moved by anything but our two sockets is measured again (at most 3 times).
    for attempt in range(3):
        before = stack.request(stack.server, "GET", "/health")[1]["clients"]
        async with connect(stack.server.ws, token) as a, connect(stack.server.ws, token) as b:
            await recv(a), await recv(b)
            await asyncio.sleep(0.5)
            code, health = stack.request(stack.server, "GET", "/health")
            after = stack.request(stack.server, "GET", "/health")[1]["clients"]
            if health["clients"] == after == before + 2 or attempt == 2:
                break
        await asyncio.sleep(1.0)
    assert (code, health["status"], health["clients"]) == (200, "healthy", before + 2)
    # This process's supervised tasks (no PBX link configured); the poller, the logs tail
    # and the traffic sampler run here only in the embedded default (with Redis, in
    # `runworker rayanpbx-poller`).
    expected = {"live-hub", "live-hub-reporter", "live-hub-control"} | (
        {"live-socket-limits"} if stack.redis_url else {"live-poller", "logs-tail", "traffic-sampler"}
    )
    assert set(health["tasks"]) == expected
    assert {task["state"] for task in health["tasks"].values()} == {"running"}


# --- the poller ---------------------------------------------------------------------------


def raw_insert_extension(stack: Stack, number: str) -> None:
    stack.sql(
        "INSERT INTO extensions_extension (extension_number, name, email, secret, enabled, context, transport,"
        " codecs, max_contacts, direct_media, qualify_frequency, caller_id, voicemail_enabled, notes,"
        " created_at, updated_at) VALUES (?, ?, '', 'Raw-secret-12345', 1, 'from-internal', 'udp', '[\"ulaw\"]',"
        " 1, 0, 60, '', 0, '', '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
        (number, f"raw {number}"),
    )


async def poller_sees_raw_sql(stack: Stack, ws: Any, number: str) -> None:
    raw_insert_extension(stack, number)
    created = await recv_until(ws, "extension.created", timeout=TIMEOUT)
    assert created["payload"]["extension_number"] == number and created["payload"]["name"] == f"raw {number}"
    status = await recv(ws)
    assert status["type"] == "status_update"
    stack.sql("UPDATE extensions_extension SET name = ? WHERE extension_number = ?", ("renamed raw", number))
    updated = await recv(ws)
    assert updated["type"] == "extension.updated" and updated["payload"]["name"] == "renamed raw"
    stack.sql("DELETE FROM extensions_extension WHERE extension_number = ?", (number,))
    deleted = await recv(ws)
    assert deleted["type"] == "extension.deleted" and deleted["payload"]["extension_number"] == number
    assert (await recv(ws))["type"] == "status_update"
    await nothing_arrives(ws, 1.2)  # more than two poll intervals: nothing announced twice


async def test_embedded_server_polls_for_outside_changes(tmp_path: Path) -> None:
    s = Stack(tmp_path)
    try:
        server = s.start_server()
        async with connect(server.ws, s.login(server)) as ws:
            await recv(ws)
            await asyncio.sleep(1.0)  # the first poll primes the state table
            await poller_sees_raw_sql(s, ws, "2501")
    finally:
        s.close()


async def test_two_runworkers_catch_raw_sql_once(redis_stack: Stack) -> None:
    server = redis_stack.start_server()
    workers = [redis_stack.start_worker(), redis_stack.start_worker()]
    try:
        async with connect(server.ws, redis_stack.login(server)) as ws:
            await recv(ws)
            await asyncio.sleep(2.5)  # workers start and prime
            assert all(w.poll() is None for w in workers)
            await poller_sees_raw_sql(redis_stack, ws, "2601")
            # A change through Django is announced once, never again by the pollers.
            token = redis_stack.login(server)
            redis_stack.request(server, "POST", "/api/extensions", extension("2602"), token)
            assert (await recv(ws))["type"] == "extension.created"
            assert (await recv(ws))["type"] == "status_update"
            await nothing_arrives(ws, 1.5)
    finally:
        for worker in workers:
            redis_stack.stop(worker)


def test_runworker_needs_redis(tmp_path: Path) -> None:
    result = Stack(tmp_path).manage("runworker", "rayanpbx-poller", check=False)
    assert result.returncode != 0 and "REDIS_URL" in result.stderr


# --- several processes ----------------------------------------------------------------------


async def test_two_servers_behave_as_one(redis_stack: Stack) -> None:
    a, b = redis_stack.start_server(), redis_stack.start_server()
    token = redis_stack.login(a)
    async with connect(a.ws, token) as on_a, connect(b.ws, token) as on_b:
        seq_a, seq_b = (await recv(on_a))["seq"], (await recv(on_b))["seq"]
        assert seq_a == seq_b
        status, created = redis_stack.request(a, "POST", "/api/extensions", extension("2701"), token)
        assert status == 201
        frame_a, frame_b = await recv(on_a), await recv(on_b)
        assert frame_a == frame_b and frame_a["payload"]["id"] == created["id"]
        redis_stack.request(b, "DELETE", f"/api/extensions/{created['id']}", None, token)
        assert (await recv_until(on_a, "extension.deleted"))["payload"]["id"] == created["id"]
        await asyncio.sleep(0.5)
        counts = {redis_stack.request(s, "GET", "/health")[1]["clients"] for s in (a, b)}
        assert counts == {2}
    # Resume on the other process: positions are shared.
    async with connect(b.ws, token, query=f"?last_seq={seq_a}") as ws:
        await recv(ws)
        replayed = [await recv(ws) for _ in range(4)]
        assert [f["type"] for f in replayed] == [
            "extension.created",
            "status_update",
            "extension.deleted",
            "status_update",
        ]


async def test_health_is_503_when_redis_is_unreachable(tmp_path: Path) -> None:
    s = Stack(tmp_path)
    s.env["REDIS_URL"] = "redis://127.0.0.1:1/0"
    try:
        server = s.start_server(healthy=False)
        status, body = s.request(server, "GET", "/health")
        assert status == 503 and "Redis" in body["reason"]
        # The API still answers: writes succeed even though events cannot be published.
        token = s.login(server)
        assert s.request(server, "POST", "/api/extensions", extension("2801"), token)[0] == 201
    finally:
        s.close()


async def test_health_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    s = Stack(tmp_path)
    s.env["DATABASE_URL"] = "sqlite:////nonexistent-dir/rayanpbx.sqlite3"
    try:
        server = s.start_server(healthy=False)
        assert s.request(server, "GET", "/health") == (503, {"status": "unhealthy", "reason": "database unreachable"})
        assert "Traceback" not in server.log.read_text()
    finally:
        s.close()


async def test_slow_reader_gets_every_event_in_order(stack: Stack) -> None:
    """A client that stops reading while a burst goes out (tiny receive buffer, so the
    server's writes go partial and queue) still gets every event, in order, once."""
    token = stack.login(stack.server)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", stack.server.port))
    async with connect(stack.server.ws, token, sock=sock, max_queue=1) as ws:
        start = (await recv(ws))["seq"]
        stack.shell(
            "from extensions.models import Extension\n"
            "Extension.objects.bulk_create([Extension(extension_number=str(50000 + n), name='n' * 100,"
            " secret='Strong-secret-123') for n in range(2000)])\n"
        )
        await asyncio.sleep(1.0)  # the burst piles up while this client does not read
        frames = [await recv(ws, timeout=30) for _ in range(2001)]
    assert [f["seq"] for f in frames] == list(range(start + 1, start + 2002))
    assert sum(f["type"] == "extension.created" for f in frames) == 2000 and frames[-1]["type"] == "status_update"
