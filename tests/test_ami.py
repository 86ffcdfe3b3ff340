"""The AMI client against a scripted Asterisk that speaks from recorded sessions.

``shared/ami/`` holds AMI sessions recorded byte for byte from Asterisk 22.10.1. The peer
here is a real TCP server on 127.0.0.1: :func:`replay` plays one recorded connection back
(the server's bytes, with their recorded pauses, answering the client's actions and
rewriting the recorded ActionIDs to the ones the client sent), and :class:`FakeAsterisk`
answers with recorded frames where a case cannot be produced on demand from a real
Asterisk (garbage, half frames, a flood, a frame too large).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import pytest

from pbx.ami import AmiAuthFailed, AmiClient, AmiConnectionLost, AmiError, AmiTimeout, Backoff, FrameParser, Message
from pbx.ami_protocol import describe_action, encode_action, parse_frame

AMI_DIR = Path(__file__).resolve().parents[2] / "shared" / "ami"

if not AMI_DIR.is_dir():
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"the recorded AMI sessions are missing: {AMI_DIR}", pytrace=False)
    pytest.skip(f"the recorded AMI sessions are not at {AMI_DIR}", allow_module_level=True)


# --- the recordings -------------------------------------------------------------------

FRAME_LINE = re.compile(r"^\s*([\d.]+) ms\s+(S<|C>)\s+off=(\d+) len=(\d+)")
NOTE_LINE = re.compile(r"^\s*([\d.]+) ms\s+-- (.*)$")


@dataclass(frozen=True)
class Step:
    kind: str  # "S" server frame, "C" client frame, "EOF" the server closed
    ms: float
    data: bytes = b""


@functools.cache
def timeline(base: str) -> tuple[Step, ...]:
    """The recorded connection ``base`` as steps in wire order, with the exact bytes."""
    server = (AMI_DIR / f"{base}.server.txt").read_bytes()
    client = (AMI_DIR / f"{base}.client.txt").read_bytes()
    steps = []
    for line in (AMI_DIR / f"{base}.timeline.txt").read_text().splitlines():
        if match := FRAME_LINE.match(line):
            ms, direction, offset, length = float(match[1]), match[2], int(match[3]), int(match[4])
            source = server if direction == "S<" else client
            steps.append(Step("S" if direction == "S<" else "C", ms, source[offset : offset + length]))
        elif (match := NOTE_LINE.match(line)) and match[2].startswith("EOF"):
            steps.append(Step("EOF", float(match[1])))
    return tuple(steps)


def server_bytes(base: str) -> bytes:
    return (AMI_DIR / f"{base}.server.txt").read_bytes()


def recorded_frame(base: str, needle: bytes) -> bytes:
    """The first server frame of ``base`` that contains ``needle``."""
    return next(step.data for step in timeline(base) if step.kind == "S" and needle in step.data)


def with_action_id(frame: bytes, action_id: str) -> bytes:
    """``frame`` answering ``action_id`` instead of the recorded one (frames without one stay)."""
    return re.sub(rb"\r\nActionID: [^\r\n]*\r\n", b"\r\nActionID: " + action_id.encode() + b"\r\n", frame, count=1)


BANNER = recorded_frame("01-login-ok", b"Asterisk Call Manager/")
LOGIN_OK = [step.data for step in timeline("01-login-ok")[2:5]]  # Success, FullyBooted, SuccessfulAuth
PING_OK = recorded_frame("01-login-ok", b"ActionID: ping-1")
GOODBYE = recorded_frame("01-login-ok", b"Response: Goodbye")
UNKNOWN_ACTION = recorded_frame("11-misc-info", b"Invalid/unknown command")
SHUTDOWN = recorded_frame("09-restart", b"Event: Shutdown")
CORE_STATUS = recorded_frame("09-restart.reconnect", b"CoreStartupDate")
#: ContactStatus, PeerStatus and DeviceStateChange events of a registering phone, 86 to 167 bytes each.
SMALL_EVENTS = [
    step.data
    for step in timeline("04-registration-lifecycle")
    if step.data.startswith(b"Event: ") and len(step.data) < 200 and b"FullyBooted" not in step.data
]


# --- the scripted peer ----------------------------------------------------------------


class PeerConnection:
    """One accepted client connection, with what the client sent on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.opened = time.monotonic()
        self.frames: list[bytes] = []
        self.writes: list[tuple[float, bytes]] = []

    async def read_frame(self) -> bytes | None:
        try:
            frame = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.frames.append(frame)
        return frame

    def write(self, data: bytes) -> None:
        self.writes.append((time.monotonic(), data))
        self.writer.write(data)

    def sent_at(self, needle: bytes) -> float:
        return next(at for at, data in self.writes if needle in data)

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[PeerConnection], Awaitable[None]]


