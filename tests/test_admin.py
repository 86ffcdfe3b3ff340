"""The Django admin for extensions and trunks: the SIP secret is write-only there too.

No admin page shows a stored secret. Adding with the secret blank generates one, shown once
in a message; a weak one is a form error and saves nothing. Editing with the secret blank
keeps the stored one; a new strong one replaces it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import models
from django.test import Client

from extensions.models import Extension
from rayanpbx.sip import generate_secret
from trunks.models import Trunk

pytestmark = pytest.mark.django_db

STRONG = "Str0ng-and-long-enough"


@dataclass(frozen=True)
class AdminCase:
    """One SIP account model in the admin: its URL, a valid form, and its identifier field."""

    model: type[models.Model]
    url: str
    form: dict[str, Any]
    #: The field whose value a secret must not contain.
    identifier: str
    #: Model fields of a stored object matching ``form`` (the rest are model defaults).
    stored: dict[str, Any]
    #: A field the admin search looks in.
    search: str

    def data(self, **changes: Any) -> dict[str, Any]:
        return {**self.form, **changes}

    def change_url(self, pk: int) -> str:
        return f"{self.url}{pk}/change/"

    def create(self, **changes: Any) -> models.Model:
        return self.model.objects.create(**{**self.stored, "secret": generate_secret(), **changes})


EXTENSION = AdminCase(
    model=Extension,
    url="/admin/extensions/extension/",
    form={
        "extension_number": "4321",
        "name": "Reception",
        "email": "reception@example.com",
        "enabled": "on",
        "context": "from-internal",
        "transport": "udp",
        "codecs": '["ulaw", "alaw"]',
        "max_contacts": "1",
        "qualify_frequency": "60",
        "caller_id": "",
        "notes": "",
    },
    identifier="extension_number",
    stored={"extension_number": "4321", "name": "Reception", "email": "reception@example.com"},
    search="extension_number",
)
TRUNK = AdminCase(
    model=Trunk,
    url="/admin/trunks/trunk/",
    form={
        "name": "provider-a",
        "type": "peer",
        "host": "sip.example.com",
        "port": "5060",
        "username": "acme7788",
        "enabled": "on",
        "transport": "udp",
        "codecs": '["ulaw"]',
        "context": "from-trunk",
        "priority": "1",
        "prefix": "9",
        "strip_digits": "1",
        "max_channels": "0",
        "notes": "",
    },
    identifier="username",
    stored={"name": "provider-a", "host": "sip.example.com", "username": "acme7788", "prefix": "9", "strip_digits": 1},
    search="name",
)


@pytest.fixture(params=[EXTENSION, TRUNK], ids=["extension", "trunk"])
def case(request: pytest.FixtureRequest) -> AdminCase:
    return request.param


@pytest.fixture
def admin(db: None) -> Client:
    user = get_user_model().objects.create_superuser(
        username=f"root-{uuid.uuid4().hex[:6]}", email="root@example.com", password=uuid.uuid4().hex
    )
    client = Client()
    client.force_login(user)
    return client


def page(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def form_errors(response: Any) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: list(errors) for name, errors in form.errors.items()}


def shown_messages(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_pages_never_show_the_stored_secret(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    pages = {
        "changelist": page(admin, case.url),
        "change": page(admin, case.change_url(obj.pk)),
        "history": page(admin, f"{case.url}{obj.pk}/history/"),
        "delete": page(admin, f"{case.url}{obj.pk}/delete/"),
    }
    assert case.change_url(obj.pk) in pages["changelist"]  # the object is listed at all
    for name, text in pages.items():
        assert obj.secret not in text, name
    assert 'type="password"' in pages["change"]


def test_search_does_not_match_secrets(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    assert admin.get(case.url, {"q": obj.secret}).context["cl"].result_count == 0  # no guessing oracle
    assert admin.get(case.url, {"q": str(getattr(obj, case.search))}).context["cl"].result_count == 1


def test_add_with_blank_secret_generates_one_shown_once(admin: Client, case: AdminCase) -> None:
    response = admin.post(f"{case.url}add/", case.data(secret=""), follow=True)
    assert response.status_code == 200
    obj = case.model.objects.get()
    assert len(obj.secret) >= 16
    shown = [message for message in shown_messages(response) if obj.secret in message]
    assert len(shown) == 1, shown_messages(response)
    assert obj.secret not in page(admin, case.url)
    assert obj.secret not in page(admin, case.change_url(obj.pk))


def test_add_with_strong_secret_stores_it_and_does_not_echo_it(admin: Client, case: AdminCase) -> None:
    response = admin.post(f"{case.url}add/", case.data(secret=STRONG), follow=True)
    assert response.status_code == 200
    assert case.model.objects.get().secret == STRONG
    assert STRONG not in response.content.decode()


@pytest.mark.parametrize("weak", ["short-1", "Padded-IDENT-secret", "x" * 129])
def test_add_with_weak_secret_is_a_form_error(admin: Client, case: AdminCase, weak: str) -> None:
    secret = weak.replace("IDENT", str(case.form[case.identifier]).upper())
    response = admin.post(f"{case.url}add/", case.data(secret=secret))
    assert response.status_code == 200  # the form again, not a redirect
    assert "secret" in form_errors(response)
    assert case.model.objects.count() == 0
    assert secret not in response.content.decode()  # not even the rejected value is echoed


def test_edit_with_blank_secret_keeps_it(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    response = admin.post(case.change_url(obj.pk), case.data(secret="", notes="edited"))
    assert response.status_code == 302, form_errors(response)
    obj.refresh_from_db()
    assert obj.notes == "edited"
    assert obj.secret == case.model.objects.get(pk=obj.pk).secret != ""
    entry = LogEntry.objects.filter(object_id=str(obj.pk)).latest("action_time")
    assert "secret" not in entry.get_change_message().lower(), entry.get_change_message()


def test_edit_keeps_the_exact_stored_secret(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    before = obj.secret
    admin.post(case.change_url(obj.pk), case.data(secret=""))
    obj.refresh_from_db()
    assert obj.secret == before


def test_edit_with_new_strong_secret_changes_it(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    response = admin.post(case.change_url(obj.pk), case.data(secret=STRONG), follow=True)
    assert response.status_code == 200
    obj.refresh_from_db()
    assert obj.secret == STRONG
    assert STRONG not in response.content.decode()
    assert not any(STRONG in message for message in shown_messages(response))
    entry = LogEntry.objects.filter(object_id=str(obj.pk)).latest("action_time")
    assert "secret" in entry.get_change_message().lower()


def test_edit_with_weak_secret_changes_nothing(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    before = obj.secret
    response = admin.post(case.change_url(obj.pk), case.data(secret="tiny", notes="should not save"))
    assert response.status_code == 200 and "secret" in form_errors(response)
    obj.refresh_from_db()
    assert obj.secret == before and obj.notes == ""


def test_secret_containing_the_new_identifier_is_weak(admin: Client, case: AdminCase) -> None:
    obj = case.create()
    new_identifier = "5678" if case is EXTENSION else "newuser42"
    secret = f"Long-{new_identifier}-secret"
    response = admin.post(case.change_url(obj.pk), case.data(secret=secret, **{case.identifier: new_identifier}))
    assert response.status_code == 200 and "secret" in form_errors(response)
    obj.refresh_from_db()
    assert str(getattr(obj, case.identifier)) == str(case.form[case.identifier])


def test_trunk_without_username_rules_out_only_short_secrets(admin: Client) -> None:
    trunk = TRUNK.create()
    secret = f"old-{trunk.username}-is-gone"  # contains the username being cleared: fine, as in the API
    response = admin.post(TRUNK.change_url(trunk.pk), TRUNK.data(username="", secret=secret))
    assert response.status_code == 302, form_errors(response)
    trunk.refresh_from_db()
    assert trunk.username == "" and trunk.secret == secret
