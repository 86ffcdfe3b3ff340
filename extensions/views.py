"""``/api/extensions``: the extension viewset (declarations only)."""

from extensions.models import Extension
from extensions.serializers import ExtensionSerializer
from rayanpbx.api.viewsets import PbxObjectViewSet


class ExtensionViewSet(PbxObjectViewSet):
    queryset = Extension.objects.all()
    serializer_class = ExtensionSerializer
    filterset_fields = ["enabled", "transport", "context", "voicemail_enabled"]
    search_fields = ["extension_number", "name", "email", "caller_id"]
    ordering_fields = ["extension_number", "name", "enabled", "created_at", "updated_at"]
    ordering = ["extension_number"]
