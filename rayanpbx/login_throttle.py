"""Failed-login counting, shared by the API login and the login page.

Failures are counted in the cache per client address and username; past
``LOGIN_FAILURE_LIMIT`` within ``LOGIN_FAILURE_WINDOW`` seconds further attempts are
refused, even with the right password, until the window passes. The counter fails open:
with the cache (Redis) down, logins still work and the outage is logged.

The client address is :func:`client_address`: ``REMOTE_ADDR``, which
``rayanpbx.proxies.ProxyHeadersMiddleware`` has already set to the TCP peer, or, behind a
proxy in ``TRUSTED_PROXIES``, to the right-most ``X-Forwarded-For`` hop no trusted proxy
vouches for. A header the client writes itself never changes it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest) -> str:
    """The address failures are counted for (see the module's docstring)."""
    return request.META.get("REMOTE_ADDR", "")


def _key(request: HttpRequest, username: str) -> str:
    # Hashed: a username may hold any character, and cache keys must be safe for every backend.
    address = client_address(request)
    digest = hashlib.sha256(f"{address}\n{username.lower()[:150]}".encode(errors="replace")).hexdigest()
    return f"login-failures:{digest}"


def _cache(method: str, *args: Any) -> Any:
    try:
        return getattr(cache, method)(*args)
    except Exception as exc:
        logger.warning("Login throttle cache unavailable (%s): %s", method, exc)
        return None


def locked_out(request: HttpRequest, username: str) -> bool:
    """Whether this address has failed too often for this username."""
    return (_cache("get", _key(request, username), 0) or 0) >= settings.LOGIN_FAILURE_LIMIT


def failed(request: HttpRequest, username: str) -> None:
    """Count one failed login of ``username`` from this address."""
    key = _key(request, username)
    _cache("add", key, 0, settings.LOGIN_FAILURE_WINDOW)
    _cache("incr", key)


def succeeded(request: HttpRequest, username: str) -> None:
    """Forget this address's failures for ``username``."""
    _cache("delete", _key(request, username))
