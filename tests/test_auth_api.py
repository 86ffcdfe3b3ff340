"""``/api/auth/*``: login, refresh, logout, current user, and failed-login throttling."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def login(client: APIClient, username: str, password: str = PASSWORD):
    return client.post("/api/auth/login", {"username": username, "password": password}, format="json")


def test_login_returns_tokens_and_user(anon_client: APIClient, staff_user) -> None:
    response = login(anon_client, staff_user.username)
    assert response.status_code == 200
    body = response.json()
    assert body["access"] and body["refresh"]
    assert body["user"] == {"id": staff_user.id, "username": staff_user.username, "is_staff": True, "email": ""}
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert anon_client.get("/api/auth/user").json()["username"] == staff_user.username


def test_wrong_password_is_401_and_leaks_nothing(anon_client: APIClient, staff_user) -> None:
    response = login(anon_client, staff_user.username, "wrong-password")
    assert response.status_code == 401
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize("body", [{}, {"username": "x"}, {"password": "y"}])
def test_missing_credentials_name_the_field(anon_client: APIClient, body: dict) -> None:
    response = anon_client.post("/api/auth/login", body, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"username", "password"} - set(body)


def test_login_with_array_or_broken_json_is_400(anon_client: APIClient) -> None:
    assert anon_client.generic("POST", "/api/auth/login", "[]", content_type="application/json").status_code == 400
    assert anon_client.generic("POST", "/api/auth/login", "{", content_type="application/json").status_code == 400


def test_inactive_user_cannot_log_in(anon_client: APIClient) -> None:
    user = get_user_model().objects.create_user(f"off-{uuid.uuid4().hex[:6]}", password=PASSWORD, is_active=False)
    assert login(anon_client, user.username).status_code == 401


@override_settings(LOGIN_FAILURE_LIMIT=3)
def test_repeated_failures_are_throttled(anon_client: APIClient, staff_user) -> None:
    codes = [login(anon_client, staff_user.username, "nope").status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    throttled = login(anon_client, staff_user.username)  # even the right password now waits
    assert throttled.status_code == 429
    assert throttled.json()["error"] == "throttled" and "Retry-After" in throttled.headers
    other = get_user_model().objects.create_user(f"other-{uuid.uuid4().hex[:6]}", password=PASSWORD)
    assert login(anon_client, other.username).status_code == 200  # counted per username


def test_refresh_rotates_and_logout_blacklists(anon_client: APIClient, staff_user) -> None:
    tokens = login(anon_client, staff_user.username).json()
    refreshed = anon_client.post("/api/auth/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200 and refreshed.json()["access"]
    # The rotated-out refresh token is blacklisted.
    assert anon_client.post("/api/auth/refresh", {"refresh": tokens["refresh"]}, format="json").status_code == 401
    new_refresh = refreshed.json()["refresh"]
    anon_client.credentials(HTTP_AUTHORIZATION=f"Bearer {refreshed.json()['access']}")
    assert anon_client.post("/api/auth/logout", {"refresh": new_refresh}, format="json").status_code == 205
    assert anon_client.post("/api/auth/refresh", {"refresh": new_refresh}, format="json").status_code == 401


def test_logout_needs_a_valid_refresh_token(staff_client: APIClient) -> None:
    assert staff_client.post("/api/auth/logout", {}, format="json").status_code == 400
    response = staff_client.post("/api/auth/logout", {"refresh": "garbage"}, format="json")
    assert response.status_code == 400 and "refresh" in response.json()["fields"]


def test_logout_cannot_blacklist_another_users_token(staff_client: APIClient, reader_user) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    response = staff_client.post(
        "/api/auth/logout", {"refresh": str(RefreshToken.for_user(reader_user))}, format="json"
    )
    assert response.status_code == 400


def test_refresh_for_deleted_user_is_401(anon_client: APIClient) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    user = get_user_model().objects.create_user(f"gone-{uuid.uuid4().hex[:6]}", password=PASSWORD)
    refresh = str(RefreshToken.for_user(user))
    user.delete()
    assert anon_client.post("/api/auth/refresh", {"refresh": refresh}, format="json").status_code == 401


def test_unknown_api_path_is_json_404(staff_client: APIClient) -> None:
    response = staff_client.get("/api/nothing-here")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_current_user_needs_token(anon_client: APIClient) -> None:
    assert anon_client.get("/api/auth/user").status_code == 401
