"""The client's address and scheme, trusting forwarding headers only from our own proxies.

A reverse proxy (nginx, HAProxy) connects to daphne itself, so the TCP peer of a proxied
request is the proxy; the client's address is in ``X-Forwarded-For``, which every proxy
appends to. That header is also whatever the client sent, so it is believed only as far as
it was written by a proxy listed in ``TRUSTED_PROXIES`` (``settings.TRUSTED_PROXIES``,
parsed by :func:`parse_trusted_proxies`):

* the peer is not a trusted proxy (the default: nobody is trusted): the client is the peer,
  and every forwarding header is ignored;
* the peer is a trusted proxy: ``X-Forwarded-For`` is walked from the right (each entry was
  appended by the hop to its right) and the client is the right-most address that is not a
  trusted proxy. Entries left of it are the client's own claims and are never read, so a
  client rotating a forged ``X-Forwarded-For`` stays one address;
* every hop trusted (an internal host behind the proxies): the left-most address;
* an entry that is not an IP address (``unknown``, a host name, garbage) ends the walk and
  the client is the trusted hop that wrote it: unknown clients then share that proxy's
  address, which errs towards throttling more, never less.

``X-Forwarded-Proto`` (``http``/``https``; the last value, i.e. the one the nearest proxy
set) likewise replaces the scheme only when the peer is trusted: it is what makes
``request.is_secure()`` true behind a TLS-terminating proxy. ``SECURE_PROXY_SSL_HEADER``
must stay unset, since Django would believe that header from anyone.

:class:`ProxyHeadersMiddleware` applies this once to every HTTP and WebSocket scope, so
Django's ``REMOTE_ADDR``, ``request.is_secure()`` and a consumer's ``scope["client"]`` all
see the result; the TCP peer stays available as ``scope["rayanpbx.peer"]``. Daphne's own
``--proxy-headers`` must not be used: it takes the *left-most* entry from any peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from django.core.exceptions import ImproperlyConfigured

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

PEER_KEY = "rayanpbx.peer"


def parse_trusted_proxies(value: str | None, name: str = "TRUSTED_PROXIES") -> tuple[Network, ...]:
    """Parse a comma-separated list of IP addresses and CIDR networks (IPv4 and IPv6).

    Strict: a host name, a network with host bits set (``10.0.0.1/8``), a bad prefix length
    or an empty item between commas raises ``ImproperlyConfigured`` naming ``name``.
    """
    if value is None or not value.strip():
        return ()
    networks: list[Network] = []
    for item in value.split(","):
        item = item.strip()
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24, fd00::/8): {exc}"
            ) from None
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1``,
    ``[2001:db8::1]``, ``[2001:db8::1]:443``), or ``None`` when it is not one."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        text = host
    elif text.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has several colons
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
        text = host
    if "%" in text:  # a zone index (fe80::1%eth0) names no client
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: Address | None, trusted: Sequence[Network]) -> bool:
    """Whether ``address`` lies in one of the ``trusted`` networks."""
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1 on a dual-stack socket
    return any(address.version == network.version and address in network for network in trusted)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: Sequence[Network]) -> str:
    """The client's address: ``peer`` (the TCP peer) unless it is a trusted proxy, else the
    right-most untrusted ``X-Forwarded-For`` entry (see the module's docstring for the
    all-trusted and malformed cases). ``forwarded_for`` holds the header's values in the
    order received (several header lines are one list)."""
    hop = parse_address(peer)
    if not is_trusted(hop, trusted):
        return peer
    chosen = str(hop)
    entries = [entry for value in forwarded_for for entry in value.split(",") if entry.strip()]
    for entry in reversed(entries):
        address = parse_address(entry)
        if address is None:
            break  # written by the trusted hop `chosen`: the client is unknown, use that hop
        chosen = str(address)
        if not is_trusted(address, trusted):
            break  # the first hop no trusted proxy vouches for beyond: the client
    return chosen


def forwarded_scheme(values: Iterable[str], websocket: bool) -> str | None:
    """The scheme a trusted proxy reports in ``X-Forwarded-Proto`` (its last value), as an
    ASGI scheme (``http``/``https``, ``ws``/``wss``), or ``None`` when absent or unknown."""
    items = [item.strip().lower() for value in values for item in value.split(",") if item.strip()]
    if not items or items[-1] not in ("http", "https"):
        return None
    secure = items[-1] == "https"
    if websocket:
        return "wss" if secure else "ws"
    return "https" if secure else "http"


def resolve_scope(scope: dict[str, Any], trusted: Sequence[Network]) -> dict[str, Any]:
    """``scope`` itself when its peer is not a trusted proxy, else a copy with ``client``
    and ``scheme`` taken from the forwarding headers and the peer under ``rayanpbx.peer``."""
    peer = scope.get("client")
    if not trusted or not peer or not is_trusted(parse_address(str(peer[0])), trusted):
        return scope
    forwarded_for: list[str] = []
    proto: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded_for.append(value.decode("latin-1"))
        elif name == b"x-forwarded-proto":
            proto.append(value.decode("latin-1"))
    resolved = dict(scope)
    resolved[PEER_KEY] = peer
    address = client_address(str(peer[0]), forwarded_for, trusted)
    if address != str(peer[0]):
        resolved["client"] = [address, 0]  # the client's own port is not known
    scheme = forwarded_scheme(proto, scope["type"] == "websocket")
    if scheme:
        resolved["scheme"] = scheme
    return resolved


class ProxyHeadersMiddleware:
    """ASGI middleware applying :func:`resolve_scope` with ``settings.TRUSTED_PROXIES`` to
    every HTTP and WebSocket connection."""

    def __init__(self, app: Any, trusted: Sequence[Network] | None = None) -> None:
        if trusted is None:
            from django.conf import settings

            trusted = settings.TRUSTED_PROXIES
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if self.trusted and scope.get("type") in ("http", "websocket"):
            scope = resolve_scope(scope, self.trusted)
        return await self.app(scope, receive, send)
