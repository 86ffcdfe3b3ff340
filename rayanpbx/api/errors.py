"""One error shape for the whole API, and JSON 404/500 pages for ``/api`` paths.

Every error response is ``{"error": code, "detail": message, "fields": {...}}``;
``fields`` appears only for validation errors and maps each bad field to its messages.
The database unreachable (also while authenticating a token: the user lookup) is 503
``database_unavailable`` with ``Retry-After``, logged in one line (``rayanpbx.unavailable``).
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from rayanpbx import unavailable

logger = logging.getLogger(__name__)


def _flatten(detail: Any) -> list[str]:
    if isinstance(detail, dict):
        return [f"{key}: {msg}" for key, value in detail.items() for msg in _flatten(value)]
    if isinstance(detail, list):
        return [msg for item in detail for msg in _flatten(item)]
    return [str(detail)]


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if unavailable.is_outage(exc):
        unavailable.note(context["request"], exc)
        set_rollback()
        response = Response({"error": unavailable.ERROR_CODE, "detail": unavailable.DETAIL}, status=503)
        response["Retry-After"] = str(unavailable.RETRY_AFTER)
        return response
    # The same conversions DRF makes, done first so the codes below are DRF's.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's handler500 answers (JSON for /api, see below)
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        messages = _flatten(fields)
        response.data = {"error": "invalid", "detail": "; ".join(messages), "fields": fields}
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else "error"
        response.data = {"error": code, "detail": "; ".join(_flatten(response.data.get("detail", response.data)))}
    return response


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "not_found", "detail": "No such API endpoint."}, status=404)
    return page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "server_error", "detail": "Internal server error."}, status=500)
    return server_error(request)
