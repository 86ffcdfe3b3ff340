"""The per-process hub under faults: a listener whose error handler fails is restarted (and
named by /health meanwhile), and a socket whose send fails is closed, not left silent.

The bus here is scripted (its failures on cue); the same faults against real Redis and
daphne processes are in ``tests/faults/``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from live.events import body, number, seq_of
from live.hub import Hub
from rayanpbx import audiences, background


class ScriptedBus:
    """A bus whose frames, history and failures the test controls."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.history: dict[int, str] = {}
        self.current = 100
        self.failures = 0  # the next n position/history calls raise
        self.subscriptions = 0

    def add(self, seq: int, *, deliver: bool = True) -> None:
        frame = number(body("extension.updated", {"id": seq}), seq)
        self.history[seq] = frame
        self.current = max(self.current, seq)
        if deliver:
            self.queue.put_nowait(frame)

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Redis unavailable")

    async def batches(self) -> AsyncIterator[list[str] | None]:
        """As the real buses: what has arrived so far, in one batch."""
        self.subscriptions += 1
        yield None
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch

    async def position(self) -> int:
        self._maybe_fail()
        return self.current

    async def history_after(self, after: int) -> tuple[int, list[str] | None]:
        self._maybe_fail()
        return self.current, [frame for seq, frame in sorted(self.history.items()) if seq > after]

    async def report_clients(self, count: int) -> None:
        pass


class Client:
    batched = False

    def __init__(self, *, broken: bool = False) -> None:
        self.seqs: list[int] = []
        self.resyncs: list[int] = []
        self.broken = broken
        self.aborted = False

    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any) -> None:
        if self.broken:
            raise ConnectionResetError("peer gone")
        self.seqs.append(seq_of(message["text"]))

    async def resync(self, seq: int) -> None:
        self.resyncs.append(seq)

    def abort(self) -> None:
        self.aborted = True


async def until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def hub(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Hub, ScriptedBus]]:
    monkeypatch.setattr(background, "backoff", lambda attempt, rand=None: 0.2)
    hub = Hub()
    hub.bus = bus = ScriptedBus()
    await hub.start()
    yield hub, bus
    await hub.stop()


async def test_a_listener_whose_error_handler_fails_is_restarted_and_repairs(hub) -> None:
    hub, bus = hub
    client = Client()
    hub.add(client)
    bus.add(101)
    await until(lambda: client.seqs == [101])

    # A gap (102 lost) while Redis fails: the catch-up fails, and so does the resync the
    # error handler tries. The listener must not die with it.
    bus.failures = 2
    bus.add(102, deliver=False)
    bus.add(103)
    await until(lambda: background.health().get("live-hub", {}).get("state") == "restarting")
    assert "ConnectionError" in background.health()["live-hub"]["error"]

    # Redis is back: the listener resubscribes and repairs from the history.
    await until(lambda: client.seqs == [101, 102, 103])
    assert bus.subscriptions == 2
    assert background.health()["live-hub"]["state"] == "running"
    bus.add(104)
    await until(lambda: client.seqs[-1] == 104)


async def test_a_socket_whose_send_fails_is_closed_and_the_others_go_on(hub) -> None:
    hub, bus = hub
    broken, healthy = Client(broken=True), Client()
    hub.add(broken)
    hub.add(healthy)
    bus.add(101)
    bus.add(102)
    await until(lambda: healthy.seqs == [101, 102])
    assert broken.aborted, "a socket that failed a send is closed, so it reconnects and resumes"
    assert broken not in hub.clients and healthy in hub.clients


async def test_the_hub_tasks_stop_with_the_hub() -> None:
    hub = Hub()
    hub.bus = ScriptedBus()
    await hub.start()
    assert {"live-hub", "live-hub-reporter", "live-hub-control"} <= set(background.health())
    await hub.stop()
    assert not {"live-hub", "live-hub-reporter", "live-hub-control"} & set(background.health())


class BatchedClient(Client):
    batched = True

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    async def deliver_batch(self, batch: Any) -> None:
        message, _ = batch.combined()
        self.messages.append(message["text"])
        self.seqs.extend(seq for seq, _ in batch.frames)


