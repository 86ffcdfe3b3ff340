"""Who is registered: extensions' contacts and trunks' outbound registrations, from AMI.

Part of :mod:`pbx.state` (the live PBX state); pure state, no I/O. Two trackers:

* :class:`ExtensionRegistrations` keeps each extension's contacts (an AOR may hold several)
  and publishes ``extension.registration`` when what a browser would show changes. Its
  sources do not agree on field names (``shared/ami/README.md``, surprise 7): ``ContactStatus``
  says ``URI``/``AOR``/``EndpointName`` and has no user agent, ``ContactList`` (from
  ``PJSIPShowContacts``) says ``Uri``/``Endpoint`` and has the user agent, the Via address
  and the expiry. A contact is keyed by its URI in both.
* :class:`TrunkRegistrations` keeps ``trunk.registration`` per registration object, whose
  name is the trunk's name, from ``PJSIPShowRegistrationsOutbound`` and ``Registry`` events.

**State rule** for an extension: ``registered`` when at least one contact is in any state
but ``Unreachable`` (Reachable, NonQualified, and also Unknown/Created/Updated: a contact
exists because the phone registered and its registration has not expired, Asterisk removes
expired ones with ``Removed``; only a failed qualify says it cannot be reached),
``unreachable`` when it has contacts and all are ``Unreachable``, ``unregistered`` without
contacts. ``PeerStatus`` and ``DeviceStateChange`` are hints only: they arrive in no stable
order around ``ContactStatus`` (surprise 10), so acting on them would flicker
(registered, unreachable, unregistered for one clean unregister). They only mark the
extension for :meth:`ExtensionRegistrations.needs_contact_details` when they say it is
available while we know no contact of it.

A registration gives ``NonQualified`` then ``Reachable`` a moment later (surprise 9): that
is two events, the second adding the round-trip time. They are not coalesced: the first
is true when it is sent, and holding it back would delay every registration.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pbx.ami_protocol import Message

logger = logging.getLogger("pbx.state")

EXTENSION_NAME = re.compile(r"\d{2,10}")
#: Contacts kept per endpoint. Asterisk's ``max_contacts`` bounds them first; at this bound
#: the oldest contact is forgotten.
MAX_CONTACTS_PER_ENDPOINT = 100
#: Endpoints kept. They mirror Asterisk's configured endpoints; past this bound a new
#: endpoint is not tracked (counted in ``ignored``).
MAX_ENDPOINTS = 100_000
#: Outbound registrations kept, with the same rule as ``MAX_ENDPOINTS``.
MAX_TRUNKS = 10_000


class Malformed(ValueError):
    """An event of a type we handle whose fields make no sense: it is ignored and counted."""


# --- shared by the trackers -----------------------------------------------------------


def iso_utc(timestamp: float) -> str:
    """``timestamp`` (epoch seconds) as ISO-8601 UTC with a ``Z``, to the millisecond."""
    try:
        moment = datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed(f"time out of range: {timestamp!r}") from exc
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def default_is_extension(name: str) -> bool:
    """The default rule: an endpoint named with 2 to 10 digits is an extension."""
    return bool(EXTENSION_NAME.fullmatch(name))


def default_is_trunk(is_extension: Callable[[str], bool]) -> Callable[[str], bool]:
    """The default rule: an endpoint that is no extension and does not start with a digit.

    ``"1001b"`` is neither (a site's own odd endpoint); ``"provider"`` is a trunk.
    """
    return lambda name: bool(name) and not is_extension(name) and not name[0].isdigit()


def field(message: Message, *names: str) -> str | None:
    """The first of ``names`` that ``message`` carries with a non-empty value, stripped."""
    for name in names:
        value = message.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def required(message: Message, *names: str) -> str:
    value = field(message, *names)
    if value is None:
        raise Malformed(f"{message.event}: no {'/'.join(names)}")
    return value


def uri_host_port(uri: str) -> tuple[str | None, int | None]:
    """Host and port of a SIP URI: ``sip:101-0x55f6@127.0.0.1:5070;ob`` -> ``("127.0.0.1", 5070)``."""
    rest = uri.strip().strip("<>")
    scheme, colon, after = rest.partition(":")
    if colon and scheme.lower() in ("sip", "sips"):
        rest = after
    rest = re.split(r"[;?>]", rest.rpartition("@")[2], maxsplit=1)[0]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = rest.partition(":")
    return host or None, to_port(port)


def to_port(value: str | None) -> int | None:
    if value and value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    return None


def rtt_ms(value: str | None) -> float | None:
    """``RoundtripUsec`` as milliseconds; None when absent, garbled or 0 (not measured)."""
    try:
        usec = int(value or "")
    except ValueError:
        return None
    return round(usec / 1000, 3) if usec > 0 else None


# --- extensions -----------------------------------------------------------------------

#: ContactStatus / ContactList status words (lower-cased) -> the status we keep.
CONTACT_STATUSES = {
    "reachable": "Reachable",
    "unreachable": "Unreachable",
    "nonqualified": "NonQualified",
    "unqualified": "NonQualified",
    "unknown": "Unknown",
    "created": "Unknown",  # a new contact whose qualify has not answered yet
    "updated": None,  # refreshed: keep the status it had
    "removed": None,
}


@dataclass
class Contact:
    uri: str
    status: str
    ip: str | None = None
    port: int | None = None
    user_agent: str | None = None
    rtt_ms: float | None = None
    expires_at: str | None = None
    #: True once a ContactList told us its user agent, Via and expiry.
    detailed: bool = False

    def payload(self) -> dict:
        return {
            "uri": self.uri,
            "ip": self.ip,
            "port": self.port,
            "user_agent": self.user_agent,
            "rtt_ms": self.rtt_ms,
            "expires_at": self.expires_at,
        }


def registration_state(contacts: list[Contact]) -> str:
    if not contacts:
        return "unregistered"
    if all(contact.status == "Unreachable" for contact in contacts):
        return "unreachable"
    return "registered"


class ExtensionRegistrations:
    """Contacts per extension, and the last ``extension.registration`` sent for each."""

    def __init__(self, is_extension: Callable[[str], bool]) -> None:
        self.is_extension = is_extension
        self.ignored = 0
        self._contacts: dict[str, dict[str, Contact]] = {}  # extension -> URI -> contact, oldest first
        self._configured: set[str] = set()  # extensions PJSIPShowEndpoints listed
        self._published: dict[str, dict] = {}  # extension -> last payload sent (absent: unregistered)
        self._hinted: set[str] = set()  # PeerStatus/DeviceStateChange said available, no contact known

    # events

    def on_contact_status(self, message: Message) -> list[tuple[str, dict]]:
        uri = required(message, "URI", "Uri")
        extension = required(message, "EndpointName", "AOR")
        word = required(message, "ContactStatus").lower()
        if word not in CONTACT_STATUSES:
            raise Malformed(f"ContactStatus: unknown status {word!r}")
        if not self.is_extension(extension):
            return []  # a trunk's static contact being qualified
        contacts = self._contacts_of(extension)
        if contacts is None:
            return []
        if word == "removed":
            contacts.pop(uri, None)
        else:
            contact = contacts.get(uri)
            if contact is None:
                ip, port = uri_host_port(uri)
                if ip is None:
                    raise Malformed(f"ContactStatus: no host in {uri!r}")
                contact = Contact(uri, "Unknown", ip, port)
            else:
                del contacts[uri]  # re-inserted below: the newest contact is the last one
            status = CONTACT_STATUSES[word]
            if status is not None:
                contact.status = status
                contact.rtt_ms = rtt_ms(message.get("RoundtripUsec")) if status == "Reachable" else None
            self._add(contacts, contact)
        self._hinted.discard(extension)
        return self._publish(extension)

    def on_hint(self, endpoint: str | None, available: bool) -> list[tuple[str, dict]]:
        """A PeerStatus/DeviceStateChange for ``endpoint``: never an event by itself."""
        if endpoint and available and self.is_extension(endpoint) and not self._contacts.get(endpoint):
            self._hinted.add(endpoint)
        return []

    # snapshots

    def reconcile(self, contacts: list[Message], endpoints: list[Message] | None) -> list[tuple[str, dict]]:
        """Replace every contact with ``ContactList`` events; ``endpoints`` (EndpointList) when known."""
        if endpoints is not None:
            configured = set()
            for message in endpoints:
                name = field(message, "ObjectName")
                if name and self.is_extension(name):
                    configured.add(name)
            self._configured = set(list(configured)[:MAX_ENDPOINTS])
        fresh: dict[str, dict[str, Contact]] = {}
        for message in contacts:
            try:
                extension, contact = self._parse_contact_list(message)
            except Malformed as exc:
                self.ignored += 1
                logger.debug("PBX state: ignored a ContactList item: %s", exc)
                continue
            if extension is None:
                continue
            if extension not in fresh and len(fresh) >= MAX_ENDPOINTS:
                self.ignored += 1
                continue
            self._add(fresh.setdefault(extension, {}), contact)
        events = []
        for extension in sorted(set(self._contacts) | set(fresh) | set(self._published)):
            self._contacts[extension] = fresh.get(extension, {})
            events += self._publish(extension)
            if not self._contacts[extension]:
                del self._contacts[extension]
        self._hinted.clear()
        return events

    def needs_contact_details(self) -> set[str]:
        """Extensions whose newest contact came from ContactStatus only (no user agent yet)."""
        newest = {ext: list(contacts.values())[-1] for ext, contacts in self._contacts.items() if contacts}
        return {ext for ext, contact in newest.items() if not contact.detailed} | self._hinted

    def snapshot(self) -> list[dict]:
        names = self._configured | set(self._contacts)
        return [self._payload(name) for name in sorted(names, key=lambda n: (len(n), n))]

    def registered_count(self) -> int:
        return sum(registration_state(list(c.values())) == "registered" for c in self._contacts.values())

    # internals

    def _contacts_of(self, extension: str) -> dict[str, Contact] | None:
        contacts = self._contacts.get(extension)
        if contacts is None:
            if len(self._contacts) >= MAX_ENDPOINTS:
                self.ignored += 1
                return None
            contacts = self._contacts[extension] = {}
        return contacts

    @staticmethod
    def _add(contacts: dict[str, Contact], contact: Contact) -> None:
        contacts[contact.uri] = contact
        while len(contacts) > MAX_CONTACTS_PER_ENDPOINT:
            del contacts[next(iter(contacts))]

    def _parse_contact_list(self, message: Message) -> tuple[str | None, Contact]:
        uri = required(message, "Uri", "URI")
        extension = field(message, "Endpoint", "EndpointName", "AOR")
        if extension is None:
            extension = required(message, "ObjectName", "ID").partition(";@")[0]
        word = (field(message, "Status") or "Unknown").lower()
        status = CONTACT_STATUSES.get(word) or "Unknown"
        ip, port = uri_host_port(uri)
        via_ip, via_port = field(message, "ViaAddr"), to_port(field(message, "ViaPort"))
        if via_ip and via_port:
            ip, port = via_ip, via_port
        expires = field(message, "ExpirationTime", "RegExpire")
        expires_at = iso_utc(int(expires)) if expires and expires.isdigit() and int(expires) > 0 else None
        contact = Contact(
            uri,
            status,
            ip,
            port,
            user_agent=field(message, "UserAgent"),
            rtt_ms=rtt_ms(message.get("RoundtripUsec")) if status == "Reachable" else None,
            expires_at=expires_at,
            detailed=True,
        )
        return (extension if self.is_extension(extension) else None), contact

    def _payload(self, extension: str) -> dict:
        contacts = sorted(self._contacts.get(extension, {}).values(), key=lambda c: c.uri)
        return {
            "extension_number": extension,
            "state": registration_state(contacts),
            "contacts": [contact.payload() for contact in contacts],
        }

    def _publish(self, extension: str) -> list[tuple[str, dict]]:
        payload = self._payload(extension)
        nothing = {"extension_number": extension, "state": "unregistered", "contacts": []}
        before = self._published.get(extension) or nothing
        if payload == before:
            return []
        if payload["state"] == "unregistered" and not payload["contacts"]:
            self._published.pop(extension, None)
        else:
            self._published[extension] = payload
        return [("extension.registration", payload)]


# --- trunks ---------------------------------------------------------------------------

#: Registry / OutboundRegistrationDetail ``Status`` (lower-cased) -> trunk.registration state.
TRUNK_STATES = {
    "registered": "registered",
    "unregistered": "unregistered",
    "stopped": "unregistered",
    "stopping": "unregistered",
    "rejected": "rejected",
    "failed": "failed",
}


class TrunkRegistrations:
    """``trunk.registration`` per outbound registration object (named like its trunk).

    A ``Registry`` event names no object, only ``Username`` (PJSIP puts the client URI
    there) and ``Domain`` (the server URI), so it is matched against what the last
    ``PJSIPShowRegistrationsOutbound`` said; one that matches nothing sets
    :attr:`needs_details`, for the lead to run that action again. An event is published when
    the state or server URI changes; ``last_attempt_at`` alone (every re-registration) only
    updates the snapshot.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.ignored = 0
        self.needs_details = False
        self._trunks: dict[str, dict] = {}  # name -> payload
        self._client_uris: dict[str, str] = {}  # name -> client URI
        self._published: dict[str, dict] = {}

    def on_registry(self, message: Message) -> list[tuple[str, dict]]:
        client = field(message, "Username")
        server = required(message, "Domain")
        state = TRUNK_STATES.get(required(message, "Status").lower())
        if state is None:
            raise Malformed(f"Registry: unknown status {message.get('Status')!r}")
        name = self._match(client, server)
        if name is None:
            self.needs_details = True
            return []
        trunk = self._trunks[name]
        trunk["state"] = state
        trunk["last_attempt_at"] = iso_utc(self.clock())
        return self._publish(name)

    def reconcile(self, registrations: list[Message]) -> list[tuple[str, dict]]:
        fresh: dict[str, tuple[str, str | None, str | None]] = {}
        for message in registrations:
            name = field(message, "ObjectName")
            state = TRUNK_STATES.get((field(message, "Status") or "").lower())
            if name is None or state is None or (name not in fresh and len(fresh) >= MAX_TRUNKS):
                self.ignored += 1
                continue
            fresh[name] = (state, field(message, "ServerUri"), field(message, "ClientUri"))
        events = []
        for name in sorted(set(self._trunks) | set(fresh)):
            if name not in fresh:
                # The registration is gone from the configuration: say so once, then forget it.
                self._trunks[name]["state"] = "unregistered"
                events += self._publish(name)
                del self._trunks[name]
                self._client_uris.pop(name, None)
                self._published.pop(name, None)
                continue
            state, server, client = fresh[name]
            trunk = self._trunks.setdefault(name, {"name": name, "last_attempt_at": None})
            trunk.update(state=state, server_uri=server)
            if client:
                self._client_uris[name] = client
            events += self._publish(name)
        self.needs_details = False
        return events

    def snapshot(self) -> list[dict]:
        return [dict(self._trunks[name]) for name in sorted(self._trunks)]

    def _match(self, client: str | None, server: str) -> str | None:
        by_server = [name for name, trunk in self._trunks.items() if trunk["server_uri"] == server]
        if client:
            exact = [name for name in by_server if self._client_uris.get(name) == client]
            if len(exact) == 1:
                return exact[0]
        return by_server[0] if len(by_server) == 1 else None

    def _publish(self, name: str) -> list[tuple[str, dict]]:
        trunk = self._trunks[name]
        before = self._published.get(name)
        key = (trunk["state"], trunk["server_uri"])
        if before is not None and (before["state"], before["server_uri"]) == key:
            return []
        payload = {key: trunk[key] for key in ("name", "state", "server_uri", "last_attempt_at")}
        self._published[name] = payload
        return [("trunk.registration", payload)]
