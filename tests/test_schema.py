"""The OpenAPI schema at ``/api/schema/`` matches what the API does; ``/api/docs/`` works offline.

schemathesis loads the schema from the app itself (the WSGI app, in process, on the real test
database) and fuzzes every operation as a staff user (bar the cases it sends with missing or
broken credentials on purpose), checking that nothing answers 5xx, that every status code is
documented, that every response has the documented content type, headers and body shape,
that data the schema forbids is rejected, and that no response but a create's shows a secret.

Not checked: that every schema-valid request is accepted (schemathesis'
``positive_data_acceptance``). Some rules cannot be written in JSON Schema and rightly give
400 for schema-valid input: a secret must not contain the extension number or username, a
host must resolve as a hostname or IP address, numbers and names are unique, a refresh
token must be one this server issued. Instead each extension and trunk operation must
succeed at least once (``successes``), and the auth flow is run with real credentials.

Note: the schema is loaded when this module is imported: schemathesis' fixture-based loader
(``schemathesis.pytest.from_fixture``) fails under pytest 9.2, which renamed ``Node._nodeid``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.wsgi import get_wsgi_application
from django.db import models
from django.test import Client, override_settings
from hypothesis import HealthCheck, settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from schemathesis.specs.openapi.checks import positive_data_acceptance

from extensions.models import Extension
from rayanpbx.sip import generate_secret
from tests.conftest import PASSWORD, make_user
from trunks.models import Trunk

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())

#: Examples per operation: enough to reach each error branch, bounded to keep the file near 30 s.
MAX_EXAMPLES = 40

#: The staff user every generated request is made as.
STAFF_ID = 424242

#: The object behind each ``{id}`` path, created on demand for positive cases.
TARGETS: dict[str, tuple[type[models.Model], dict[str, Any]]] = {
    "/api/extensions/": (Extension, {"extension_number": "7001", "name": "Schema target"}),
    "/api/trunks/": (Trunk, {"name": "schema-target", "host": "sip.example.com", "username": "target"}),
}


def bearer(user: AbstractBaseUser) -> dict[str, str]:
    return {"Authorization": f"Bearer {RefreshToken.for_user(user).access_token}"}


def existing_id(path: str) -> int | None:
    """The id of some stored object of the collection ``path`` belongs to (made if none)."""
    for prefix, (model, fields) in TARGETS.items():
        if path.startswith(prefix):
            found = model.objects.order_by("pk").first()
            return (found or model.objects.create(secret=generate_secret(), **fields)).pk
    return None


def secret_only_in_create_response(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """The secret is write-only: only a successful create that omitted it returns it (generated)."""
    try:
        body = response.json()
    except ValueError:
        return
    rows = body.get("results", [body]) if isinstance(body, dict) else []
    generated = (
        case.method.upper() == "POST"
        and response.status_code == 201
        and not (isinstance(case.body, dict) and "secret" in case.body)
    )
    for row in rows:
        if isinstance(row, dict) and ("secret" in row) != generated:
            raise AssertionError(f"`secret` {'missing from' if generated else 'returned in'} this response")


class StaffToken:
    """schemathesis auth provider: the access token of ``STAFF_ID`` on every generated case.

    Registered as auth rather than forced headers, so schemathesis knows which cases it sends
    without credentials or with broken ones on purpose (those must answer 401). schemathesis
    asks for tokens while collecting too, before any database: so the token is made for an
    unsaved user, valid for a day, and ``schema_staff`` stores that user for each test.
    """

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        token = AccessToken.for_user(get_user_model()(pk=STAFF_ID, username="schema-staff"))
        token.set_exp(lifetime=timedelta(days=1))
        return str(token)

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@pytest.fixture
def schema_staff(transactional_db: None) -> AbstractBaseUser:
    return get_user_model().objects.create(pk=STAFF_ID, username="schema-staff", is_staff=True)


@pytest.fixture
def staff_headers(transactional_db: None) -> dict[str, str]:
    return bearer(make_user(staff=True))


@pytest.fixture
def successes(request: pytest.FixtureRequest) -> Iterator[list[int]]:
    """Status codes of one operation's cases; afterwards, an extension or trunk operation must have had a 2xx."""
    statuses: list[int] = []
    yield statuses
    label = request.node.name
    # The console runs commands on a real Asterisk, for superusers with PBX_CONSOLE=1: its
    # success is tested against one in tests/test_console.py; here its refusals are checked.
    exempt = ("/api/auth/", "/api/pbx/console")
    if not any(part in label for part in exempt) and not any(200 <= status < 300 for status in statuses):
        pytest.fail(f"{label}: no generated request succeeded (statuses seen: {sorted(set(statuses))})")


