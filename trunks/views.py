"""``/api/trunks``: the trunk viewset (declarations only)."""

from rayanpbx.api.viewsets import PbxObjectViewSet
from trunks.models import Trunk
from trunks.serializers import TrunkSerializer


class TrunkViewSet(PbxObjectViewSet):
    queryset = Trunk.objects.all()
    serializer_class = TrunkSerializer
    filterset_fields = ["enabled", "transport", "type"]
    search_fields = ["name", "host", "username", "prefix"]
    ordering_fields = ["name", "host", "priority", "enabled", "created_at", "updated_at"]
    ordering = ["priority", "name"]
