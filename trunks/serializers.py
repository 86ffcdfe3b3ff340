"""The REST representation of a trunk."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer

from rayanpbx.api.serializers import SipAccountSerializer
from trunks.models import Trunk


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Provider trunk",
            summary="A registration trunk to a provider (secret omitted: one is generated)",
            value={
                "name": "provider-a",
                "host": "sip.provider.example",
                "port": 5060,
                "username": "acct1001",
                "codecs": ["alaw", "ulaw"],
                "prefix": "9",
                "strip_digits": 1,
            },
            request_only=True,
        )
    ]
)
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
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "version", "created_at", "updated_at"]
