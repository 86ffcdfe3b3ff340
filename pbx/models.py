"""The PBX app's models: the console's audit record (``pbx.console``), and the calls permission.

Every console command a superuser sends is recorded: who (the user, and the username as it
was), when, from which address, the command, how it ended (``ok``, ``error`` with the error
text, ``refused`` for a destructive command without its confirmation, ``timeout``; a row left
``running`` means the server stopped while the command ran), how long it took and how many
bytes of output it gave. Never the output itself. The Django admin shows it read-only; the
console's per-user history (up and down arrows) reads the same rows.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ConsoleCommand(models.Model):
    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    OUTCOMES = [
        (RUNNING, "running"),
        (OK, "ok"),
        (ERROR, "error"),
        (REFUSED, "refused (needs a confirmation)"),
        (TIMEOUT, "timed out"),
    ]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, help_text="The username when the command ran (kept if the user goes).")
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's address.")
    command = models.CharField(max_length=512)
    confirmed = models.BooleanField(default=False, help_text="A destructive command, confirmed by typing it again.")
    outcome = models.CharField(max_length=10, choices=OUTCOMES)
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    output_bytes = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False, help_text="The output was cut at PBX_CONSOLE_MAX_OUTPUT.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["user", "-id"], name="pbx_console_user_recent")]
        verbose_name = "console command"

    def __str__(self) -> str:
        return f"{self.username}: {self.command} ({self.outcome})"


class CallAccess(models.Model):
    """No table: the holder of the ``pbx.view_calls`` permission (``rayanpbx.audiences``).

    Give it to a non-staff user (or a group) in the Django admin to let them see calls:
    who called whom, on the stream, ``GET /api/pbx/calls`` and the Calls page. Staff see
    calls without it."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_calls", "Can see calls (who called whom)")]

    def __str__(self) -> str:
        return "calls"
