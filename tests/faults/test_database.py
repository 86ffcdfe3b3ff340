"""MariaDB stopped: the API answers 503 JSON without a trace, the pages a 503 page, /health
says why, and after MariaDB returns everything works again within 5 s, nothing restarted.

Always against MariaDB (whatever ``DATABASE_URL`` says): a fresh database on the shared
server, reached by the deployment through ``OutageProxy`` (``tests/faults/db_outage.py``),
whose ``stop()`` refuses new connections and breaks the open ones, which is all a client
can see of a stopped server. One embedded ``manage.py serve`` (its poller runs inside it).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from websockets.exceptions import ConnectionClosed

from tests.faults.db_outage import OutageProxy
from tests.faults.test_revocation import Browser
from tests.services import missing, tcp_reachable
from tests.stack import ADMIN_PASSWORD, Server, Stack
from tests.test_live_e2e import connect, recv, recv_until

pytestmark = pytest.mark.services

#: How long MariaDB stays away. The issue asks for 30 s; 10 s keeps the fault suite well
#: under its 5-minute budget. Nothing in the behaviour depends on the length: every probe
#: below is repeated through the whole outage, and the poller and the connections' health
#: checks retry on every request or interval, not on a timer that a longer outage could
#: outlast (set RAYANPBX_DB_OUTAGE=30 to run the issue's full length).
OUTAGE_SECONDS = float(os.environ.get("RAYANPBX_DB_OUTAGE", "10"))
#: After MariaDB returns, everything works again within this.
RECOVERY_SECONDS = 5.0
#: A socket that the server closes during an outage must say why with one of these
#: (docs/live-events.md): 4011 a history read failed, 4013 try again later.
OUTAGE_CLOSE_CODES = {4011, 4013}


def mariadb() -> tuple[str, int, str, str | None]:
    """The MariaDB server to use: DATABASE_URL's when it is MySQL, else 127.0.0.1:3306 as root."""
    url = os.environ.get("DATABASE_URL", "")
    parsed = urlparse(url) if url.startswith("mysql") else urlparse("mysql://root@127.0.0.1:3306/")
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 3306
    if not tcp_reachable(host, port):
        missing("MariaDB", f"nothing listens at {host}:{port} (set DATABASE_URL)")
    return host, port, parsed.username or "root", parsed.password


def run_sql(statement: str) -> None:
    import MySQLdb

    host, port, user, password = mariadb()
    connection = MySQLdb.connect(host=host, port=port, user=user, **({"password": password} if password else {}))
    try:
        connection.cursor().execute(statement)
    finally:
        connection.close()


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server, OutageProxy]]:
    """One deployment for this file's tests (each restores MariaDB before it ends)."""
    pytest.importorskip("MySQLdb")
    host, port, user, password = mariadb()
    name = f"rayanpbx_fault_{uuid.uuid4().hex[:8]}"
    run_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    proxy = OutageProxy(port, host)
    credentials = user + (f":{password}" if password else "")
    stack = None
    try:
        stack = Stack(
            tmp_path_factory.mktemp("mariadb-outage"),
            env={"DATABASE_URL": f"mysql://{credentials}@127.0.0.1:{proxy.port}/{name}"},
        )
        yield stack, stack.start_server(), proxy
    finally:
        if stack is not None:
            stack.close()
        proxy.close()
        run_sql(f"DROP DATABASE IF EXISTS {name}")


