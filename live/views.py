"""``GET /health``: is this server able to serve, and how many sockets are open."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from live.bus import get_bus
from rayanpbx import background

logger = logging.getLogger(__name__)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """``{"status": "healthy", "clients": N, "tasks": {...}}``, or 503 with the reason.

    ``tasks`` are the background tasks this process runs (``rayanpbx.background``); one
    that is restarting after a failure makes the process unhealthy until it runs again."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "cannot serve"
        logger.warning("Health check: database unreachable: %s", exc)
        return JsonResponse({"status": "unhealthy", "reason": "database unreachable"}, status=503)
    bus = get_bus()
    try:
        bus.ping()
        clients = bus.client_count()
    except Exception as exc:
        logger.warning("Health check: event bus unreachable: %s", exc)
        return JsonResponse({"status": "unhealthy", "reason": "channel layer (Redis) unreachable"}, status=503)
    tasks = background.health()
    failing = sorted(name for name, task in tasks.items() if task["state"] != "running")
    if failing:
        return JsonResponse(
            {"status": "unhealthy", "reason": f"background task failing: {', '.join(failing)}", "tasks": tasks},
            status=503,
        )
    return JsonResponse({"status": "healthy", "clients": clients, "tasks": tasks})
