"""Who is acting and through what: a request-scoped context for the audit recorder.

``AuditContextMiddleware`` puts the current request in a context variable for the length of
the request; the recorder reads the user from it when a write happens (so a token
authenticated by DRF inside the view counts too). Through what ("via"), by path:

* ``/admin/...``: ``admin``;
* ``/api/...`` with an ``Authorization`` header (a token), and ``/api/auth/...``: ``api``;
* any other request (pages, and ``/api`` called by the pages with their session cookie): ``ui``;
* no request at all: ``shell`` in a management command run by a person (``manage.py shell``,
  ``createsuperuser``, ...), ``system`` in the server's own processes and background tasks.

``acting(...)`` sets the context explicitly (tests, background code that acts for a user).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

#: Processes that serve RayanPBX: writes outside a request there are RayanPBX's own.
SERVER_COMMANDS = {"serve", "runserver", "runworker", "daphne", "migrate"}


@dataclass(frozen=True)
class Actor:
    via: str
    user: Any = None
    address: str | None = None


_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar("audit_request", default=None)
_explicit: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("audit_actor", default=None)


def via_of(request: HttpRequest) -> str:
    path = request.path
    if path.startswith("/admin/") or path == "/admin":
        return "admin"
    if path.startswith("/api/") and (request.headers.get("Authorization") or path.startswith("/api/auth/")):
        return "api"  # a token, or the token endpoints themselves (the pages sign in at /login/)
    return "ui"


def default_via(argv: list[str] | None = None) -> str:
    """``shell`` in a person's management command, else ``system``."""
    argv = sys.argv if argv is None else argv
    program = argv[0].rsplit("/", 1)[-1] if argv else ""
    if program in ("manage.py", "django-admin") and len(argv) > 1 and argv[1] not in SERVER_COMMANDS:
        return "shell"
    return "system"


def current() -> Actor:
    """The actor of the write happening now."""
    explicit = _explicit.get()
    if explicit is not None:
        return explicit
    request = _request.get()
    if request is None:
        return Actor(via=default_via())
    user = getattr(request, "user", None)
    if user is not None and not getattr(user, "is_authenticated", False):
        user = None
    return Actor(via=via_of(request), user=user, address=request.META.get("REMOTE_ADDR") or None)


@contextmanager
def acting(via: str, user: Any = None, address: str | None = None) -> Iterator[Actor]:
    """Record the writes inside as made by ``user`` through ``via``."""
    actor = Actor(via=via, user=user, address=address)
    token = _explicit.set(actor)
    try:
        yield actor
    finally:
        _explicit.reset(token)


class AuditContextMiddleware:
    """Makes the request the audit context while it is handled (sync and async views)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
