"""A request id for every HTTP request: in its log lines and in its ``X-Request-ID`` header.

:class:`RequestIdMiddleware` (early in ``MIDDLEWARE``) takes the id a trusted reverse proxy
sent in ``X-Request-ID`` (nginx: ``proxy_set_header X-Request-ID $request_id;``), so one id
follows a request from the proxy's log to ours, or makes one (32 hex digits). The header is
believed only when the request's TCP peer is one of ``TRUSTED_PROXIES`` (``rayanpbx.proxies``)
and only when it looks like an id (1-128 of ``A-Za-z0-9._:-``): from anyone else, or
malformed, it is ignored and a new id is made, so a client can neither forge another
request's id nor write what it likes into the log. The id goes into
``rayanpbx.log_format.current_request_id`` (a context variable, so concurrent requests in one
process each see their own) for its ``RequestIdFilter``, and back to the client in the response.

What runs outside a request (background tasks, the PBX link, daphne's own lines) has no id
(``None``). WebSocket connections are not Django requests: the consumer's log lines carry
none either.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase

from rayanpbx.log_format import current_request_id as current
from rayanpbx.proxies import PEER_KEY, is_trusted, parse_address

HEADER = "X-Request-ID"
#: What an id from a proxy may look like (nginx's $request_id is 32 hex digits; a UUID fits).
VALID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def new_id() -> str:
    """A fresh id: 32 random hex digits."""
    return uuid.uuid4().hex


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the request's TCP peer is a trusted proxy (``settings.TRUSTED_PROXIES``).

    Under ASGI, ``rayanpbx.proxies.ProxyHeadersMiddleware`` has already replaced the client
    address and records the peer as ``scope["rayanpbx.peer"]`` exactly when it is trusted;
    elsewhere (WSGI, the test client) ``REMOTE_ADDR`` is the peer."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):
        return PEER_KEY in scope
    return is_trusted(parse_address(request.META.get("REMOTE_ADDR", "")), settings.TRUSTED_PROXIES)


def request_id(request: HttpRequest) -> str:
    """The id of ``request``: its trusted, well-formed ``X-Request-ID``, else a new one."""
    given = request.headers.get(HEADER, "")
    if given and VALID.fullmatch(given) and from_trusted_proxy(request):
        return given
    return new_id()


class RequestIdMiddleware:
    """Sets the request's id as the current one (``log_format.current_request_id``) while it is
    handled, and answers it in ``X-Request-ID``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        rid = self._start(request)
        try:
            response = self.get_response(request)
        finally:
            if not isinstance(request, ASGIRequest):
                current.set(None)  # WSGI, the test client: this thread serves the next request too
        response[HEADER] = rid
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        rid = self._start(request)
        response = await self.get_response(request)
        response[HEADER] = rid
        return response

    @staticmethod
    def _start(request: HttpRequest) -> str:
        # Under ASGI the id is not reset when the chain returns: Django's handler runs each
        # request in a task of its own, whose context is a copy (and asgiref carries what a
        # sync middleware sets in its thread back to that task), so the id ends with the
        # request; and the handler logs a 4xx/5xx response ("Not Found: /x") after the whole
        # middleware chain, in that context, where it is still wanted.
        rid = request_id(request)
        request.request_id = rid  # type: ignore[attr-defined]
        current.set(rid)
        return rid
