"""Hostile frames from Hypothesis against one real daphne: random bytes, deep nesting, huge
numbers, invalid UTF-8, 1 MiB frames, 1,000 frames a second, broken framing.

Every hostile socket gets a JSON ``error`` frame (and then still answers ``ping``), or a
close with a code from the table in docs/live-events.md; the server never logs a
traceback; a bystander socket opened first still answers ``ping`` and receives a live event
after the storm. One server for every example; frames are built by hand on a raw TCP
socket (a WebSocket library refuses to send most of these).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as sync_connect

from tests.stack import Server, Stack

pytestmark = pytest.mark.services

#: Close codes of the table in docs/live-events.md that a hostile frame may earn.
DOCUMENTED = {
    1002: "protocol error (broken framing: reserved bits or opcodes, an unmasked frame, a bad control frame)",
    1007: "a text frame that is not valid UTF-8",
    1009: "a frame over 64 KiB",
    4008: "more frames than the rate limit",
}
#: What a well-formed frame may be answered with (most get ``error``; a hostile frame that
#: happens to be a valid ``ping`` or ``resume`` gets its answer).
REPLIES = {"error", "pong", "resync"}
LIMIT = 64 * 1024
ANSWER_TIMEOUT = 5.0
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_CONT = 0x1, 0x2, 0x8, 0x9, 0x0


# --- a raw client -------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One client frame, built by hand (RFC 6455 section 5.2)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    body = (int.from_bytes(payload, "big") ^ int.from_bytes((key * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    return head + key + body


class RawSocket:
    """A WebSocket client on a bare TCP socket: the handshake, then bytes as the test wants."""

    def __init__(self, server: Server, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=ANSWER_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: rayanpbx, bearer.{token}\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        welcome = self.next()
        assert welcome[0] == OP_TEXT and json.loads(welcome[1])["type"] == "welcome", welcome

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed without a close frame")
        self.buffer += data

    def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def next(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are never fragmented here."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._take(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._take(8))[0]
        return b0 & 0x0F, self._take(n)

    def send(self, data: bytes) -> None:
        """Send, tolerating a server that closes (and resets) before it has read everything."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def answer(self) -> tuple[str, Any]:
        """("frame", parsed JSON) or ("close", code)."""
        opcode, payload = self.next()
        while opcode not in (OP_TEXT, OP_CLOSE):  # a pong to our ping, say
            opcode, payload = self.next()
        if opcode == OP_CLOSE:
            return "close", struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
        return "frame", json.loads(payload)

    def close(self) -> None:
        self.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
        self.sock.close()


# --- the server -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server, str]]:
    # Hypothesis opens a socket per example, faster than a client address may (live.limits).
    stack = Stack(tmp_path_factory.mktemp("hostile"), env={"LIVE_CONNECT_RATE": "0"})
    try:
        server = stack.start_server()
        yield stack, server, stack.login(server)
    finally:
        stack.close()


def ping_pong(ws: Any) -> None:
    ws.send(json.dumps({"type": "ping"}))
    assert json.loads(ws.recv(5))["type"] == "pong"


# --- hostile input ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
typed_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["ping", "auth", "resume", "extension.created", "", "x" * 200])},
    optional={"token": json_values, "last_seq": json_values, "payload": json_values},
)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


