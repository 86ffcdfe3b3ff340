"""What SIP extensions and trunks share: codecs, transports, hosts and secrets.

SIP passwords are what toll fraud goes after, so a supplied secret must be strong and an
omitted one is generated. Both models and both admin forms use these helpers.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

#: Codecs Asterisk 22 can offer on a PJSIP endpoint, in a sensible default order.
CODECS: tuple[str, ...] = ("ulaw", "alaw", "g722", "opus", "gsm", "g729", "g726", "ilbc", "speex", "slin")
#: Codecs that carry wideband ("HD") audio.
WIDEBAND_CODECS = frozenset({"g722", "opus", "speex", "slin"})

MIN_SECRET_LENGTH = 12
MAX_SECRET_LENGTH = 128
GENERATED_SECRET_LENGTH = 20
_SECRET_ALPHABET = string.ascii_letters + string.digits

_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class Transport(models.TextChoices):
    UDP = "udp", "UDP"
    TCP = "tcp", "TCP"
    TLS = "tls", "TLS"
    WS = "ws", "WebSocket"
    WSS = "wss", "Secure WebSocket"


def validate_codecs(value: object) -> None:
    """A non-empty ordered list of distinct known codec names."""
    if not isinstance(value, list) or not value:
        raise ValidationError("Give at least one codec, as a list of names.", code="invalid")
    unknown = [c for c in value if not isinstance(c, str) or c not in CODECS]
    if unknown:
        raise ValidationError(
            "Unknown codec(s): %(unknown)s. Known: %(known)s.",
            code="invalid",
            params={"unknown": ", ".join(map(str, unknown)), "known": ", ".join(CODECS)},
        )
    if len(set(value)) != len(value):
        raise ValidationError("Each codec may appear only once.", code="invalid")


def validate_host(value: str) -> None:
    """A hostname (RFC 1123) or an IPv4/IPv6 address."""
    candidate = value.strip("[]") if value.startswith("[") else value
    try:
        ipaddress.ip_address(candidate)
        return
    except ValueError:
        pass
    name = value.rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValidationError("Enter a valid hostname or IP address.", code="invalid")


def generate_secret() -> str:
    """A random SIP password, strong enough to stop online guessing."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(GENERATED_SECRET_LENGTH))


def check_secret_strength(secret: str, identifiers: Iterable[str]) -> None:
    """Reject a SIP secret that is short, contains the account's own identifiers, or holds
    characters Asterisk's configuration cannot carry (``validate_secret_characters``)."""
    validate_secret_characters(secret)
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValidationError(f"The secret must be at least {MIN_SECRET_LENGTH} characters long.", code="weak_secret")
    lowered = secret.lower()
    for identifier in identifiers:
        if identifier and identifier.lower() in lowered:
            raise ValidationError("The secret must not contain the extension number or username.", code="weak_secret")


# --- What may reach Asterisk's configuration files ------------------------------------------
#
# RayanPBX writes user data into pjsip_rayanpbx.conf only (never into the dialplan), as the
# value of a ``key = value`` line. Asterisk's config parser (main/config.c) reads such a value
# as plain text up to the end of the line, except that ``;`` starts a comment unless written
# ``\;``, and surrounding whitespace is stripped. ``[``, ``#include``, ``=`` inside a value
# are plain text. So a value is safe when it holds no line break or other control character
# and its ``;`` are escaped (``pbx.config`` does that); what cannot be written faithfully is
# rejected here, per field. See docs/asterisk-config.md.

#: Contexts that are not contexts in extensions.conf, or that RayanPBX generates itself.
RESERVED_CONTEXTS = frozenset({"general", "globals"})
RESERVED_PREFIX = "rayanpbx-"
#: Characters that would break the ``"Name" <number>`` caller ID syntax Asterisk parses.
_CALLER_ID_SYNTAX = frozenset('"<>\\')
#: Zero-width (non-)joiners: needed to write Persian and other scripts, harmless in a value.
_JOINERS = frozenset("\u200c\u200d")
#: Asterisk parses a caller ID into 80-byte buffers (pjsip_configuration.c, caller_id_handler).
CALLER_ID_PART_BYTES = 79
_CALLER_ID_NUMBER = re.compile(r"^[0-9A-Za-z+*#._-]{1,40}\Z")
_DIALLED_NUMBER = re.compile(r"^[0-9+*#]+\Z")
_CALLER_ID = re.compile(r'^\s*(?:"(?P<quoted>[^"]*)"|(?P<plain>[^"<>]*?))\s*(?:<(?P<number>[^<>]*)>)?\s*\Z')


