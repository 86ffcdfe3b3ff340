"""A scripted Asterisk for the AMI flood benchmark: a TCP AMI peer on 127.0.0.1 that floods.

It speaks with the frames recorded from Asterisk 22.10.1 in ``../shared/ami/`` (see its
README): the banner, Login, Ping, CoreSettings, CoreStatus and Reload answers are recorded
frames with the client's ActionID put in; the lists the link reads after a login or for an
apply (``PJSIPShowEndpoints``, ``PJSIPShowContacts``, ``CoreShowChannels``,
``PJSIPShowRegistrationsOutbound``) are built in the recorded shapes from the peer's own
model: endpoints are what the last ``Reload`` of ``res_pjsip.so`` found in
``pjsip_rayanpbx.conf`` (as Asterisk would), contacts and channels what the flood has
registered and not ended.

**The flood** is made of the transcripts' own events with their identities rewritten:

* a *registration change* of one extension: the register part of
  ``04-registration-lifecycle`` (ChallengeSent, SuccessfulAuth, ContactStatus NonQualified,
  PeerStatus, ContactStatus Reachable, DeviceStateChange; 6 events) when it is not
  registered, else its unregister part (5 events), with a contact URI unique to the cycle;
* a *call* between two extensions: every unsolicited event of ``07-call-101-102`` (94
  events, 62 of them VarSet), with unique Uniqueids, Linkedid, channel names and bridge id.

``concurrency`` scenarios are in progress at once, each sending its next event in turn (a
recorded call then lasts about as long as it did, ~5 s at 2,000 events/s); a finished one
is replaced by a call or a registration change (``registrations_per_call`` of those per
call). Everything is rendered before the flood starts and paced by the clock while it runs
(``rate`` events/s for ``seconds``; a late tick sends what is due at once).

**What the link should publish** is worked out by running the product's own pure state
machine (``pbx.state.PbxState``, no I/O) over the same frames in the same order, with the
planned send time as its clock: each stream event it gives is keyed (``call.*``: type and
call id; ``extension.registration``: extension and its n-th event since the flood began)
and stamped with the moment the frame that caused it was written to the socket. The bench
matches those keys to what the browsers receive.

Run by ``bench.ami_flood`` as ``python -m bench.ami_peer --config-dir DIR``; it prints
``{"port": P}`` once it listens, then takes one JSON command per line on stdin (``warmup``,
``flood``, ``stats``, ``exit``) and answers each with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pbx.ami_protocol import Message, parse_frame
from pbx.state import PbxState

ROOT = Path(__file__).resolve().parent.parent
AMI_DIR = ROOT.parent / "shared" / "ami"
END = b"\r\n\r\n"

# --- the recordings -------------------------------------------------------------------


def recorded_frames(base: str) -> tuple[bytes, list[bytes]]:
    """The banner line and every frame (without its final CRLF CRLF) Asterisk sent in ``base``."""
    data = (AMI_DIR / f"{base}.server.txt").read_bytes()
    banner, _, rest = data.partition(b"\r\n")
    return banner + b"\r\n", [frame for frame in rest.split(END) if frame.strip()]


def _first(frames: list[bytes], *needles: bytes) -> bytes:
    return next(frame for frame in frames if all(needle in frame for needle in needles))


def _is_unsolicited(frame: bytes) -> bool:
    """An event no action asked for, and not the login's own (FullyBooted, the AMI SuccessfulAuth)."""
    return (
        frame.startswith(b"Event: ")
        and b"\r\nActionID: " not in frame
        and b"Event: FullyBooted" not in frame
        and b"Service: AMI" not in frame
    )


class Template:
    """A recorded frame with some values turned into slots, rendered by joining its parts."""

    def __init__(self, frame: bytes, slots: dict[bytes, str]) -> None:
        # Longest first, and never inside a longer word: "101" is not part of "1795631479.101".
        tokens = sorted(slots, key=len, reverse=True)
        pattern = re.compile(b"(?<![0-9A-Za-z.])(" + b"|".join(re.escape(t) for t in tokens) + b")(?![0-9A-Za-z])")
        self.parts: list[bytes | str] = []
        last = 0
        for match in pattern.finditer(frame):
            self.parts.append(frame[last : match.start()])
            self.parts.append(slots[match.group(1)])
            last = match.end()
        self.parts.append(frame[last:])
        self.event = parse_frame(frame).event or ""

    def render(self, values: dict[str, bytes]) -> bytes:
        return b"".join(part if isinstance(part, bytes) else values[part] for part in self.parts)


