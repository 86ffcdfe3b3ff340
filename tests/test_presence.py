"""Presence and typing (live.presence): who is online, what they edit, "alice is typing".

In-process sockets (channels' communicator, the consumer and hub of this process) for the
frames and their rules; two real daphne processes on Redis for presence across processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import override_settings
from rest_framework_simplejwt.tokens import AccessToken

from live import presence
from tests import test_consumer
from tests.conftest import bearer_client, make_user
from tests.faults import test_revocation
from tests.test_consumer import Sockets, quiet, recv_json, subscribe
from tests.test_live_e2e import connect
from tests.test_live_e2e import recv as recv_ws

pytestmark = pytest.mark.django_db(transaction=True)

# The in-process sockets and the bus of tests/test_consumer.py, as fixtures of this module too.
isolated_bus, live_stream, sockets = test_consumer.isolated_bus, test_consumer.live_stream, test_consumer.sockets

TAB_A, TAB_B, TAB_C = "tab-aaaaaaaa", "tab-bbbbbbbb", "tab-cccccccc"


@pytest.fixture(autouse=True)
def fresh_presence(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A presence registry of this test's own (its task lives on the test's event loop),
    a short grace period, and on Redis this module's key prefix (``isolated_bus``)."""
    monkeypatch.setattr(presence, "_presence", None)
    monkeypatch.setattr(presence, "GRACE", 0.4)
    if settings.REDIS_URL:  # the previous test's registry (another "process") left its field
        import redis

        with redis.Redis.from_url(settings.REDIS_URL) as client:
            client.delete(*(f"{settings.REDIS_KEY_PREFIX}presence{suffix}" for suffix in ("", ":v", ":s")))
    yield
    registry = presence._presence
    if registry is not None and registry._task is not None:
        registry._task.cancel()


async def person(name: str, *, staff: bool = False, superuser: bool = False) -> tuple[Any, str]:
    def make() -> Any:
        user = make_user(staff=staff)
        user.username, user.is_superuser = name, superuser
        user.save()
        return user

    user = await database_sync_to_async(make)()
    return user, str(AccessToken.for_user(user))


