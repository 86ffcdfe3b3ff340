"""The Trunk model: one SIP link to a provider or another PBX (versioned like extensions)."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F
from django.db.models.functions import Lower

from extensions.models import Versioned, VersionedQuerySet
from rayanpbx.sip import (
    CONTEXT_VALIDATORS,
    MAX_SECRET_LENGTH,
    Transport,
    validate_codecs,
    validate_host,
    validate_secret_characters,
    validate_sip_username,
    validate_trunk_name,
)


def default_trunk_codecs() -> list[str]:
    return ["ulaw", "alaw"]


class Trunk(Versioned):
    class Type(models.TextChoices):
        PEER = "peer", "Peer"
        FRIEND = "friend", "Friend"
        USER = "user", "User"

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[A-Za-z0-9_-]+\Z", "Use only letters, digits, '-' and '_'.", code="invalid"),
            validate_trunk_name,
        ],
        help_text="Also its PJSIP id: letters, digits, '-' and '_', not all digits.",
    )
    type = models.CharField(max_length=6, choices=Type.choices, default=Type.PEER)
    host = models.CharField(max_length=253, validators=[validate_host], help_text="Hostname or IP address.")
    port = models.PositiveIntegerField(default=5060, validators=[MinValueValidator(1), MaxValueValidator(65535)])
    username = models.CharField(max_length=64, blank=True, default="", validators=[validate_sip_username])
    secret = models.CharField(
        max_length=MAX_SECRET_LENGTH, validators=[validate_secret_characters], help_text="The SIP password."
    )
    enabled = models.BooleanField(default=True)
    transport = models.CharField(max_length=3, choices=Transport.choices, default=Transport.UDP)
    codecs = models.JSONField(default=default_trunk_codecs, validators=[validate_codecs])
    context = models.CharField(max_length=64, default="from-trunk", validators=list(CONTEXT_VALIDATORS))
    priority = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(100)], help_text="1 is tried first."
    )
    prefix = models.CharField(
        max_length=20,
        blank=True,
        default="",
        validators=[RegexValidator(r"^[0-9+*#]*\Z", "Use only digits, '+', '*' and '#'.", code="invalid")],
        help_text="Dial prefix that routes calls to this trunk.",
    )
    strip_digits = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(20)])
    max_channels = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10000)], help_text="Concurrent calls allowed; 0 is unlimited."
    )
    notes = models.TextField(blank=True, default="", max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = VersionedQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "name"]
        # The list page's orders and its enabled filter (rayanpbx/listing.py).
        indexes = [
            models.Index("priority", Lower("name"), name="trunk_list_priority"),
            models.Index(Lower("name"), "id", name="trunk_list_name"),
            models.Index(F("enabled").desc(), "priority", Lower("name"), name="trunk_list_enabled"),
        ]

    def __str__(self) -> str:
        return self.name
