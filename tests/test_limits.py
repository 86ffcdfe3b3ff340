"""Connection limits (live.limits) against running servers: per user (across processes on
Redis), per client address, per process; each refusal a close code with its reason, shown
by the page."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.chromium import chromium
from tests.services import redis_url
from tests.stack import ADMIN_PASSWORD, Stack
from tests.test_live_e2e import connect, recv
from tests.test_metrics import scrape, value

CLOSE_RATE, CLOSE_USER_SOCKETS, CLOSE_SERVER_FULL = 4029, 4030, 4031


async def refusal(url: str, token: str) -> tuple[int, str]:
    """Open a socket that must be refused: its close code and reason."""
    async with connect(url, token) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await recv(ws)
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest.fixture
def limited(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    stack = Stack(tmp_path, env=dict(request.param))
    try:
        stack.server = stack.start_server()
        yield stack
    finally:
        stack.close()


@pytest.mark.parametrize("limited", [{"LIVE_MAX_SOCKETS_PER_USER": "3"}], indirect=True)
async def test_a_user_past_the_per_user_limit_is_refused_with_4030_until_a_socket_closes(limited: Stack) -> None:
    token = limited.login(limited.server)
    url = limited.server.ws
    async with connect(url, token) as a, connect(url, token) as b, connect(url, token) as c:
        for ws in (a, b, c):
            assert (await recv(ws))["type"] == "welcome"
        code, reason = await refusal(url, token)
        assert code == CLOSE_USER_SOCKETS and "3 live connections" in reason
        text = (await asyncio.to_thread(scrape, limited.server))[1]  # counted by reason (rayanpbx.metrics)
        assert value(text, "rayanpbx_live_refused_total", reason="per_user") == 1
        # Another user is not affected.
        limited.shell(
            "from django.contrib.auth import get_user_model\n"
            "get_user_model().objects.create_user('other', password='Other-password-1234')"
        )
        async with connect(url, limited.login(limited.server, "other", "Other-password-1234")) as other:
            assert (await recv(other))["type"] == "welcome"
        await c.close()
        await asyncio.sleep(0.2)
        async with connect(url, token) as again:  # a slot is free again
            assert (await recv(again))["type"] == "welcome"


@pytest.mark.parametrize("limited", [{"LIVE_CONNECT_RATE": "2", "LIVE_CONNECT_BURST": "3"}], indirect=True)
async def test_connecting_too_fast_from_one_address_is_refused_with_4029(limited: Stack) -> None:
    token = limited.login(limited.server)
    url = limited.server.ws
    for _ in range(3):  # the burst
        async with connect(url, token) as ws:
            assert (await recv(ws))["type"] == "welcome"
    code, reason = await refusal(url, token)
    assert code == CLOSE_RATE and "too fast" in reason
    assert (
        value((await asyncio.to_thread(scrape, limited.server))[1], "rayanpbx_live_refused_total", reason="rate") == 1
    )
    await asyncio.sleep(0.6)  # refilled at 2/s
    async with connect(url, token) as ws:
        assert (await recv(ws))["type"] == "welcome"
    # The server itself is fine: HTTP answers and /health is healthy.
    status, health = limited.request(limited.server, "GET", "/health")
    assert status == 200 and health["status"] == "healthy"


@pytest.mark.parametrize("limited", [{"LIVE_MAX_SOCKETS": "2"}], indirect=True)
async def test_a_full_process_refuses_with_4031(limited: Stack) -> None:
    token = limited.login(limited.server)
    url = limited.server.ws
    async with connect(url, token) as a, connect(url, token) as b:
        await recv(a), await recv(b)
        code, reason = await refusal(url, token)
        assert code == CLOSE_SERVER_FULL and "maximum of 2 sockets" in reason


@pytest.mark.services
async def test_the_per_user_limit_holds_across_server_processes(tmp_path: Path) -> None:
    stack = Stack(tmp_path, redis_url=redis_url(), env={"LIVE_MAX_SOCKETS_PER_USER": "2"})
    try:
        a, b = stack.start_server(), stack.start_server()
        token = stack.login(a)
        async with connect(a.ws, token) as on_a, connect(b.ws, token) as on_b:
            await recv(on_a), await recv(on_b)
            code, _ = await refusal(b.ws, token)
            assert code == CLOSE_USER_SOCKETS
            code, _ = await refusal(a.ws, token)
            assert code == CLOSE_USER_SOCKETS
            await on_a.close()
            await asyncio.sleep(0.3)
            async with connect(b.ws, token) as again:
                assert (await recv(again))["type"] == "welcome"
    finally:
        stack.close()


def test_the_page_says_why_it_was_refused(tmp_path: Path) -> None:
    from playwright.sync_api import expect

    stack = Stack(tmp_path, env={"LIVE_MAX_SOCKETS_PER_USER": "1"})
    try:
        server = stack.start_server()
        with chromium() as browser:
            context = browser.new_context()
            first = context.new_page()
            first.goto(f"{server.http}/login/?next=/")
            first.fill("#id_username", "admin")
            first.fill("#id_password", ADMIN_PASSWORD)
            first.click("button[type=submit]")
            expect(first.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=10000)
            second = context.new_page()  # the same session: a second tab
            second.goto(f"{server.http}/extensions/")
            label = second.locator("#live-status .label")
            expect(label).to_contain_text("Refused: you have 1 live connections open", timeout=10000)
            expect(label).to_contain_text("close a tab")
            first.close()  # a tab closed: the second one's retry gets in
            expect(second.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=20000)
            context.close()
    finally:
        stack.close()