async def next_state(comm: Any, timeout: float = 3.0) -> dict[str, Any]:
    """The next ``presence.state`` frame's payload (other frames skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await recv_json(comm, max(0.05, deadline - time.monotonic()))
        if frame.get("topic") == "presence" and frame["type"] == "presence.state":
            return frame["payload"]


async def state_where(comm: Any, check: Any, timeout: float = 3.0) -> dict[str, Any]:
    """States until one passes ``check`` (each state is whole: the last one counts)."""
    deadline = time.monotonic() + timeout
    while True:
        state = await next_state(comm, max(0.05, deadline - time.monotonic()))
        if check(state):
            return state


def users(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {user["username"]: user for user in state["users"]}


async def report(comm: Any, tab: str, page: str, editing: str | None = None) -> None:
    await comm.send_json_to({"type": "presence", "tab": tab, "page": page, "editing": editing})


async def test_who_is_online_in_how_many_tabs_and_what_they_edit(sockets: Sockets) -> None:
    _, alice_token = await person("alice", staff=True)
    _, bob_token = await person("bob")
    bob, _ = await sockets.join(bob_token)
    assert (await subscribe(bob, "presence"))["type"] == "subscribed"
    first = await next_state(bob)  # the state at once on subscribe
    assert first["users"] == []

    tab1, _ = await sockets.join(alice_token)
    tab2, _ = await sockets.join(alice_token)
    await report(tab1, TAB_A, "extensions")
    await report(tab2, TAB_B, "console")
    state = await state_where(bob, lambda s: users(s).get("alice", {}).get("tabs") == 2)
    assert users(state)["alice"] == {"username": "alice", "tabs": 2, "pages": ["console", "extensions"], "editing": []}
    assert state["version"] > first["version"]

    await report(tab1, TAB_A, "extensions", "extension:101")
    state = await state_where(bob, lambda s: users(s)["alice"]["editing"])
    assert users(state)["alice"]["editing"] == ["extension:101"]
    # Only people who reported are shown: bob's socket never did.
    assert "bob" not in users(state)

    await report(tab1, TAB_A, "extensions", None)
    state = await state_where(bob, lambda s: not users(s)["alice"]["editing"])
    await tab2.disconnect()
    state = await state_where(bob, lambda s: users(s)["alice"]["tabs"] == 1)
    assert users(state)["alice"]["pages"] == ["extensions"]


async def test_a_reconnect_within_the_grace_period_does_not_flicker(sockets: Sockets) -> None:
    _, alice_token = await person("alice")
    _, bob_token = await person("bob")
    bob, _ = await sockets.join(bob_token)
    await subscribe(bob, "presence")
    await next_state(bob)
    old, _ = await sockets.join(alice_token)
    await report(old, TAB_A, "dashboard")
    await state_where(bob, lambda s: "alice" in users(s))

    await old.disconnect()
    new, _ = await sockets.join(alice_token)
    await report(new, TAB_A, "dashboard")  # the same tab, as live.js does after a reconnect
    # Past the grace period, alice never left and is still one tab.
    deadline = time.monotonic() + presence.GRACE + 0.6
    while (left := deadline - time.monotonic()) > 0:
        if await bob.receive_nothing(left):  # (a timed-out receive would end bob's consumer)
            break
        state = await next_state(bob)
        assert users(state).get("alice", {}).get("tabs") == 1, state

    # Closed for good: gone once the grace period is over.
    closed_at = time.monotonic()
    await new.disconnect()
    state = await state_where(bob, lambda s: "alice" not in users(s))
    assert time.monotonic() - closed_at >= presence.GRACE - 0.05


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "presence", "page": "extensions"},
        {"type": "presence", "tab": "short", "page": "extensions"},
        {"type": "presence", "tab": TAB_A, "page": "<script>"},
        {"type": "presence", "tab": TAB_A, "page": "extensions", "editing": "extension:1; drop"},
        {"type": "presence", "tab": TAB_A, "page": "extensions", "editing": ["extension:1"]},
    ],
)
async def test_a_malformed_presence_frame_gets_an_error_and_is_not_shown(
    sockets: Sockets, frame: dict[str, Any]
) -> None:
    _, token = await person("alice")
    comm, _ = await sockets.join(token)
    await comm.send_json_to(frame)
    error = await recv_json(comm)
    assert error["type"] == "error" and error["payload"]["code"] == "malformed", error
    assert presence.get_presence().entries == {}


async def test_typing_reaches_console_subscribers_once_per_half_second(sockets: Sockets) -> None:
    _, alice_token = await person("alice", staff=True, superuser=True)
    _, bob_token = await person("bob", staff=True, superuser=True)
    with override_settings(PBX_CONSOLE=True):
        alice, _ = await sockets.join(alice_token)
        bob, _ = await sockets.join(bob_token)
        # Not subscribed to the console: refused, and nothing is published.
        await alice.send_json_to({"type": "typing", "topic": "console"})
        assert (await recv_json(alice))["payload"]["code"] == "not_subscribed"
        assert (await subscribe(bob, "console"))["type"] == "subscribed"
        assert await quiet(bob)
        assert (await subscribe(alice, "console"))["type"] == "subscribed"
        for _ in range(3):  # a burst of keystrokes: one message
            await alice.send_json_to({"type": "typing", "topic": "console"})
        got = await recv_json(bob)
        assert (got["topic"], got["type"], got["payload"]) == ("console", "console.typing", {"user": "alice"})
        assert await quiet(bob, 0.3)
        await asyncio.sleep(0.25)
        await alice.send_json_to({"type": "typing", "topic": "console"})
        assert (await recv_json(bob))["payload"] == {"user": "alice"}


def test_rest_presence_needs_a_signed_in_user(anon_client, reader_user) -> None:
    assert anon_client.get("/api/presence").status_code == 401
    answer = bearer_client(reader_user).get("/api/presence")
    assert answer.status_code == 200 and set(answer.json()) == {"version", "users"}


# --- across processes --------------------------------------------------------------------


two_servers = test_revocation.two_servers  # two daphne processes on Redis


async def _next_state_ws(ws: Any, check: Any, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = await recv_ws(ws, max(0.05, deadline - time.monotonic()))
        if frame.get("type") == "presence.state" and check(frame["payload"]):
            return frame["payload"]


@pytest.mark.services
async def test_presence_is_one_state_across_server_processes(two_servers) -> None:
    """Alice on server A and bob on server B: both see both, with tabs counted across the
    processes, and REST on either server answers the same state."""
    stack, a, b = two_servers
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        "for name in ('alice', 'bob'):\n"
        "    get_user_model().objects.create_user(name, password='Presence-password-1234')"
    )
    tokens = {name: stack.login(a, name, "Presence-password-1234") for name in ("alice", "bob")}
    async with (
        connect(a.ws, tokens["alice"]) as alice_a,
        connect(b.ws, tokens["alice"]) as alice_b,
        connect(b.ws, tokens["bob"]) as bob_b,
    ):
        for ws, tab, page in ((alice_a, TAB_A, "extensions"), (alice_b, TAB_B, "dashboard"), (bob_b, TAB_C, "calls")):
            await recv_ws(ws)  # welcome
            await ws.send(f'{{"type": "presence", "tab": "{tab}", "page": "{page}", "editing": null}}')
        await alice_a.send('{"type": "subscribe", "topics": ["presence"]}')
        both = lambda s: users(s).get("alice", {}).get("tabs") == 2 and "bob" in users(s)  # noqa: E731
        state = await _next_state_ws(alice_a, both)
        assert users(state)["alice"]["pages"] == ["dashboard", "extensions"]
        assert users(state)["bob"] == {"username": "bob", "tabs": 1, "pages": ["calls"], "editing": []}
        await alice_b.close()
        # (the grace period, then B's process publishes alice's one remaining tab)
        state = await _next_state_ws(alice_a, lambda s: users(s).get("alice", {}).get("tabs") == 1, timeout=15)
        assert users(state)["alice"]["pages"] == ["extensions"]
    # Every socket closed: after the grace period (5 s here) REST on either server says so.
    deadline = time.monotonic() + 15
    while True:
        answers = [
            await asyncio.to_thread(stack.request, s, "GET", "/api/presence", token=tokens["bob"]) for s in (a, b)
        ]
        assert all(status == 200 for status, _ in answers), answers
        if all(body["users"] == [] for _, body in answers) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert [body["users"] for _, body in answers] == [[], []]
    assert min(body["version"] for _, body in answers) > state["version"]