@dataclass
class Recorded:
    """Every frame the peer needs, from the transcripts."""

    banner: bytes
    login_ok: list[bytes]
    ping: bytes
    goodbye: bytes
    unknown: bytes
    core_settings: bytes
    core_status: bytes
    reload_ok: bytes
    reload_event: bytes
    register: list[Template]
    unregister: list[Template]
    call: list[Template]
    contact_list: Template
    endpoint_list: Template


REG_URI = b"sip:101-0x55f6ba1bdec0@127.0.0.1:5070"
CALL_SLOTS = {
    b"101": "A",
    b"102": "B",
    b"1795631479.2": "UA",
    b"1795631479.3": "UB",
    b"PJSIP/101-00000002": "CA",
    b"PJSIP/102-00000003": "CB",
    b"8edbd594-3e4a-4ec1-a65a-c1203792a5fb": "BRIDGE",
}


def load() -> Recorded:
    banner, login = recorded_frames("01-login-ok")
    _, reg = recorded_frames("04-registration-lifecycle")
    _, call = recorded_frames("07-call-101-102")
    _, misc = recorded_frames("11-misc-info")
    _, restart = recorded_frames("09-restart.reconnect")
    _, reload = recorded_frames("08-reload")
    _, show = recorded_frames("03-show-endpoints")
    events = [f for f in reg if _is_unsolicited(f)]
    split = next(i for i, f in enumerate(events) if b"Event: DeviceStateChange" in f) + 1
    reg_slots = {b"101": "EXT", REG_URI: "URI"}
    contact = _first(show, b"Event: ContactList\r\n")
    endpoint = _first(show, b"Event: EndpointList\r\n", b"ObjectName: 101")
    return Recorded(
        banner=banner,
        login_ok=login[:3],  # Success, FullyBooted, SuccessfulAuth
        ping=_first(login, b"ActionID: ping-1"),
        goodbye=_first(login, b"Response: Goodbye"),
        unknown=_first(misc, b"Invalid/unknown command"),
        core_settings=_first(misc, b"AsteriskVersion"),
        core_status=_first(restart, b"CoreStartupDate"),
        reload_ok=_first(reload, b"Message: Module Reloaded"),
        reload_event=_first(reload, b"Event: Reload", b"res_pjsip.so"),
        register=[Template(f, reg_slots) for f in events[:split]],
        unregister=[Template(f, reg_slots) for f in events[split:]],
        call=[Template(f, CALL_SLOTS) for f in call if _is_unsolicited(f)],
        contact_list=Template(
            contact,
            {
                b"contacts": "ID",
                b"101;@423055df05ed79dbc5853437dcadd3aa": "NAME",
                b"101": "EXT",
                b"sip:101-0x558ca6e95ec0@127.0.0.1:5070": "URI",
                b"5070": "PORT",
                b"1795631469": "EXPIRES",
            },
        ),
        endpoint_list=Template(
            endpoint,
            {b"eps": "ID", b"101": "EXT", b"101/sip:101-0x558ca6e95ec0@127.0.0.1:5070,": "CONTACTS"},
        ),
    )


def with_action_id(frame: bytes, action_id: str) -> bytes:
    """``frame`` answering ``action_id`` instead of the recorded one (or with one added)."""
    if b"\r\nActionID: " in frame:
        return re.sub(rb"\r\nActionID: [^\r\n]*", b"\r\nActionID: " + action_id.encode(), frame, count=1)
    head, _, rest = frame.partition(b"\r\n")
    return head + b"\r\nActionID: " + action_id.encode() + (b"\r\n" + rest if rest else b"")


# --- the flood ------------------------------------------------------------------------


@dataclass
class Planned:
    """One frame of the flood: its bytes, the model change it makes, what the link should publish."""

    data: bytes
    op: tuple[Any, ...] | None
    expected: list[list[Any]]


@dataclass
class Scenario:
    frames: list[tuple[bytes, tuple[Any, ...] | None]]
    extension: str | None = None  # a registration change's extension, busy until it ends
    position: int = 0