class Peer:
    """A TCP server on 127.0.0.1 running ``handlers[i]`` for its i-th connection (the last repeats).

    With ``accept=n`` it stops listening after n connections, as Asterisk's listener goes away
    during a restart: later connects are refused.
    """

    def __init__(self, *handlers: Handler, accept: int | None = None) -> None:
        self.handlers = handlers
        self.accept = accept
        self.connections: list[PeerConnection] = []
        self.errors: list[str] = []
        self._tasks: list[asyncio.Task] = []

    async def start(self, port: int = 0) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.append(asyncio.current_task())
        conn = PeerConnection(reader, writer)
        self.connections.append(conn)
        if self.accept is not None and len(self.connections) >= self.accept:
            self.server.close()
        handler = self.handlers[min(len(self.connections), len(self.handlers)) - 1]
        try:
            await handler(conn)
            # The script is over; keep the connection open until the client leaves.
            while await conn.read_frame() is not None:
                pass
        except ConnectionError:
            pass
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            conn.close()

    async def stop(self) -> None:
        self.server.close()
        for conn in self.connections:
            conn.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def replay(base: str, *, scale: float = 0.0) -> Handler:
    """Play the recorded connection ``base``; pauses between server frames are scaled by ``scale``."""

    async def handler(conn: PeerConnection) -> None:
        steps = timeline(base)
        ids: dict[bytes, bytes] = {}
        last_ms = steps[0].ms
        i = 0
        while i < len(steps):
            step = steps[i]
            if step.kind == "C":
                frame = await conn.read_frame()
                if frame is None:
                    return
                recorded, sent = parse_frame(step.data), parse_frame(frame)
                if (recorded.get("Action") or "").lower() != (sent.get("Action") or "").lower():
                    raise AssertionError(f"{base}: expected {recorded.get('Action')}, got {sent.get('Action')}")
                if recorded.action_id and sent.action_id:
                    ids[recorded.action_id.encode()] = sent.action_id.encode()
                last_ms = step.ms
                i += 1
            elif step.kind == "S":
                # Frames that one recv() returned at once go out in one write.
                batch = [step]
                while i + len(batch) < len(steps) and steps[i + len(batch)].kind == "S":
                    if steps[i + len(batch)].ms - batch[-1].ms >= 1.0:
                        break
                    batch.append(steps[i + len(batch)])
                pause = (step.ms - last_ms) * scale / 1000
                if pause > 0.001:
                    await asyncio.sleep(pause)
                data = b"".join(frame.data for frame in batch)
                for recorded_id, sent_id in ids.items():
                    data = data.replace(
                        b"\r\nActionID: " + recorded_id + b"\r\n", b"\r\nActionID: " + sent_id + b"\r\n"
                    )
                conn.write(data)
                await conn.writer.drain()
                last_ms = batch[-1].ms
                i += len(batch)
            else:
                conn.close()
                return

    return handler


class FakeAsterisk:
    """Answers actions with recorded frames: Login (as in 01), Ping, Logoff, unknown actions.

    ``on_login(conn)`` runs after the login frames are sent; ``responders[action](conn, msg)``
    answer other actions (lower-case names).
    """

    def __init__(
        self,
        on_login: Callable[[PeerConnection], Awaitable[None]] | None = None,
        responders: dict[str, Callable[[PeerConnection, Message], Awaitable[None]]] | None = None,
    ) -> None:
        self.on_login = on_login
        self.responders = responders or {}

    async def __call__(self, conn: PeerConnection) -> None:
        conn.write(BANNER)
        while (frame := await conn.read_frame()) is not None:
            message = parse_frame(frame)
            action = (message.get("Action") or "").lower()
            action_id = message.action_id or ""
            if action == "login":
                conn.write(b"".join(with_action_id(f, action_id) for f in LOGIN_OK))
                if self.on_login:
                    await self.on_login(conn)
            elif action in self.responders:
                await self.responders[action](conn, message)
            elif action == "ping":
                conn.write(with_action_id(PING_OK, action_id))
            elif action == "logoff":
                conn.write(with_action_id(GOODBYE, action_id))
                await conn.writer.drain()
                conn.close()
                return
            else:
                conn.write(with_action_id(UNKNOWN_ACTION, action_id))


# --- fixtures and helpers -------------------------------------------------------------

FAST = {
    "action_timeout": 2.0,
    "ping_interval": 3600.0,
    "backoff_initial": 0.05,
    "backoff_max": 0.2,
    "auth_retry": 0.3,
    "connect_timeout": 1.0,
}


def new_client(port: int, username: str = "admin", secret: str = "amp111", **overrides: object) -> AmiClient:
    return AmiClient("127.0.0.1", port, username, secret, **(FAST | overrides))


@dataclass
class Recorder:
    """What the client told its listeners."""

    states: list[tuple[str, str | None]] = field(default_factory=list)
    events: list[Message] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)

    def attach(self, client: AmiClient) -> Recorder:
        client.add_state_listener(lambda state, error: self.states.append((state, error)))
        client.add_event_listener(self.events.append)
        client.add_connect_listener(self._connected)
        return self

    async def _connected(self) -> None:
        self.connects.append(time.monotonic())


