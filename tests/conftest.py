"""Shared fixtures: users, authenticated API clients, and service checks."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

pytest_plugins = ["tests.asterisk"]

PASSWORD = "correct-horse-battery-staple"


def make_user(*, staff: bool, active: bool = True) -> object:
    return get_user_model().objects.create_user(
        username=f"user-{uuid.uuid4().hex[:8]}", password=PASSWORD, is_staff=staff, is_active=active
    )


def bearer_client(user: object) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")
    return client


@pytest.fixture
def staff_user(db):
    return make_user(staff=True)


@pytest.fixture
def reader_user(db):
    return make_user(staff=False)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return bearer_client(staff_user)


@pytest.fixture
def reader_client(reader_user) -> APIClient:
    return bearer_client(reader_user)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient()
