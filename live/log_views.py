"""The logs page (``/logs/``) and ``GET /api/logs``: the last lines of the live tail, staff only.

The page loads the last lines from the REST API, then follows the ``logs`` topic
(``live.logs`` publishes it; docs/logs.md). Importing this module (the URL map does, at
start-up's system checks and at the first request) puts RayanPBX's log-record handler on
the project's loggers in this process.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, re_path
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from live import logs
from rayanpbx.api.schema import error_response

MAX_QUERY = 200


class LogsUnavailable(APIException):
    status_code = 503
    default_code = "logs_unavailable"
    default_detail = "The recent log lines cannot be read now (Redis is not answering). Try again."


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_active and request.user.is_staff):
        raise PermissionDenied("The logs page is for staff users.")
    return render(request, "logs.html", {"logs_state": logs.asterisk_state(), "logs_history": logs.HISTORY})


class LineSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    ts = serializers.CharField(help_text="ISO-8601 UTC: when RayanPBX read the line or the record was made.")
    source = serializers.ChoiceField(["asterisk", "rayanpbx"])
    level = serializers.ChoiceField(list(logs.LEVELS))
    logger = serializers.CharField(help_text="Asterisk's source file, or the Python logger's name.")
    message = serializers.CharField(help_text="Redacted, at most LOGS_MAX_LINE characters.")


class QuerySerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=logs.HISTORY, default=logs.HISTORY)
    source = serializers.ChoiceField(["asterisk", "rayanpbx"], required=False)
    level = serializers.ChoiceField(list(logs.LEVELS), required=False, help_text="This level and above.")
    q = serializers.CharField(max_length=MAX_QUERY, required=False, allow_blank=True, trim_whitespace=False)


def select(lines: list[dict[str, Any]], query: dict[str, Any]) -> list[dict[str, Any]]:
    """The lines that match the filters, the newest ``limit`` of them."""
    if query.get("source"):
        lines = [line for line in lines if line.get("source") == query["source"]]
    if query.get("level"):
        floor = logs.LEVELS.index(query["level"])
        lines = [line for line in lines if line.get("level") in logs.LEVELS[floor:]]
    if query.get("q"):
        needle = query["q"].lower()
        lines = [line for line in lines if needle in f"{line.get('logger', '')} {line.get('message', '')}".lower()]
    return lines[-query["limit"] :]


class LogsView(APIView):
    """The last lines of Asterisk's log and RayanPBX's records (staff), oldest first."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "limit", int, description=f"At most this many lines (1-{logs.HISTORY}, default {logs.HISTORY})."
            ),
            OpenApiParameter("source", str, enum=["asterisk", "rayanpbx"]),
            OpenApiParameter("level", str, enum=list(logs.LEVELS), description="This level and above."),
            OpenApiParameter("q", str, description=f"Case-insensitive text in the logger or message (≤ {MAX_QUERY})."),
        ],
        responses={
            200: inline_serializer(
                "Logs",
                {
                    "lines": LineSerializer(many=True),
                    "asterisk": inline_serializer(
                        "LogsAsterisk",
                        {
                            "readable": serializers.BooleanField(),
                            "message": serializers.CharField(allow_null=True),
                            "error": serializers.CharField(allow_null=True),
                        },
                    ),
                },
            ),
            400: error_response("A filter is malformed."),
            401: error_response("Not signed in."),
            403: error_response("Only staff users may read the logs."),
            503: error_response("Redis is not answering."),
        },
    )
    def get(self, request: Request) -> Response:
        query = QuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise ValidationError(query.errors)
        scan = logs.HISTORY if any(query.validated_data.get(k) for k in ("source", "level", "q")) else None
        try:
            lines = logs.store().recent(scan or query.validated_data["limit"])
        except Exception as exc:  # Redis away or holding something else: a clear 503, never a 500
            raise LogsUnavailable() from exc
        return Response({"lines": select(lines, query.validated_data), "asterisk": logs.asterisk_state()})


urlpatterns = [
    path("logs/", page, name="logs"),
    re_path(r"^api/logs/?$", LogsView.as_view(), name="api-logs"),
]