hostile = st.one_of(
    st.tuples(st.just("binary"), st.binary(max_size=2048)),
    st.tuples(st.just("text bytes"), st.binary(max_size=2048)),  # invalid UTF-8, mostly
    st.tuples(st.just("text"), st.text(max_size=2048)),
    st.tuples(st.just("json"), json_values.map(_encode)),
    st.tuples(st.just("typed"), typed_frames.map(_encode)),
    st.tuples(st.just("nested"), st.integers(1, LIMIT // 2).flatmap(lambda d: st.just(b"[" * d + b"]" * d))),
    st.tuples(
        st.just("nested object"),
        st.integers(900, LIMIT // 8).map(lambda d: b'{"type":"ping","x":' + b'{"a":' * d + b"1" + b"}" * d + b"}"),
    ),
    st.tuples(
        st.just("huge number"),
        st.integers(300, 60_000).map(lambda d: b'{"type":"resume","last_seq":' + b"9" * d + b"}"),
    ),
    st.tuples(st.just("big"), st.integers(LIMIT + 1, 1 << 20)),
    st.tuples(st.just("flood"), st.integers(31, 1000)),
    st.tuples(st.just("reserved opcode"), st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])),
    st.tuples(st.just("reserved bits"), st.integers(1, 7)),
    st.tuples(st.just("unmasked"), st.binary(max_size=200)),
    st.tuples(st.just("long control"), st.integers(126, 1000)),
    st.tuples(st.just("fragmented"), st.lists(st.text(max_size=20), min_size=2, max_size=8)),
    st.tuples(st.just("stray continuation"), st.binary(max_size=100)),
    st.tuples(st.just("garbage"), st.binary(min_size=1, max_size=512)),
)


def attack(ws: RawSocket, kind: str, value: Any) -> None:
    if kind == "binary":
        ws.send(frame(OP_BINARY, value))
    elif kind in ("text bytes", "json", "typed", "nested", "nested object", "huge number"):
        ws.send(frame(OP_TEXT, value))
    elif kind == "text":
        ws.send(frame(OP_TEXT, value.encode("utf-8", "surrogatepass")))
    elif kind == "big":
        ws.send(frame(OP_TEXT, b'{"type":"ping","x":"' + b"x" * (value - 22) + b'"}'))
    elif kind == "flood":  # 1,000 frames a second (or more): all at once
        ws.send(b"".join(frame(OP_TEXT, b'{"type":"ping"}') for _ in range(value)))
    elif kind == "reserved opcode":
        ws.send(frame(value, b"hello"))
    elif kind == "reserved bits":
        ws.send(frame(OP_TEXT, b'{"type":"ping"}', rsv=value))
    elif kind == "unmasked":
        ws.send(frame(OP_TEXT, value, masked=False))
    elif kind == "long control":
        ws.send(frame(OP_PING, b"p" * value))
    elif kind == "fragmented":
        parts = [part.encode("utf-8", "surrogatepass") for part in value]
        for i, part in enumerate(parts):
            ws.send(frame(OP_TEXT if i == 0 else OP_CONT, part, fin=i == len(parts) - 1))
    elif kind == "stray continuation":
        ws.send(frame(OP_CONT, value))
    elif kind == "garbage":
        ws.send(value)
    else:
        raise AssertionError(kind)


def check_answer(ws: RawSocket, kind: str, value: Any) -> str:
    """Read until the server answered; return what it did."""
    if kind == "flood":
        # Up to the burst the pings are answered; then the socket is closed with 4008.
        while (answer := ws.answer())[0] == "frame":
            assert answer[1]["type"] == "pong", answer
        assert answer == ("close", 4008), answer
        return "close 4008"
    if kind == "garbage":
        # Raw bytes may be a frame's beginning: the server may rightly wait for the rest.
        ws.sock.settimeout(1.0)
        try:
            answer = ws.answer()
        except TimeoutError:
            return "waiting for the rest of a frame"
    else:
        answer = ws.answer()
    what, detail = answer
    if what == "close":
        assert detail in DOCUMENTED, f"{kind}: closed with {detail}, not a documented code"
        return f"close {detail}"
    assert detail["type"] in REPLIES, (kind, detail)
    if detail["type"] == "error":
        assert set(detail["payload"]) == {"code", "message"}, detail
    # The connection stays open after an answer: it still answers ping.
    ws.send(frame(OP_TEXT, b'{"type":"ping"}'))
    while (next_answer := ws.answer())[0] == "frame" and next_answer[1]["type"] != "pong":
        pass
    assert next_answer[0] == "frame" and next_answer[1]["type"] == "pong", next_answer
    return detail["type"]


# --- the test ---------------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("RAYANPBX_HOSTILE_EXAMPLES", "80"))


def test_hostile_frames(site) -> None:
    stack, server, token = site
    seen: dict[str, set[str]] = {}
    tried = [0]
    with sync_connect(server.ws, subprotocols=["rayanpbx", f"bearer.{token}"], open_timeout=5) as bystander:
        assert json.loads(bystander.recv(5))["type"] == "welcome"

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        )
        @given(example=hostile)
        def one(example: tuple[str, Any]) -> None:
            kind, value = example
            ws = RawSocket(server, token)
            try:
                attack(ws, kind, value)
                outcome = check_answer(ws, kind, value)
            finally:
                ws.sock.close()
            seen.setdefault(kind, set()).add(outcome)
            tried[0] += 1
            if tried[0] % 8 == 0:
                ping_pong(bystander)  # unaffected meanwhile

        one()
        # What each kind earned, for the record (pytest -s shows it).
        print(json.dumps({kind: sorted(outcomes) for kind, outcomes in sorted(seen.items())}, indent=1))
        assert len(seen) >= min(10, EXAMPLES // 6), seen  # Hypothesis tried most kinds of hostility

        # The bystander, after the storm: still answers, still receives the live stream.
        ping_pong(bystander)
        created = {"extension_number": "4400", "name": "After"}
        status, body = stack.request(server, "POST", "/api/extensions", created, token)
        assert status == 201, body
        deadline = time.monotonic() + 5
        while (event := json.loads(bystander.recv(max(0.01, deadline - time.monotonic()))))["type"] != (
            "extension.created"
        ):
            pass
        assert event["payload"]["extension_number"] == "4400"
    log = server.log.read_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    assert server.process.poll() is None
