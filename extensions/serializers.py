"""The REST representation of an extension."""

from rest_framework import serializers

from rayanpbx.api.serializers import SipAccountSerializer
from rayanpbx.sip import WIDEBAND_CODECS

from extensions.models import Extension


class ExtensionSerializer(SipAccountSerializer):
    secret_identifiers = ("extension_number",)
    hd = serializers.SerializerMethodField(help_text="Whether a wideband (HD) codec is allowed.")

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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]

    def get_hd(self, obj: Extension) -> bool:
        return bool(WIDEBAND_CODECS.intersection(obj.codecs or []))
