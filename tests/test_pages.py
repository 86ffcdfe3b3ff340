"""Server-rendered pages: login (and its throttle), access control, row fragments."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings

from extensions.models import Extension
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_pages_need_login(client: Client) -> None:
    for path in ("/", "/extensions/", "/trunks/", "/extensions/rows", "/extensions/1/row"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next="), path


def test_login_page_logs_in_and_shows_the_dashboard(client: Client, staff_user) -> None:
    response = client.post("/login/", {"username": staff_user.username, "password": PASSWORD}, follow=True)
    assert response.status_code == 200
    assert b"Dashboard" in response.content and staff_user.username.encode() in response.content


@override_settings(LOGIN_FAILURE_LIMIT=2)
def test_login_page_is_throttled(client: Client, staff_user) -> None:
    for _ in range(2):
        response = client.post("/login/", {"username": staff_user.username, "password": "wrong"})
        assert response.status_code == 200 and b"Please enter a correct username" in response.content
    locked = client.post("/login/", {"username": staff_user.username, "password": PASSWORD})
    assert locked.status_code == 429 and b"Too many failed logins" in locked.content
    assert "_auth_user_id" not in client.session


def test_row_fragment_matches_the_list(client: Client, staff_user) -> None:
    ext = Extension.objects.create(extension_number="42", name="Fragment <b>", secret="Strong-secret-123")
    client.force_login(staff_user)
    row = client.get(f"/extensions/{ext.pk}/row").content.decode()
    listing = client.get("/extensions/").content.decode()
    assert row.strip() in listing  # one template renders both
    assert "Fragment &lt;b&gt;" in row and "Strong-secret-123" not in listing
    assert client.get("/extensions/999999/row").status_code == 404


def test_reader_gets_no_edit_controls(client: Client, reader_user) -> None:
    Extension.objects.create(extension_number="43", name="Read me", secret="Strong-secret-123")
    client.force_login(reader_user)
    page = client.get("/extensions/").content.decode()
    assert "Read me" in page
    assert 'data-action="create"' not in page and 'data-action="toggle"' not in page
    assert "edit-dialog" not in page
