"""pbx.state against the AMI sessions recorded from Asterisk 22.10.1, and against floods.

Each ``shared/ami/*.server.txt`` is parsed with the real :class:`FrameParser`; the
timeline gives each frame's recorded time, which drives the state's clock. Unsolicited
events go to ``handle()``, the event lists the recorder asked for go to ``reconcile()``,
and ``due()`` runs every recorded second, as the PBX link does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbx.ami_protocol import FrameParser, Message
from pbx.calls import MAX_ENDED_CALLS
from pbx.state import PbxState, Snapshot

AMI_DIR = Path(__file__).resolve().parents[2] / "shared" / "ami"

if not AMI_DIR.is_dir():
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"the recorded AMI sessions are missing: {AMI_DIR}", pytrace=False)
    pytest.skip(f"the recorded AMI sessions are not at {AMI_DIR}", allow_module_level=True)

#: 2026-11-25T18:30:00Z: the recordings' day (scenario times are added to it).
BASE = 1795631400.0
FRAME_LINE = re.compile(r"^\s*([\d.]+) ms\s+S<\s+off=\d+ len=\d+\s+\[(?!banner)")
LIST_ITEM = {
    "ContactList": "contacts",
    "EndpointList": "endpoints",
    "CoreShowChannel": "channels",
    "OutboundRegistrationDetail": "registrations",
}


class Clock:
    def __init__(self, now: float = BASE) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Frame:
    ms: float
    message: Message


def frames(base: str) -> list[Frame]:
    """The server frames of ``base``, parsed with FrameParser, with their recorded times."""
    messages = FrameParser().feed((AMI_DIR / f"{base}.server.txt").read_bytes())
    times = [
        float(m[1])
        for line in (AMI_DIR / f"{base}.timeline.txt").read_text().splitlines()
        if (m := FRAME_LINE.match(line))
    ]
    assert len(times) == len(messages), base
    return [Frame(ms, message) for ms, message in zip(times, messages, strict=True)]


class Player:
    """Plays recorded frames into a PbxState, collecting what it publishes."""

    def __init__(self, state: PbxState, clock: Clock) -> None:
        self.state, self.clock = state, clock
        self.events: list[tuple[str, dict]] = []
        self.lists: dict[str, dict[str, list[Message]]] = {}  # ActionID -> kind -> items
        self._next_tick: float | None = None

    def tick_to(self, now: float) -> None:
        """Advance the clock to ``now``, running due() at every whole second on the way."""
        if self._next_tick is None:
            self._next_tick = self.clock.now + 1
        while self._next_tick <= now:
            self.clock.now = self._next_tick
            self.events += self.state.due()
            self._next_tick += 1
        self.clock.now = now

    def play(self, recorded: list[Frame], *, offset: float = 0.0, until: str | None = None) -> list[Frame]:
        """Feed frames (stopping before the first that contains ``until``); return the rest."""
        for index, frame in enumerate(recorded):
            message = frame.message
            if until is not None and any(until in f"{k}: {v}" for k, v in message.headers):
                return recorded[index:]
            self.tick_to(BASE + offset + frame.ms / 1000)
            if message.event is None:
                continue  # a response
            if message.action_id is not None:
                self._list_item(message)
                continue
            self.events += self.state.handle(message)
        return []

    def _list_item(self, message: Message) -> None:
        lists = self.lists.setdefault(message.action_id or "", {})
        if message.event in LIST_ITEM:
            lists.setdefault(LIST_ITEM[message.event], []).append(message)
        elif message.event == "CoreShowChannelsComplete":
            # A CoreShowChannels answer: the calls it lists are what Asterisk has now.
            channels = lists.get("channels", [])
            self.events += self.state.reconcile(Snapshot(None, None, channels, None))

    def of_type(self, kind: str) -> list[dict]:
        return [payload for event_type, payload in self.events if event_type == kind]


def new(**options) -> Player:
    clock = Clock()
    return Player(PbxState(clock=clock, **options), clock)


def iso(seconds_after_base: float) -> str:
    from pbx.registrations import iso_utc

    return iso_utc(BASE + seconds_after_base)


CONTACT_101_04 = "sip:101-0x55f6ba1bdec0@127.0.0.1:5070"
CONTACT_101_03 = "sip:101-0x558ca6e95ec0@127.0.0.1:5070"
#: The first frame after the SIGTERM in 04 (the unregister's challenge).
UNREGISTER_04 = "EventTV: 2026-11-25T18:30:49"
UNREGISTERED_101 = {"extension_number": "101", "state": "unregistered", "contacts": []}


# --- registrations --------------------------------------------------------------------


def test_04_registration_lifecycle() -> None:
    player = new()
    state = player.state
    rest = player.play(frames("04-registration-lifecycle"), until=UNREGISTER_04)
    registered = player.of_type("extension.registration")
    # NonQualified, then Reachable with its round trip: two events; PeerStatus and
    # DeviceStateChange add none.
    contact = {"uri": CONTACT_101_04, "ip": "127.0.0.1", "port": 5070, "user_agent": None, "expires_at": None}
    assert registered == [
        {"extension_number": "101", "state": "registered", "contacts": [{**contact, "rtt_ms": None}]},
        {"extension_number": "101", "state": "registered", "contacts": [{**contact, "rtt_ms": 0.395}]},
    ]
    assert state.counts() == {"registered": 1, "active_calls": 0}
    assert state.needs_contact_details() == {"101"}  # ContactStatus has no user agent
    assert state.snapshot_registrations() == [registered[-1]]

    player.events.clear()
    player.play(rest)  # SIGTERM: PeerStatus Unreachable, DeviceStateChange, ContactStatus Removed
    assert player.events == [
        ("extension.registration", {"extension_number": "101", "state": "unregistered", "contacts": []})
    ]
    assert state.counts() == {"registered": 0, "active_calls": 0}
    assert state.needs_contact_details() == set()
    assert state.ignored == 0


def test_04_then_contact_details_fill_the_user_agent() -> None:
    player = new()
    state = player.state
    player.play(frames("04-registration-lifecycle"), until=UNREGISTER_04)
    contact_list = [f.message for f in frames("03-show-endpoints") if f.message.event == "ContactList"]
    events = state.reconcile_contacts(contact_list)
    # The contact 03 listed (another baresip session) replaces the one 04 registered.
    assert events == [
        (
            "extension.registration",
            {
                "extension_number": "101",
                "state": "registered",
                "contacts": [
                    {
                        "uri": CONTACT_101_03,
                        "ip": "127.0.0.1",
                        "port": 5070,
                        "user_agent": "baresip v1.0.0 (x86_64/linux)",
                        "rtt_ms": 0.649,
                        "expires_at": "2026-11-25T18:31:09.000Z",
                    }
                ],
            },
        )
    ]
    assert state.needs_contact_details() == set()


def test_03_show_endpoints_reconcile_publishes_only_differences() -> None:
    player = new()
    state = player.state
    player.play(frames("03-show-endpoints"))
    lists = player.lists
    snapshot = Snapshot(lists["contacts"]["contacts"], lists["eps"]["endpoints"], [], [])
    first = state.reconcile(snapshot)
    assert [(kind, payload["extension_number"], payload["state"]) for kind, payload in first] == [
        ("extension.registration", "101", "registered")
    ]
    (contact,) = first[0][1]["contacts"]
    assert contact == {
        "uri": CONTACT_101_03,
        "ip": "127.0.0.1",
        "port": 5070,
        "user_agent": "baresip v1.0.0 (x86_64/linux)",
        "rtt_ms": 0.649,
        "expires_at": "2026-11-25T18:31:09.000Z",
    }
    # 102 is configured and not registered: in the snapshot, with no event (nothing changed).
    assert [(r["extension_number"], r["state"], len(r["contacts"])) for r in state.snapshot_registrations()] == [
        ("101", "registered", 1),
        ("102", "unregistered", 0),
    ]
    assert state.reconcile(snapshot) == []
    assert state.counts() == {"registered": 1, "active_calls": 0}
    # AuthDetail (with the password) never reaches anything.
    assert "secret101" not in repr(state.snapshot_registrations())


# --- security -------------------------------------------------------------------------


def test_05_bad_sip_auth_one_event_per_burst() -> None:
    player = new(auth_window=5.0)
    state, clock = player.state, player.clock
    recorded = frames("05-bad-sip-auth")
    player.play(recorded)
    player.tick_to(clock.now + 6)
    failures = player.of_type("security.sip_auth_failed")
    assert [(f["username"], f["remote_ip"], f["attempts"]) for f in failures] == [
        ("101", "127.0.0.1", 15),
        ("101", "127.0.0.1", 16),
    ]
    assert failures[0]["first_at"] == iso(1.0085) and failures[0]["last_at"] == iso(1.0129)
    assert failures[1]["first_at"] == iso(8.6114)
    assert all(set(f) == {"username", "remote_ip", "attempts", "first_at", "last_at"} for f in failures)
    assert state.snapshot_auth_failures() == failures[::-1]
    assert player.of_type("call.started") == []  # no channel was created
    assert state.open_auth_windows == 0


def test_05_default_window_takes_both_phases_as_one_burst() -> None:
    # Phase 2 starts 7.6 s after phase 1: inside the default 10 s window.
    player = new()
    rest = player.play(frames("05-bad-sip-auth"), until="EventTV: 2026-11-25T18:31:00")  # phase 2
    assert rest and player.of_type("security.sip_auth_failed") == []  # phase 1's window is still open
    player.play(rest)  # the recording goes on 15.7 s: the window closes in it
    assert [(f["attempts"], f["first_at"]) for f in player.of_type("security.sip_auth_failed")] == [(31, iso(1.0085))]


def test_02_ami_login_failure_is_no_sip_auth_failure() -> None:
    player = new(auth_window=1.0)
    clock = player.clock
    player.play(frames("02-login-bad.observer"))
    player.tick_to(clock.now + 2)
    assert player.of_type("security.sip_auth_failed") == []


# --- calls ----------------------------------------------------------------------------


def test_06_echo_call() -> None:
    player = new()
    state = player.state
    recorded = frames("06-call-echo")
    rest = player.play(recorded, until="Event: Hangup")
    started = player.of_type("call.started")
    assert started == [
        {
            "id": "1795631469.1",
            "from": "101",
            "to": "600",
            "direction": "internal",
            "trunk": None,
            "started_at": iso(2.0233),
        }
    ]
    assert player.of_type("call.answered") == [{"id": "1795631469.1", "answered_at": iso(2.0233)}]
    # The CoreShowChannels 2.5 s into the call listed it: no event from that reconcile.
    assert [kind for kind, _ in player.events] == ["call.started", "call.answered"]
    assert state.counts()["active_calls"] == 1
    (active,) = state.snapshot_calls()["active"]
    assert active["id"] == "1795631469.1" and active["answered_at"] == iso(2.0233)

    player.play(rest)  # Hangup, then a CoreShowChannels with no channel
    (ended,) = player.of_type("call.ended")
    assert ended == {"id": "1795631469.1", "cause": 0, "cause_text": "Unknown", "duration_s": 5.0, "talk_s": 5.0}
    calls = state.snapshot_calls()
    assert calls["active"] == [] and [c["id"] for c in calls["ended"]] == ["1795631469.1"]
    assert calls["ended"][0]["from"] == "101" and calls["ended"][0]["cause"] == 0
    assert [kind for kind, _ in player.events] == ["call.started", "call.answered", "call.ended"]


def test_07_call_101_to_102() -> None:
    player = new()
    state = player.state
    player.play(frames("07-call-101-102"))
    call_events = [(kind, payload) for kind, payload in player.events if kind.startswith("call.")]
    assert [kind for kind, _ in call_events] == ["call.started", "call.answered", "call.ended"]
    assert {payload["id"] for _, payload in call_events} == {"1795631479.2"}  # the Linkedid: one call, two legs
    started, answered, ended = (payload for _, payload in call_events)
    assert started == {
        "id": "1795631479.2",
        "from": "101",
        "to": "102",
        "direction": "internal",
        "trunk": None,
        "started_at": iso(2.3327),
    }
    assert answered["answered_at"] == iso(2.3360)  # 102 answered (Newstate Up)
    assert ended["cause"] == 16 and ended["cause_text"] == "Normal Clearing"
    assert ended["duration_s"] == 3.0 and ended["talk_s"] == 3.0
    assert state.counts()["active_calls"] == 0


def test_07_as_an_outbound_call_through_a_trunk() -> None:
    # The same recording, with 102 taken for a trunk: the callee side makes it outbound.
    player = new(is_extension=lambda name: name == "101", is_trunk=lambda name: name == "102")
    player.play(frames("07-call-101-102"))
    (started,) = player.of_type("call.started")
    assert (started["direction"], started["trunk"], started["from"], started["to"]) == ("outbound", "102", "101", "102")


def test_07_as_an_inbound_call_from_a_trunk() -> None:
    player = new(is_extension=lambda name: name == "102", is_trunk=lambda name: name == "101")
    player.play(frames("07-call-101-102"))
    (started,) = player.of_type("call.started")
    assert (started["direction"], started["trunk"]) == ("inbound", "101")


def test_07_reconcile_during_the_call_adopts_it_once() -> None:
    # A state that missed the start of the call (connected mid-call) learns it from the list.
    player = new()
    state, clock = player.state, player.clock
    channels = [f.message for f in frames("07-call-101-102") if f.message.event == "CoreShowChannel"]
    clock.now = BASE + 3.338
    events = state.reconcile(Snapshot([], [], channels, []))
    assert [kind for kind, _ in events] == ["call.started", "call.answered"]
    started = events[0][1]
    assert (started["id"], started["from"], started["to"], started["direction"]) == (
        "1795631479.2",
        "101",
        "102",
        "internal",
    )
    assert started["started_at"] == iso(2.338)  # Duration: 00:00:01 before the list
    assert state.reconcile(Snapshot([], [], channels, [])) == []


# --- restart --------------------------------------------------------------------------


def test_09_restart_ends_calls_and_registrations() -> None:
    player = new()
    state = player.state
    player.play(frames("04-registration-lifecycle"), until=UNREGISTER_04)
    player.play(frames("06-call-echo"), offset=40, until="Event: Hangup")
    assert state.counts() == {"registered": 1, "active_calls": 1}
    player.events.clear()

    player.play(frames("09-restart"), offset=50)  # ... Shutdown, then EOF
    assert state.lost() == []
    player.play(frames("09-restart.reconnect"), offset=50)  # login, FullyBooted
    assert player.events == []
    events = state.reconcile(Snapshot([], [], [], []))
    assert events == [
        ("extension.registration", UNREGISTERED_101),
        (
            "call.ended",
            {
                "id": "1795631469.1",
                "cause": "pbx restarted",
                "cause_text": "pbx restarted",
                "duration_s": events[1][1]["duration_s"],
                "talk_s": events[1][1]["talk_s"],
            },
        ),
    ]
    assert 10 < events[1][1]["duration_s"] < 13
    assert state.counts() == {"registered": 0, "active_calls": 0}
    assert state.snapshot_calls()["ended"][0]["cause_text"] == "pbx restarted"
    assert state.reconcile(Snapshot([], [], [], [])) == []


# --- event filters --------------------------------------------------------------------


def test_10_default_events_connection() -> None:
    player = new()
    state = player.state
    player.play(frames("10-event-filter.events-default"))
    summary = [
        (kind, payload.get("state") or payload.get("cause") or payload.get("to") or payload["id"])
        for kind, payload in player.events
    ]
    assert summary == [
        ("extension.registration", "registered"),
        ("extension.registration", "registered"),
        ("call.started", "600"),
        ("call.answered", player.events[3][1]["id"]),
        ("call.ended", player.events[4][1]["id"]),
        ("extension.registration", "unregistered"),
    ]
    assert player.events[2][1]["from"] == "101" and player.events[2][1]["direction"] == "internal"
    assert player.events[4][1]["cause_text"] == "Unknown"
    assert player.events[1][1]["contacts"][0]["port"] == 5070
    assert state.ignored == 0

    # "Events: call,system" (no security, no dialplan events) tells the same story.
    other = new()
    other.play(frames("10-event-filter.events-call-system"))
    assert [kind for kind, _ in other.events] == [kind for kind, _ in player.events]


# --- hostile and heavy input ----------------------------------------------------------


def auth_failure(username: str, ip: str, port: int = 5074) -> Message:
    return Message(
        [
            ("Event", "ChallengeResponseFailed"),
            ("Service", "PJSIP"),
            ("AccountID", username),
            ("RemoteAddress", f"IPV4/UDP/{ip}/{port}"),
            ("Response", "16d8836a9e6a7b8161e62440b84a043b"),
        ]
    )


def test_flood_of_failures_from_three_ips_gives_three_events() -> None:
    player = new()
    state, clock = player.state, player.clock
    for i in range(10_000):
        clock.now = BASE + i / 10_000
        assert state.handle(auth_failure("101", f"10.0.0.{i % 3 + 1}", 5000 + i % 1000)) == []
    clock.now = BASE + 11
    events = state.due()
    assert sorted((p["remote_ip"], p["attempts"]) for _, p in events) == [
        ("10.0.0.1", 3334),
        ("10.0.0.2", 3333),
        ("10.0.0.3", 3333),
    ]
    assert state.due() == []


def test_open_windows_are_bounded() -> None:
    player = new(max_auth_windows=100)
    state, clock = player.state, player.clock
    for i in range(5_000):
        state.handle(auth_failure(f"user{i}", f"192.0.2.{i % 250}"))
    assert state.open_auth_windows <= 110
    clock.now += 11
    events = state.due()
    assert sum(p["attempts"] for _, p in events) + state.auth_failures_dropped == 5_000
    assert any(p["username"] == "*" for _, p in events)
    assert len(state.snapshot_auth_failures()) == 50


def test_100000_events_stay_bounded() -> None:
    player = new(max_auth_windows=1_000)
    state, clock = player.state, player.clock
    handled = 0
    for i in range(12_500):
        clock.now = BASE + i
        lid = f"1795631500.{i}"
        channel = f"PJSIP/101-{i:08x}"
        base = [("Channel", channel), ("Uniqueid", lid), ("Linkedid", lid), ("CallerIDNum", "101"), ("Exten", "600")]
        for message in (
            Message([("Event", "Newchannel"), *base, ("ChannelState", "4")]),
            Message([("Event", "VarSet"), *base, ("Variable", "X"), ("Value", "1")]),
            Message([("Event", "Newstate"), *base, ("ChannelState", "6")]),
            Message([("Event", "Hangup"), *base, ("Cause", "16"), ("Cause-txt", "Normal Clearing")]),
            auth_failure(f"u{i}", f"198.51.100.{i % 200}"),
            Message([("Event", "ContactStatus"), ("URI", f"sip:101@127.0.0.1:{5000 + i % 2}")]),  # garbled
            Message([("Event", "Hangup")]),  # garbled
            Message([("Event", "Newchannel"), ("Channel", "PJSIP/x")]),  # garbled
        ):
            state.handle(message)
            handled += 1
        if i % 10 == 0:
            state.due()
    assert handled == 100_000
    assert len(state.snapshot_calls()["ended"]) == MAX_ENDED_CALLS
    assert state.snapshot_calls()["active"] == []
    assert state.open_auth_windows <= 1_100
    assert state.ignored == 3 * 12_500


@pytest.mark.parametrize(
    "headers",
    [
        [("Event", "ContactStatus"), ("URI", "sip:"), ("ContactStatus", "Bogus"), ("EndpointName", "101")],
        [("Event", "ContactStatus"), ("URI", "::::"), ("ContactStatus", "Reachable"), ("AOR", "101")],
        [("Event", "Registry"), ("Domain", "sip:x"), ("Status", "Registered")],
        [("Event", "ChallengeResponseFailed"), ("AccountID", "101"), ("RemoteAddress", "garbage")],
        [("Event", "InvalidPassword"), ("RemoteAddress", "IPV4/UDP/1.2.3.4/5")],
        [("Event", "Hangup"), ("Uniqueid", "1.1"), ("Cause", "x")],
        [("Event", "DialBegin"), ("Uniqueid", "nope")],
        [("Event", "PeerStatus")],
        [("Event", "DeviceStateChange"), ("Device", "PJSIP/101"), ("State", "NOT_INUSE")],
        [("Response", "Success")],
        [],
    ],
)
def test_garbled_events_never_raise(headers: list[tuple[str, str]]) -> None:
    state = new().state
    assert state.handle(Message(headers)) == []


FOLLOWED = ["ContactStatus", "PeerStatus", "DeviceStateChange", "Registry", "Newchannel", "Newstate"]
FOLLOWED += ["BridgeEnter", "DialBegin", "Hangup", "ChallengeResponseFailed", "InvalidPassword"]
FIELDS = ["URI", "AOR", "EndpointName", "ContactStatus", "RoundtripUsec", "Peer", "PeerStatus", "Device", "State"]
FIELDS += ["Username", "Domain", "Status", "Channel", "Uniqueid", "Linkedid", "ChannelState", "Exten", "CallerIDNum"]
FIELDS += ["DestChannel", "DialString", "Cause", "Cause-txt", "AccountID", "RemoteAddress", "Service"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(FOLLOWED),
            st.lists(st.tuples(st.sampled_from(FIELDS), st.text(max_size=30)), max_size=12),
        ),
        max_size=30,
    )
)
@settings(max_examples=300, deadline=None)
def test_hostile_events_never_raise(events: list[tuple[str, list[tuple[str, str]]]]) -> None:
    player = new()
    state, clock = player.state, player.clock
    for name, headers in events:
        for kind, payload in state.handle(Message([("Event", name), *headers])):
            assert isinstance(payload, dict) and "." in kind
        clock.now += 0.5
        state.due()
    state.reconcile(Snapshot([], [], [], []))
    assert state.counts() == {"registered": 0, "active_calls": 0}


def test_trunk_registrations() -> None:
    player = new()
    state, clock = player.state, player.clock
    detail = Message(
        [
            ("Event", "OutboundRegistrationDetail"),
            ("ObjectType", "registration"),
            ("ObjectName", "provider"),
            ("ServerUri", "sip:sip.example.net"),
            ("ClientUri", "sip:4420@sip.example.net"),
            ("Status", "Unregistered"),
            ("NextReg", "0"),
        ]
    )
    events = state.reconcile(Snapshot(None, None, None, [detail]))
    assert events == [
        (
            "trunk.registration",
            {"name": "provider", "state": "unregistered", "server_uri": "sip:sip.example.net", "last_attempt_at": None},
        )
    ]
    assert state.reconcile(Snapshot(None, None, None, [detail])) == []
    registry = Message(
        [
            ("Event", "Registry"),
            ("ChannelType", "pjsip"),
            ("Username", "sip:4420@sip.example.net"),
            ("Domain", "sip:sip.example.net"),
            ("Status", "Registered"),
        ]
    )
    clock.now = BASE + 5
    assert state.handle(registry) == [
        (
            "trunk.registration",
            {"name": "provider", "state": "registered", "server_uri": "sip:sip.example.net", "last_attempt_at": iso(5)},
        )
    ]
    clock.now = BASE + 65
    assert state.handle(registry) == []  # a re-registration: only last_attempt_at moved
    assert state.snapshot_trunks()[0]["last_attempt_at"] == iso(65)
    unknown = Message([("Event", "Registry"), ("Domain", "sip:other.example"), ("Status", "Rejected")])
    assert state.handle(unknown) == [] and state.trunks.needs_details
    assert state.reconcile(Snapshot(None, None, None, [])) == [
        (
            "trunk.registration",
            {
                "name": "provider",
                "state": "unregistered",
                "server_uri": "sip:sip.example.net",
                "last_attempt_at": iso(65),
            },
        )
    ]
    assert state.snapshot_trunks() == []


def test_pending_call_starts_after_the_grace() -> None:
    player = new()
    state, clock = player.state, player.clock
    base = [("Channel", "PJSIP/101-00000009"), ("Uniqueid", "9.9"), ("Linkedid", "9.9"), ("CallerIDNum", "101")]
    assert state.handle(Message([("Event", "Newchannel"), *base, ("Exten", "700"), ("ChannelState", "4")])) == []
    assert state.counts()["active_calls"] == 0  # pending: not yet in the snapshot
    clock.now += 2
    (started,) = state.due()
    assert started[0] == "call.started" and started[1]["to"] == "700" and started[1]["direction"] == "internal"
    assert state.due() == []


@pytest.mark.parametrize(("causes", "expected"), [((0, 17), (17, "User busy")), ((16, 0), (16, "Normal Clearing"))])
def test_the_first_non_zero_cause_names_the_end(causes: tuple[int, int], expected: tuple[int, str]) -> None:
    state = new().state
    texts = {0: "Unknown", 16: "Normal Clearing", 17: "User busy"}
    legs = [("PJSIP/101-0000000a", "7.1"), ("PJSIP/102-0000000b", "7.2")]
    for channel, uid in legs:
        state.handle(Message([("Event", "Newchannel"), ("Channel", channel), ("Uniqueid", uid), ("Linkedid", "7.1")]))
    events = []
    for (channel, uid), cause in zip(legs, causes, strict=True):
        headers = [("Channel", channel), ("Uniqueid", uid), ("Linkedid", "7.1"), ("Cause", str(cause))]
        events += state.handle(Message([("Event", "Hangup"), *headers, ("Cause-txt", texts[cause])]))
    (ended,) = [payload for kind, payload in events if kind == "call.ended"]
    assert (ended["cause"], ended["cause_text"]) == expected


# --- the feed: a contacts list read while events arrive ---------------------------------


async def test_a_contact_event_during_a_contacts_read_is_not_overwritten_by_the_older_list() -> None:
    """The phone unregisters while PJSIPShowContacts is being answered: the list (taken
    before) still shows it, the Removed event (after) must win."""
    from pbx.feed import StateFeed

    player = new()
    rest = player.play(frames("04-registration-lifecycle"), until=UNREGISTER_04)
    assert player.state.needs_contact_details() == {"101"}
    unregister = [f.message for f in rest if f.message.event in ("ContactStatus", "PeerStatus", "DeviceStateChange")]
    assert any(m.get("ContactStatus") == "Removed" for m in unregister)
    # What Asterisk listed just before the phone left: its contact, with the details.
    listed = [
        Message([(k, v.replace(CONTACT_101_03, CONTACT_101_04)) for k, v in f.message.headers])
        for f in frames("03-show-endpoints")
        if f.message.event == "ContactList"
    ]

    class Ami:
        async def action_list(self, action: str) -> list[Message]:
            assert action == "PJSIPShowContacts"
            for message in unregister:  # arrive while the list is on its way
                feed.on_event(message)
            return listed

    feed = StateFeed(Ami())
    feed.state = player.state
    await feed._details()
    published = [p for t, p in feed.queue if t == "extension.registration"]
    assert published[-1] == UNREGISTERED_101, published
    still = [r for r in player.state.snapshot_registrations() if r["state"] != "unregistered"]
    assert still == [], still


def test_a_partial_snapshot_in_the_cache_never_fails_a_request() -> None:
    """A stored document missing parts (an older version's, or one written by hand) is
    filled with empty parts, and one without a position is ignored."""
    from django.core.cache import cache

    from pbx import feed

    try:
        cache.set(feed.KEY, {"seq": 7, "registrations": [{"extension_number": "101"}]}, timeout=None)
        document = feed.snapshot()
        assert document["seq"] == 7 and document["registrations"] == [{"extension_number": "101"}]
        assert document["calls"] == {"active": [], "ended": []} and document["counts"]["active_calls"] == 0
        cache.set(feed.KEY, {"calls": "nonsense"}, timeout=None)
        assert isinstance(feed.snapshot()["seq"], int) and feed.snapshot()["calls"] == {"active": [], "ended": []}
    finally:
        cache.delete(feed.KEY)