def _has_control(value: str) -> bool:
    """Whether the text holds a line break, NUL, tab or another non-printing character."""
    return any(not ch.isprintable() and ch not in _JOINERS for ch in value)


def validate_config_text(value: str) -> None:
    """Free text that is written as a configuration value: printable, on one line."""
    if _has_control(value):
        raise ValidationError(
            "Must not contain line breaks, tabs or other control characters.", code="invalid_characters"
        )


def validate_display_name(value: str) -> None:
    """A name shown as caller ID: printable one-line text without ``"``, ``<``, ``>`` or ``\\``."""
    validate_config_text(value)
    bad = sorted(_CALLER_ID_SYNTAX.intersection(value))
    if bad:
        raise ValidationError(
            "Must not contain %(chars)s (they are caller ID syntax).",
            code="invalid_characters",
            params={"chars": " ".join(bad)},
        )


def parse_caller_id(value: str) -> tuple[str, str]:
    """Split a caller ID as typed into (name, number), either possibly empty.

    Accepted forms: ``"Name" <number>``, ``Name <number>``, ``<number>``, a bare number
    (digits, ``+``, ``*``, ``#``) or a bare name. Raises ``ValidationError`` otherwise.
    """
    validate_config_text(value)
    match = _CALLER_ID.match(value)
    if not match:
        raise ValidationError(
            'Use "Name" <number>, Name <number>, <number>, a number or a name; a name must not contain ", < or >.',
            code="invalid_caller_id",
        )
    name = (match["quoted"] if match["quoted"] is not None else match["plain"] or "").strip()
    number = (match["number"] or "").strip()
    if match["number"] is None and match["quoted"] is None and _DIALLED_NUMBER.match(name):
        name, number = "", name
    bad = sorted(_CALLER_ID_SYNTAX.intersection(name))
    if bad:
        raise ValidationError(
            "The caller ID name must not contain %(chars)s.", code="invalid_caller_id", params={"chars": " ".join(bad)}
        )
    if number and not _CALLER_ID_NUMBER.match(number):
        raise ValidationError(
            "The caller ID number may hold only letters, digits and + * # . _ - (at most 40).",
            code="invalid_caller_id",
        )
    if match["number"] is not None and not number:
        raise ValidationError("The caller ID number between < and > is empty.", code="invalid_caller_id")
    return name, number


def validate_caller_id(value: str) -> None:
    """A caller ID in one of the forms ``parse_caller_id`` accepts."""
    parse_caller_id(value)


def validate_secret_characters(value: str) -> None:
    """A SIP secret Asterisk reads back exactly: printable ASCII, no surrounding spaces.

    ``;`` is allowed (it is written ``\\;``); non-ASCII is not, because phones disagree on
    how to encode it in the digest.
    """
    if any(not (" " <= ch <= "~") for ch in value):
        raise ValidationError(
            "Use printable ASCII characters only (no line breaks, tabs or non-ASCII letters).",
            code="invalid_characters",
        )
    if value != value.strip():
        raise ValidationError(
            "The secret must not start or end with a space (Asterisk would drop it).", code="invalid_characters"
        )


#: A context name: what both models accept (the pattern is also published in the API schema).
validate_context_syntax = RegexValidator(r"^[A-Za-z0-9_-]+\Z", "Use only letters, digits, '-' and '_'.", code="invalid")


def validate_context_not_reserved(value: str) -> None:
    """Not a section extensions.conf treats specially, nor one of RayanPBX's own contexts."""
    if value.lower() in RESERVED_CONTEXTS or value.lower().startswith(RESERVED_PREFIX):
        raise ValidationError("'general', 'globals' and names starting with 'rayanpbx-' are reserved.", code="reserved")


#: The validators of a ``context`` field.
CONTEXT_VALIDATORS = (validate_context_syntax, validate_context_not_reserved)


def validate_trunk_name(value: str) -> None:
    """A trunk name is also its PJSIP section id: not all digits, not RayanPBX's own prefix."""
    if value.isdigit():
        raise ValidationError(
            "A trunk name must not be all digits: it would collide with an extension number.", code="numeric_name"
        )
    if value.lower().startswith(RESERVED_PREFIX):
        raise ValidationError("Names starting with 'rayanpbx-' are reserved.", code="reserved")


#: A trunk's account name at its provider: it goes into SIP URIs (``sip:USER@host``) as it is.
validate_sip_username = RegexValidator(
    r"^[A-Za-z0-9._~+-]*\Z", "Use only letters, digits and . _ ~ + - (it is written into SIP URIs).", code="invalid"
)
