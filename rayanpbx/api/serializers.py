"""A base serializer for SIP accounts (extensions and trunks): the secret's rules live here.

The secret is write-only. On create an omitted secret is generated and returned in that
one response; a supplied one must be strong. No other response ever includes it.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from rayanpbx.sip import CODECS, MAX_SECRET_LENGTH, check_secret_strength, generate_secret


class SipAccountSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        max_length=MAX_SECRET_LENGTH,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="SIP password: at least 12 characters, not containing the number or username. "
        "Omit it on create to have one generated; it is returned once, in the create response.",
    )
    codecs = serializers.ListField(
        child=serializers.ChoiceField(choices=CODECS),
        allow_empty=False,
        required=False,
        help_text="Allowed codecs, in order of preference.",
    )

    #: Attributes whose values must not appear inside the secret.
    secret_identifiers: tuple[str, ...] = ()

    def validate_codecs(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("Each codec may appear only once.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        secret = attrs.get("secret")
        if secret is not None:
            identifiers = [
                str(attrs.get(name, getattr(self.instance, name, "")) or "") for name in self.secret_identifiers
            ]
            try:
                check_secret_strength(secret, identifiers)
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"secret": exc.messages}) from None
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Any:
        generated = "secret" not in validated_data
        if generated:
            validated_data["secret"] = generate_secret()
        instance = super().create(validated_data)
        if generated:
            instance._secret_to_show = validated_data["secret"]
        return instance

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        shown = getattr(instance, "_secret_to_show", None)
        if shown is not None:
            data["secret"] = shown  # the create response only
        return data
