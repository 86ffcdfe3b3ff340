"""The database unreachable: 503 with the reason, never a 500 or a traceback.

MariaDB stopped, restarting or failing over shows up as ``OperationalError`` (it refused
the connection, or went away mid-query) or ``InterfaceError`` (the connection is already
closed). It is an outage, not a bug: the REST API answers 503 JSON
(``rayanpbx.api.errors``), the pages a small 503 page (``DatabaseUnavailableMiddleware``),
``/health`` 503 ``database unreachable`` (``live.views``), each with ``Retry-After``, and
the log says so in one warning line, at most once per ``LOG_EVERY`` seconds.

Nothing has to be restarted afterwards: ``CONN_HEALTH_CHECKS`` (settings) makes Django
test a kept connection before a request reuses it, and a connection that failed is closed
at the end of its request, so the first request after the outage opens a new one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

logger = logging.getLogger(__name__)

#: What a database that cannot be reached raises.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
#: Seconds a client is asked to wait before retrying.
RETRY_AFTER = 5
#: At most one warning per this many seconds while the database stays away.
LOG_EVERY = 10.0

ERROR_CODE = "database_unavailable"
DETAIL = "The database is unavailable; try again in a few seconds."

_lock = threading.Lock()
_last_logged = 0.0
_suppressed = 0


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_UNAVAILABLE)


def note(request: HttpRequest, exc: BaseException) -> None:
    """Log the outage: one line, no traceback, rate-limited."""
    global _last_logged, _suppressed
    with _lock:
        now = time.monotonic()
        if now - _last_logged < LOG_EVERY:
            _suppressed += 1
            return
        skipped, _suppressed, _last_logged = _suppressed, 0, now
    more = f" ({skipped} more requests answered 503 since the last report)" if skipped else ""
    logger.warning("Database unavailable, answering 503 to %s %s: %s%s", request.method, request.path, exc, more)


def json_response() -> JsonResponse:
    response = JsonResponse({"error": ERROR_CODE, "detail": DETAIL}, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


def page_response() -> HttpResponse:
    # Rendered without the request: context processors would read the user (the database).
    response = HttpResponse(render_to_string("503.html", {"retry_after": RETRY_AFTER}), status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response


class DatabaseUnavailableMiddleware:
    """A view (a page, the admin) that fails because the database is away answers 503:
    JSON under ``/api/``, a 503 page elsewhere. DRF views answer through the API's
    exception handler before this sees anything."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_outage(exception):
            return None
        note(request, exception)
        return json_response() if request.path.startswith("/api/") else page_response()
