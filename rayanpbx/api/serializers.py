"""A base serializer for SIP accounts (extensions and trunks): the secret's rules live here.

The secret is write-only. On create an omitted secret is generated and returned in that
one response; a supplied one must be strong. No other response ever includes it.

JSON types are read as documented: a string field takes only a JSON string, an integer
field only a JSON number without a fraction, a boolean field only ``true``/``false``. (DRF
would quietly turn ``42`` into ``"42"``, ``"7"`` into 7 and ``"yes"`` into true.)
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from rest_framework import serializers

from rayanpbx.sip import CODECS, MAX_SECRET_LENGTH, MIN_SECRET_LENGTH, check_secret_strength, generate_secret


class JsonStringMixin:
    """Accept only a JSON string."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(JsonStringMixin, serializers.CharField):
    pass


class StrictEmailField(JsonStringMixin, serializers.EmailField):
    pass


class StrictIntegerField(serializers.IntegerField):
    """Accept only a JSON number without a fraction (``5`` or ``5.0``, not ``"5"`` or ``true``)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """Accept only ``true`` or ``false``."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class UniqueListField(serializers.ListField):
    """A list whose items must be distinct; documented with ``uniqueItems`` (see ``rayanpbx.api.schema``)."""

    unique_items = True
    default_error_messages = {"duplicate": "Each item may appear only once."}

    def to_internal_value(self, data: Any) -> list[Any]:
        value = super().to_internal_value(data)
        seen: list[Any] = []  # a list, not a set: items need not be hashable
        for item in value:
            if item in seen:
                self.fail("duplicate")
            seen.append(item)
        return value


class SipAccountSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.EmailField: StrictEmailField,
        models.IntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.PositiveSmallIntegerField: StrictIntegerField,
        models.BooleanField: StrictBooleanField,
    }

    secret = StrictCharField(
        write_only=True,
        required=False,
        min_length=MIN_SECRET_LENGTH,
        max_length=MAX_SECRET_LENGTH,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="SIP password: at least 12 characters, not containing the number or username. "
        "Omit it on create to have one generated; it is returned once, in the create response.",
    )
    codecs = UniqueListField(
        child=serializers.ChoiceField(choices=CODECS),
        allow_empty=False,
        min_length=1,
        required=False,
        error_messages={"duplicate": "Each codec may appear only once."},
        help_text="Allowed codecs, in order of preference.",
    )

    #: Attributes whose values must not appear inside the secret.
    secret_identifiers: tuple[str, ...] = ()

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
