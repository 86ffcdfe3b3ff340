"""Who sees what (``rayanpbx.audiences``) over REST and in the pages: the same rule as the
stream (its tests: tests/test_hub.py, tests/test_consumer.py, and with a real Asterisk
tests/test_pbx_state_live.py). Calls are for staff and ``pbx.view_calls``; failed SIP
logins and an apply's errors for staff."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.test import Client

from pbx import feed, status
from tests.conftest import PASSWORD, bearer_client, make_user

pytestmark = pytest.mark.django_db

CALL = {"id": "c.9", "from": "101", "to": "0912345678", "direction": "outbound", "trunk": "acme"}
FAILURE = {"username": "101", "remote_ip": "203.0.113.9", "attempts": 40, "first_at": "x", "last_at": "y"}
ERRORS = [{"object": "trunk acme", "message": "Unknown host sip.acme.invalid"}]


@pytest.fixture(autouse=True)
def linked(settings: Any) -> Any:
    """A configured link whose status and snapshot hold a call, a failed login and a failed apply."""
    settings.AMI_USERNAME = "rayanpbx"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    document = {**status.empty_status(), "heartbeat": time.time()}
    document["link"] = {**document["link"], "state": "connected"}
    document["apply"] = {"id": 5, "state": "failed", "pending_changes": 1, "duration_ms": 40, "errors": ERRORS,
                         "finished_at": "2026-12-02T10:00:00.000Z"}  # fmt: skip
    cache.set(status.KEY, document, timeout=None)
    snapshot = {**feed.snapshot(), "seq": 7, "calls": {"active": [CALL], "ended": []}, "auth_failures": [FAILURE]}
    cache.set(feed.KEY, snapshot, timeout=None)
    yield
    cache.clear()


def people() -> dict[str, Any]:
    operator = make_user(staff=False)
    operator.user_permissions.add(Permission.objects.get(content_type__app_label="pbx", codename="view_calls"))
    desk = make_user(staff=False)  # the permission through a group
    group = Group.objects.create(name="reception")
    group.permissions.add(Permission.objects.get(content_type__app_label="pbx", codename="view_calls"))
    desk.groups.add(group)
    return {"reader": make_user(staff=False), "operator": operator, "desk": desk, "staff": make_user(staff=True)}


# Who may read each snapshot: (reader, operator, desk, staff).
SNAPSHOTS = {
    "/api/pbx/registrations": (200, 200, 200, 200),
    "/api/pbx/trunks": (200, 200, 200, 200),
    "/api/pbx/calls": (403, 200, 200, 200),
    "/api/pbx/security": (403, 403, 403, 200),
}


@pytest.mark.parametrize("path", SNAPSHOTS)
def test_each_snapshot_answers_its_audience_only(path: str) -> None:
    for (name, person), expected in zip(people().items(), SNAPSHOTS[path], strict=True):
        response = bearer_client(person).get(path)
        assert response.status_code == expected, (name, path, response.content)
        if expected == 403:
            body = response.json()
            assert body["error"] == "permission_denied" and body["detail"], body
            assert "0912345678" not in response.content.decode() and "203.0.113.9" not in response.content.decode()


def test_the_status_gives_an_applys_errors_to_staff_only() -> None:
    everyone = people()
    staff = bearer_client(everyone["staff"]).get("/api/pbx").json()["apply"]
    assert staff["errors"] == ERRORS and "errors_hidden" not in staff
    for name in ("reader", "operator"):
        apply = bearer_client(everyone[name]).get("/api/pbx").json()["apply"]
        assert (apply["state"], apply["errors"], apply["errors_hidden"]) == ("failed", [], 1), name


def signed_in(person: Any) -> Client:
    client = Client()
    assert client.login(username=person.username, password=PASSWORD)
    return client


def test_the_pages_show_each_user_what_it_may_see() -> None:
    everyone = people()
    reader = signed_in(everyone["reader"])
    dashboard = reader.get("/").content.decode()
    assert "dash-calls-restricted" in dashboard and 'id="dash-calls"' not in dashboard
    assert "dash-auth-restricted" in dashboard and "203.0.113.9" not in dashboard
    assert "0912345678" not in dashboard and "Unknown host" not in dashboard
    assert "1 error: the details are shown to staff." in dashboard and ">Calls</a>" not in dashboard
    refused = reader.get("/calls/")
    assert refused.status_code == 403 and b"Calls are not shown to you" in refused.content
    assert b"203.0.113.9" not in reader.get("/extensions/").content  # the diagnostics dialog's logins

    operator = signed_in(everyone["operator"])
    dashboard = operator.get("/").content.decode()
    assert 'id="dash-calls"' in dashboard and "0912345678" in dashboard and ">Calls</a>" in dashboard
    assert "dash-auth-restricted" in dashboard and "203.0.113.9" not in dashboard
    assert operator.get("/calls/").status_code == 200

    staff = signed_in(everyone["staff"])
    dashboard = staff.get("/").content.decode()
    assert "203.0.113.9" in dashboard and "0912345678" in dashboard and "Unknown host" in dashboard
