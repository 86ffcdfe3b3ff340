"""The audit log in the Django admin: read-only (no add, change or delete permission)."""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditEntry
from rayanpbx.admin_forms import ReadOnlyAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "username", "via", "action", "object_type", "object_label", "address"]
    list_filter = ["via", "action", "object_type"]
    search_fields = ["username", "object_label", "object_id"]
    date_hierarchy = "at"
