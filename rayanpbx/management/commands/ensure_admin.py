"""``manage.py ensure_admin``: make sure an administrator account exists.

With ``RAYANPBX_ADMIN_USER`` (and optionally ``RAYANPBX_ADMIN_PASSWORD``) that account is
created if missing. Without them, and with no superuser yet, an ``admin`` account is created
with a generated password, printed this once. Existing accounts are never changed.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from rayanpbx.env import env_str


class Command(BaseCommand):
    help = "Create the administrator account if it does not exist."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = env_str("RAYANPBX_ADMIN_USER")
        if username is None:
            if User.objects.filter(is_superuser=True).exists():
                return
            username = "admin"
        if User.objects.filter(username=username).exists():
            return
        password = env_str("RAYANPBX_ADMIN_PASSWORD")
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(
                    f"Created administrator '{username}' with password: {password}\n"
                    "This password is shown only now; change it after logging in."
                )
            )
        else:
            self.stdout.write(f"Created administrator '{username}'.")