def http(url: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None, opener=None):
    """(status, content type, body text) of one request, whatever its status."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with (opener or urllib.request.build_opener()).open(request, timeout=10) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def assert_api_503(status: int, content_type: str, text: str) -> None:
    assert status == 503, (status, text[:500])
    assert content_type.startswith("application/json"), (content_type, text[:500])
    body = json.loads(text)
    assert body["error"] == "database_unavailable" and body["detail"], body
    assert "Traceback" not in text and "OperationalError" not in text and "File " not in text


async def test_mariadb_stopped_then_back(outage_stack) -> None:
    stack, server, proxy = outage_stack
    token = stack.login(server)
    bearer = {"Authorization": f"Bearer {token}"}
    browser = Browser(server)
    browser.log_in("admin", ADMIN_PASSWORD)
    pid = server.process.pid
    before = {"extension_number": "3100", "name": "Before"}
    assert stack.request(server, "POST", "/api/extensions", before, token)[0] == 201

    async with connect(server.ws, token) as ws:
        assert (await recv(ws))["type"] == "welcome"
        await asyncio.sleep(0.2)
        while True:  # what the first write said
            try:
                await recv(ws, 0.5)
            except TimeoutError:
                break
        proxy.stop()
        stopped = time.monotonic()
        socket_closed: int | None = None
        rounds = 0
        while time.monotonic() - stopped < OUTAGE_SECONDS:
            rounds += 1
            assert_api_503(*http(server.http + "/api/extensions", headers=bearer))
            number = f"31{rounds:02d}"
            assert_api_503(
                *http(server.http + "/api/extensions", "POST", {"extension_number": number, "name": "During"}, bearer)
            )
            status, content_type, text = http(server.http + "/", opener=browser.opener)
            assert status == 503, (status, text[:500])
            assert content_type.startswith("text/html") and "Traceback" not in text
            assert "database" in text.lower()
            status, _, text = http(server.http + "/health")
            assert (status, json.loads(text)) == (503, {"status": "unhealthy", "reason": "database unreachable"})
            if socket_closed is None:
                try:
                    await ws.send(json.dumps({"type": "ping"}))
                    assert (await recv_until(ws, "pong"))["type"] == "pong"
                except ConnectionClosed as exc:
                    socket_closed = exc.rcvd.code if exc.rcvd else None
                    assert socket_closed in OUTAGE_CLOSE_CODES, socket_closed
            await asyncio.sleep(0.5)
        assert rounds >= 3

        proxy.start()
        back = time.monotonic()
        while True:
            status, created = stack.request(
                server, "POST", "/api/extensions", {"extension_number": "3199", "name": "After"}, token
            )
            if status == 201:
                break
            assert time.monotonic() - back < RECOVERY_SECONDS, (status, created)
            await asyncio.sleep(0.2)
        assert socket_closed is None, f"the socket was closed ({socket_closed}) although it needs no database"
        frame = await recv_until(ws, "extension.created", RECOVERY_SECONDS - (time.monotonic() - back))
        assert frame["payload"]["extension_number"] == "3199"
        assert http(server.http + "/", opener=browser.opener)[0] == 200
        assert stack.request(server, "GET", "/api/extensions", None, token)[0] == 200
        while (status := http(server.http + "/health")[0]) != 200:
            assert time.monotonic() - back < RECOVERY_SECONDS, "health still failing"
            await asyncio.sleep(0.2)
        assert time.monotonic() - back < RECOVERY_SECONDS

    assert server.process.poll() is None and server.process.pid == pid  # nothing restarted
    log = server.log.read_text()
    assert "Traceback" not in log, log[-4000:]


async def test_a_socket_opened_while_the_database_is_away_is_told_to_retry(outage_stack) -> None:
    stack, server, proxy = outage_stack
    token = stack.login(server)
    proxy.stop()
    try:
        async with connect(server.ws, token) as ws:
            with pytest.raises(ConnectionClosed) as refused:
                await recv(ws)
            assert refused.value.rcvd.code in OUTAGE_CLOSE_CODES, refused.value.rcvd
    finally:
        proxy.start()
    assert "Traceback" not in server.log.read_text()


# --- in process: the same answers, without MariaDB (run on SQLite too) ---------------------


@pytest.fixture
def database_away(monkeypatch: pytest.MonkeyPatch):
    """From now on every query fails as with a stopped server."""
    from django.db import OperationalError
    from django.db.models.sql import compiler

    def gone(*args: Any, **kwargs: Any) -> None:
        raise OperationalError(2002, "Can't connect to server on '127.0.0.1' (111)")

    return lambda: monkeypatch.setattr(compiler.SQLCompiler, "execute_sql", gone)


@pytest.mark.django_db
def test_api_and_pages_answer_503_in_process(staff_client, staff_user, client, database_away) -> None:
    client.force_login(staff_user)
    database_away()
    for response in (
        staff_client.get("/api/extensions"),
        staff_client.post("/api/extensions", {"extension_number": "3300", "name": "x"}, format="json"),
        staff_client.get("/api/auth/user"),
    ):
        assert response.status_code == 503 and response["Retry-After"] == "5"
        assert response.json() == {"error": "database_unavailable", "detail": response.json()["detail"]}
    page = client.get("/")
    assert page.status_code == 503 and b"temporarily unavailable" in page.content
