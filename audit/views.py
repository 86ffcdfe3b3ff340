"""``GET /api/audit`` (staff, read-only, filterable, paged) and the Audit page ``/audit/``."""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.permissions import IsAdminUser

from audit.models import AuditEntry
from audit.serializers import AuditEntrySerializer
from rayanpbx.api.filters import PbxFilterBackend, PbxFilterSet
from rayanpbx.api.schema import error_response

#: A user id longer than this is no id (and would overflow the database's integer).
MAX_ID_DIGITS = 18


class AuditFilter(PbxFilterSet):
    object_type = django_filters.ChoiceFilter(
        choices=[(t, t) for t in ("extension", "trunk", "user", "pbx", "console")],
        help_text="extension, trunk, user, pbx or console.",
    )
    object_id = django_filters.CharFilter(max_length=64, help_text="The object's id (with object_type).")
    user = django_filters.CharFilter(
        method="filter_user", max_length=150, help_text="Who: a user id, or a username as it was then."
    )
    since = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="gte", help_text="At or after (ISO 8601).")
    until = django_filters.IsoDateTimeFilter(field_name="at", lookup_expr="lt", help_text="Before (ISO 8601).")
    via = django_filters.ChoiceFilter(choices=AuditEntry.Via.choices, help_text="api, ui, admin, shell or system.")
    action = django_filters.ChoiceFilter(choices=AuditEntry.Action.choices)

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def filter_user(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        match = Q(username=value)
        if value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS:
            match |= Q(user_id=int(value))
        return queryset.filter(match)


FORBIDDEN = error_response("Only staff users may read the audit log.")


@extend_schema_view(
    list=extend_schema(responses={200: AuditEntrySerializer(many=True), 403: FORBIDDEN}),
    retrieve=extend_schema(responses={200: AuditEntrySerializer, 403: FORBIDDEN}),
)
class AuditViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first (staff). Entries cannot be changed or deleted."""

    queryset = AuditEntry.objects.all()
    serializer_class = AuditEntrySerializer
    permission_classes = [IsAdminUser]
    filter_backends = [PbxFilterBackend]
    filterset_class = AuditFilter

    def get_queryset(self) -> QuerySet:
        return super().get_queryset().order_by("-id")


@login_required
@require_GET
def page(request: HttpRequest) -> HttpResponse:
    if not (request.user.is_active and request.user.is_staff):
        raise PermissionDenied("The audit log is for staff users.")
    context: dict[str, Any] = {
        "object_types": ["extension", "trunk", "user", "pbx", "console"],
        "vias": AuditEntry.Via.choices,
        "actions": AuditEntry.Action.choices,
    }
    return render(request, "audit.html", context)
