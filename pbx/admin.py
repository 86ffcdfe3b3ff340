"""The console's audit records in the Django admin, read-only: nobody adds, edits or deletes them."""

from __future__ import annotations

from django.contrib import admin

from pbx.models import ConsoleCommand
from rayanpbx.admin_forms import ReadOnlyAdmin


@admin.register(ConsoleCommand)
class ConsoleCommandAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "username", "command", "outcome", "confirmed", "duration_ms", "output_bytes")
    list_filter = ("outcome", "confirmed", "username")
    search_fields = ("command", "username", "error")
    date_hierarchy = "started_at"
    fields = (
        "started_at",
        "username",
        "user",
        "address",
        "command",
        "confirmed",
        "outcome",
        "error",
        "duration_ms",
        "output_bytes",
        "truncated",
    )
    readonly_fields = fields
