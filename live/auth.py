"""Who is on a WebSocket: a simplejwt access token, or the page's Django session.

The token is looked for, in this order, in:

1. ``Sec-WebSocket-Protocol``: the browser offers ``["rayanpbx", "bearer.<JWT>"]``; the
   server answers with ``rayanpbx`` only, so the token stays out of URLs and logs;
2. ``Authorization: Bearer <JWT>``;
3. the ``rayanpbx_access`` cookie;
4. the seed's ``?token=<JWT>`` query parameter (kept for compatibility; never logged).

Without a token, a logged-in Django session (the web pages) is used. The outcome is a
``Credentials``; the consumer closes with its code on failure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import import_module
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from channels.auth import get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError
from django.http.cookie import parse_cookie
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from rayanpbx import audiences

logger = logging.getLogger(__name__)

SUBPROTOCOL = "rayanpbx"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
TOKEN_COOKIE = "rayanpbx_access"

#: Close codes, so a browser can tell "log in again" from "network trouble".
CLOSE_NO_TOKEN = 4001  # no credentials, or an invalid/forged token
CLOSE_EXPIRED = 4002  # the token expired (before connecting or while connected)
CLOSE_FORBIDDEN = 4003  # valid token, but the user is inactive, gone, or another user's token
CLOSE_TRY_AGAIN = 4013  # the credentials could not be checked (the database unavailable)


class Identity(NamedTuple):
    """Who is on a socket: all a socket keeps of its user (not the model instance)."""

    pk: Any
    username: str
    is_staff: bool
    #: The user's audiences (``rayanpbx.audiences``): which restricted events it may see.
    sees: frozenset[str] = audiences.EVERYONE

    @classmethod
    def of(cls, user: AbstractBaseUser) -> Identity:
        """Who ``user`` is; reads its permissions, so call it from sync code."""
        return cls(user.pk, user.get_username(), bool(user.is_staff), audiences.of_user(user))


@dataclass(slots=True)
class Credentials:
    user: Identity | None
    close_code: int | None = None
    reason: str = ""
    #: Unix time the token or the session expires.
    expires_at: float | None = None
    #: The Django session the socket authenticated with (None: a token).
    session_key: str | None = None


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            return parse_cookie(value.decode("latin-1"))
    return {}


def find_token(scope: dict[str, Any], cookies: dict[str, str]) -> str | None:
    for protocol in scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return protocol[len(TOKEN_SUBPROTOCOL_PREFIX) :]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    cookie = cookies.get(TOKEN_COOKIE)
    if cookie:
        return cookie
    tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return tokens[0] if tokens else None


def _find_active(user_id: Any) -> tuple[AbstractBaseUser, Identity] | None:
    user = get_user_model().objects.filter(**{api_settings.USER_ID_FIELD: user_id}).first()
    return (user, Identity.of(user)) if user is not None and user.is_active else None


_active_user = database_sync_to_async(_find_active)


def _revoked(token: AccessToken, user: AbstractBaseUser) -> bool:
    """With ``CHECK_REVOKE_TOKEN``, a token issued before the user's last password change."""
    if not api_settings.CHECK_REVOKE_TOKEN:
        return False
    return token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password)


async def check_token(raw: str, *, expected_user: Identity | None = None) -> Credentials:
    """Validate an access token; with ``expected_user``, it must belong to that user."""
    try:
        token = AccessToken(raw)
    except ExpiredTokenError:
        return Credentials(None, CLOSE_EXPIRED, "token expired")
    except TokenError:
        return Credentials(None, CLOSE_NO_TOKEN, "invalid token")
    found = await _active_user(token.get(api_settings.USER_ID_CLAIM))
    if found is None:
        return Credentials(None, CLOSE_FORBIDDEN, "user inactive or unknown")
    user, who = found
    if _revoked(token, user):
        return Credentials(None, CLOSE_NO_TOKEN, "token revoked by a password change")
    if expected_user is not None and user.pk != expected_user.pk:
        return Credentials(None, CLOSE_FORBIDDEN, "token of another user")
    return Credentials(who, expires_at=float(token["exp"]))


async def authenticate(scope: dict[str, Any]) -> Credentials:
    """The credentials of a WebSocket handshake: its token, else its page session; 4013
    ("try again later") when the database cannot be asked."""
    try:
        return await _authenticate(scope)
    except DatabaseError as exc:  # an outage, not a bad client: it retries with backoff
        logger.warning("Could not check a socket's credentials: %s", exc)
        return Credentials(None, CLOSE_TRY_AGAIN, "database unavailable")


async def _authenticate(scope: dict[str, Any]) -> Credentials:
    cookies = _cookies(scope)
    raw = find_token(scope, cookies)
    if raw:
        return await check_token(raw)
    session_key = cookies.get(settings.SESSION_COOKIE_NAME)
    if session_key:
        creds = await check_session(session_key)
        if creds.user is not None:
            return creds
    return Credentials(None, CLOSE_NO_TOKEN, "no credentials")


async def check_session(session_key: str) -> Credentials:
    """The user of a Django session, and when the session expires (checked again then)."""
    # Looked up directly rather than through Channels' session middleware, which would
    # keep a session wrapper and two more copies of the scope for the socket's lifetime.
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = await get_user({"session": session})
    if user.is_authenticated and user.is_active:
        expires = await database_sync_to_async(session.get_expiry_date)()
        who = await database_sync_to_async(Identity.of)(user)
        return Credentials(who, expires_at=expires.timestamp(), session_key=session_key)
    return Credentials(None, CLOSE_EXPIRED, "session ended")