@pytest.fixture
async def peers():
    started: list[Peer] = []

    async def make(*handlers: Handler, port: int = 0, accept: int | None = None) -> Peer:
        peer = await Peer(*handlers, accept=accept).start(port)
        started.append(peer)
        return peer

    yield make
    for peer in started:
        await peer.stop()
    assert not [error for peer in started for error in peer.errors]


@pytest.fixture
async def run_client():
    """Start ``client.run()``; on teardown close it and check that none of its tasks is left."""
    running: list[tuple[AmiClient, asyncio.Task]] = []

    def start(client: AmiClient) -> AmiClient:
        running.append((client, asyncio.create_task(client.run())))
        return client

    yield start
    for client, task in running:
        await asyncio.wait_for(client.close(), 5)
        await asyncio.wait_for(task, 5)
        assert client.state == "disconnected"
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("ami-") and not task.done()]


async def wait_until(predicate: Callable[[], object], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


# --- the frame parser -----------------------------------------------------------------


def headers_of(messages: list[Message]) -> list[list[tuple[str, str]]]:
    return [message.headers for message in messages]


def test_parser_reads_a_recorded_session_in_any_slicing():
    data = server_bytes("03-show-endpoints")
    whole = FrameParser()
    messages = whole.feed(data)
    assert whole.banner == "Asterisk Call Manager/11.0.0"
    frames = [step for step in timeline("03-show-endpoints") if step.kind == "S"]
    assert len(messages) == len(frames) - 1  # all but the banner
    assert [m.event or m.response for m in messages[:6]] == [
        "Success",
        "FullyBooted",
        "SuccessfulAuth",
        "Success",
        "EndpointList",
        "EndpointList",
    ]
    byte_by_byte = FrameParser()
    assert headers_of([m for i in range(len(data)) for m in byte_by_byte.feed(data[i : i + 1])]) == headers_of(messages)
    assert byte_by_byte.banner == whole.banner


@pytest.mark.parametrize("base", ["01-login-ok", "09-restart.reconnect"])
def test_parser_split_at_every_byte_position(base):
    data = server_bytes(base)
    expected = headers_of(FrameParser().feed(data))
    for cut in range(len(data) + 1):
        parser = FrameParser()
        assert headers_of(parser.feed(data[:cut]) + parser.feed(data[cut:])) == expected, cut
        assert parser.banner == "Asterisk Call Manager/11.0.0"


def test_parser_bare_lf_tab_repeated_headers_and_field_order():
    endpoint_999 = parse_frame(recorded_frame("03-show-endpoints", b"endpoint 999")[:-4])
    assert endpoint_999.response == "Error"
    assert endpoint_999.message == "Unable to retrieve endpoint 999"  # the bare LF is not part of it

    listing = FrameParser().feed(server_bytes("11-misc-info"))
    commands = next(m for m in listing if m.get("SendText"))
    assert "A content type\tcan be optionally specified" in commands.get("SendText")

    # FullyBooted after Login vs the boot-time broadcast: other header order, same fields.
    after_login = parse_frame(recorded_frame("01-login-ok", b"Event: FullyBooted"))
    at_boot = parse_frame(recorded_frame("09-restart.reconnect", b"Event: FullyBooted"))
    assert [k for k, _ in after_login.headers] != [k for k, _ in at_boot.headers]
    assert (at_boot.get("status"), at_boot.get("UPTIME")) == ("Fully Booted", "0")
    assert after_login.get("Uptime") == "164"

    reload = FrameParser().feed(server_bytes("08-reload"))
    output = next(m for m in reload if m.get("Output"))
    assert output.get_all("Output") == ["Module 'res_pjsip.so' reloaded successfully."]

    repeated = parse_frame(b"Response: Success\r\nOutput: line one\r\nOutput: line two\r\noutput: three")
    assert repeated.get_all("output") == ["line one", "line two", "three"]
    assert repeated.get("OUTPUT") == "line one"
    assert repeated.as_dict() == {"Response": "Success", "Output": "line one", "output": "three"}


def test_parser_skips_garbage_and_keeps_odd_lines():
    parser = FrameParser()
    data = (
        BANNER
        + b"\r\n\r\n\r\n"  # empty frames
        + b"\x00\xff\xfe garbage without any header\r\n\r\n"
        + b"Event: Odd\r\nthis line has no colon\r\nValue: caf\xe9 \xff\r\nNoSpace:x\r\nEmpty:\r\n\r\n"
        + PING_OK
    )
    messages = parser.feed(data)
    assert [m.event or m.response for m in messages] == ["Odd", "Success"]
    odd = messages[0]
    assert odd.extra_lines == ["this line has no colon"]
    assert odd.get("Value") == "caf\ufffd \ufffd"
    assert (odd.get("NoSpace"), odd.get("Empty"), odd.get("Missing", "-")) == ("x", "", "-")
    assert messages[1].get("Ping") == "Pong"
    assert FrameParser().feed(b"Response: Success\r\nActionID: 1\r\n\r\n")[0].action_id == "1"  # no banner at all


def test_parser_accepts_a_megabyte_value():
    value = "x" * (1024 * 1024)
    frame = f"Event: Big\r\nPrivilege: all\r\nData: {value}\r\n\r\n".encode()
    parser = FrameParser()
    parser.feed(BANNER)
    got = [m for i in range(0, len(frame), 65536) for m in parser.feed(frame[i : i + 65536])]
    assert len(got) == 1 and got[0].get("Data") == value


@pytest.mark.parametrize("chunk", [None, 65536, 1000])
def test_parser_discards_an_oversized_frame_once_and_resynchronises(caplog, chunk):
    parser = FrameParser(max_frame=10_000)
    data = BANNER + PING_OK + b"Event: Huge\r\nData: " + b"y" * 50_000 + b"\r\n\r\n" + SHUTDOWN
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    with caplog.at_level(logging.WARNING, logger="pbx.ami"):
        got = [m for piece in pieces for m in parser.feed(piece)]
    assert [m.event or m.response for m in got] == ["Success", "Shutdown"]
    assert got[1].get("Restart") == "True"
    assert parser.frames_discarded == 1
    assert len([r for r in caplog.records if "discarded a frame" in r.getMessage()]) == 1


def test_parser_memory_stays_bounded_while_a_frame_never_ends():
    parser = FrameParser(max_frame=64 * 1024)
    parser.feed(BANNER + b"Event: Endless\r\nData: ")
    for _ in range(200):
        assert parser.feed(b"z" * 8192) == []
        assert parser.buffered <= 64 * 1024 + 8192
    assert parser.frames_discarded == 1
    assert [m.event for m in parser.feed(b"\r\n\r\n" + SHUTDOWN)] == ["Shutdown"]


def test_encode_action_refuses_header_injection_and_masks_secrets():
    assert encode_action("Ping", "id-1") == b"Action: Ping\r\nActionID: id-1\r\n\r\n"
    assert encode_action("PJSIPShowEndpoint", "a", {"Endpoint": "101"}).endswith(b"Endpoint: 101\r\n\r\n")
    for bad in ({"Endpoint": "101\r\nAction: Logoff"}, {"Bad Name": "x"}, {"ActionID": "mine"}, {"X": "a\nb"}):
        with pytest.raises(ValueError):
            encode_action("PJSIPShowEndpoint", "a", bad)
    text = describe_action("Login", "a", {"Username": "admin", "Secret": "amp111"})
    assert "amp111" not in text and "Secret: ********" in text and "Username: admin" in text


def test_backoff_doubles_from_half_a_second_to_thirty_with_jitter():
    exact = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert [exact.next() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    shortest = Backoff(0.5, 30.0, rng=lambda: 0.999999)
    assert [round(shortest.next(), 3) for _ in range(8)] == [0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 24.0, 24.0]
    exact.reset()
    assert exact.next() == 0.5
    jittered = Backoff(0.5, 30.0)
    delays = [jittered.next() for _ in range(200)]
    assert all(0.4 <= d <= 0.5 for d in delays[:1]) and all(24.0 <= d <= 30.0 for d in delays[10:])
    assert len(set(delays[10:])) > 100  # really random, so that many clients do not reconnect in step


# --- the client against recorded sessions ----------------------------------------------


async def test_login_ping_logoff(peers, run_client, caplog):
    caplog.set_level(logging.DEBUG)
    peer = await peers(replay("01-login-ok"))
    client = new_client(peer.port, action_timeout=0.3)
    seen = Recorder().attach(client)
    run_client(client)
    assert await client.wait_connected(2)
    assert client.banner == "Asterisk Call Manager/11.0.0"
    assert client.since.tzinfo is UTC and client.error is None

    pong = await client.action("Ping")
    assert (pong.response, pong.get("Ping"), pong.get("Timestamp")) == ("Success", "Pong", "1795631401.586864")
    # The recorded second Ping was answered without an ActionID: ours gets no answer, the link stays up.
    started = time.monotonic()
    with pytest.raises(AmiTimeout):
        await client.action("Ping")
    assert 0.25 < time.monotonic() - started < 1.0
    assert client.state == "connected"

    await wait_until(lambda: seen.connects)
    await client.close()
    sent = [parse_frame(frame) for frame in peer.connections[0].frames]
    assert [m.get("Action") for m in sent] == ["Login", "Ping", "Ping", "Logoff"]
    assert (sent[0].get("Username"), sent[0].get("Secret"), sent[0].get("Events")) == ("admin", "amp111", "on")
    assert len({m.action_id for m in sent}) == 4
    assert [state for state, _ in seen.states] == ["connecting", "connected", "disconnected"]
    assert len(seen.connects) == 1  # the FullyBooted that follows Login was merged into the login's run
    assert [m.event for m in seen.events] == ["FullyBooted", "SuccessfulAuth"]
    assert all("amp111" not in record.getMessage() for record in caplog.records)
    assert any("Secret: ********" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("base", "username", "secret"),
    [("02-login-bad", "admin", "wrong-secret"), ("02-login-bad.unknown-user", "nosuchuser", "whatever-secret")],
)
async def test_bad_login_is_logged_once_and_retried_slowly(peers, run_client, caplog, base, username, secret):
    caplog.set_level(logging.DEBUG)
    peer = await peers(replay(base, scale=0.05))  # the ~1 s delay of a failed login becomes 50 ms
    client = new_client(peer.port, username=username, secret=secret, auth_retry=0.3)
    seen = Recorder().attach(client)
    run_client(client)
    await wait_until(lambda: peer.connections)
    await asyncio.sleep(1.0)
    first = peer.connections[0].opened
    attempts = [conn for conn in peer.connections if conn.opened - first <= 1.0]
    assert 2 <= len(attempts) <= 4  # every 0.3 s + the 50 ms answer, not a tight loop
    assert client.state == "disconnected"
    assert client.error == f"AMI authentication failed for user {username}"
    assert not seen.connects and "connected" not in [state for state, _ in seen.states]
    assert b"Secret: " + secret.encode() in peer.connections[0].frames[0]  # it was sent, so the test means something

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "pbx.ami"]
    assert len(errors) == 1
    assert all(part in errors[0].getMessage() for part in ("127.0.0.1", str(peer.port), username))
    for record in caplog.records:
        assert secret not in f"{record.getMessage()} {record.args} {record.exc_text}"
    assert secret not in repr(client) and secret not in str(client.error)


async def test_auth_failure_streak_ends_with_a_good_login(peers, run_client, caplog):
    caplog.set_level(logging.INFO, logger="pbx.ami")
    peer = await peers(replay("02-login-bad", scale=0.05), replay("02-login-bad", scale=0.05), FakeAsterisk())
    client = run_client(new_client(peer.port, auth_retry=0.1))
    assert await client.wait_connected(3)
    assert len(peer.connections) == 3
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert any("is back" in r.getMessage() for r in caplog.records)
    assert client.error is None and client._backoff.attempt == 0


async def test_show_endpoints_lists_and_errors(peers, run_client):
    peer = await peers(replay("03-show-endpoints"))
    client = run_client(new_client(peer.port))
    assert await client.wait_connected(2)

    endpoints = await client.action_list("PJSIPShowEndpoints")
    assert [(e.event, e.get("ObjectName"), e.get("DeviceState")) for e in endpoints] == [
        ("EndpointList", "101", "Not in use"),
        ("EndpointList", "102", "Unavailable"),
    ]
    assert endpoints[0].get("Contacts") == "101/sip:101-0x558ca6e95ec0@127.0.0.1:5070,"
    assert endpoints[0].get("Transport") == ""

    contacts = await client.action_list("PJSIPShowContacts")
    assert [(c.get("Endpoint"), c.get("Uri"), c.get("Status")) for c in contacts] == [
        ("101", "sip:101-0x558ca6e95ec0@127.0.0.1:5070", "Reachable")
    ]
    ep101 = await client.action_list("PJSIPShowEndpoint", {"Endpoint": "101"})
    assert [e.event for e in ep101] == ["EndpointDetail", "AuthDetail", "AorDetail", "ContactStatusDetail"]
    ep102 = await client.action_list("PJSIPShowEndpoint", {"Endpoint": "102"})
    assert [e.event for e in ep102] == ["EndpointDetail", "AuthDetail", "AorDetail"]

    with pytest.raises(AmiError) as missing:
        await client.action_list("PJSIPShowEndpoint", {"Endpoint": "999"})
    assert not isinstance(missing.value, AmiConnectionLost | AmiTimeout)
    assert missing.value.response.response == "Error"
    assert missing.value.response.message == "Unable to retrieve endpoint 999"

    aors = await client.action_list("PJSIPShowAors")
    assert [a.get("ObjectName") for a in aors] == ["101", "102"]
    inbound = await client.action_list("PJSIPShowRegistrationInboundContactStatuses")
    assert [(c.event, c.get("AOR")) for c in inbound] == [("ContactStatusDetail", "101")]
    assert client.state == "connected" and len(peer.connections) == 1


async def test_empty_list_error_is_an_empty_list(peers, run_client):
    async def no_endpoints(conn: PeerConnection, message: Message) -> None:
        conn.write(f"Response: Error\r\nActionID: {message.action_id}\r\nMessage: No endpoints found\r\n\r\n".encode())

    async def core_status(conn: PeerConnection, message: Message) -> None:
        conn.write(with_action_id(CORE_STATUS, message.action_id))

    responders = {"pjsipshowendpoints": no_endpoints, "corestatus": core_status}
    peer = await peers(FakeAsterisk(responders=responders))
    client = run_client(new_client(peer.port))
    assert await client.wait_connected(2)
    assert await client.action_list("PJSIPShowEndpoints") == []
    with pytest.raises(AmiError, match="did not start an event list"):
        await client.action_list("CoreStatus")
    with pytest.raises(AmiError, match="Invalid/unknown command") as unknown:
        await client.action("NoSuchAction")
    assert unknown.value.response.response == "Error"
    assert (await client.action("CoreStatus")).get("CoreCurrentCalls") == "0"


async def test_restart_shutdown_eof_refused_then_reconnect_and_fully_booted(peers, run_client):
    first = await peers(replay("09-restart", scale=0.2), accept=1)  # Shutdown comes 100 ms after the login
    client = new_client(first.port)
    seen = Recorder().attach(client)
    run_client(client)
    assert await client.wait_connected(2)
    await wait_until(lambda: len(seen.connects) == 1)

    await wait_until(lambda: client.state == "disconnected")
    assert client.error == "Asterisk shut down"
    assert [(e.event, e.get("Restart")) for e in seen.events if e.event == "Shutdown"] == [("Shutdown", "True")]
    await wait_until(lambda: any("Connection refused" in (error or "") for _, error in seen.states))
    await asyncio.sleep(0.3)  # Asterisk re-execs: refused for ~300 ms

    second = await peers(replay("09-restart.reconnect", scale=0.5), port=first.port)
    assert await client.wait_connected(3)
    assert client._backoff.attempt == 0
    # Login is accepted before the boot has finished; the FullyBooted broadcast re-runs the listeners.
    await wait_until(lambda: len(seen.connects) == 3)
    assert seen.connects[2] >= second.connections[0].sent_at(b"Event: FullyBooted")
    status = await client.action("CoreStatus")
    assert (status.get("CoreStartupTime"), status.get("CoreProcessedCalls")) == ("18:32:31", "0")
    states = [state for state, _ in seen.states]
    assert states[:2] == ["connecting", "connected"] and states[-1] == "connected"
    assert states.count("connected") == 2


# --- faults a real Asterisk cannot produce on demand -----------------------------------


async def test_actions_in_flight_fail_fast_when_the_link_drops(peers, run_client):
    async def shutdown_instead(conn: PeerConnection, message: Message) -> None:
        conn.write(SHUTDOWN)
        await asyncio.sleep(0.05)
        conn.close()

    peer = await peers(FakeAsterisk(responders={"corestatus": shutdown_instead}), FakeAsterisk())
    client = run_client(new_client(peer.port, action_timeout=10.0))
    assert await client.wait_connected(2)
    started = time.monotonic()
    results = await asyncio.gather(
        client.action("CoreStatus"), client.action_list("PJSIPShowEndpoints"), return_exceptions=True
    )
    assert time.monotonic() - started < 1.0  # far below the 10 s action timeout
    assert all(isinstance(r, AmiConnectionLost) for r in results), results
    assert "Asterisk shut down" in str(results[0])
    with pytest.raises(AmiConnectionLost):
        await client.action("Ping")  # not connected: refused at once
    assert await client.wait_connected(2)
    assert (await client.action("Ping")).get("Ping") == "Pong"


async def test_action_not_connected_fails_at_once():
    client = new_client(1)
    with pytest.raises(AmiConnectionLost, match="not connected"):
        await client.action("Ping")
    assert await client.wait_connected(0.01) is False


async def test_action_timeout_leaves_the_link_up(peers, run_client):
    async def late(conn: PeerConnection, message: Message) -> None:
        await asyncio.sleep(0.4)
        conn.write(with_action_id(CORE_STATUS, message.action_id))  # nobody waits any more

    peer = await peers(FakeAsterisk(responders={"corestatus": late}))
    client = run_client(new_client(peer.port, action_timeout=0.2))
    assert await client.wait_connected(2)
    started = time.monotonic()
    with pytest.raises(AmiTimeout):
        await client.action("CoreStatus")
    assert 0.15 < time.monotonic() - started < 0.5
    await asyncio.sleep(0.3)
    assert (await client.action("Ping")).get("Ping") == "Pong"
    with pytest.raises(AmiTimeout):
        await client.action("CoreStatus", timeout=0.05)
    assert client.state == "connected" and len(peer.connections) == 1


async def test_a_long_action_holds_the_pings_instead_of_ending_the_link(peers, run_client):
    """Asterisk answers a session in order: a Ping sent during a long Reload (100,000
    endpoints) waits behind it, and must not make the client drop a healthy link."""

    async def slow_reload(conn: PeerConnection, message: Message) -> None:
        await asyncio.sleep(1.0)  # reads nothing meanwhile, as Asterisk's session thread
        conn.write(with_action_id(PING_OK, message.action_id))

    peer = await peers(FakeAsterisk(responders={"reload": slow_reload}))
    client = run_client(new_client(peer.port, ping_interval=0.1, action_timeout=0.2))
    assert await client.wait_connected(2)
    assert (await client.action("Reload", {"Module": "res_pjsip.so"}, timeout=5.0)).get("Response") == "Success"
    assert client.state == "connected" and len(peer.connections) == 1
    await asyncio.sleep(0.3)  # and the pings resume once it answered
    assert client.state == "connected" and len(peer.connections) == 1


async def test_failed_ping_drops_the_link_and_reconnects(peers, run_client):
    async def swallow(conn: PeerConnection, message: Message) -> None:
        pass

    peer = await peers(FakeAsterisk(responders={"ping": swallow}), FakeAsterisk())
    client = new_client(peer.port, ping_interval=0.1, action_timeout=0.2)
    seen = Recorder().attach(client)
    run_client(client)
    await wait_until(lambda: len(peer.connections) == 2 and client.state == "connected", 3)
    assert any(state == "disconnected" and "ping failed" in (error or "") for state, error in seen.states)
    await asyncio.sleep(0.3)  # pings on the new link are answered: it stays
    assert client.state == "connected" and len(peer.connections) == 2
    assert len(seen.connects) == 2


async def test_garbage_and_frames_in_pieces_keep_the_link(peers, run_client):
    event = SMALL_EVENTS[0]

    async def hostile(conn: PeerConnection) -> None:
        conn.write(b"\x00\xffgarbage\r\n\r\n\r\n\r\nno colon here\r\n\r\n" + event[:7])
        await asyncio.sleep(0.05)
        for byte in event[7:]:
            conn.write(bytes([byte]))
            await conn.writer.drain()
            await asyncio.sleep(0)

    async def ping_in_pieces(conn: PeerConnection, message: Message) -> None:
        frame = with_action_id(PING_OK, message.action_id)
        for i in range(0, len(frame), 3):
            conn.write(frame[i : i + 3])
            await conn.writer.drain()
            await asyncio.sleep(0.001)

    peer = await peers(FakeAsterisk(on_login=hostile, responders={"ping": ping_in_pieces}))
    client = new_client(peer.port)
    seen = Recorder().attach(client)
    run_client(client)
    assert await client.wait_connected(2)
    await wait_until(lambda: len(seen.events) == 3)
    assert seen.events[2].headers == parse_frame(event[:-4]).headers
    assert (await client.action("Ping")).get("Timestamp") == "1795631401.586864"
    assert [state for state, _ in seen.states] == ["connecting", "connected"]


async def test_megabyte_value_and_oversized_frame_keep_the_link(peers, run_client, caplog):
    caplog.set_level(logging.WARNING, logger="pbx.ami")
    big = "v" * (1024 * 1024)

    async def large_frames(conn: PeerConnection) -> None:
        conn.write(f"Event: UserEvent\r\nPrivilege: user,all\r\nUserEvent: big\r\nData: {big}\r\n\r\n".encode())
        conn.write(b"Event: UserEvent\r\nUserEvent: huge\r\nData: " + b"w" * (5 * 1024 * 1024) + b"\r\n\r\n")
        conn.write(SMALL_EVENTS[-1])
        await conn.writer.drain()

    peer = await peers(FakeAsterisk(on_login=large_frames))
    client = new_client(peer.port)  # the default max_frame: 4 MiB
    seen = Recorder().attach(client)
    run_client(client)
    marker = parse_frame(SMALL_EVENTS[-1]).event
    await wait_until(lambda: any(e.event == marker for e in seen.events), 5)
    user_events = [e for e in seen.events if e.event == "UserEvent"]
    assert [(e.get("UserEvent"), len(e.get("Data"))) for e in user_events] == [("big", 1024 * 1024)]
    assert len([r for r in caplog.records if "discarded a frame" in r.getMessage()]) == 1
    assert (await client.action("Ping")).get("Ping") == "Pong"
    assert client.state == "connected" and len(peer.connections) == 1


async def test_flood_of_100k_events_is_delivered_without_losing_the_link(peers, run_client):
    count = 100_000
    flood = b"".join(SMALL_EVENTS[i % len(SMALL_EVENTS)] for i in range(count))

    async def burst(conn: PeerConnection) -> None:
        conn.write(flood)

    peer = await peers(FakeAsterisk(on_login=burst))
    client = new_client(peer.port, action_timeout=20.0)
    seen = Recorder().attach(client)
    run_client(client)
    assert await client.wait_connected(2)
    assert (await client.action("Ping")).get("Ping") == "Pong"  # answered behind the whole flood
    await wait_until(lambda: len(seen.events) >= count + 2, 30)
    assert len(seen.events) == count + 2  # + FullyBooted and SuccessfulAuth of the login
    kinds = Counter(e.event for e in seen.events[2:])
    assert kinds == Counter(parse_frame(SMALL_EVENTS[i % len(SMALL_EVENTS)]).event for i in range(count))
    assert seen.events[-1].headers == parse_frame(SMALL_EVENTS[(count - 1) % len(SMALL_EVENTS)][:-4]).headers
    assert client.state == "connected" and len(peer.connections) == 1


async def test_slow_listeners_lose_events_and_get_a_resync(peers, run_client, caplog):
    caplog.set_level(logging.WARNING, logger="pbx.ami")
    flood = b"".join(SMALL_EVENTS[i % len(SMALL_EVENTS)] for i in range(20_000))

    async def burst(conn: PeerConnection) -> None:
        conn.write(flood)

    peer = await peers(FakeAsterisk(on_login=burst))
    client = new_client(peer.port, max_event_backlog=500)
    seen = Recorder().attach(client)
    client.add_event_listener(lambda message: time.sleep(0.0002))
    run_client(client)
    await wait_until(lambda: len(seen.connects) == 2, 10)
    assert 500 <= len(seen.events) < 20_000
    assert any("events were dropped" in r.getMessage() for r in caplog.records)
    assert (await client.action("Ping")).get("Ping") == "Pong"
    assert len(peer.connections) == 1


async def test_listener_exceptions_are_logged_and_swallowed(peers, run_client, caplog):
    caplog.set_level(logging.ERROR, logger="pbx.ami")

    async def events(conn: PeerConnection) -> None:
        conn.write(b"".join(SMALL_EVENTS[i % len(SMALL_EVENTS)] for i in range(23)))

    def broken_event_listener(message: Message) -> None:
        raise ZeroDivisionError("event")

    async def broken_connect_listener() -> None:
        raise KeyError("connect")

    def broken_state_listener(state: str, error: str | None) -> None:
        raise ValueError("state")

    peer = await peers(FakeAsterisk(on_login=events))
    client = new_client(peer.port)
    client.add_event_listener(broken_event_listener)
    client.add_connect_listener(broken_connect_listener)
    client.add_state_listener(broken_state_listener)
    seen = Recorder().attach(client)
    run_client(client)
    await wait_until(lambda: len(seen.events) == 25 and seen.connects)
    event_failures = [r for r in caplog.records if "event listener" in r.getMessage()]
    assert [r.exc_info[0] for r in event_failures] == [ZeroDivisionError, ZeroDivisionError]  # 1st and 10th
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)
    assert (await client.action("Ping")).get("Ping") == "Pong"
    assert client.state == "connected" and len(peer.connections) == 1


