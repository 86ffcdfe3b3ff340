"""The trunk in the Django admin (its secret is write-only)."""

from django.contrib import admin

from rayanpbx.admin_forms import SipAccountAdmin, SipAccountAdminForm
from trunks.models import Trunk


class TrunkAdminForm(SipAccountAdminForm):
    secret_identifiers = ("username",)

    class Meta:
        model = Trunk
        fields = "__all__"


@admin.register(Trunk)
class TrunkAdmin(SipAccountAdmin):
    form = TrunkAdminForm
    list_display = ["name", "host", "port", "enabled", "priority", "prefix", "updated_at"]
    list_filter = ["enabled", "transport", "type"]
    search_fields = ["name", "host", "username"]
    ordering = ["priority", "name"]
