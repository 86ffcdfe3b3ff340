"""The REST representation of a trunk."""

from rayanpbx.api.serializers import SipAccountSerializer

from trunks.models import Trunk


class TrunkSerializer(SipAccountSerializer):
    secret_identifiers = ("username",)

    class Meta:
        model = Trunk
        fields = [
            "id",
            "name",
            "type",
            "host",
            "port",
            "username",
            "secret",
            "enabled",
            "transport",
            "codecs",
            "context",
            "priority",
            "prefix",
            "strip_digits",
            "max_channels",
            "notes",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