async def test_reconnect_backoff_while_connections_close_before_the_banner(peers, run_client):
    async def close_at_once(conn: PeerConnection) -> None:
        conn.close()  # as Asterisk did once while restarting: connect accepted, zero bytes

    peer = await peers(close_at_once)
    client = new_client(peer.port, backoff_initial=0.05, backoff_max=0.2)
    client._backoff.rng = lambda: 0.0  # no jitter: the delays are exactly 0.05, 0.1, 0.2, 0.2
    seen = Recorder().attach(client)
    run_client(client)
    await wait_until(lambda: len(peer.connections) >= 6, 3)
    opened = [conn.opened for conn in peer.connections[:6]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(opened)]
    delays = [0.05, 0.1, 0.2, 0.2, 0.2]
    assert all(delay * 0.9 <= gap for gap, delay in zip(gaps, delays, strict=True)), gaps  # never sooner
    # Never much later either, but a loaded machine may stall one turn of the event loop.
    assert sum(gap <= delay + 0.15 for gap, delay in zip(gaps, delays, strict=True)) >= 4, gaps
    assert client.state == "disconnected" and "before its banner" in client.error
    assert not seen.connects


async def test_connection_refused_is_reported(run_client):
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connects are refused
        client = run_client(new_client(port))
        assert await client.wait_connected(0.3) is False
    assert client.state == "disconnected"
    assert client.error == f"cannot connect to AMI at 127.0.0.1:{port}: Connection refused"


async def test_cancelling_run_cleans_up(peers):
    async def never_answers(conn: PeerConnection, message: Message) -> None:
        pass

    peer = await peers(FakeAsterisk(responders={"corestatus": never_answers}))
    client = new_client(peer.port)
    task = asyncio.create_task(client.run())
    assert await client.wait_connected(2)
    in_flight = asyncio.create_task(client.action("CoreStatus"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(AmiConnectionLost):
        await asyncio.wait_for(in_flight, 1)
    assert client.state == "disconnected"
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ami-") and not t.done()]


def test_auth_failed_is_an_ami_error():
    assert issubclass(AmiAuthFailed, AmiError) and issubclass(AmiTimeout, AmiError)
