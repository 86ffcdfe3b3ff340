"""The Extension model: one SIP phone account (a PJSIP endpoint with its auth and AOR)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

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


def default_extension_codecs() -> list[str]:
    return ["ulaw", "alaw", "g722"]


class Extension(models.Model):
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

    objects = LiveQuerySet.as_manager()

    class Meta:
        ordering = ["extension_number"]

    def __str__(self) -> str:
        return f"{self.extension_number} ({self.name})"

    @property
    def hd(self) -> bool:
        """Whether a wideband ("HD") codec is allowed."""
        return bool(WIDEBAND_CODECS.intersection(self.codecs or []))
