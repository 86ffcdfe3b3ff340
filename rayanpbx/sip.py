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
    """Reject a SIP secret that is short or contains the account's own identifiers."""
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValidationError(f"The secret must be at least {MIN_SECRET_LENGTH} characters long.", code="weak_secret")
    lowered = secret.lower()
    for identifier in identifiers:
        if identifier and identifier.lower() in lowered:
            raise ValidationError("The secret must not contain the extension number or username.", code="weak_secret")
