"""The live WebSocket consumer (``/ws``), driven through the real ASGI application.

Every test talks to ``rayanpbx.asgi.application`` with channels' ``WebsocketCommunicator``
(origin guard, session and credentials middleware, router, consumer, the process's hub and
the event bus), against a real database: transactional, because the consumer reads users
and the publisher reads counts from other threads. Changes are made through the ORM, so
events travel the real path: signal, outbox, publisher, bus, hub, socket.

The bus is the in-process one by default, Redis when ``REDIS_URL`` is set; this module
gives it its own key prefix so that nothing else publishing to the same Redis can slip
frames into the exact sequences asserted here.

What is checked, from the WebSocket contract: the envelope of every frame; each source of
the access token and their order; the Django session fallback; the origin check; the close
codes 4001/4002/4003 (with nothing sent before them); ``welcome``; ``ping``; ``error`` frames
that leave the socket open; 1009 for frames over 64 KiB; 4008 for flooding; in-band token
renewal and expiry; that client frames reach no other client; live events and their
payloads (never a secret); ``seq`` increasing by one; resume (query and frame), resync, and
the hand-over from replay to the live stream without loss or duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

import live.bus
import live.hub
from extensions.models import Extension
from live import poller
from live.hub import get_hub
from rayanpbx.asgi import application
from tests.conftest import make_user
from tests.services import redis_url

pytestmark = pytest.mark.django_db(transaction=True)

#: The contract's numbers (not read from the code under test).
FRAME_LIMIT = 64 * 1024
RATE_BURST, RATE_PER_SECOND = 30, 10
SUBPROTOCOL = "rayanpbx"
TOKEN_COOKIE = "rayanpbx_access"
CLOSE_NO_TOKEN, CLOSE_EXPIRED, CLOSE_FORBIDDEN = 4001, 4002, 4003
#: 1009 for an oversized frame; 4008 for flooding (autobahn refuses to send 1008: see docs/live-events.md).
CLOSE_TOO_BIG, CLOSE_FLOOD = 1009, 4008
ENVELOPE = {"type", "payload", "timestamp", "seq"}
#: The SIP secret of every extension made here; it must never appear in a frame.
SIP_SECRET = uuid.uuid4().hex
#: How long to wait for a frame that should come (generous: it normally takes milliseconds).
TIMEOUT = 3.0
#: How long to watch for a frame that should not come.
QUIET = 0.3

Frame = dict[str, Any]


# --- the bus and the hub ----------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def isolated_bus() -> Iterator[None]:
    """A bus of this module's own: fresh history and state, and on Redis its own key prefix."""
    if settings.REDIS_URL:
        redis_url()  # skip (or fail under REQUIRE_SERVICES=1) when Redis is down
    prefix = f"rayanpbx-test-{uuid.uuid4().hex[:8]}:"
    # A cheap password hasher: every test makes users, and PBKDF2 would dominate the runtime.
    fast = override_settings(
        REDIS_KEY_PREFIX=prefix, PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]
    )
    with fast, pytest.MonkeyPatch.context() as patch:
        patch.setattr(live.bus, "_bus", None)
        patch.setattr(live.hub, "_hub", None)
        yield
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


@pytest.fixture(autouse=True)
async def live_stream(transactional_db: None, isolated_bus: None) -> AsyncIterator[None]:
    """Bring the bus in line with the database first; stop the hub after the test.

    The previous test's rows were flushed by the test runner, which sends no signals: one
    poll publishes their removal now, before any socket opens, so no stale event can land
    in this test's frames. The hub lives on the test's event loop; stopping it with the
    loop keeps nothing of it running into the next test.
    """
    await database_sync_to_async(poller.poll_once)()
    yield
    await get_hub().stop()


# --- sockets ----------------------------------------------------------------------------------


def check_envelope(text: str) -> Frame:
    """Parse one text frame and check the envelope every server frame has."""
    frame = json.loads(text)
    assert isinstance(frame, dict) and set(frame) == ENVELOPE, text
    assert isinstance(frame["type"], str) and isinstance(frame["payload"], dict), text
    assert isinstance(frame["seq"], int) and not isinstance(frame["seq"], bool), text
    stamp = frame["timestamp"]
    assert isinstance(stamp, str) and stamp.endswith(("Z", "+00:00")), text
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).utcoffset() == timedelta(0), text
    assert "secret" not in text.lower() and SIP_SECRET not in text, text
    return frame


