"""The REST representation of an extension."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from extensions.models import Extension
from rayanpbx.api.serializers import SipAccountSerializer


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Desk phone",
            summary="A desk phone (secret omitted: one is generated)",
            value={"extension_number": "101", "name": "Reception desk", "email": "reception@example.com"},
            request_only=True,
        )
    ]
)
class ExtensionSerializer(SipAccountSerializer):
    secret_identifiers = ("extension_number",)
    hd = serializers.BooleanField(read_only=True, help_text="Whether a wideband (HD) codec is allowed.")

    class Meta:
        model = Extension
        fields = [
            "id",
            "extension_number",
            "name",
            "email",
            "secret",
            "enabled",
            "context",
            "transport",
            "codecs",
            "max_contacts",
            "direct_media",
            "qualify_frequency",
            "caller_id",
            "voicemail_enabled",
            "notes",
            "hd",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "version", "created_at", "updated_at"]
