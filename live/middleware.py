"""The stream position a page is valid at.

A page renders rows read from the database; a change committed after that read but before
the page's socket says ``welcome`` would be lost. So every page request first notes the
bus position (before the view reads anything), the page renders it
(``<body data-live-seq>``), and its socket connects with ``?last_seq=`` that position: the
events after it are replayed, including any change made while the page loaded (applying
one twice is harmless: events carry whole rows or states, keyed by id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from live.bus import get_bus

logger = logging.getLogger(__name__)

#: Paths that never render a live page.
_SKIP = ("/api/", "/static/", "/admin/", "/health", "/ws")


class StreamPositionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.live_seq = None
        if request.method == "GET" and not request.path.startswith(_SKIP):
            try:
                request.live_seq = get_bus().position_now()
            except Exception as exc:  # Redis away: the page still renders and its socket resyncs
                logger.warning("Could not read the stream position for %s: %s", request.path, exc)
        return self.get_response(request)


def stream_position(request: HttpRequest) -> dict[str, Any]:
    """Template context: ``live_seq``, the position the page's data is valid at (or None)."""
    return {"live_seq": getattr(request, "live_seq", None)}
