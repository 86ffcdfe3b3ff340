"""``GET /health``: is this server able to serve, and how many sockets are open."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from live.bus import get_bus

logger = logging.getLogger(__name__)


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """``{"status": "healthy", "clients": N}``, or 503 with the reason."""
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
    return JsonResponse({"status": "healthy", "clients": clients})
