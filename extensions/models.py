"""The Extension model: one SIP phone account (a PJSIP endpoint with its auth and AOR).

Also ``Versioned``, the edit-conflict version shared with trunks: ``version`` goes up by one on
every ``save()`` and every ``QuerySet.update()``; the API sends it as the ``ETag`` and checks
``If-Match`` against it (``rayanpbx.api.viewsets``).
"""

from __future__ import annotations

from typing import Any

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import F
from django.db.models.functions import Length, Lower

from live.querysets import LiveQuerySet
from rayanpbx.sip import (
    CONTEXT_VALIDATORS,
    MAX_SECRET_LENGTH,
    WIDEBAND_CODECS,
    Transport,
    validate_caller_id,
    validate_codecs,
    validate_display_name,
    validate_secret_characters,
)


class VersionedQuerySet(LiveQuerySet):
    """A ``LiveQuerySet`` whose ``update()`` also bumps ``version`` (unless it sets it itself)."""

    def update(self, **kwargs: Any) -> int:
        kwargs.setdefault("version", F("version") + 1)
        return super().update(**kwargs)


class Versioned(models.Model):
    """An abstract model with an edit version: bumped on every save of an existing row.

    The new version is read from the row itself under a row lock (``SELECT ... FOR UPDATE``),
    so two concurrent saves give two versions, never the same one twice.
    """

    version = models.PositiveIntegerField(
        default=1, db_default=1, editable=False, help_text="Goes up by one on every change; sent as the ETag."
    )

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        adding = self._state.adding or self.pk is None
        using = kwargs.get("using") or self._state.db or "default"
        with transaction.atomic(using=using):
            if not adding:
                current = (
                    type(self)
                    ._base_manager.using(using)
                    .select_for_update()
                    .filter(pk=self.pk)
                    .values_list("version", flat=True)
                    .first()
                )
                self.version = (current or 0) + 1
                update_fields = kwargs.get("update_fields")
                if update_fields is not None:
                    kwargs["update_fields"] = {*update_fields, "version"}
            super().save(*args, **kwargs)


def default_extension_codecs() -> list[str]:
    return ["ulaw", "alaw", "g722"]


class Extension(Versioned):
    extension_number = models.CharField(
        max_length=10,
        unique=True,
        validators=[RegexValidator(r"^[0-9]{2,10}\Z", "Use 2 to 10 digits (0-9).", code="invalid")],
        help_text="The number dialled to reach this phone: 2 to 10 digits.",
    )
    name = models.CharField(max_length=100, validators=[validate_display_name], help_text="Shown as caller ID.")
    email = models.EmailField(blank=True, default="")
    secret = models.CharField(
        max_length=MAX_SECRET_LENGTH, validators=[validate_secret_characters], help_text="The SIP password."
    )
    enabled = models.BooleanField(default=True)
    context = models.CharField(max_length=64, default="from-internal", validators=list(CONTEXT_VALIDATORS))
    transport = models.CharField(max_length=3, choices=Transport.choices, default=Transport.UDP)
    codecs = models.JSONField(default=default_extension_codecs, validators=[validate_codecs])
    max_contacts = models.PositiveSmallIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(10)])
    direct_media = models.BooleanField(default=False)
    qualify_frequency = models.PositiveIntegerField(
        default=60, validators=[MaxValueValidator(3600)], help_text="Seconds between OPTIONS pings; 0 is off."
    )
    caller_id = models.CharField(
        max_length=128,
        blank=True,
        default="",
        validators=[validate_caller_id],
        help_text='"Name" <number>, a number or a name; empty: the name and the extension number.',
    )
    voicemail_enabled = models.BooleanField(default=False)
    notes = models.TextField(blank=True, default="", max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VersionedQuerySet.as_manager()

    class Meta:
        ordering = ["extension_number"]
        # The list page's orders and its enabled filter (rayanpbx/listing.py): numbers as numbers.
        indexes = [
            models.Index(Length("extension_number"), "extension_number", name="ext_list_number"),
            models.Index(Lower("name"), "id", name="ext_list_name"),
            models.Index(F("enabled").desc(), Length("extension_number"), "extension_number", name="ext_list_enabled"),
            # MySQL/MariaDB build none of the three above (no expression indexes): the name
            # order is served there by this one (their collations ignore case already).
            models.Index(fields=["name", "id"], name="ext_list_name_plain"),
        ]

    def __str__(self) -> str:
        return f"{self.extension_number} ({self.name})"

    @property
    def hd(self) -> bool:
        """Whether a wideband ("HD") codec is allowed."""
        return bool(WIDEBAND_CODECS.intersection(self.codecs or []))
