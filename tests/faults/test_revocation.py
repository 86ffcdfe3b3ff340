"""Sockets closed when access ends, across processes: two daphne processes on Redis.

A browser-like client logs in through the real login page on server B and opens its
socket on server A; logging out on B closes it on A within a second (Channels' layer carries
the revocation between the processes). A user deactivated from a Django shell (a third
process) loses every socket on both servers within a second.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from tests.services import redis_url
from tests.stack import ADMIN_PASSWORD, Server, Stack
from tests.test_live_e2e import connect, recv

pytestmark = pytest.mark.services

CLOSE_FORBIDDEN = 4003


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[Stack, Server, Server]]:
    stack = Stack(tmp_path, redis_url=redis_url())
    try:
        yield stack, stack.start_server(), stack.start_server()
    finally:
        stack.close()


class Browser:
    """Cookies and CSRF as a browser keeps them, over urllib."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def log_in(self, username: str, password: str) -> None:
        page = self.opener.open(f"{self.server.http}/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
        self.opener.open(f"{self.server.http}/login/", form.encode(), timeout=10).read()
        assert self.cookie("sessionid")

    def log_out(self) -> None:
        request = urllib.request.Request(
            f"{self.server.http}/logout/", data=b"", headers={"X-CSRFToken": self.cookie("csrftoken")}
        )
        self.opener.open(request, timeout=10).read()


def session_socket(server: Server, browser: Browser) -> Any:
    cookies = "; ".join(f"{c.name}={c.value}" for c in browser.jar)
    return connect(server.ws, additional_headers={"Cookie": cookies})


async def closed_at(ws: Any, seconds: float) -> tuple[int, float]:
    """The close code, and the wall-clock time the close arrived."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), seconds)
    return closed.value.rcvd.code, time.time()


async def closed_within(ws: Any, seconds: float) -> tuple[int, float]:
    started = time.monotonic()
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), seconds)
    return closed.value.rcvd.code, time.monotonic() - started


async def test_logging_out_on_one_server_closes_that_session_on_the_other(two_servers) -> None:
    stack, a, b = two_servers
    browser = Browser(b)
    browser.log_in("admin", ADMIN_PASSWORD)
    token = stack.login(a)
    async with session_socket(a, browser) as tab, connect(a.ws, token) as script:
        assert (await recv(tab))["type"] == "welcome"
        await recv(script)
        browser.log_out()
        code, took = await closed_within(tab, 5)
        assert code == CLOSE_FORBIDDEN and took < 1.0, (code, took)
        await script.send('{"type": "ping"}')  # the admin's token socket stays
        assert (await recv(script))["type"] == "pong"


async def test_a_user_deactivated_from_a_shell_loses_every_socket_on_every_server(two_servers) -> None:
    stack, a, b = two_servers
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        "get_user_model().objects.create_user('operator', password='Operator-password-1234')"
    )
    token_a = stack.login(a, "operator", "Operator-password-1234")
    token_b = stack.login(b, "operator", "Operator-password-1234")
    admin = stack.login(a)
    async with connect(a.ws, token_a) as on_a, connect(b.ws, token_b) as on_b, connect(a.ws, admin) as bystander:
        for ws in (on_a, on_b, bystander):
            await recv(ws)
        watches = [asyncio.create_task(closed_at(ws, 15)) for ws in (on_a, on_b)]
        printed = await asyncio.to_thread(
            stack.shell,
            "import time\nfrom django.contrib.auth import get_user_model\n"
            "user = get_user_model().objects.get(username='operator')\n"
            "user.is_active = False\n"
            "user.save()\n"
            "print(time.time())",
        )
        saved = float(printed.strip().splitlines()[-1])
        for code, at in await asyncio.gather(*watches):
            assert code == CLOSE_FORBIDDEN and at - saved < 1.0, (code, at - saved)
        await bystander.send('{"type": "ping"}')
        assert (await recv(bystander))["type"] == "pong"


async def test_topics_cross_processes_and_a_demotion_in_a_shell_drops_logs_within_a_second(two_servers) -> None:
    """A topic message published in a third process reaches subscribers on both servers
    (Channels' layer); demoting the user in a shell unsubscribes them from ``logs`` within
    a second on both, and leaves ``presence``."""
    stack, a, b = two_servers
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        "get_user_model().objects.create_user('ops', password='Operator-password-1234', is_staff=True)"
    )
    sockets = [
        connect(server.ws, stack.login(server, "ops", "Operator-password-1234")) for server in (a, b)
    ]  # fmt: skip
    async with sockets[0] as on_a, sockets[1] as on_b:
        for ws in (on_a, on_b):
            await recv(ws)
            await ws.send('{"type": "subscribe", "topics": ["logs", "presence"]}')
            assert (await recv(ws))["payload"]["topics"] == ["logs", "presence"]
            assert (await recv(ws))["type"] == "presence.state"  # the current state, at once
        publish = "from live import topics\ntopics.publish_now('logs', 'log.lines', {'lines': [{'text': 'x'}]})\n"
        await asyncio.to_thread(stack.shell, publish)
        for ws in (on_a, on_b):
            got = await recv(ws)
            assert (got["topic"], got["payload"]) == ("logs", {"lines": [{"text": "x"}]}) and "seq" not in got
        printed = await asyncio.to_thread(
            stack.shell,
            "import time\nfrom django.contrib.auth import get_user_model\n"
            "user = get_user_model().objects.get(username='ops')\n"
            "user.is_staff = False\n"
            "user.save()\n"
            "print(time.time())",
        )
        saved = float(printed.strip().splitlines()[-1])
        for ws in (on_a, on_b):
            dropped = await recv(ws)
            assert dropped["type"] == "unsubscribed" and dropped["payload"]["topics"] == ["logs"]
            assert time.time() - saved < 1.5  # (both read after the shell returned)
            # No longer staff, so no longer in the staff audience (rayanpbx.audiences): the
            # page is told to reload what it holds.
            reload = await recv(ws)
            assert reload["type"] == "resync" and reload["payload"]["reload"] is True
        await asyncio.to_thread(stack.shell, publish)
        await asyncio.to_thread(
            stack.shell, "from live import topics\ntopics.publish_now('presence', 'presence.online', {'users': []})\n"
        )
        for ws in (on_a, on_b):
            assert (await recv(ws))["topic"] == "presence"  # the logs line never came
