"""The live PBX state: a pure state machine fed with AMI messages, turned into stream events.

:class:`PbxState` does no I/O (no sockets, no database, no asyncio): the PBX link hands it
every unsolicited AMI event (:meth:`PbxState.handle`), the event lists it re-reads after each
(re)connect and ``FullyBooted`` (:meth:`PbxState.reconcile`), and calls :meth:`PbxState.due`
every second. Each returns the stream events to publish now, as ``(type, payload)`` in order:

=============================  ==============================================================
``extension.registration``     ``{extension_number, state, contacts}`` (:mod:`pbx.registrations`)
``trunk.registration``         ``{name, state, server_uri, last_attempt_at}``
``call.started`` / ``call.answered`` / ``call.ended``   one call per Linkedid (:mod:`pbx.calls`)
``security.sip_auth_failed``   ``{username, remote_ip, attempts, first_at, last_at}``
=============================  ==============================================================

Payloads are built field by field, so no raw AMI header reaches one (``AuthDetail`` carries
SIP passwords in plain text). Times are ISO-8601 UTC with a ``Z``, from ``clock``.

**Failed SIP authentication** comes in bursts (one phone with a wrong password: 15
``ChallengeResponseFailed`` in 5 ms, ``shared/ami/README.md``). The first failure of a
(username, IP) opens a window of ``auth_window`` seconds; the failures in it are counted,
and :meth:`PbxState.due` publishes one event per window once it has closed. Open windows
are bounded by ``max_auth_windows``: past it, a failure of a new (username, IP) is counted
in that IP's overflow window (username ``"*"``), at most ``max_auth_windows // 10`` of those;
past that too, it is dropped and counted in :attr:`PbxState.auth_failures_dropped`.
``InvalidPassword`` counts too, except from the AMI itself (a manager login, not SIP).

**Link lost** (:meth:`PbxState.lost`): nothing is published and nothing forgotten; what
changed while Asterisk was away is told by the reconcile after the reconnect, which ends the
calls it no longer lists with cause ``"pbx restarted"``.

An event this module cannot understand (a field missing or garbled) is skipped, logged at
debug and counted in :attr:`PbxState.ignored`; ``handle()`` never raises. Events of types it
does not follow (VarSet, Newexten, RTCP...) are skipped without counting.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pbx.ami_protocol import Message
from pbx.calls import CallTracker, endpoint_of
from pbx.registrations import (
    ExtensionRegistrations,
    Malformed,
    TrunkRegistrations,
    default_is_extension,
    default_is_trunk,
    field,
    iso_utc,
    required,
)

__all__ = ["PbxState", "Snapshot"]

logger = logging.getLogger("pbx.state")

#: Aggregated auth failures kept for the snapshot; the oldest is forgotten at the bound.
MAX_AUTH_HISTORY = 50
#: DeviceStateChange states (and PeerStatus values) that mean "this endpoint is available".
AVAILABLE = {"not_inuse", "inuse", "busy", "ringing", "ringinuse", "onhold", "reachable", "registered"}


@dataclass
class Snapshot:
    """The event lists read after a (re)connect. ``None`` for a list not read: it is left as known."""

    contacts: list[Message] | None  # PJSIPShowContacts: ContactList
    endpoints: list[Message] | None  # PJSIPShowEndpoints: EndpointList
    channels: list[Message] | None  # CoreShowChannels: CoreShowChannel
    registrations: list[Message] | None  # PJSIPShowRegistrationsOutbound: OutboundRegistrationDetail


@dataclass
class _AuthWindow:
    opened: float
    first: float
    last: float
    attempts: int = 0


class PbxState:
    """Registrations, calls and auth failures as Asterisk last told them."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        auth_window: float = 10.0,
        is_extension: Callable[[str], bool] | None = None,
        is_trunk: Callable[[str], bool] | None = None,
        max_auth_windows: int = 10_000,
        start_grace: float = 2.0,
    ) -> None:
        self.clock = clock
        self.auth_window = auth_window
        self.max_auth_windows = max_auth_windows
        is_extension = is_extension or default_is_extension
        self.extensions = ExtensionRegistrations(is_extension)
        self.trunks = TrunkRegistrations(clock)
        self.calls = CallTracker(clock, is_extension, is_trunk or default_is_trunk(is_extension), start_grace)
        self.auth_failures_dropped = 0
        self._ignored = 0
        self._windows: dict[tuple[str, str], _AuthWindow] = {}  # insertion order = opening order
        self._overflow_windows = 0
        self._auth_history: deque[dict] = deque(maxlen=MAX_AUTH_HISTORY)
        self._handlers: dict[str, Callable[[Message], list[tuple[str, dict]]]] = {
            "contactstatus": self.extensions.on_contact_status,
            "peerstatus": self._on_peer_status,
            "devicestatechange": self._on_device_state,
            "registry": self.trunks.on_registry,
            "newchannel": self.calls.on_newchannel,
            "newstate": self.calls.on_newstate,
            "bridgeenter": self.calls.on_bridge_enter,
            "dialbegin": self.calls.on_dial_begin,
            "hangup": self.calls.on_hangup,
            "challengeresponsefailed": self._on_auth_failure,
            "invalidpassword": self._on_auth_failure,
        }

    @property
    def ignored(self) -> int:
        """Events (and list items) skipped because they could not be understood."""
        return self._ignored + self.extensions.ignored + self.trunks.ignored

    @property
    def open_auth_windows(self) -> int:
        return len(self._windows)

    # --- input ----------------------------------------------------------------------

    def handle(self, message: Message) -> list[tuple[str, dict]]:
        """One unsolicited AMI event -> the stream events to publish now, in order."""
        handler = self._handlers.get((message.event or "").lower())
        if handler is None:
            return []
        try:
            return handler(message)
        except Malformed as exc:
            self._ignored += 1
            logger.debug("PBX state: ignored %s: %s", message.event, exc)
        except Exception:  # a bug here must not take the AMI link down
            self._ignored += 1
            logger.warning("PBX state: could not follow %r", message, exc_info=True)
        return []

    def reconcile(self, snapshot: Snapshot) -> list[tuple[str, dict]]:
        """After a (re)connect: the differences between what was known and what Asterisk lists."""
        events: list[tuple[str, dict]] = []
        if snapshot.contacts is not None:
            events += self.extensions.reconcile(snapshot.contacts, snapshot.endpoints)
        if snapshot.registrations is not None:
            events += self.trunks.reconcile(snapshot.registrations)
        if snapshot.channels is not None:
            events += self.calls.reconcile(snapshot.channels)
        return events

    def reconcile_contacts(self, contacts: list[Message]) -> list[tuple[str, dict]]:
        """A fresh ``PJSIPShowContacts`` (all contacts), e.g. for :meth:`needs_contact_details`."""
        return self.extensions.reconcile(contacts, None)

    def needs_contact_details(self) -> set[str]:
        """Extensions to re-read with ``PJSIPShowContacts``: a contact without its user agent yet."""
        return self.extensions.needs_contact_details()

    def due(self) -> list[tuple[str, dict]]:
        """Closed auth windows and calls whose ``call.started`` waited long enough (every second)."""
        now = self.clock()
        events: list[tuple[str, dict]] = []
        for key, window in list(self._windows.items()):
            if now - window.opened < self.auth_window:
                continue
            del self._windows[key]
            if key[0] == "*":
                self._overflow_windows -= 1
            payload = {
                "username": key[0],
                "remote_ip": key[1],
                "attempts": window.attempts,
                "first_at": iso_utc(window.first),
                "last_at": iso_utc(window.last),
            }
            self._auth_history.append(payload)
            events.append(("security.sip_auth_failed", payload))
        return events + self.calls.due()

    def lost(self) -> list[tuple[str, dict]]:
        """The AMI link dropped: publish nothing, keep everything until the next reconcile."""
        return []

    # --- output ---------------------------------------------------------------------

    def snapshot_registrations(self) -> list[dict]:
        return self.extensions.snapshot()

    def snapshot_calls(self) -> dict:
        return self.calls.snapshot()

    def snapshot_trunks(self) -> list[dict]:
        return self.trunks.snapshot()

    def snapshot_auth_failures(self) -> list[dict]:
        return list(reversed(self._auth_history))

    def counts(self) -> dict[str, int]:
        return {"registered": self.extensions.registered_count(), "active_calls": self.calls.active_count()}

    # --- handlers -------------------------------------------------------------------

    def _on_peer_status(self, message: Message) -> list[tuple[str, dict]]:
        endpoint = endpoint_of(required(message, "Peer"))
        return self.extensions.on_hint(endpoint, (field(message, "PeerStatus") or "").lower() in AVAILABLE)

    def _on_device_state(self, message: Message) -> list[tuple[str, dict]]:
        device = required(message, "Device")
        endpoint = device.partition("/")[2] if device.lower().startswith("pjsip/") else None
        return self.extensions.on_hint(endpoint, (field(message, "State") or "").lower() in AVAILABLE)

    def _on_auth_failure(self, message: Message) -> list[tuple[str, dict]]:
        if (field(message, "Service") or "").upper() == "AMI":
            return []
        username = required(message, "AccountID")
        # RemoteAddress: IPV4/UDP/127.0.0.1/5074 (IPV6/UDP/::1/5074 splits the same way).
        parts = required(message, "RemoteAddress").split("/")
        if len(parts) < 4 or not parts[2]:
            raise Malformed(f"unreadable RemoteAddress {message.get('RemoteAddress')!r}")
        ip = parts[2]
        now = self.clock()
        key = (username, ip)
        window = self._windows.get(key)
        if window is None and len(self._windows) >= self.max_auth_windows:
            key = ("*", ip)
            window = self._windows.get(key)
            if window is None:
                if self._overflow_windows >= max(1, self.max_auth_windows // 10):
                    self.auth_failures_dropped += 1
                    return []
                self._overflow_windows += 1
        if window is None:
            window = self._windows[key] = _AuthWindow(now, now, now)
        window.attempts += 1
        window.last = now
        return []
