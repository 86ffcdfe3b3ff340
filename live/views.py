"""``GET /health``: is this server able to serve, and how many sockets are open;
``GET /api/presence``: who is online (``live.presence``)."""

from __future__ import annotations

import logging

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from live.bus import get_bus
from live.presence import get_presence
from rayanpbx import background, unavailable
from rayanpbx.api.schema import error_response

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
        unavailable.note(request, exc)  # one line per 10 s, however often /health is probed
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


class PresenceView(APIView):
    """Who has a page open, in how many tabs, and what they are editing (docs/live-events.md, "Presence")."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={
            200: inline_serializer(
                "Presence",
                {
                    "version": serializers.IntegerField(help_text="Grows with every change."),
                    "users": serializers.ListField(child=serializers.DictField()),
                },
            ),
            401: error_response("Not signed in."),
        }
    )
    def get(self, request: Request) -> Response:
        return Response(get_presence().current_now())
