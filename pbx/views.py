"""REST API of the PBX link: ``GET /api/pbx``, ``POST /api/pbx/apply``, ``GET /api/pbx/config``,
and the live state's snapshots ``GET /api/pbx/registrations|calls|trunks|security``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit import recorder
from pbx import config, feed, link, status
from rayanpbx import audiences
from rayanpbx.api.permissions import InAudience
from rayanpbx.api.schema import error_response


class LinkSerializer(serializers.Serializer):
    state = serializers.ChoiceField(["unconfigured", "connecting", "connected", "disconnected"])
    asterisk_version = serializers.CharField(allow_null=True)
    since = serializers.CharField(allow_null=True, help_text="ISO-8601 UTC: when the state last changed.")
    error = serializers.CharField(allow_null=True)


class ApplyErrorSerializer(serializers.Serializer):
    object = serializers.CharField(help_text='"extension 101", "trunk acme", or "configuration".')
    message = serializers.CharField()


class ApplySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.ChoiceField(["pending", "applying", "applied", "failed"])
    pending_changes = serializers.IntegerField()
    duration_ms = serializers.IntegerField(allow_null=True)
    errors = ApplyErrorSerializer(many=True, help_text="Staff only: others get [] and errors_hidden.")
    errors_hidden = serializers.IntegerField(
        required=False, help_text="Non-staff users: how many errors they are not shown (rayanpbx/audiences.py)."
    )
    finished_at = serializers.CharField(allow_null=True)


class DriftSerializer(serializers.Serializer):
    in_db_only = serializers.ListField(child=serializers.CharField())
    in_asterisk_only = serializers.ListField(child=serializers.CharField())


class AsteriskSerializer(serializers.Serializer):
    version = serializers.CharField(allow_null=True)
    startup_at = serializers.CharField(allow_null=True)
    reload_at = serializers.CharField(allow_null=True)


class StatusSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    link = LinkSerializer()
    asterisk = AsteriskSerializer()
    apply = ApplySerializer(allow_null=True, help_text="The last apply, or null before the first.")
    pending_changes = serializers.IntegerField(help_text="Committed changes not yet applied to Asterisk.")
    drift = DriftSerializer()
    site_endpoints = serializers.ListField(
        child=serializers.CharField(), help_text="Endpoints the site's own pjsip.conf defines (never touched)."
    )
    help = serializers.CharField(allow_null=True, help_text="How to configure the link, when it is not.")


class NotConfigured(APIException):
    status_code = 409
    default_code = "pbx_unconfigured"
    default_detail = status.HOW_TO_CONFIGURE


def public_status(sees: frozenset[str] = audiences.ALL) -> dict[str, Any]:
    """The status document, with the last apply's errors only for staff (``rayanpbx.audiences``)."""
    document = status.read()
    data = StatusSerializer(document).data
    data["apply"] = audiences.redact_apply(data["apply"], sees)
    return data


class PbxStatusView(APIView):
    """The PBX link: its state, Asterisk's version and uptime, the last apply, pending changes, drift."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: StatusSerializer, 401: error_response("Not signed in.")})
    def get(self, request: Request) -> Response:
        return Response(public_status(audiences.of_user(request.user)))


class PbxApplyView(APIView):
    """Apply the configuration to Asterisk now (staff), even with nothing pending: it also re-verifies."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=None,
        responses={
            202: inline_serializer("ApplyRequested", {"requested": serializers.BooleanField()}),
            401: error_response("Not signed in."),
            403: error_response("Only staff users may apply."),
            409: error_response("The PBX link is not configured."),
        },
    )
    def post(self, request: Request) -> Response:
        if not status.configured():
            raise NotConfigured()
        link.request_apply()
        recorder.record_apply()  # the audit log: who asked for an apply (audit/recorder.py)
        return Response({"requested": True}, status=202)


class PbxConfigView(APIView):
    """The configuration RayanPBX generates from the database now (staff), every secret masked."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        responses={
            200: inline_serializer(
                "PbxConfig",
                {
                    "config_dir": serializers.CharField(),
                    "files": serializers.DictField(child=serializers.CharField(), help_text="File name -> text."),
                },
            ),
            401: error_response("Not signed in."),
            403: error_response("Only staff users may read the configuration."),
        }
    )
    def get(self, request: Request) -> Response:
        from django.conf import settings

        generated = config.generate()
        return Response({"config_dir": str(settings.ASTERISK_CONFIG_DIR), "files": config.masked(generated)})


def _snapshot_view(
    name: str, summary: str, fields: dict[str, serializers.Field], audience: str | None = None
) -> type[APIView]:
    """A read-only view of one part of the live PBX state, with the stream position it is
    valid at; with ``audience``, for that audience only (``rayanpbx.audiences``)."""
    refused = {403: error_response(InAudience.MESSAGES[audience])} if audience else {}

    class SnapshotView(APIView):
        permission_classes = [InAudience]

        @extend_schema(
            summary=summary,
            description=(
                "Load this, then connect to /ws with ?last_seq=<seq>: every later change arrives once, "
                "as a stream event (docs/live-events.md)."
            ),
            responses={
                200: inline_serializer(
                    f"Pbx{name.title().replace('_', '')}", {"seq": serializers.IntegerField(), **fields}
                ),
                401: error_response("Not signed in."),
                **refused,
            },
        )
        def get(self, request: Request) -> Response:
            document = feed.snapshot()
            return Response({"seq": document["seq"], **{key: document[key] for key in fields}})

    SnapshotView.audience = audience
    SnapshotView.__name__ = f"Pbx{name.title().replace('_', '')}View"
    return SnapshotView


_ROWS = serializers.ListField(child=serializers.DictField())
PbxRegistrationsView = _snapshot_view(
    "registrations", "Extensions' registrations: state and contacts", {"registrations": _ROWS}
)
PbxCallsView = _snapshot_view(
    "calls",
    "Active calls and the last 200 ended",
    {"calls": inline_serializer("PbxCallLists", {"active": _ROWS, "ended": _ROWS})},
    audience=audiences.CALLS,
)
PbxTrunksView = _snapshot_view("trunks", "Trunks' outbound registrations", {"trunks": _ROWS})
PbxSecurityView = _snapshot_view(
    "security",
    "The last 50 failed SIP logins, aggregated per username and source",
    {"auth_failures": _ROWS},
    audience=audiences.STAFF,
)
