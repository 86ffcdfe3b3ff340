"""``AuditEntry``: one recorded write (an extension, a trunk, a user, the PBX). Append-only.

Nothing in RayanPBX changes or deletes an entry after it is written, bar one: a console
command's entry gets the command's outcome when it ends (``audit.recorder``). The REST API
is read-only and the admin has no add, change or delete permission.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class AuditEntry(models.Model):
    class Via(models.TextChoices):
        API = "api", "REST API (token)"
        UI = "ui", "web UI"
        ADMIN = "admin", "Django admin"
        SHELL = "shell", "shell or management command"
        SYSTEM = "system", "RayanPBX itself"

    class Action(models.TextChoices):
        CREATE = "create", "create"
        UPDATE = "update", "update"
        DELETE = "delete", "delete"
        APPLY = "apply", "apply to the PBX"
        CONSOLE = "console", "console command"
        LOGIN = "login", "sign-in"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text="The username then (kept if the user goes).")
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address.")
    via = models.CharField(max_length=6, choices=Via.choices)
    action = models.CharField(max_length=7, choices=Action.choices)
    object_type = models.CharField(max_length=20, help_text="extension, trunk, user, pbx or console.")
    object_id = models.CharField(max_length=64, blank=True)
    object_label = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(
        default=dict,
        blank=True,
        help_text='Changed fields: {"field": {"before": ..., "after": ...}}; a secret is just "changed".',
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id", "-id"], name="audit_object_recent"),
            models.Index(fields=["user", "-id"], name="audit_user_recent"),
        ]
        verbose_name = "audit entry"
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return (
            f"{self.at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.object_type} {self.object_label}"
        )
