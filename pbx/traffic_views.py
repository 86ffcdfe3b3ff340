"""The traffic page (``/traffic/``) and its series (``GET /api/pbx/traffic``), for every
signed-in user. The series is kept by ``pbx.traffic``'s sampler; the page loads it here,
then follows the ``traffic`` topic (docs/traffic.md)."""

from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, re_path
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from pbx import traffic
from rayanpbx.api.schema import error_response


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    state = traffic.pbx_state()
    context = {
        "interval_s": traffic.interval(),
        "points": traffic.POINTS,
        "pbx_state": state,
        "pbx_message": traffic.PBX_MESSAGES[state],
    }
    return render(request, "traffic.html", context)


class SampleSerializer(serializers.Serializer):
    t = serializers.FloatField(help_text="Seconds since 1970 (UTC), on the interval's grid.")
    events_per_s = serializers.FloatField(allow_null=True, help_text="The stream's rate; null when unknown.")
    pbx = serializers.CharField(help_text="'ok', 'unconfigured' or 'disconnected'; PBX fields are null unless 'ok'.")
    calls = serializers.IntegerField(allow_null=True, help_text="Calls in progress.")
    calls_per_min = serializers.IntegerField(allow_null=True, help_text="Calls started in the last 60 s.")
    started = serializers.IntegerField(allow_null=True, help_text="Calls started in this interval.")
    registered = serializers.IntegerField(allow_null=True, help_text="Registered phones.")
    trunks = serializers.DictField(
        child=serializers.IntegerField(), allow_null=True, help_text="Trunk name -> calls in progress (absent: 0)."
    )
    trunks_omitted = serializers.IntegerField(help_text="Trunks with calls beyond the 50 listed.")


class TrunkLimitSerializer(serializers.Serializer):
    max_channels = serializers.IntegerField(help_text="0 is unlimited.")
    enabled = serializers.BooleanField()


def _since(request: Request) -> float | None:
    raw = request.query_params.get("since")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValidationError({"since": ["A time in seconds since 1970 (a number, 0 or more)."]})
    return value


class SeriesUnavailable(APIException):
    status_code = 503
    default_code = "series_unavailable"
    default_detail = "The traffic series cannot be read now (Redis is not answering); try again shortly."


def document(since: float | None = None) -> dict[str, Any]:
    """What ``GET /api/pbx/traffic`` answers."""
    from redis.exceptions import RedisError

    state = traffic.pbx_state()
    limits, omitted = traffic.trunk_limits()
    try:
        samples = traffic.series(since)
    except RedisError as exc:
        raise SeriesUnavailable() from exc
    return {
        "interval_s": traffic.interval(),
        "points": traffic.POINTS,
        "pbx": {"state": state, "message": traffic.PBX_MESSAGES[state]},
        "samples": samples,
        "trunks": limits,
        "trunk_limits_omitted": omitted,
    }


class TrafficView(APIView):
    """The traffic series: the last hour's samples, oldest first, and every trunk's limit."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since", float, required=False, description="Only samples after this time (seconds since 1970)."
            )
        ],
        responses={
            200: inline_serializer(
                "PbxTraffic",
                {
                    "interval_s": serializers.FloatField(),
                    "points": serializers.IntegerField(help_text="Samples kept at most (360)."),
                    "pbx": inline_serializer(
                        "PbxTrafficLink",
                        {
                            "state": serializers.CharField(help_text="'ok', 'unconfigured' or 'disconnected'."),
                            "message": serializers.CharField(allow_null=True),
                        },
                    ),
                    "samples": SampleSerializer(many=True),
                    "trunks": serializers.DictField(child=TrunkLimitSerializer()),
                    "trunk_limits_omitted": serializers.IntegerField(help_text="Trunks beyond the 50 listed."),
                },
            ),
            400: error_response("A malformed since."),
            401: error_response("Not signed in."),
            503: error_response("The series cannot be read (Redis is not answering)."),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(document(_since(request)))


urlpatterns = [
    path("traffic/", page, name="traffic"),
    re_path(r"^api/pbx/traffic/?$", TrafficView.as_view(), name="pbx-traffic"),
]
