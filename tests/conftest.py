"""Shared fixtures: users, authenticated API clients, and service checks."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

pytest_plugins = ["tests.asterisk", "tests.pbx_helpers"]

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


# --- after the whole session: no token and no secret in any log (tests/faults/logscan.py) ---


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return  # no test made a temporary directory: no process wrote a log
    from tests.faults import logscan

    root = factory.getbasetemp()
    hits = logscan.scan(root)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and (hits or session.config.option.verbose > 0):
        reporter.write_line(logscan.report(hits, root), red=bool(hits))
    if hits:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