async def recv_text(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> str:
    message = await comm.receive_output(timeout)
    assert message["type"] == "websocket.send", f"expected a frame, got {message}"
    assert "bytes" not in message and isinstance(message.get("text"), str), message
    check_envelope(message["text"])
    return message["text"]


async def recv(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> Frame:
    """The next message, which must be a text frame with the envelope."""
    return json.loads(await recv_text(comm, timeout))


async def recv_many(comm: WebsocketCommunicator, count: int) -> list[Frame]:
    return [await recv(comm) for _ in range(count)]


async def expect_close(comm: WebsocketCommunicator, code: int, timeout: float = TIMEOUT) -> None:
    """The next message closes the socket with ``code`` (so no frame came before it)."""
    message = await comm.receive_output(timeout)
    assert message == {"type": "websocket.close", "code": code}


async def quiet(comm: WebsocketCommunicator, seconds: float = QUIET) -> bool:
    """Nothing at all (no frame, no close) arrives for ``seconds``."""
    return await comm.receive_nothing(timeout=seconds)


class Sockets:
    """Opens communicators to ``/ws`` and disconnects every one of them at the end."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []

    def new(
        self,
        path: str = "/ws",
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        subprotocols: list[str] | None = None,
        factory: Callable[..., WebsocketCommunicator] = WebsocketCommunicator,
    ) -> WebsocketCommunicator:
        comm = factory(application, path, headers=headers or [], subprotocols=subprotocols or [])
        self.opened.append(comm)
        return comm

    async def join(self, token: str, query: str = "", **kwargs: Any) -> tuple[WebsocketCommunicator, Frame]:
        """Connect with the token as the browser does (subprotocol); return the welcome."""
        comm = self.new(f"/ws?{query}" if query else "/ws", subprotocols=[SUBPROTOCOL, f"bearer.{token}"], **kwargs)
        connected, subprotocol = await comm.connect(TIMEOUT)
        assert connected and subprotocol == SUBPROTOCOL
        welcome = await recv(comm)
        assert welcome["type"] == "welcome", welcome
        return comm, welcome

    async def close_all(self) -> None:
        for comm in self.opened:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await comm.disconnect()


@pytest.fixture
async def sockets(live_stream: None) -> AsyncIterator[Sockets]:
    pool = Sockets()
    yield pool
    await pool.close_all()


# --- users, tokens and extensions ------------------------------------------------------------


@pytest.fixture
def user(transactional_db: None) -> Any:
    return make_user(staff=True)


@pytest.fixture
def token(user: Any) -> str:
    return str(AccessToken.for_user(user))


def access(user: Any, lifetime: timedelta | None = None) -> AccessToken:
    """An access token for ``user``; ``lifetime`` moves its expiry (negative: expired)."""
    token = AccessToken.for_user(user)
    if lifetime is not None:
        token.set_exp(lifetime=lifetime)
    return token


def forged(user: Any, *, expired: bool = False) -> str:
    """A well-formed token for ``user`` signed with a key the server does not have."""
    payload = dict(access(user, timedelta(seconds=-5) if expired else None).payload)
    return jwt.encode(payload, "not-the-server-key-" + "x" * 32, algorithm="HS256")


def unsigned(user: Any) -> str:
    """A token for ``user`` that claims no signature at all (``alg: none``)."""
    return jwt.encode(dict(access(user).payload), None, algorithm="none")


def extension_payload(ext: Extension) -> dict[str, Any]:
    return {"id": ext.pk, "extension_number": ext.extension_number, "name": ext.name, "enabled": ext.enabled}


@database_sync_to_async
def create_extension(number: str, *, enabled: bool = True) -> Extension:
    return Extension.objects.create(extension_number=number, name=f"Desk {number}", secret=SIP_SECRET, enabled=enabled)


@database_sync_to_async
def update_extension(ext: Extension, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(ext, name, value)
    ext.save()


@database_sync_to_async
def delete_extension(ext: Extension) -> None:
    ext.delete()


@database_sync_to_async
def counts() -> dict[str, int]:
    return {
        "extensions": Extension.objects.filter(enabled=True).count(),
        "extensions_total": Extension.objects.count(),
    }


async def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def assert_contiguous(frames: list[Frame], after: int) -> None:
    """Stream frames numbered ``after + 1``, ``after + 2``, ... with no gap or repeat."""
    assert [f["seq"] for f in frames] == list(range(after + 1, after + 1 + len(frames)))


async def assert_created(frames: list[Frame], ext: Extension) -> None:
    """``extension.created`` with the contract's payload, then the new counts."""
    assert [f["type"] for f in frames] == ["extension.created", "status_update"]
    assert frames[0]["payload"] == extension_payload(ext)
    status = frames[1]["payload"]
    assert set(status) == {"extensions", "trunks", "extensions_total", "trunks_total"}
    assert {k: status[k] for k in ("extensions", "extensions_total")} == await counts()


# --- who may connect --------------------------------------------------------------------------

SOURCES = ["subprotocol", "authorization", "cookie", "query"]


def connection_args(tokens: dict[str, str], *, offer_subprotocol: bool = False) -> dict[str, Any]:
    """Communicator arguments carrying each token in its source (at most one per source)."""
    headers: list[tuple[bytes, bytes]] = []
    subprotocols = [SUBPROTOCOL] if offer_subprotocol or "subprotocol" in tokens else []
    path = "/ws"
    if "subprotocol" in tokens:
        subprotocols.append(f"bearer.{tokens['subprotocol']}")
    if "authorization" in tokens:
        headers.append((b"authorization", f"Bearer {tokens['authorization']}".encode()))
    if "cookie" in tokens:
        headers.append((b"cookie", f"theme=dark; {TOKEN_COOKIE}={tokens['cookie']}".encode()))
    if "query" in tokens:
        path = f"/ws?token={tokens['query']}"
    return {"path": path, "headers": headers, "subprotocols": subprotocols}


@pytest.mark.parametrize("staff", [True, False])
async def test_welcome_names_the_user(sockets: Sockets, transactional_db: None, staff: bool) -> None:
    person = await database_sync_to_async(make_user)(staff=staff)
    comm, welcome = await sockets.join(str(access(person)))
    assert isinstance(welcome["payload"]["message"], str) and welcome["payload"]["message"]
    assert welcome["payload"]["user"] == {"id": person.pk, "username": person.username, "is_staff": staff}
    assert await quiet(comm)


@pytest.mark.parametrize("source", SOURCES)
async def test_each_token_source_is_accepted(sockets: Sockets, user: Any, token: str, source: str) -> None:
    comm = sockets.new(**connection_args({source: token}))
    connected, subprotocol = await comm.connect(TIMEOUT)
    assert connected
    # The server picks "rayanpbx" when offered and never echoes the token back.
    assert subprotocol == (SUBPROTOCOL if source == "subprotocol" else None)
    assert token not in repr(comm.response_headers)
    welcome = await recv(comm)
    assert welcome["type"] == "welcome" and welcome["payload"]["user"]["id"] == user.pk


async def test_bearer_scheme_is_case_insensitive(sockets: Sockets, user: Any, token: str) -> None:
    comm = sockets.new(headers=[(b"authorization", f"bearer {token}".encode())])
    assert (await comm.connect(TIMEOUT))[0]
    assert (await recv(comm))["payload"]["user"]["id"] == user.pk


@pytest.mark.parametrize("first", range(len(SOURCES)))
async def test_token_sources_are_read_in_order(sockets: Sockets, transactional_db: None, first: int) -> None:
    """With a different user's token in every source, the first source present wins."""
    people = [await database_sync_to_async(make_user)(staff=False) for _ in SOURCES]
    tokens = {source: str(access(person)) for source, person in zip(SOURCES, people, strict=True)}
    present = {source: tokens[source] for source in SOURCES[first:]}
    comm = sockets.new(**connection_args(present, offer_subprotocol=True))
    connected, subprotocol = await comm.connect(TIMEOUT)
    assert connected and subprotocol == SUBPROTOCOL
    assert (await recv(comm))["payload"]["user"]["username"] == people[first].username


@database_sync_to_async
def session_cookie(person: Any) -> str:
    client = Client()
    client.force_login(person)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def test_session_of_a_logged_in_user_is_enough(sockets: Sockets, user: Any) -> None:
    cookie = await session_cookie(user)
    comm = sockets.new(headers=[(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    assert (await comm.connect(TIMEOUT))[0]
    welcome = await recv(comm)
    assert welcome["payload"]["user"]["id"] == user.pk
    await comm.send_json_to({"type": "ping"})
    assert (await recv(comm))["type"] == "pong"


async def test_session_that_is_not_logged_in_is_refused(sockets: Sockets, user: Any) -> None:
    comm = sockets.new(headers=[(b"cookie", f"{settings.SESSION_COOKIE_NAME}={uuid.uuid4().hex}".encode())])
    assert (await comm.connect(TIMEOUT))[0]
    await expect_close(comm, CLOSE_NO_TOKEN)


async def test_no_credentials_closes_4001(sockets: Sockets) -> None:
    comm = sockets.new(subprotocols=[SUBPROTOCOL])
    connected, _ = await comm.connect(TIMEOUT)
    assert connected
    await expect_close(comm, CLOSE_NO_TOKEN)
    assert await quiet(comm)


def _inactive(user: Any) -> str:
    token = str(access(user))
    user.is_active = False
    user.save(update_fields=["is_active"])
    return token


def _deleted(user: Any) -> str:
    token = str(access(user))
    get_user_model().objects.filter(pk=user.pk).delete()
    return token


REFUSALS: dict[str, tuple[Callable[[Any], str], int]] = {
    "garbage": (lambda user: "not-a-jwt", CLOSE_NO_TOKEN),
    "forged": (forged, CLOSE_NO_TOKEN),
    "forged-and-expired": (lambda user: forged(user, expired=True), CLOSE_NO_TOKEN),
    "alg-none": (unsigned, CLOSE_NO_TOKEN),
    "refresh-token": (lambda user: str(RefreshToken.for_user(user)), CLOSE_NO_TOKEN),
    "expired": (lambda user: str(access(user, timedelta(seconds=-1))), CLOSE_EXPIRED),
    "inactive-user": (_inactive, CLOSE_FORBIDDEN),
    "deleted-user": (_deleted, CLOSE_FORBIDDEN),
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refused_token_is_accepted_then_closed_with_its_code(
    sockets: Sockets, user: Any, case: str, source: str
) -> None:
    make_token, code = REFUSALS[case]
    bad = await database_sync_to_async(make_token)(user)
    comm = sockets.new(**connection_args({source: bad}))
    connected, _ = await comm.connect(TIMEOUT)
    assert connected  # accepted, so that the browser can read the close code
    await expect_close(comm, code)  # the very next message: no welcome, no event
    assert await quiet(comm)


# --- origin -----------------------------------------------------------------------------------

HOST = b"pbx.example.com:8443"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://pbx.example.com",  # same host, other port
        "https://pbx.example.com:9443",
        "https://pbx.example.com.evil.example:8443",
        "https://user@pbx.example.com:8443",
        "null",
        "file://pbx.example.com:8443",
    ],
)
async def test_foreign_origin_is_never_accepted(sockets: Sockets, token: str, origin: str) -> None:
    args = connection_args({"subprotocol": token})
    comm = sockets.new(
        args["path"], headers=[(b"host", HOST), (b"origin", origin.encode())], subprotocols=args["subprotocols"]
    )
    connected, _ = await comm.connect(TIMEOUT)
    assert not connected
    assert await quiet(comm)


async def test_origin_without_host_header_is_refused(sockets: Sockets, token: str) -> None:
    comm = sockets.new(
        headers=[(b"origin", b"https://pbx.example.com:8443")], subprotocols=[SUBPROTOCOL, f"bearer.{token}"]
    )
    assert not (await comm.connect(TIMEOUT))[0]


@pytest.mark.parametrize("origin", [None, "https://pbx.example.com:8443", "http://PBX.example.com:8443/"])
async def test_same_host_or_no_origin_is_allowed(sockets: Sockets, user: Any, token: str, origin: str | None) -> None:
    headers = [(b"host", HOST)] + ([(b"origin", origin.encode())] if origin else [])
    comm = sockets.new(headers=headers, subprotocols=[SUBPROTOCOL, f"bearer.{token}"])
    assert await comm.connect(TIMEOUT) == (True, SUBPROTOCOL)
    assert (await recv(comm))["payload"]["user"]["id"] == user.pk


async def test_listed_origin_is_allowed(sockets: Sockets, token: str, settings: Any) -> None:
    settings.LIVE_WS_ALLOWED_ORIGINS = ["https://admin.example.org"]
    comm = sockets.new(
        headers=[(b"host", HOST), (b"origin", b"https://admin.example.org")],
        subprotocols=[SUBPROTOCOL, f"bearer.{token}"],
    )
    assert (await comm.connect(TIMEOUT))[0]
    assert (await recv(comm))["type"] == "welcome"


# --- client frames ----------------------------------------------------------------------------


async def test_ping_gets_pong_at_the_current_position(sockets: Sockets, token: str) -> None:
    comm, welcome = await sockets.join(token)
    for _ in range(3):
        await comm.send_json_to({"type": "ping"})
        pong = await recv(comm)
        assert pong["type"] == "pong" and pong["seq"] == welcome["seq"]
    assert await quiet(comm)


BAD_FRAMES: dict[str, str | bytes] = {
    "not-json": "hello?",
    "truncated-json": '{"type": "ping"',
    "json-array": '["ping"]',
    "json-string": '"ping"',
    "json-number": "42",
    "json-null": "null",
    "no-type": '{"kind": "ping"}',
    "non-string-type": '{"type": 1}',
    "unknown-type": '{"type": "subscribe", "channel": "everything"}',
    "stream-type": '{"type": "extension.created", "payload": {"id": 1}}',
    "deeply-nested": "[" * 50_000,
    "binary": b"\x00\x01binary",
    "binary-json": b'{"type": "ping"}',
    "auth-without-token": '{"type": "auth"}',
    "auth-garbage-token": '{"type": "auth", "token": "garbage"}',
    "resume-string-seq": '{"type": "resume", "last_seq": "7"}',
    "resume-negative-seq": '{"type": "resume", "last_seq": -1}',
    "resume-bool-seq": '{"type": "resume", "last_seq": true}',
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_bad_frame_gets_error_and_socket_stays_open(sockets: Sockets, token: str, case: str) -> None:
    comm, welcome = await sockets.join(token)
    bad = BAD_FRAMES[case]
    if isinstance(bad, bytes):
        await comm.send_to(bytes_data=bad)
    else:
        await comm.send_to(text_data=bad)
    error = await recv(comm)
    assert error["type"] == "error" and error["seq"] == welcome["seq"]
    assert isinstance(error["payload"].get("code"), str) and isinstance(error["payload"].get("message"), str)
    await comm.send_json_to({"type": "ping"})
    assert (await recv(comm))["type"] == "pong"
    assert await quiet(comm)


async def test_client_frames_are_never_relayed(sockets: Sockets, token: str, user: Any) -> None:
    sender, _ = await sockets.join(token)
    other_token = str(access(await database_sync_to_async(make_user)(staff=True)))
    listener, _ = await sockets.join(other_token)
    frames: list[Frame] = [
        {"type": "extension.created", "payload": {"id": 1, "extension_number": "100", "name": "x", "enabled": True}},
        {"type": "status_update", "payload": {}},
        {"type": "broadcast", "payload": {"message": "hi all"}},
        {"type": "ping"},
    ]
    for frame in frames:
        await sender.send_json_to(frame)
    assert [(await recv(sender))["type"] for _ in frames] == ["error", "error", "error", "pong"]
    assert await quiet(listener)


def padded_ping(size: int, char: str = "x") -> str:
    """A ping frame of exactly ``size`` UTF-8 bytes, padded with ``char``."""
    base = '{"type":"ping","pad":""}'
    room = size - len(base.encode())
    width = len(char.encode())
    return base[:-2] + char * (room // width) + "x" * (room % width) + base[-2:]


async def test_frame_of_exactly_64_kib_is_accepted(sockets: Sockets, token: str) -> None:
    comm, _ = await sockets.join(token)
    frame = padded_ping(FRAME_LIMIT)
    assert len(frame.encode()) == FRAME_LIMIT
    await comm.send_to(text_data=frame)
    assert (await recv(comm))["type"] == "pong"


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(padded_ping(FRAME_LIMIT + 1), id="text"),
        # Fewer than 64 Ki characters, but more than 64 KiB on the wire.
        pytest.param(padded_ping(FRAME_LIMIT + 1, "€"), id="multibyte-text"),
        pytest.param(b"\x00" * (FRAME_LIMIT + 1), id="binary"),
    ],
)
async def test_frame_over_64_kib_closes_1009(sockets: Sockets, token: str, frame: str | bytes) -> None:
    comm, _ = await sockets.join(token)
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    assert size == FRAME_LIMIT + 1
    if isinstance(frame, bytes):
        await comm.send_to(bytes_data=frame)
    else:
        assert len(frame) < FRAME_LIMIT or frame.isascii()
        await comm.send_to(text_data=frame)
    await expect_close(comm, CLOSE_TOO_BIG)
    # Closed means closed: later frames are not answered.
    await comm.send_json_to({"type": "ping"})
    assert await quiet(comm)


async def test_burst_within_the_limit_is_served_and_refills(sockets: Sockets, token: str) -> None:
    comm, _ = await sockets.join(token)
    for _ in range(RATE_BURST - 1):  # the burst, less a little for the refill check
        await comm.send_json_to({"type": "ping"})
    assert [(await recv(comm))["type"] for _ in range(RATE_BURST - 1)] == ["pong"] * (RATE_BURST - 1)
    await asyncio.sleep(0.35)  # 10 frames/s: at least three more allowed by now
    for _ in range(4):
        await comm.send_json_to({"type": "ping"})
    assert [(await recv(comm))["type"] for _ in range(4)] == ["pong"] * 4
    assert await quiet(comm)


async def test_flooding_closes_4008(sockets: Sockets, token: str) -> None:
    started = time.monotonic()  # the socket's allowance is full from its connect on
    comm, _ = await sockets.join(token)
    sent = RATE_BURST * 3
    for _ in range(sent):
        await comm.send_json_to({"type": "ping"})
    pongs = 0
    while True:
        message = await comm.receive_output(TIMEOUT)
        if message["type"] == "websocket.close":
            break
        assert json.loads(message["text"])["type"] == "pong"
        pongs += 1
    elapsed = time.monotonic() - started
    assert message == {"type": "websocket.close", "code": CLOSE_FLOOD}
    # The burst was served, then only what the refill allowed; after the close, nothing.
    assert RATE_BURST <= pongs <= RATE_BURST + int(RATE_PER_SECOND * elapsed) + 1
    assert await quiet(comm)


# --- token renewal and expiry -----------------------------------------------------------------


async def test_renewal_postpones_expiry(sockets: Sockets, user: Any) -> None:
    short = access(user, timedelta(seconds=2))
    longer = access(user, timedelta(seconds=4))
    comm, welcome = await sockets.join(str(short))
    await comm.send_json_to({"type": "auth", "token": str(longer)})
    ok = await recv(comm)
    assert ok["type"] == "auth.ok" and ok["seq"] == welcome["seq"]
    assert ok["payload"]["expires_at"] == longer["exp"]
    # Past the first token's expiry the socket is still open ...
    await asyncio.sleep(max(0.0, short["exp"] - time.time()) + 0.3)
    await comm.send_json_to({"type": "ping"})
    assert (await recv(comm))["type"] == "pong"
    # ... and it closes when the renewed token expires, not before.
    await expect_close(comm, CLOSE_EXPIRED, timeout=longer["exp"] - time.time() + 1.5)
    assert time.time() >= longer["exp"] - 0.05


async def test_expiry_closes_4002_and_bad_renewals_do_not_postpone_it(sockets: Sockets, user: Any) -> None:
    short = access(user, timedelta(seconds=2))
    comm, _ = await sockets.join(str(short))
    for bad in (str(access(user, timedelta(seconds=-1))), forged(user), unsigned(user)):
        await comm.send_json_to({"type": "auth", "token": bad})
        assert (await recv(comm))["type"] == "error"
    await expect_close(comm, CLOSE_EXPIRED, timeout=short["exp"] - time.time() + 1.5)
    assert time.time() >= short["exp"] - 0.05
    # An expired socket gets no more events, nor answers.
    await create_extension("301")
    await comm.send_json_to({"type": "ping"})
    assert await quiet(comm)


async def test_renewal_with_another_users_token_closes_4003(sockets: Sockets, token: str) -> None:
    comm, _ = await sockets.join(token)
    stranger = await database_sync_to_async(make_user)(staff=True)
    await comm.send_json_to({"type": "auth", "token": str(access(stranger))})
    await expect_close(comm, CLOSE_FORBIDDEN)
    assert await quiet(comm)


async def test_renewal_of_a_session_socket(sockets: Sockets, user: Any, token: str) -> None:
    cookie = await session_cookie(user)
    comm = sockets.new(headers=[(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    assert (await comm.connect(TIMEOUT))[0]
    assert (await recv(comm))["type"] == "welcome"
    await comm.send_json_to({"type": "auth", "token": token})
    assert (await recv(comm))["type"] == "auth.ok"


# --- the live stream --------------------------------------------------------------------------


async def test_changes_arrive_live_to_every_socket(sockets: Sockets, token: str) -> None:
    first, welcome = await sockets.join(token)
    second, welcome_too = await sockets.join(token)
    assert welcome_too["seq"] == welcome["seq"]
    start = welcome["seq"]

    ext = await create_extension("201")
    created = await recv_many(first, 2)
    await assert_created(created, ext)

    await update_extension(ext, name="Front desk")  # counts unchanged: no status_update
    renamed = await recv_many(first, 1)
    assert renamed[0]["type"] == "extension.updated" and renamed[0]["payload"] == extension_payload(ext)

    await update_extension(ext, enabled=False)
    disabled = await recv_many(first, 2)
    assert [f["type"] for f in disabled] == ["extension.updated", "status_update"]
    assert disabled[0]["payload"] == extension_payload(ext) and ext.enabled is False
    assert disabled[1]["payload"]["extensions"] == 0 and disabled[1]["payload"]["extensions_total"] == 1

    pk = ext.pk
    await delete_extension(ext)
    deleted = await recv_many(first, 2)
    assert [f["type"] for f in deleted] == ["extension.deleted", "status_update"]
    assert deleted[0]["payload"] == {"id": pk, "extension_number": "201"}
    assert deleted[1]["payload"]["extensions_total"] == 0

    stream = created + renamed + disabled + deleted
    assert_contiguous(stream, start)
    # The other socket got the very same frames, and neither got anything else.
    assert [await recv(second) for _ in stream] == stream
    assert await quiet(first) and await quiet(second)


async def recv_batch(comm: WebsocketCommunicator) -> list[str]:
    """The frames of the next message: a JSON array of frames, or one frame (as text)."""
    message = await comm.receive_output(TIMEOUT)
    assert message["type"] == "websocket.send", message
    parsed = json.loads(message["text"])
    if isinstance(parsed, dict):
        return [message["text"]]
    assert isinstance(parsed, list) and len(parsed) >= 2, message["text"][:200]
    return [json.dumps(frame) for frame in parsed]


@database_sync_to_async
def bulk_create_extensions(count: int, first: int) -> None:
    Extension.objects.bulk_create(
        Extension(extension_number=str(first + i), name=f"Bulk {i}", secret=SIP_SECRET) for i in range(count)
    )


async def test_a_batched_socket_gets_a_bulk_change_in_few_messages_and_the_same_frames(
    sockets: Sockets, token: str
) -> None:
    single, welcome = await sockets.join(token)
    batched, _ = await sockets.join(token, query="batch=1")
    await bulk_create_extensions(600, 30000)  # 600 extension.created and one status_update
    singles = [await recv(single) for _ in range(601)]
    assert_contiguous(singles, welcome["seq"])
    assert singles[-1]["type"] == "status_update" and singles[-1]["payload"]["extensions_total"] == 600

    messages: list[list[str]] = []
    while sum(map(len, messages)) < len(singles):
        messages.append(await recv_batch(batched))
    frames = [check_envelope(text) for batch in messages for text in batch]
    assert frames == singles  # the very same frames, in order, none lost or repeated
    assert len(messages) <= 10, [len(m) for m in messages]  # not 601 messages
    assert max(map(len, messages)) <= live.bus.BATCH_FRAMES
    assert await quiet(batched) and await quiet(single)

    # Quiet again: a lone event is its own message, not an array of one.
    ext = await database_sync_to_async(Extension.objects.get)(extension_number="30007")
    await update_extension(ext, name="Renamed alone")
    alone = await recv(batched)  # (recv fails on anything but one frame with the envelope)
    assert alone["type"] == "extension.updated" and alone["payload"] == extension_payload(ext)
    assert await recv(single) == alone


async def test_a_batched_resume_replays_the_missed_frames_as_one_message(sockets: Sockets, token: str) -> None:
    observer, welcome = await sockets.join(token)
    for i in range(3):
        await create_extension(f"41{i}")
    missed = [await recv_text(observer) for _ in range(6)]
    back, again = await sockets.join(token, query=f"batch=1&last_seq={welcome['seq']}")
    assert again["seq"] == welcome["seq"]
    assert await recv_batch(back) == [json.dumps(json.loads(text)) for text in missed]
    assert await quiet(back)


async def test_control_frames_carry_the_position_after_events(sockets: Sockets, token: str) -> None:
    comm, welcome = await sockets.join(token)
    await create_extension("202")
    events = await recv_many(comm, 2)
    await comm.send_json_to({"type": "ping"})
    assert (await recv(comm))["seq"] == events[-1]["seq"] == welcome["seq"] + 2


# --- resume and resync ------------------------------------------------------------------------


async def test_resume_by_query_replays_missed_events_then_goes_live(sockets: Sockets, token: str) -> None:
    first, welcome = await sockets.join(token)
    position = welcome["seq"]
    await first.disconnect()

    observer, _ = await sockets.join(token)
    made = [await create_extension(f"40{i}") for i in range(3)]
    missed_texts = [await recv_text(observer) for _ in range(2 * len(made))]
    missed = [json.loads(text) for text in missed_texts]
    assert_contiguous(missed, position)
    for i, ext in enumerate(made):
        assert missed[2 * i]["type"] == "extension.created" and missed[2 * i]["payload"] == extension_payload(ext)
        assert missed[2 * i + 1]["type"] == "status_update"
        assert missed[2 * i + 1]["payload"]["extensions_total"] == i + 1

    back, again = await sockets.join(token, query=f"last_seq={position}")
    assert again["seq"] == position
    # Exactly what was missed, byte for byte, in order; then nothing more.
    assert [await recv_text(back) for _ in missed] == missed_texts
    assert await quiet(back)

    later = await create_extension("409")
    live = await recv_many(back, 2)
    await assert_created(live, later)
    assert_contiguous(missed + live, position)
    assert await quiet(back)


async def test_resume_by_first_frame(sockets: Sockets, token: str) -> None:
    first, welcome = await sockets.join(token)
    position = welcome["seq"]
    await first.disconnect()
    made = [await create_extension(f"41{i}") for i in range(2)]

    back, now = await sockets.join(token)
    assert now["seq"] == position + 2 * len(made)
    await back.send_json_to({"type": "resume", "last_seq": position})
    replayed = await recv_many(back, 2 * len(made))
    assert_contiguous(replayed, position)
    for i, ext in enumerate(made):
        assert [f["type"] for f in replayed[2 * i : 2 * i + 2]] == ["extension.created", "status_update"]
        assert replayed[2 * i]["payload"] == extension_payload(ext)
        assert replayed[2 * i + 1]["payload"]["extensions_total"] == i + 1
    assert await quiet(back)

    later = await create_extension("419")
    await assert_created(await recv_many(back, 2), later)
    await back.send_json_to({"type": "ping"})
    assert (await recv(back))["seq"] == position + 2 * len(made) + 2


async def test_resume_at_the_current_position_replays_nothing(sockets: Sockets, token: str) -> None:
    _, welcome = await sockets.join(token)
    back, again = await sockets.join(token, query=f"last_seq={welcome['seq']}")
    assert again["seq"] == welcome["seq"]
    assert await quiet(back)
    ext = await create_extension("420")
    frames = await recv_many(back, 2)
    await assert_created(frames, ext)
    assert_contiguous(frames, welcome["seq"])


async def position_and_history(sockets: Sockets, token: str) -> int:
    """Make some history, and return the current position."""
    first, welcome = await sockets.join(token)
    await create_extension("430")
    events = await recv_many(first, 2)
    assert_contiguous(events, welcome["seq"])
    await first.disconnect()
    return events[-1]["seq"]


async def expect_resync_then_live(comm: WebsocketCommunicator, current: int) -> None:
    resync = await recv(comm)
    assert resync["type"] == "resync" and resync["seq"] == current
    assert await quiet(comm)
    ext = await create_extension("439")
    frames = await recv_many(comm, 2)
    await assert_created(frames, ext)
    assert_contiguous(frames, current)


@pytest.mark.parametrize("where", ["older", "future", "not-a-number"])
async def test_resume_by_query_from_an_unknown_position_resyncs(sockets: Sockets, token: str, where: str) -> None:
    current = await position_and_history(sockets, token)
    last_seq = {"older": "1", "future": str(current + 1000), "not-a-number": "abc"}[where]
    comm, _ = await sockets.join(token, query=f"last_seq={last_seq}")
    await expect_resync_then_live(comm, current)


@pytest.mark.parametrize("where", ["older", "future"])
async def test_resume_by_frame_from_an_unknown_position_resyncs(sockets: Sockets, token: str, where: str) -> None:
    current = await position_and_history(sockets, token)
    comm, welcome = await sockets.join(token)
    assert welcome["seq"] == current
    await comm.send_json_to({"type": "resume", "last_seq": 1 if where == "older" else current + 1000})
    await expect_resync_then_live(comm, current)


async def test_resume_after_live_events_resyncs_instead_of_repeating(sockets: Sockets, token: str) -> None:
    comm, welcome = await sockets.join(token)
    await create_extension("440")
    events = await recv_many(comm, 2)
    await comm.send_json_to({"type": "resume", "last_seq": welcome["seq"]})
    resync = await recv(comm)
    assert resync["type"] == "resync" and resync["seq"] == events[-1]["seq"]
    assert await quiet(comm)


async def test_resume_while_events_are_published_loses_and_repeats_nothing(sockets: Sockets, token: str) -> None:
    observer, welcome = await sockets.join(token)
    position = welcome["seq"]
    count = 8

    async def writer() -> None:
        for i in range(count):
            await create_extension(f"5{i:02d}")
            await asyncio.sleep(0.005)

    writing = asyncio.create_task(writer())
    first = await recv_text(observer)  # publishing has begun: resume in the middle of it
    back, again = await sockets.join(token, query=f"last_seq={position}")
    assert again["seq"] == position
    await writing
    truth = [first] + [await recv_text(observer) for _ in range(2 * count - 1)]
    assert_contiguous([json.loads(t) for t in truth], position)
    assert [await recv_text(back) for _ in truth] == truth
    assert await quiet(back) and await quiet(observer)


class SlowQueue(asyncio.Queue[Any]):
    """The output side of a socket whose ``send`` of the welcome takes a while.

    Servers may suspend in ``send`` (flow control); meanwhile the hub keeps delivering.
    ``during_welcome`` runs inside that suspension.
    """

    def __init__(self, during_welcome: Callable[[], Awaitable[None]]) -> None:
        super().__init__()
        self.during_welcome = during_welcome

    async def put(self, item: Any) -> None:
        if item.get("type") == "websocket.send" and '"type":"welcome"' in item.get("text", ""):
            await self.during_welcome()
        await super().put(item)


class SlowCommunicator(WebsocketCommunicator):
    """A communicator whose application's ``send`` of the welcome is slow (see ``SlowQueue``)."""

    def __init__(self, *args: Any, during_welcome: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slow = SlowQueue(during_welcome)

    @property
    def output_queue(self) -> asyncio.Queue[Any]:
        return self.slow


async def test_events_during_a_slow_welcome_are_not_lost(sockets: Sockets, token: str) -> None:
    _, welcome = await sockets.join(token)
    position = welcome["seq"]
    made: list[Extension] = []

    async def publish_meanwhile() -> None:
        made.append(await create_extension("601"))
        await wait_until(lambda: get_hub().last_seq >= position + 2)
        await asyncio.sleep(0.05)

    slow = functools.partial(SlowCommunicator, during_welcome=publish_meanwhile)
    back, again = await sockets.join(token, query=f"last_seq={position}", factory=slow)
    assert again["seq"] == position
    replayed = await recv_many(back, 2)
    await assert_created(replayed, made[0])
    assert await quiet(back)
    later = await create_extension("602")  # the socket is still on the live stream
    live = await recv_many(back, 2)
    await assert_created(live, later)
    assert_contiguous(replayed + live, position)


@pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis counter only")
async def test_first_event_of_a_new_redis_counter_arrives_live(sockets: Sockets, token: str) -> None:
    """A deployment whose counter does not exist yet (new, or Redis restarted empty)."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        await sync_to_async(client.delete)(get_hub().bus.seq_key)
    finally:
        client.close()
    comm, welcome = await sockets.join(token)
    ext = await create_extension("701")
    frames = await recv_many(comm, 2)
    await assert_created(frames, ext)
    assert_contiguous(frames, welcome["seq"])


# --- no socket outlives its place in the hub ----------------------------------------------------


async def test_a_resume_that_cannot_read_the_history_closes_4011_and_leaves_the_hub(
    sockets: Sockets, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = get_hub()
    await hub.start()

    async def unavailable(after: int) -> tuple[int, list[str] | None]:
        raise ConnectionError("Redis unavailable")

    monkeypatch.setattr(hub.bus, "history_after", unavailable)
    comm, _ = await sockets.join(token, query="last_seq=1")
    await expect_close(comm, 4011)  # the client retries and resumes once Redis answers
    assert hub.clients == set()


async def test_a_consumer_cancelled_without_a_disconnect_leaves_the_hub(sockets: Sockets, token: str) -> None:
    comm, _ = await sockets.join(token)
    hub = get_hub()
    assert len(hub.clients) == 1
    comm.future.cancel()  # as daphne does to an application that outlives its socket
    with contextlib.suppress(asyncio.CancelledError):
        await comm.future
    assert hub.clients == set()


# --- access that ends closes the socket (live.revocation) ---------------------------------------


@database_sync_to_async
def logged_in_client(person: Any) -> tuple[Client, str]:
    client = Client()
    client.force_login(person)
    return client, client.cookies[settings.SESSION_COOKIE_NAME].value


async def session_socket(sockets: Sockets, cookie: str) -> WebsocketCommunicator:
    comm = sockets.new(headers=[(b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())])
    assert (await comm.connect(TIMEOUT))[0]
    assert (await recv(comm))["type"] == "welcome"
    return comm


async def test_logging_out_closes_that_sessions_sockets_only(sockets: Sockets, user: Any, token: str) -> None:
    browser, cookie = await logged_in_client(user)
    _, other_cookie = await logged_in_client(user)
    tab = await session_socket(sockets, cookie)
    other_tab = await session_socket(sockets, other_cookie)
    script, _ = await sockets.join(token)
    await database_sync_to_async(browser.post)("/logout/")
    await expect_close(tab, CLOSE_FORBIDDEN, timeout=1.0)
    # The user's other session and token are not logged out.
    for comm in (other_tab, script):
        await comm.send_json_to({"type": "ping"})
        assert (await recv(comm))["type"] == "pong"


@pytest.mark.parametrize("change", ["deactivated", "password", "deleted"])
async def test_a_user_losing_access_has_every_socket_closed(
    sockets: Sockets, user: Any, token: str, change: str
) -> None:
    _, cookie = await logged_in_client(user)
    tab = await session_socket(sockets, cookie)
    script, _ = await sockets.join(token)
    bystander = await database_sync_to_async(make_user)(staff=True)
    others, _ = await sockets.join(str(AccessToken.for_user(bystander)))

    @database_sync_to_async
    def end_access() -> None:
        if change == "deactivated":
            user.is_active = False
            user.save()
        elif change == "password":
            user.set_password("A-new-password-9876")
            user.save()
        else:
            user.delete()

    await end_access()
    await expect_close(tab, CLOSE_FORBIDDEN, timeout=1.0)
    await expect_close(script, CLOSE_FORBIDDEN, timeout=1.0)
    await others.send_json_to({"type": "ping"})
    assert (await recv(others))["type"] == "pong"
    # The old token opens nothing any more (a new password revokes it: CHECK_REVOKE_TOKEN).
    again = sockets.new(subprotocols=[SUBPROTOCOL, f"bearer.{token}"])
    assert (await again.connect(TIMEOUT))[0]
    await expect_close(again, CLOSE_FORBIDDEN if change != "password" else CLOSE_NO_TOKEN)


async def test_a_saved_login_does_not_close_anything(sockets: Sockets, user: Any, token: str) -> None:
    script, _ = await sockets.join(token)

    @database_sync_to_async
    def log_in_elsewhere() -> None:
        user.last_login = datetime.now(UTC)
        user.save(update_fields=["last_login"])
        user.first_name = "Renamed"
        user.save()

    await log_in_elsewhere()
    assert await quiet(script)


async def test_a_session_socket_closes_4002_when_the_session_expires(sockets: Sockets, user: Any) -> None:
    @database_sync_to_async
    def short_session() -> str:
        client = Client()
        client.force_login(user)
        session = client.session
        session.set_expiry(1)
        session.save()
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    comm = await session_socket(sockets, await short_session())
    await expect_close(comm, CLOSE_EXPIRED, timeout=3.0)


# --- topics (live.topics) -----------------------------------------------------------------------

TOPIC_ENVELOPE = {"topic", "type", "payload", "timestamp"}


async def recv_json(comm: WebsocketCommunicator, timeout: float = TIMEOUT) -> dict[str, Any]:
    message = await comm.receive_output(timeout)
    assert message["type"] == "websocket.send", message
    return json.loads(message["text"])


async def subscribe(comm: WebsocketCommunicator, *topics: str, kind: str = "subscribe") -> dict[str, Any]:
    await comm.send_json_to({"type": kind, "topics": list(topics)})
    return await recv_json(comm)


@database_sync_to_async
def set_rights(user: Any, **rights: bool) -> None:
    for name, value in rights.items():
        setattr(user, name, value)
    user.save()


async def test_a_topic_reaches_its_subscribers_only_and_leaves_the_stream_alone(
    sockets: Sockets, user: Any, token: str
) -> None:
    from live import topics

    reader, welcome = await sockets.join(token)
    bystander, _ = await sockets.join(token)
    answer = await subscribe(reader, "logs", "presence")
    assert answer["type"] == "subscribed" and answer["payload"]["topics"] == ["logs", "presence"]
    assert answer["seq"] == welcome["seq"]  # a control frame at the stream position
    assert (await recv_json(reader))["type"] == "presence.state"  # presence's state comes at once

    await topics.publish("logs", "log.lines", {"lines": [{"text": "hello"}]})
    got = await recv_json(reader)
    assert set(got) == TOPIC_ENVELOPE and "seq" not in got
    assert (got["topic"], got["type"], got["payload"]) == ("logs", "log.lines", {"lines": [{"text": "hello"}]})
    assert await quiet(bystander)  # never subscribed: nothing

    # The numbered stream goes on as before: the next event is welcome + 1 on both.
    ext = await create_extension("610")
    assert (await recv(reader))["seq"] == (await recv(bystander))["seq"] == welcome["seq"] + 1
    await recv(reader), await recv(bystander)  # the status_update
    assert ext.pk

    left = await subscribe(reader, "logs", kind="unsubscribe")
    assert left["type"] == "unsubscribed" and left["payload"] == {"topics": ["logs"], "reason": "asked"}
    await topics.publish("logs", "log.lines", {"lines": []})
    await topics.publish("presence", "presence.online", {"users": []})
    assert (await recv_json(reader))["topic"] == "presence"  # still on the other one
    assert await quiet(reader)


async def test_a_topic_outside_the_users_rights_is_refused_with_an_error(sockets: Sockets) -> None:
    from live import topics

    plain = await database_sync_to_async(make_user)(staff=False)
    comm, _ = await sockets.join(str(AccessToken.for_user(plain)))
    refused = await subscribe(comm, "logs")
    assert refused["type"] == "error" and refused["payload"]["code"] == "forbidden_topic"
    assert "logs: staff" in refused["payload"]["message"]
    # Asking for several: what is allowed is subscribed, the rest refused, the socket open.
    await comm.send_json_to({"type": "subscribe", "topics": ["presence", "console"]})
    assert (await recv_json(comm))["payload"]["code"] == "forbidden_topic"
    assert (await recv_json(comm))["payload"]["topics"] == ["presence"]
    assert (await recv_json(comm))["type"] == "presence.state"
    await topics.publish("logs", "log.lines", {"lines": []})
    assert await quiet(comm)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "subscribe", "topics": ["nope"]}, "unknown_topic"),
        ({"type": "subscribe", "topics": "logs"}, "malformed"),
        ({"type": "subscribe", "topics": []}, "malformed"),
        ({"type": "subscribe", "topics": ["logs"] * 9}, "malformed"),
        ({"type": "subscribe", "topics": [1]}, "malformed"),
        ({"type": "unsubscribe"}, "malformed"),
    ],
)
async def test_bad_subscribe_frames_get_an_error_and_the_socket_stays(
    sockets: Sockets, token: str, frame: dict[str, Any], code: str
) -> None:
    comm, _ = await sockets.join(token)
    await comm.send_json_to(frame)
    error = await recv_json(comm)
    assert error["type"] == "error" and error["payload"]["code"] == code
    await comm.send_json_to({"type": "ping"})
    assert (await recv_json(comm))["type"] == "pong"


async def test_a_demoted_staff_user_loses_the_logs_topic_within_a_second(
    sockets: Sockets, user: Any, token: str
) -> None:
    from live import topics

    comm, _ = await sockets.join(token)
    assert (await subscribe(comm, "logs", "presence"))["type"] == "subscribed"
    assert (await recv_json(comm))["type"] == "presence.state"
    started = time.monotonic()
    await set_rights(user, is_staff=False)
    dropped = await recv_json(comm)
    assert time.monotonic() - started < 1.0
    assert dropped["type"] == "unsubscribed"
    assert dropped["payload"] == {"topics": ["logs"], "reason": "your rights changed"}
    # No longer staff: no longer in the staff audience either (rayanpbx.audiences), so the
    # page reloads what it holds.
    assert (await recv_json(comm))["type"] == "resync"
    await topics.publish("logs", "log.lines", {"lines": []})
    await topics.publish("presence", "presence.online", {"users": []})
    assert (await recv_json(comm))["topic"] == "presence"  # still allowed
    assert await quiet(comm)


# Every topic's audience (docs/live-events.md "Topics"): who may subscribe, and who may not.
AUDIENCES = {
    # topic: (reader, staff, superuser without PBX_CONSOLE, superuser with PBX_CONSOLE=1)
    "logs": (False, True, True, True),
    "console": (False, False, False, True),
    "presence": (True, True, True, True),
    "traffic": (True, True, True, True),
    "audit": (False, True, True, True),
}


def test_every_topic_has_a_documented_audience() -> None:
    from live import topics

    assert set(topics.TOPICS) == set(AUDIENCES)
    documented = (Path(__file__).resolve().parent.parent / "docs" / "live-events.md").read_text()
    for name, topic in topics.TOPICS.items():
        assert f"| `{name}` |" in documented, f"docs/live-events.md lists no audience for {name}"
        assert topic.audience


@pytest.mark.parametrize("topic", sorted(AUDIENCES))
@pytest.mark.parametrize("who", ["reader", "staff", "superuser", "console superuser"])
async def test_each_topic_is_granted_to_its_audience_only(sockets: Sockets, topic: str, who: str) -> None:
    def make() -> Any:
        person = make_user(staff=who != "reader")
        person.is_superuser = who.endswith("superuser")
        person.save()
        return person

    person = await database_sync_to_async(make)()
    allowed = AUDIENCES[topic][["reader", "staff", "superuser", "console superuser"].index(who)]
    with override_settings(PBX_CONSOLE=who == "console superuser"):
        comm, _ = await sockets.join(str(AccessToken.for_user(person)))
        answer = await subscribe(comm, topic)
        if allowed:
            assert answer["type"] == "subscribed" and answer["payload"]["topics"] == [topic], answer
        else:
            assert answer["type"] == "error" and answer["payload"]["code"] == "forbidden_topic", answer
            assert topic in answer["payload"]["message"]


async def test_a_superuser_made_staff_loses_the_console_within_a_second(sockets: Sockets) -> None:
    person = await database_sync_to_async(make_user)(staff=True)
    await set_rights(person, is_superuser=True)
    with override_settings(PBX_CONSOLE=True):
        comm, _ = await sockets.join(str(AccessToken.for_user(person)))
        assert (await subscribe(comm, "console", "logs"))["payload"]["topics"] == ["console", "logs"]
        started = time.monotonic()
        await set_rights(person, is_superuser=False)
        dropped = await recv_json(comm)
        assert time.monotonic() - started < 1.0
        assert dropped["payload"] == {"topics": ["console"], "reason": "your rights changed"}


# --- per-event audiences (rayanpbx.audiences; docs/live-events.md "Who sees what") ---------

CALL = ("call.started", {"id": "1700000000.1", "from": "101", "to": "0912345678", "direction": "outbound"})
LOGIN = ("security.sip_auth_failed", {"username": "101", "remote_ip": "203.0.113.9", "attempts": 40})
APPLY = ("pbx.apply", {"id": 9, "state": "failed", "errors": [{"object": "trunk acme", "message": "bad host"}]})


def calls_permission() -> Any:
    from django.contrib.auth.models import Permission

    return Permission.objects.get(content_type__app_label="pbx", codename="view_calls")


@database_sync_to_async
def make_operator() -> Any:
    """A read-only user given the permission to see calls."""
    person = make_user(staff=False)
    person.user_permissions.add(calls_permission())
    return person


async def publish(*events: tuple[str, dict[str, Any]]) -> list[int]:
    from live import publisher

    return await sync_to_async(publisher.publish_events)(list(events))


def hidden(seq: int) -> tuple[int, str, dict[str, Any]]:
    return seq, "restricted", {}


def seen(frames: list[Frame]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(f["seq"], f["type"], f["payload"]) for f in frames]


async def test_each_user_gets_the_events_it_may_see_and_every_seq(sockets: Sockets) -> None:
    reader = await database_sync_to_async(make_user)(staff=False)
    operator, staff = await make_operator(), await database_sync_to_async(make_user)(staff=True)
    comms = {}
    people = (("reader", reader, []), ("operator", operator, ["calls"]), ("staff", staff, ["calls", "staff"]))
    for name, person, sees in people:
        comms[name], welcome = await sockets.join(str(access(person)))
        assert welcome["payload"]["sees"] == sees

    call, login, apply = await publish(CALL, LOGIN, APPLY)
    redacted = {**APPLY[1], "errors": [], "errors_hidden": 1}
    assert seen(await recv_many(comms["reader"], 3)) == [hidden(call), hidden(login), (apply, "pbx.apply", redacted)]
    assert seen(await recv_many(comms["operator"], 3)) == [
        (call, *CALL), hidden(login), (apply, "pbx.apply", redacted)
    ]  # fmt: skip
    assert seen(await recv_many(comms["staff"], 3)) == [(call, *CALL), (login, *LOGIN), (apply, *APPLY)]
    for comm in comms.values():
        assert await quiet(comm)


async def test_a_resume_is_filtered_by_the_same_rule(sockets: Sockets) -> None:
    reader = await database_sync_to_async(make_user)(staff=False)
    _, welcome = await sockets.join(str(access(reader)))
    call, login, apply = await publish(CALL, LOGIN, APPLY)
    resumed, _ = await sockets.join(str(access(reader)), f"last_seq={welcome['seq']}")
    frames = await recv_many(resumed, 3)
    assert seen(frames) == [
        hidden(call),
        hidden(login),
        (apply, "pbx.apply", {**APPLY[1], "errors": [], "errors_hidden": 1}),
    ]


async def test_calls_given_and_taken_through_a_group_resync_the_socket_within_a_second(sockets: Sockets) -> None:
    from django.contrib.auth.models import Group

    person = await database_sync_to_async(make_user)(staff=False)
    comm, _ = await sockets.join(str(access(person)))
    group = await database_sync_to_async(Group.objects.create)(name=f"desk-{uuid.uuid4().hex[:6]}")
    await database_sync_to_async(group.permissions.add)(await database_sync_to_async(calls_permission)())
    assert await quiet(comm)  # not in the group yet: nothing changed for this user

    started = time.monotonic()
    await database_sync_to_async(person.groups.add)(group)
    resync = await recv(comm)
    assert time.monotonic() - started < 1.0
    assert resync["type"] == "resync" and resync["payload"] == {
        "reason": "your rights changed; reload the page",
        "reload": True,
    }
    (call,) = await publish(CALL)
    assert seen([await recv(comm)]) == [(call, *CALL)]

    started = time.monotonic()
    await database_sync_to_async(group.permissions.clear)()  # from the group's side
    assert (await recv(comm))["type"] == "resync"
    assert time.monotonic() - started < 1.0
    (call,) = await publish(CALL)
    assert seen([await recv(comm)]) == [hidden(call)]

    await database_sync_to_async(person.user_permissions.add)(await database_sync_to_async(calls_permission)())
    assert (await recv(comm))["type"] == "resync"  # given to the user directly
    assert await quiet(comm)