async def test_frames_that_arrive_together_go_to_a_batched_socket_as_one_message(hub) -> None:
    hub, bus = hub
    batched, single = BatchedClient(), Client()
    hub.add(batched)
    hub.add(single)
    bus.add(101)
    await until(lambda: single.seqs == [101])
    assert batched.messages == [bus.history[101]]  # alone: the frame itself, not an array of one

    # Five frames at once, with 104 lost on the way: 102-103 go out, then the repair from
    # the history (104-106); every socket sees them in order, the batched one in two messages.
    bus.add(102)
    bus.add(103)
    bus.add(104, deliver=False)
    bus.add(105)
    bus.add(106)
    await until(lambda: single.seqs[-1] == 106)
    assert single.seqs == batched.seqs == [101, 102, 103, 104, 105, 106]
    assert batched.messages[1:] == [
        "[" + ",".join(bus.history[seq] for seq in (102, 103)) + "]",
        "[" + ",".join(bus.history[seq] for seq in (104, 105, 106)) + "]",
    ]


# --- per-event audiences (rayanpbx.audiences) ------------------------------------------------


class Viewer(Client):
    """A socket of a user with audiences ``sees``; keeps each message and prepared frame."""

    def __init__(self, *sees: str) -> None:
        super().__init__()
        self.sees = frozenset(sees)
        self.texts: list[str] = []
        self.prepared: list[Any] = []

    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any) -> None:
        await super().deliver(seq, message, prepared)
        self.texts.append(message["text"])
        self.prepared.append(prepared)


async def test_each_socket_gets_what_its_user_may_see_framed_once_per_audience(hub) -> None:
    hub, bus = hub
    reader, operator, staff, other_staff = Viewer(), Viewer("calls"), Viewer("calls", "staff"), Viewer("calls", "staff")
    for client in (reader, operator, staff, other_staff):
        hub.add(client)
    events = {
        101: ("extension.updated", {"id": 7}),
        102: ("call.started", {"id": "c1", "from": "101", "to": "102"}),
        103: ("security.sip_auth_failed", {"username": "101", "remote_ip": "203.0.113.9"}),
        104: ("pbx.apply", {"id": 3, "state": "failed", "errors": [{"object": "trunk a", "message": "bad"}]}),
        105: ("pbx.apply", {"id": 4, "state": "applied", "errors": []}),
    }
    for seq, (type_, payload) in events.items():
        bus.history[seq] = frame = number(body(type_, payload), seq)
        bus.queue.put_nowait(frame)
    await until(lambda: all(len(c.seqs) == 5 for c in (reader, operator, staff, other_staff)))

    originals = [bus.history[seq] for seq in events]
    assert staff.texts == other_staff.texts == originals
    # Every socket gets every seq, in order: gap detection and resume are unchanged.
    assert reader.seqs == operator.seqs == staff.seqs == list(events)

    def placeholder(seq: int) -> dict[str, Any]:
        return {"seq": seq, "type": "restricted", "payload": {}, "timestamp": json.loads(bus.history[seq])["timestamp"]}

    redacted_apply = {**json.loads(originals[3]), "payload": {**events[104][1], "errors": [], "errors_hidden": 1}}
    assert [json.loads(text) for text in reader.texts] == [
        json.loads(originals[0]), placeholder(102), placeholder(103), redacted_apply, json.loads(originals[4])
    ]  # fmt: skip
    assert [json.loads(text) for text in operator.texts] == [
        json.loads(originals[0]), json.loads(originals[1]), placeholder(103), redacted_apply, json.loads(originals[4])
    ]  # fmt: skip
    # Framed once per set of audiences, not per socket: the two staff sockets got the very
    # same prepared frames, and an event for everyone is one object for every socket.
    assert all(a is b for a, b in zip(staff.prepared, other_staff.prepared, strict=True))
    assert reader.prepared[0] is operator.prepared[0] is staff.prepared[0]


async def test_a_stream_with_no_restricted_event_is_never_parsed(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, bus = hub
    reader = Viewer()
    hub.add(reader)

    def no_parsing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a frame for everyone was parsed")

    monkeypatch.setattr(audiences.json, "loads", no_parsing)
    bus.add(101)
    bus.add(102)
    await until(lambda: reader.seqs == [101, 102])
    assert reader.texts == [bus.history[101], bus.history[102]]
