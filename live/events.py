"""The wire contract: event types, their payloads, and the JSON envelope.

Every frame the server sends is ``{"seq", "type", "payload", "timestamp"}``. Stream events
(``extension.*``, ``trunk.*``, ``status_update``, ``pbx.*``, ``call.*``,
``security.*``) each take the next ``seq`` of the whole
deployment (a socket whose user may not see one gets a ``restricted`` frame with its
``seq``: ``rayanpbx.audiences``); control frames (``welcome``, ``pong``, ``error``, ``resync``, ``auth.ok``)
carry the ``seq`` of the last stream event the client has been sent and are not numbered
themselves. See docs/live-events.md for every type with an example.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict


class ExtensionPayload(TypedDict):
    id: int
    extension_number: str
    name: str
    enabled: bool


class ExtensionDeletedPayload(TypedDict):
    id: int
    extension_number: str


class TrunkPayload(TypedDict):
    id: int
    name: str
    host: str
    enabled: bool


class TrunkDeletedPayload(TypedDict):
    id: int
    name: str


class StatusPayload(TypedDict):
    extensions: int
    trunks: int
    extensions_total: int
    trunks_total: int


class PbxLinkPayload(TypedDict):
    state: Literal["unconfigured", "connecting", "connected", "disconnected"]
    asterisk_version: str | None
    since: str  # ISO-8601 UTC
    error: str | None


class PbxApplyError(TypedDict):
    object: str  # "extension 101", "trunk acme", or "configuration" for the whole apply
    message: str


class PbxApplyPayload(TypedDict):
    id: int
    state: Literal["pending", "applying", "applied", "failed"]
    pending_changes: int
    duration_ms: int | None
    errors: list[PbxApplyError]


class PbxDriftPayload(TypedDict):
    in_db_only: list[str]  # objects RayanPBX generated that Asterisk does not have
    in_asterisk_only: list[str]  # endpoints RayanPBX removed or disabled that Asterisk still has


class WelcomePayload(TypedDict):
    message: str
    user: dict[str, Any]


StreamType = Literal[
    "extension.created",
    "extension.updated",
    "extension.deleted",
    "trunk.created",
    "trunk.updated",
    "trunk.deleted",
    "status_update",
    "pbx.link",
    "pbx.apply",
    "pbx.drift",
    "extension.registration",
    "trunk.registration",
    "call.started",
    "call.answered",
    "call.ended",
    "security.sip_auth_failed",
    # In place of an event the socket's user may not see (rayanpbx.audiences): same seq.
    "restricted",
]
ControlType = Literal["welcome", "pong", "error", "resync", "auth.ok", "subscribed", "unsubscribed"]

STATUS_UPDATE = "status_update"


def timestamp() -> str:
    """Now, as ISO-8601 UTC with a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def body(type_: str, payload: dict[str, Any]) -> str:
    """A frame without its ``seq``: the bus numbers it at publication."""
    return json.dumps({"type": type_, "payload": payload, "timestamp": timestamp()}, separators=(",", ":"), default=str)


def number(body_json: str, seq: int) -> str:
    """Put ``seq`` first in a frame made by ``body`` (cheap: no re-encoding)."""
    return f'{{"seq":{seq:d},{body_json[1:]}'


def control(type_: ControlType, payload: dict[str, Any], seq: int) -> str:
    """A control frame, carrying the client's current position in the stream."""
    return number(body(type_, payload), seq)


def seq_of(frame: str) -> int:
    """The ``seq`` of a numbered frame, read without parsing the rest."""
    return int(frame[7 : frame.index(",", 7)])
