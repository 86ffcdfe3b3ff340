"""The extension in the Django admin (its secret is write-only)."""

from django.contrib import admin

from extensions.models import Extension
from rayanpbx.admin_forms import SipAccountAdmin, SipAccountAdminForm


class ExtensionAdminForm(SipAccountAdminForm):
    secret_identifiers = ("extension_number",)

    class Meta:
        model = Extension
        fields = "__all__"


@admin.register(Extension)
class ExtensionAdmin(SipAccountAdmin):
    form = ExtensionAdminForm
    list_display = ["extension_number", "name", "enabled", "transport", "context", "updated_at"]
    list_filter = ["enabled", "transport", "voicemail_enabled"]
    search_fields = ["extension_number", "name", "email"]
    ordering = ["extension_number"]