@schema.parametrize()
@schema.auth(StaffToken, refresh_interval=None)
# Derandomized: the same cases on every run, so CI cannot fail by chance. Drop it (or raise
# SCHEMA_EXAMPLES) locally to explore further.
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@pytest.mark.django_db(transaction=True)
def test_api_matches_schema(case: schemathesis.Case, schema_staff: AbstractBaseUser, successes: list[int]) -> None:
    # Aim positive cases at a stored object, so updates, toggles and deletes also succeed.
    if "id" in case.path_parameters and case.meta is not None and case.meta.generation.mode.is_positive:
        case.path_parameters["id"] = existing_id(case.path)
    response = case.call_and_validate(
        excluded_checks=[positive_data_acceptance],
        additional_checks=[secret_only_in_create_response],
    )
    successes.append(response.status_code)


def call(method: str, path: str, **kwargs: Any) -> schemathesis.Response:
    """Make one explicit request and validate its response against the schema."""
    return schema[path][method].Case(**kwargs).call_and_validate()


@pytest.mark.django_db(transaction=True)
def test_auth_flow_matches_schema() -> None:
    user = make_user(staff=False)
    login = call("POST", "/api/auth/login/", body={"username": user.username, "password": PASSWORD})
    assert login.status_code == 200
    tokens = login.json()
    me = call("GET", "/api/auth/user/", headers={"Authorization": f"Bearer {tokens['access']}"})
    assert me.status_code == 200 and me.json()["username"] == user.username
    refreshed = call("POST", "/api/auth/refresh/", body={"refresh": tokens["refresh"]})
    assert refreshed.status_code == 200
    rotated = refreshed.json()["refresh"]
    out = call(
        "POST", "/api/auth/logout/", body={"refresh": rotated}, headers={"Authorization": f"Bearer {tokens['access']}"}
    )
    assert out.status_code == 205
    assert call("POST", "/api/auth/refresh/", body={"refresh": rotated}).status_code == 401


@pytest.mark.django_db(transaction=True)
@override_settings(LOGIN_FAILURE_LIMIT=2)
def test_login_throttling_matches_schema() -> None:
    user = make_user(staff=True)
    wrong = {"username": user.username, "password": "not-the-password"}
    assert [call("POST", "/api/auth/login/", body=wrong).status_code for _ in range(2)] == [401, 401]
    throttled = call("POST", "/api/auth/login/", body=wrong)
    assert throttled.status_code == 429 and throttled.json()["error"] == "throttled"


@pytest.mark.django_db(transaction=True)
def test_extension_number_pattern_means_ascii_digits(staff_headers: dict[str, str]) -> None:
    # The documented pattern means ASCII digits, as JSON Schema (ECMA) reads it; so must the app.
    arabic_indic = "\u0661\u0662\u0663"  # "123" in Arabic-Indic digits: Python's \d matches them
    body = {"extension_number": arabic_indic, "name": "Unicode digits"}
    response = call("POST", "/api/extensions/", body=body, headers=staff_headers)
    assert response.status_code == 400 and "extension_number" in response.json()["fields"]
    assert not Extension.objects.exists()


def test_every_operation_documents_its_errors() -> None:
    raw = schema.raw_schema
    for path, operations in raw["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            assert "401" in documented, (method, path)
            if method in ("post", "put", "patch") and "requestBody" in operation:
                assert {"400", "415"} <= documented, (method, path)
            if "{id}" in path:
                assert "404" in documented, (method, path)
            if path.startswith(("/api/extensions/", "/api/trunks/")) and method != "get":
                assert "403" in documented, (method, path)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (method, path, status)


def test_docs_page_uses_only_local_assets(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/static/"), f"non-local asset {asset}"
    assert not re.search(r"https?://", html), "the page names an absolute URL"
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
