"""The console page and its REST API: ``POST /api/pbx/console``, ``GET /api/pbx/console/history``.

Thin: the checks, the AMI session, the audit record and the broadcast are :mod:`pbx.console`.
Superusers only, and only with ``PBX_CONSOLE=1`` (docs/console.md says why it is off by
default). Answers: 200 whenever the command was sent (``outcome`` says how it ended: ``ok``,
``error``, ``timeout``), 400 for a command that is not one printable line, 403 for anyone but
a superuser and when the console is disabled (``console_disabled``), 409 without a PBX link
(``pbx_unconfigured``), 428 ``confirmation_required`` for a destructive command without its
confirmation, 429 ``console_busy`` when too many commands run in this process.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, re_path
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pbx import console
from rayanpbx.api.schema import error_response


class IsSuperuser(BasePermission):
    message = "Only superusers may use the console."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_superuser)


class ConsoleDisabled(APIException):
    status_code = 403
    default_code = "console_disabled"
    default_detail = console.DISABLED


class PbxUnconfigured(APIException):
    status_code = 409
    default_code = "pbx_unconfigured"
    default_detail = console.UNCONFIGURED


class ConsoleBusy(APIException):
    status_code = 429
    default_code = "console_busy"


def _available() -> None:
    if not console.enabled():
        raise ConsoleDisabled()
    if not console.configured():
        raise PbxUnconfigured()


class ConsoleCommandSerializer(serializers.Serializer):
    command = serializers.CharField(
        trim_whitespace=False, max_length=console.MAX_COMMAND, help_text="One Asterisk CLI command (one line)."
    )
    confirm = serializers.CharField(
        trim_whitespace=False,
        required=False,
        allow_blank=True,
        max_length=console.MAX_COMMAND,
        help_text="For a destructive command: the same command again.",
    )

    def validate_command(self, value: str) -> str:
        try:
            return console.validate(value)
        except console.CommandInvalid as exc:
            raise ValidationError(str(exc)) from None


class ConsoleResultSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The audit record's id.")
    command = serializers.CharField()
    output = serializers.CharField(help_text="Plain text, never HTML; at most PBX_CONSOLE_MAX_OUTPUT bytes.")
    outcome = serializers.ChoiceField(["ok", "error", "timeout"])
    error = serializers.CharField(allow_null=True)
    duration_ms = serializers.IntegerField()
    truncated = serializers.BooleanField(help_text="The output was cut at PBX_CONSOLE_MAX_OUTPUT.")
    output_bytes = serializers.IntegerField()


class ConsoleHistoryItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    command = serializers.CharField()
    outcome = serializers.ChoiceField(["running", "ok", "error", "refused", "timeout"])
    at = serializers.CharField(help_text="ISO-8601: when it was sent.")


def _client_address(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


class ConsoleCommandView(APIView):
    """Run one Asterisk CLI command through AMI (superusers, PBX_CONSOLE=1). Recorded in the audit log."""

    permission_classes = [IsSuperuser]

    @extend_schema(
        request=ConsoleCommandSerializer,
        responses={
            200: ConsoleResultSerializer,
            400: error_response("Not one printable line of at most 512 characters (CR and LF are refused)."),
            401: error_response("Not signed in."),
            403: error_response("Not a superuser, or the console is disabled (console_disabled)."),
            409: error_response("The PBX link is not configured (pbx_unconfigured)."),
            428: error_response(
                "A destructive command without its confirmation (confirmation_required): `fields.confirm` "
                "says what it would do; send the same command again in `confirm` to run it."
            ),
            429: error_response("Too many console commands are running in this server process."),
        },
    )
    def post(self, request: Request) -> Response:
        _available()
        body = ConsoleCommandSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        command = body.validated_data["command"]
        try:
            result = console.run(
                request.user, command, body.validated_data.get("confirm"), address=_client_address(request)
            )
        except console.Refused as refused:
            # The shared error shape: the field to fill in is `confirm`, its message what the command does.
            data = {"error": "confirmation_required", "detail": str(refused), "fields": {"confirm": [refused.reason]}}
            return Response(data, status=428)
        except console.Busy as busy:
            raise ConsoleBusy(str(busy)) from None
        return Response(result)


class ConsoleHistoryView(APIView):
    """The signed-in superuser's last 100 console commands, newest first (for the up and down arrows)."""

    permission_classes = [IsSuperuser]

    @extend_schema(
        responses={
            200: inline_serializer("ConsoleHistory", {"results": ConsoleHistoryItemSerializer(many=True)}),
            401: error_response("Not signed in."),
            403: error_response("Not a superuser, or the console is disabled (console_disabled)."),
        },
    )
    def get(self, request: Request) -> Response:
        if not console.enabled():
            raise ConsoleDisabled()
        return Response({"results": console.history(request.user)})


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_active and request.user.is_superuser):
        raise PermissionDenied("Only superusers may use the console.")
    context = {
        "console_enabled": console.enabled(),
        "console_configured": console.configured(),
        "console_disabled_text": console.DISABLED,
        "console_unconfigured_text": console.UNCONFIGURED,
        "console_timeout": settings.PBX_CONSOLE_TIMEOUT,
    }
    return render(request, "console.html", context)


urlpatterns = [
    path("console/", page, name="console"),
    re_path(r"^api/pbx/console/?$", ConsoleCommandView.as_view(), name="pbx-console"),
    re_path(r"^api/pbx/console/history/?$", ConsoleHistoryView.as_view(), name="pbx-console-history"),
]
