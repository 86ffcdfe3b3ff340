"""Calls in progress and the last ones ended, from AMI channel events.

Part of :mod:`pbx.state`; pure state, no I/O. A *call* is every channel that shares one
``Linkedid`` (the Uniqueid of the channel that started it): both legs of 101 -> 102, the
``Local/`` halves an Originate or a queue creates, the trunk leg of an outbound call. A
channel stays in the call it joined first (Asterisk can re-link a channel when it bridges
into an older call; we keep it where it was, so each call still ends exactly once).

* ``call.started`` has the first channel's caller and dialled extension, but its
  ``direction`` is only known once the other side appears: a trunk as the callee makes it
  "outbound", which the first channel alone cannot tell. So a call whose first channel is
  not on a trunk is *pending*: ``call.started`` goes out at the first of: a second
  (non-``Local/``) channel or a ``DialBegin`` towards one, the answer, the hang-up, or
  ``start_grace`` seconds (flushed by :meth:`CallTracker.due`). ``started_at`` is always the
  first channel's time. A call on a trunk's channel first is "inbound" and starts at once.
  Pending calls are not in :meth:`CallTracker.snapshot`: a client that fetched it and then
  applied the events has the same calls as a fresh fetch.
* ``call.answered`` once, at the first channel that is ``Up`` (Newstate 6) or enters a bridge.
* ``call.ended`` at the ``Hangup`` of its last channel, with the first non-zero Q.850 cause
  any leg gave (0 when none did).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pbx.ami_protocol import Message
from pbx.registrations import field as header
from pbx.registrations import iso_utc, required

logger = logging.getLogger("pbx.state")

#: Ended calls kept for the snapshot; the oldest is forgotten at the bound.
MAX_ENDED_CALLS = 200
#: Calls in progress tracked; past it, a new call is not tracked (counted in ``untracked``).
MAX_ACTIVE_CALLS = 10_000
#: Channels tracked (of calls in progress); past it, a new channel is not tracked.
MAX_CHANNELS = 50_000
#: Caller IDs Asterisk uses for "none".
NO_NUMBER = {"", "<unknown>", "unknown", "anonymous"}
UP = "6"
PBX_RESTARTED = "pbx restarted"


def endpoint_of(channel: str) -> str | None:
    """``PJSIP/101-00000001`` -> ``101``: between the technology and the last ``-``. None for ``Local/``."""
    tech, slash, rest = channel.partition("/")
    if not slash or not rest or tech.lower() == "local":
        return None
    name = rest.rpartition("-")[0] if "-" in rest else rest
    return name or None


def number(value: str | None) -> str | None:
    return None if value is None or value.strip().lower() in NO_NUMBER else value.strip()


def dialled(value: str | None) -> str | None:
    # "s" is the start extension of a channel Asterisk created to dial out, not a number.
    return None if value is None or value.strip() in ("", "s") else value.strip()


def hms_seconds(value: str | None) -> int:
    """CoreShowChannel ``Duration: 00:00:02`` -> 2 (0 when garbled)."""
    try:
        hours, minutes, seconds = (int(part) for part in (value or "").split(":"))
    except ValueError:
        return 0
    return max(0, hours * 3600 + minutes * 60 + seconds)


@dataclass
class Call:
    id: str
    started_at: float
    caller: str | None
    to: str | None
    first_endpoint: str | None
    channels: set[str] = field(default_factory=set)  # Uniqueids still up
    direction: str | None = None
    trunk: str | None = None
    answered_at: float | None = None
    cause: int | None = None
    cause_text: str | None = None
    published: bool = False

    def summary(self) -> dict:
        return {
            "id": self.id,
            "from": self.caller,
            "to": self.to,
            "direction": self.direction,
            "trunk": self.trunk,
            "started_at": iso_utc(self.started_at),
            "answered_at": iso_utc(self.answered_at) if self.answered_at is not None else None,
        }


class CallTracker:
    """One :class:`Call` per Linkedid while any of its channels is up, then a bounded history."""

    def __init__(
        self,
        clock: Callable[[], float],
        is_extension: Callable[[str], bool],
        is_trunk: Callable[[str], bool],
        start_grace: float = 2.0,
    ) -> None:
        self.clock = clock
        self.is_extension = is_extension
        self.is_trunk = is_trunk
        self.start_grace = start_grace
        self.untracked = 0
        self._calls: dict[str, Call] = {}  # Linkedid -> call, oldest first
        self._channels: dict[str, str] = {}  # Uniqueid -> Linkedid
        self._ended: deque[dict] = deque(maxlen=MAX_ENDED_CALLS)

    # events

    def on_newchannel(self, message: Message) -> list[tuple[str, dict]]:
        uid = required(message, "Uniqueid")
        channel = required(message, "Channel")
        lid = header(message, "Linkedid") or uid
        if uid in self._channels:
            return []
        call = self._calls.get(lid)
        events: list[tuple[str, dict]] = []
        if call is None:
            if len(self._calls) >= MAX_ACTIVE_CALLS or len(self._channels) >= MAX_CHANNELS:
                self.untracked += 1
                return []
            endpoint = endpoint_of(channel)
            call = Call(
                lid,
                self.clock(),
                number(message.get("CallerIDNum")) or endpoint,
                dialled(message.get("Exten")),
                endpoint,
            )
            self._calls[lid] = call
            if endpoint and self.is_trunk(endpoint):
                events += self._start(call, "inbound", endpoint)
        else:
            if len(self._channels) >= MAX_CHANNELS:
                self.untracked += 1
                return []
            events += self._other_side(call, endpoint_of(channel))
        call.channels.add(uid)
        self._channels[uid] = lid
        if header(message, "ChannelState") == UP:
            events += self._answer(call)
        return events

    def on_newstate(self, message: Message) -> list[tuple[str, dict]]:
        call = self._call_of(message)
        up = header(message, "ChannelState") == UP or (header(message, "ChannelStateDesc") or "").lower() == "up"
        return self._answer(call) if call is not None and up else []

    def on_bridge_enter(self, message: Message) -> list[tuple[str, dict]]:
        call = self._call_of(message)
        return self._answer(call) if call is not None else []

    def on_dial_begin(self, message: Message) -> list[tuple[str, dict]]:
        call = self._call_of(message)
        if call is None:
            return []
        if call.to is None:
            call.to = number(message.get("DestCallerIDNum")) or dialled(message.get("DialString"))
        return self._other_side(call, endpoint_of(header(message, "DestChannel") or ""))

    def on_hangup(self, message: Message) -> list[tuple[str, dict]]:
        uid = required(message, "Uniqueid")
        lid = self._channels.pop(uid, None)
        call = self._calls.get(lid) if lid is not None else None
        if call is None:
            return []
        try:
            cause = int(header(message, "Cause") or "0")
        except ValueError:
            cause = 0
        if call.cause is None or (cause and not call.cause):
            # The first leg that gives a non-zero cause names it.
            call.cause, call.cause_text = cause, header(message, "Cause-txt")
        call.channels.discard(uid)
        return [] if call.channels else self._end(call, call.cause or 0, call.cause_text)

    def due(self) -> list[tuple[str, dict]]:
        """``call.started`` for pending calls older than ``start_grace``: no trunk seen, so internal."""
        now = self.clock()
        events: list[tuple[str, dict]] = []
        for call in list(self._calls.values()):
            if not call.published and now - call.started_at >= self.start_grace:
                events += self._start(call, "internal", None)
        return events

    # snapshots

    def reconcile(self, channels: list[Message]) -> list[tuple[str, dict]]:
        """Make the calls what ``CoreShowChannels`` lists: end the vanished, add the unknown."""
        groups: dict[str, list[Message]] = {}
        for message in channels:
            if header(message, "Uniqueid") is None or header(message, "Channel") is None:
                self.untracked += 1
                continue
            groups.setdefault(header(message, "Linkedid") or header(message, "Uniqueid") or "", []).append(message)
        present = {header(m, "Uniqueid") for group in groups.values() for m in group}
        events: list[tuple[str, dict]] = []
        for call in list(self._calls.values()):
            for uid in call.channels - present:
                call.channels.discard(uid)
                self._channels.pop(uid, None)
            if not call.channels:
                events += self._end(call, PBX_RESTARTED, PBX_RESTARTED)
        now = self.clock()
        for lid, group in groups.items():
            call = self._calls.get(lid)
            if call is None:
                if len(self._calls) >= MAX_ACTIVE_CALLS:
                    self.untracked += 1
                    continue
                # The call's first channel is the one whose Uniqueid is the Linkedid; Asterisk
                # lists the callee first (surprise 12).
                group.sort(key=lambda m: (header(m, "Uniqueid") != lid, header(m, "Uniqueid")))
                first = group[0]
                endpoint = endpoint_of(header(first, "Channel") or "")
                started = now - max(hms_seconds(m.get("Duration")) for m in group)
                call = self._calls[lid] = Call(
                    lid, started, number(first.get("CallerIDNum")) or endpoint, dialled(first.get("Exten")), endpoint
                )
                others = [endpoint_of(header(m, "Channel") or "") for m in group[1:]]
                if endpoint and self.is_trunk(endpoint):
                    events += self._start(call, "inbound", endpoint)
                else:
                    trunk = next((e for e in others if e and self.is_trunk(e)), None)
                    events += self._start(call, "outbound" if trunk else "internal", trunk)
            for message in group:
                uid = header(message, "Uniqueid") or ""
                if uid not in self._channels and len(self._channels) < MAX_CHANNELS:
                    self._channels[uid] = lid
                    call.channels.add(uid)
            if any(header(m, "ChannelState") == UP for m in group):
                # When it was answered is not listed; we learn it now.
                events += self._answer(call)
        return events

    def snapshot(self) -> dict:
        return {
            "active": [call.summary() for call in self._calls.values() if call.published],
            "ended": list(reversed(self._ended)),
        }

    def active_count(self) -> int:
        return sum(call.published for call in self._calls.values())

    # internals

    def _call_of(self, message: Message) -> Call | None:
        lid = self._channels.get(header(message, "Uniqueid") or "")
        return self._calls.get(lid) if lid is not None else None

    def _other_side(self, call: Call, endpoint: str | None) -> list[tuple[str, dict]]:
        """A leg towards ``endpoint`` appeared: that decides a pending call's direction."""
        if call.published or endpoint is None:
            return []  # a Local/ half says nothing about where the call goes
        if self.is_trunk(endpoint):
            return self._start(call, "outbound", endpoint)
        return self._start(call, "internal", None)

    def _start(self, call: Call, direction: str, trunk: str | None) -> list[tuple[str, dict]]:
        if call.published:
            return []
        call.direction, call.trunk, call.published = direction, trunk, True
        payload = {key: value for key, value in call.summary().items() if key != "answered_at"}
        return [("call.started", payload)]

    def _answer(self, call: Call) -> list[tuple[str, dict]]:
        if call.answered_at is not None:
            return []
        events = self._start(call, "internal", None)
        call.answered_at = self.clock()
        return [*events, ("call.answered", {"id": call.id, "answered_at": iso_utc(call.answered_at)})]

    def _end(self, call: Call, cause: int | str, cause_text: str | None) -> list[tuple[str, dict]]:
        events = self._start(call, "internal", None)
        now = self.clock()
        for uid in call.channels:
            self._channels.pop(uid, None)
        self._calls.pop(call.id, None)
        talk = now - call.answered_at if call.answered_at is not None else 0.0
        ended = {
            "id": call.id,
            "cause": cause,
            "cause_text": cause_text,
            "duration_s": round(max(0.0, now - call.started_at), 1),
            "talk_s": round(max(0.0, talk), 1),
        }
        self._ended.append({**call.summary(), "ended_at": iso_utc(now), **ended})
        return [*events, ("call.ended", ended)]
