"""Who may see what of the live PBX state: one rule for the stream, the REST API and the pages.

Every signed-in user sees the configuration (extensions, trunks), the counts, the PBX
link, phones' and trunks' registrations, and whether an apply worked. Two things are
narrower, decided with a PBX admin's eye:

- **calls** (``call.*``, ``GET /api/pbx/calls``, the Calls page): who called whom is
  personal data. Staff, and users given the ``pbx.view_calls`` permission (a reception
  desk, a supervisor) see them; other read-only users see the number of calls only.
- **staff** (``security.*``, ``GET /api/pbx/security``, the errors of an apply): failed SIP
  logins name the usernames an attacker tries and where from; an apply's errors quote
  the configuration. Staff only. Others see ``pbx.apply`` without its ``errors`` (an
  ``errors_hidden`` count instead).

A user's audiences (``of_user``) are a small set: ``{}``, ``{"calls"}`` or
``{"calls", "staff"}``. The stream frames each event once per set (``view``), never once
per socket. A socket outside an event's audience gets a ``restricted`` frame with the same
``seq`` instead, so its gap detection and resume work unchanged (docs/live-events.md).
"""

from __future__ import annotations

import json
from typing import Any

#: Audiences a user may be in (beyond every signed-in user).
CALLS = "calls"
STAFF = "staff"
EVERYONE: frozenset[str] = frozenset()
ALL: frozenset[str] = frozenset({CALLS, STAFF})

#: The permission that lets a non-staff user see calls (``pbx.models.CallAccess``).
VIEW_CALLS = "pbx.view_calls"

#: Event type families and the audience that sees them whole; every other type: everyone.
FAMILIES = {"call.": CALLS, "security.": STAFF}
#: Single types with an audience: an apply's errors are for staff (``redact_payload``).
TYPES = {"pbx.apply": STAFF}

#: What a socket outside an event's audience gets in its place.
RESTRICTED = "restricted"

#: Snapshot parts (``pbx.feed``) and the audience that may read them.
PARTS = {"calls": CALLS, "auth_failures": STAFF}


def of_user(user: Any) -> frozenset[str]:
    """The audiences of a user (may read its permissions: call from sync code)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return EVERYONE
    if user.is_staff or user.is_superuser:
        return ALL
    return frozenset({CALLS}) if user.has_perm(VIEW_CALLS) else EVERYONE


def may_read(part: str, sees: frozenset[str]) -> bool:
    """Whether a user with audiences ``sees`` may read this part of the PBX snapshot."""
    audience = PARTS.get(part)
    return audience is None or audience in sees


def audience_of(type_: str) -> str | None:
    """The audience an event type is for, or None for every signed-in user."""
    if type_ in TYPES:
        return TYPES[type_]
    for prefix, audience in FAMILIES.items():
        if type_.startswith(prefix):
            return audience
    return None


def redact_payload(type_: str, payload: dict[str, Any], sees: frozenset[str]) -> dict[str, Any] | None:
    """``payload`` as a user with audiences ``sees`` may have it: itself, a redacted copy,
    or None when the event is not for them at all."""
    audience = audience_of(type_)
    if audience is None or audience in sees:
        return payload
    if type_ == "pbx.apply":
        errors = payload.get("errors") or []
        return {**payload, "errors": [], "errors_hidden": len(errors)} if errors else payload
    return None


def redact_apply(apply: dict[str, Any] | None, sees: frozenset[str]) -> dict[str, Any] | None:
    """The last apply of a status document (``pbx.status``) as these audiences may see it."""
    return apply if apply is None else redact_payload("pbx.apply", apply, sees)


def type_of(frame: str) -> str:
    """The type of a numbered frame (``{"seq":N,"type":"…",…}``), read without parsing it."""
    start = frame.index('"type":"') + 8
    return frame[start : frame.index('"', start)]


def restricted(frames: list[tuple[int, str]]) -> bool:
    """Whether any of these frames is not for every signed-in user (cheap: type only)."""
    return any(audience_of(type_of(frame)) is not None for _, frame in frames)


def view(frame: str, sees: frozenset[str]) -> str:
    """The frame as a socket with audiences ``sees`` gets it: itself, redacted, or a
    ``restricted`` placeholder with the same ``seq`` and timestamp."""
    type_ = type_of(frame)
    audience = audience_of(type_)
    if audience is None or audience in sees:
        return frame
    data = json.loads(frame)
    payload = redact_payload(type_, data["payload"], sees)
    if payload is data["payload"]:
        return frame
    if payload is None:
        data = {"seq": data["seq"], "type": RESTRICTED, "payload": {}, "timestamp": data["timestamp"]}
    else:
        data["payload"] = payload
    return json.dumps(data, separators=(",", ":"), default=str)
