"""The REST (and live topic) representation of an audit entry."""

from rest_framework import serializers

from audit.models import AuditEntry


class AuditEntrySerializer(serializers.ModelSerializer):
    user = serializers.IntegerField(source="user_id", allow_null=True, read_only=True, help_text="The user's id.")
    changes = serializers.DictField(
        read_only=True,
        help_text='Changed fields: {"field": {"before": ..., "after": ...}} (a create has no before, a delete '
        'no after); a secret or password is the string "changed", never its value.',
    )

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "user", "username", "address", "via", "action", "object_type", "object_id",
                  "object_label", "changes"]  # fmt: skip
        read_only_fields = fields
