"""The Django admin bases: SIP accounts (the secret is write-only there too) and records.

``ReadOnlyAdmin`` is for records nobody may add, edit or delete (the audit log, the console's
commands): even a superuser only reads them.

The secret field never renders the stored value. Left blank on an existing object it keeps
the stored secret; left blank on a new one, a secret is generated and shown once in the
admin's success message.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.http import HttpRequest

from rayanpbx.sip import MAX_SECRET_LENGTH, check_secret_strength, generate_secret


class SipAccountAdminForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        max_length=MAX_SECRET_LENGTH,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave blank to keep the current secret (or, for a new account, to generate one).",
    )
    secret_identifiers: tuple[str, ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The stored secret is no initial value: it can never be rendered, and a blank field
        # counts as unchanged (otherwise every save is logged as "Changed secret").
        self.initial.pop("secret", None)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        secret = cleaned.get("secret")
        if secret:
            # The submitted identifier, or the stored one when that field failed validation;
            # as in the API, a cleared identifier (a trunk without username) rules nothing out.
            identifiers = [
                str((cleaned[name] if name in cleaned else getattr(self.instance, name, "")) or "")
                for name in self.secret_identifiers
            ]
            try:
                check_secret_strength(secret, identifiers)
            except forms.ValidationError as exc:
                self.add_error("secret", exc)
        return cleaned

    def _post_clean(self) -> None:
        # Keep the stored secret when the field was left blank; model validation then sees it.
        if not self.cleaned_data.get("secret"):
            self.cleaned_data["secret"] = self.instance.secret or generate_secret()
            self._generated_secret = not self.instance.secret
        super()._post_clean()


class SipAccountAdmin(admin.ModelAdmin):
    """Shows a generated secret once, after saving a new account with the field blank."""

    def save_model(self, request: HttpRequest, obj: models.Model, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if getattr(form, "_generated_secret", False):
            messages.warning(request, f"Generated SIP secret (shown only now): {obj.secret}")


class ReadOnlyAdmin(admin.ModelAdmin):
    """A model admin that only shows: no add, change or delete permission for anyone."""

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False