class FloodPlan:
    """Renders a flood and what the product's state machine makes of it (see the module docstring)."""

    def __init__(self, recorded: Recorded, extensions: list[str], registered: dict[str, str], epoch: int) -> None:
        self.recorded = recorded
        self.extensions = extensions
        #: Extension -> the URI of its contact, for those registered.
        self.registered = dict(registered)
        self.busy: set[str] = set()
        self.epoch = epoch
        self.calls = 0
        self.cycles = 0
        self._reg_next = 0
        self._call_next = 0
        #: The product's state machine run over the flood, on the flood's planned clock.
        self.clock = [float(epoch)]
        self.state = PbxState(clock=lambda: self.clock[0])
        self.occurrences: Counter[str] = Counter()

    def tail(self, after: float) -> list[list[Any]]:
        """What the link's timers publish ``after`` seconds past the last frame (pending calls)."""
        self.clock[0] += after
        return [event_key(type_, payload, self.occurrences) for type_, payload in self.state.due()]

    def registration(self) -> Scenario | None:
        for _ in range(len(self.extensions)):
            ext = self.extensions[self._reg_next % len(self.extensions)]
            self._reg_next += 1
            if ext not in self.busy:
                break
        else:
            return None
        self.busy.add(ext)
        if ext in self.registered:
            # Unregister the contact it registered (Removed names that URI).
            uri = self.registered.pop(ext).encode()
            templates, op = self.recorded.unregister, ("unreg", ext)
        else:
            self.cycles += 1
            port = 5070 + self.cycles % 1000
            uri = f"sip:{ext}-0x{self.cycles:x}@127.0.0.1:{port}".encode()
            self.registered[ext] = uri.decode()
            templates, op = self.recorded.register, ("reg", ext, uri.decode(), port)
        values = {"EXT": ext.encode(), "URI": uri}
        frames: list[tuple[bytes, tuple[Any, ...] | None]] = [(t.render(values), None) for t in templates]
        # The model changes with the first ContactStatus (the contact appears or is removed).
        first = next(i for i, t in enumerate(templates) if t.event == "ContactStatus")
        frames[first] = (frames[first][0], op)
        return Scenario(frames, ext)

    def call(self) -> Scenario:
        n = self.calls
        self.calls += 1
        count = len(self.extensions)
        a = self.extensions[self._call_next % count]
        b = self.extensions[(self._call_next + count // 2) % count]
        self._call_next += 1
        ua, ub = f"{self.epoch}.{2 * n + 10}", f"{self.epoch}.{2 * n + 11}"
        values = {
            "A": a.encode(),
            "B": b.encode(),
            "UA": ua.encode(),
            "UB": ub.encode(),
            "CA": f"PJSIP/{a}-{2 * n + 10:08x}".encode(),
            "CB": f"PJSIP/{b}-{2 * n + 11:08x}".encode(),
            "BRIDGE": f"8edbd594-3e4a-4ec1-a65a-{n:012x}".encode(),
        }
        frames: list[tuple[bytes, tuple[Any, ...] | None]] = []
        for t in self.recorded.call:
            data = t.render(values)
            op: tuple[Any, ...] | None = None
            if t.event in ("Newchannel", "Hangup"):
                caller = b"\r\nUniqueid: " + values["UA"] + b"\r\n" in data
                uid = ua if caller else ub
                if t.event == "Newchannel":
                    op = ("chan+", uid, ua, a if caller else b, values["CA" if caller else "CB"].decode())
                else:
                    op = ("chan-", uid)
            frames.append((data, op))
        return Scenario(frames)

    def render(
        self, rate: float, seconds: float, concurrency: int, registrations_per_call: float
    ) -> tuple[list[Planned], dict[str, int]]:
        """Every frame of the flood, in sending order, with what the link should publish."""
        total = int(rate * seconds)
        clock = self.clock
        state = self.state
        occurrences = self.occurrences
        credit = 0.0  # registration changes owed to the calls started so far
        started: Counter[str] = Counter()

        def start() -> Scenario:
            nonlocal credit
            if credit >= 1:
                scenario = self.registration()
                if scenario is not None:
                    credit -= 1
                    started["registration_changes"] += 1
                    return scenario
            credit += registrations_per_call
            started["calls"] += 1
            return self.call()

        active = [start() for _ in range(concurrency)]
        planned: list[Planned] = []
        turn = 0
        t0 = float(self.epoch)
        while len(planned) < total:
            turn %= len(active)
            scenario = active[turn]
            data, op = scenario.frames[scenario.position]
            scenario.position += 1
            clock[0] = t0 + len(planned) / rate
            changes = state.handle(parse_frame(data))
            if len(planned) % 1000 == 0:  # the link calls it at least every second
                changes += state.due()
            expected = [event_key(type_, payload, occurrences) for type_, payload in changes]
            planned.append(Planned(data + END, op, expected))
            if scenario.position == len(scenario.frames):
                self.busy.discard(scenario.extension or "")
                active[turn] = start()
            turn += 1
        started["in_progress_at_end"] = sum(1 for s in active if s.position > 0)
        return planned, dict(started)


def event_key(type_: str, payload: dict[str, Any], occurrences: Counter[str]) -> list[Any]:
    """``[type, key, state]`` of a stream event: how the bench finds, among the events the
    browsers receive, the one the state machine said would come (``occurrences`` counts each
    extension's events since the flood began)."""
    if type_ == "extension.registration":
        ext = payload["extension_number"]
        occurrences[ext] += 1
        return [type_, f"{ext}#{occurrences[ext]}", payload["state"]]
    if type_.startswith("call."):
        return [type_, payload["id"], None]
    occurrences[type_] += 1
    return [type_, f"{type_}#{occurrences[type_]}", None]


# --- the peer -------------------------------------------------------------------------


@dataclass
class Model:
    """What this Asterisk has: endpoints loaded, contacts registered, channels up."""

    endpoints: list[str] = field(default_factory=list)
    contacts: dict[str, tuple[str, int]] = field(default_factory=dict)  # ext -> (uri, port)
    channels: dict[str, tuple[str, str, str, float]] = field(default_factory=dict)  # uid -> (lid, ext, name, t)

    def apply(self, op: tuple[Any, ...] | None) -> None:
        if op is None:
            return
        kind = op[0]
        if kind == "reg":
            self.contacts[op[1]] = (op[2], op[3])
        elif kind == "unreg":
            self.contacts.pop(op[1], None)
        elif kind == "chan+":
            self.channels[op[1]] = (op[2], op[3], op[4], time.time())
        elif kind == "chan-":
            self.channels.pop(op[1], None)


class AmiPeer:
    """The TCP server: answers the link's actions, and floods on command."""

    def __init__(self, recorded: Recorded, config_dir: Path, username: str, secret: str) -> None:
        self.recorded = recorded
        self.config_dir = config_dir
        self.username = username
        self.secret = secret
        self.model = Model()
        self.logins = 0
        self.connections = 0
        self.actions: Counter[str] = Counter()
        self.writer: asyncio.StreamWriter | None = None
        self.lost_at: list[float] = []
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.writer is not None:
            self.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(self.recorded.banner)
        try:
            while True:
                try:
                    frame = await reader.readuntil(END)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                message = parse_frame(frame[:-4])
                if not self._answer(message, writer):
                    break
                await writer.drain()
        finally:
            if self.writer is writer:
                self.writer = None
                self.lost_at.append(time.time())
            writer.close()

    def _answer(self, message: Message, writer: asyncio.StreamWriter) -> bool:
        """Write the answer to one action; False when the connection is to end."""
        action = (message.get("Action") or "").lower()
        aid = message.action_id or ""
        r = self.recorded
        self.actions[action] += 1
        out: list[bytes] = []
        if action == "login":
            if message.get("Username") != self.username or message.get("Secret") != self.secret:
                writer.write(
                    b"Response: Error\r\nActionID: " + aid.encode() + b"\r\nMessage: Authentication failed" + END
                )
                return False
            self.logins += 1
            self.writer = writer
            out = [with_action_id(f, aid) for f in r.login_ok]
        elif action == "ping":
            out = [with_action_id(r.ping, aid)]
        elif action == "coresettings":
            out = [with_action_id(r.core_settings, aid)]
        elif action == "corestatus":
            out = [with_action_id(r.core_status, aid)]
        elif action == "reload":
            module = message.get("Module") or ""
            if module == "res_pjsip.so":
                self.model.endpoints = read_endpoints(self.config_dir / "pjsip_rayanpbx.conf")
            event = r.reload_event.replace(b"res_pjsip.so", module.encode())
            out = [with_action_id(r.reload_ok, aid), event]
        elif action == "pjsipshowendpoints":
            out = self._endpoints(aid)
        elif action == "pjsipshowcontacts":
            out = self._contacts(aid)
        elif action == "coreshowchannels":
            out = self._channels(aid)
        elif action == "pjsipshowregistrationsoutbound":
            out = _list(aid, "Following are Events for each Outbound registration", "OutboundRegistrationDetail", [])
        elif action == "logoff":
            writer.write(with_action_id(r.goodbye, aid) + END)
            return False
        else:
            out = [with_action_id(r.unknown, aid)]
        writer.write(b"".join(f + END for f in out))
        return True

    def _endpoints(self, aid: str) -> list[bytes]:
        items = []
        for ext in self.model.endpoints:
            contact = self.model.contacts.get(ext)
            contacts = f"{ext}/{contact[0]}," if contact else ""
            items.append(
                self.recorded.endpoint_list.render(
                    {"ID": aid.encode(), "EXT": ext.encode(), "CONTACTS": contacts.encode()}
                )
            )
        return _list(aid, "A listing of Endpoints follows, presented as EndpointList events", "EndpointList", items)

    def _contacts(self, aid: str) -> list[bytes]:
        items = []
        expires = str(int(time.time()) + 60).encode()
        for ext, (uri, port) in sorted(self.model.contacts.items()):
            values = {
                "ID": aid.encode(),
                "NAME": f"{ext};@{abs(hash(uri)):032x}"[:40].encode(),
                "EXT": ext.encode(),
                "URI": uri.encode(),
                "PORT": str(port).encode(),
                "EXPIRES": expires,
            }
            items.append(self.recorded.contact_list.render(values))
        return _list(aid, "A listing of Contacts follows, presented as ContactList events", "ContactList", items)

    def _channels(self, aid: str) -> list[bytes]:
        items = []
        now = time.time()
        for uid, (lid, ext, name, since) in self.model.channels.items():
            seconds = int(now - since)
            items.append(
                (
                    f"Event: CoreShowChannel\r\nActionID: {aid}\r\nChannel: {name}\r\nChannelState: 6\r\n"
                    f"ChannelStateDesc: Up\r\nCallerIDNum: {ext}\r\nExten: \r\nUniqueid: {uid}\r\n"
                    f"Linkedid: {lid}\r\nDuration: {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
                ).encode()
            )
        return _list(aid, "Channels will follow", "CoreShowChannels", items)

    # --- flood ------------------------------------------------------------------------

    async def send(self, planned: list[Planned], rate: float, tick: float = 0.001) -> dict[str, Any]:
        """Write ``planned`` at ``rate`` frames/s; the send time of each frame (for the latency)."""
        if self.writer is None:
            raise RuntimeError("no AMI client is logged in")
        sent_at = [0.0] * len(planned)
        batches = 0
        max_batch = 0
        max_lag = 0.0
        start = time.monotonic()
        wall = time.time() - start  # monotonic -> epoch
        i = 0
        while i < len(planned):
            now = time.monotonic()
            due = min(len(planned), int((now - start) * rate) + 1)
            if due > i:
                writer = self.writer
                if writer is None:
                    raise RuntimeError("the AMI client disconnected during the flood")
                max_lag = max(max_lag, now - (start + i / rate))
                stamp = wall + time.monotonic()
                chunk = planned[i:due]
                writer.write(b"".join(p.data for p in chunk))
                for k, p in enumerate(chunk, i):
                    sent_at[k] = stamp
                    self.model.apply(p.op)
                batches += 1
                max_batch = max(max_batch, due - i)
                i = due
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
            await asyncio.sleep(max(0.0, min(tick, start + i / rate - time.monotonic())))
        return {
            "sent": len(planned),
            "t_first": sent_at[0] if sent_at else None,
            "t_last": sent_at[-1] if sent_at else None,
            "batches": batches,
            "max_batch": max_batch,
            "max_lag_ms": max_lag * 1000,
            "sent_at": sent_at,
        }


def _list(aid: str, message: str, event: str, items: list[bytes]) -> list[bytes]:
    start = f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: {message}".encode()
    done = f"Event: {event}Complete\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: {len(items)}".encode()
    return [start, *items, done]


SECTION = re.compile(r"^\[([^\]]+)\](\([^)]*\))?")


def read_endpoints(path: Path) -> list[str]:
    """The endpoint sections of a PJSIP file (as a Reload of ``res_pjsip.so`` would load them)."""
    try:
        text = path.read_text()
    except OSError:
        return []
    endpoints, section = [], None
    for line in text.splitlines():
        match = SECTION.match(line.strip())
        if match:
            section = None if (match.group(2) or "").startswith("(!") else match.group(1)
        elif section and re.fullmatch(r"type\s*=\s*endpoint", line.strip()):
            endpoints.append(section)
    return endpoints


# --- the control loop -----------------------------------------------------------------


async def _warmup(peer: AmiPeer, extensions: list[str], rate: float, settle: float) -> dict[str, Any]:
    """Register every extension once, let the link read their details, unregister them all.

    Fast (well under the link's one ``PJSIPShowContacts`` a second), then quiet until the link
    has read no contacts for ``settle`` s: every extension has been asked for once, so the
    flood makes the link read no contacts.
    """
    plan = FloodPlan(peer.recorded, extensions, {}, int(time.time()))
    registered = [plan.registration() for _ in extensions]
    frames = [Planned(d + END, op, []) for s in registered if s for d, op in s.frames]
    before = peer.actions["pjsipshowcontacts"]
    # The first registration makes the link read the contacts at once; the others come in
    # the second after it, so its next read (a second later) asks for all of them in one go
    # and no registration races a read (a contact registered while a read is answered can be
    # dropped by it: see bench.ami_flood).
    first = len(registered[0].frames) if registered and registered[0] else 0
    await peer.send(frames[:first], rate)
    await asyncio.sleep(0.3)
    await peer.send(frames[first:], rate)
    deadline = time.monotonic() + 10 * settle
    reads, quiet_since = peer.actions["pjsipshowcontacts"], time.monotonic()
    while time.monotonic() - quiet_since < settle and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if peer.actions["pjsipshowcontacts"] != reads:
            reads, quiet_since = peer.actions["pjsipshowcontacts"], time.monotonic()
    plan.busy.clear()
    unregistered = [plan.registration() for _ in extensions]
    frames = [Planned(d + END, op, []) for s in unregistered if s for d, op in s.frames]
    await peer.send(frames, rate)
    return {"registered": len(registered), "contact_reads": peer.actions["pjsipshowcontacts"] - before}


async def _flood(peer: AmiPeer, command: dict[str, Any]) -> dict[str, Any]:
    extensions = [str(e) for e in command["extensions"]]
    registered = {ext: uri for ext, (uri, _) in peer.model.contacts.items()}
    plan = FloodPlan(peer.recorded, extensions, registered, int(time.time()))
    rendered = time.perf_counter()
    planned, started = plan.render(
        float(command["rate"]),
        float(command["seconds"]),
        int(command["concurrency"]),
        float(command["registrations_per_call"]),
    )
    rendered = time.perf_counter() - rendered
    actions_before = Counter(peer.actions)
    result = await peer.send(planned, float(command["rate"]))
    sent_at = result.pop("sent_at")
    expected = [[*key, sent_at[i]] for i, p in enumerate(planned) for key in p.expected]
    # Calls whose second channel had not come by the end: call.started from the link's timer.
    expected += [[*key, None] for key in plan.tail(plan.state.calls.start_grace + 0.5)]
    events = Counter(parse_frame(p.data[:-4]).event for p in planned)
    return {
        **result,
        "render_s": rendered,
        "scenarios": started,
        "events_by_type": dict(events.most_common()),
        "expected": expected,
        "actions_during": dict(peer.actions - actions_before),
        "registered_at_end": sorted(peer.model.contacts),
        "calls_at_end": sorted({lid for lid, *_ in peer.model.channels.values()}),
    }


async def control(peer: AmiPeer) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    reply({"port": peer.port})
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command["cmd"]
        try:
            if cmd == "warmup":
                reply(
                    await _warmup(
                        peer, [str(e) for e in command["extensions"]], command["rate"], command.get("settle", 2.5)
                    )
                )
            elif cmd == "flood":
                reply(await _flood(peer, command))
            elif cmd == "stats":
                reply(
                    {
                        "logins": peer.logins,
                        "connections": peer.connections,
                        "actions": dict(peer.actions),
                        "lost_at": peer.lost_at,
                        "endpoints": len(peer.model.endpoints),
                        "connected": peer.writer is not None,
                    }
                )
            elif cmd == "exit":
                break
            else:
                reply({"error": f"unknown command {cmd}"})
        except Exception as exc:  # the bench reports it; the peer stays up for the next command
            reply({"error": f"{type(exc).__name__}: {exc}"})
    await peer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", required=True, help="ASTERISK_CONFIG_DIR of the site (read on Reload)")
    parser.add_argument("--username", default="rayanpbx")
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def run() -> None:
        peer = AmiPeer(load(), Path(args.config_dir), args.username, args.secret)
        await peer.start(args.port)
        with contextlib.suppress(asyncio.CancelledError):
            await control(peer)

    asyncio.run(run())


if __name__ == "__main__":
    main()
