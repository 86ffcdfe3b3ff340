"""The gate in front of ``/ws``: foreign origins refused (the seed allowed every origin).

A browser always sends ``Origin``; it must be the site's own (same host and port as the
``Host`` header) or listed in ``WS_ALLOWED_ORIGINS``. Anything else gets HTTP 403 at the
handshake and is never accepted. Clients that are not browsers send no ``Origin`` and are
judged by their token alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from live.auth import Credentials, authenticate
from live.limits import CLOSE_RATE, rate_refusal


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    origin = _header(scope, b"origin")
    if origin is None:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in settings.LIVE_WS_ALLOWED_ORIGINS}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    host = _header(scope, b"host")
    return host is not None and parts.netloc.lower() == host.lower()


class WebSocketGate:
    """ASGI middleware in front of the consumer: refuses other paths and foreign origins at
    the handshake (HTTP 403, never accepted), and resolves the credentials once into
    ``scope["live_auth"]`` (one scope copy per socket: the whole middleware stack)."""

    def __init__(self, app: Any, path: str = "/ws") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["path"].rstrip("/") != self.path or not origin_allowed(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 403})
            return None
        refused = rate_refusal(scope)  # before the credentials: a flood costs no database work
        creds = Credentials(None, CLOSE_RATE, refused) if refused else await authenticate(scope)
        return await self.app({**scope, "live_auth": creds}, receive, send)
