"""The contract every PBX object endpoint keeps, written once (NetBox style).

A test class for an endpoint inherits ``ApiContract`` and declares its URL, model and
data; each test here then runs against that endpoint.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import pytest
from django.db import models
from rest_framework.test import APIClient


@pytest.mark.django_db(transaction=True)
class ApiContract:
    url: ClassVar[str]
    model: ClassVar[type[models.Model]]
    #: The field holding the unique, human identifier (number or name).
    unique_field: ClassVar[str]
    #: Identifiers the secret must not contain, by field.
    secret_identifier_field: ClassVar[str]
    #: Field and value used for search.
    search_field: ClassVar[str]

    def valid(self, n: int = 1) -> dict[str, Any]:
        raise NotImplementedError

    #: (payload changes, field expected in the error) that must each give 400.
    invalid: ClassVar[list[tuple[dict[str, Any], str]]]

    def create(self, client: APIClient, n: int = 1, **overrides: Any) -> dict[str, Any]:
        response = client.post(self.url, {**self.valid(n), **overrides}, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    def detail(self, pk: int) -> str:
        return f"{self.url}/{pk}"

    # --- reading ---------------------------------------------------------------------------

    def test_list_is_paginated_and_hides_secrets(self, staff_client: APIClient) -> None:
        for n in range(3):
            self.create(staff_client, n)
        response = staff_client.get(self.url, {"page_size": 2})
        assert response.status_code == 200
        body = response.json()
        assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]
        assert all("secret" not in row for row in body["results"])

    def test_retrieve_hides_secret(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        response = staff_client.get(self.detail(created["id"]))
        assert response.status_code == 200
        assert response.json()[self.unique_field] == created[self.unique_field]
        assert "secret" not in response.json()
        assert created["secret"] not in response.content.decode()

    def test_filter_by_enabled(self, staff_client: APIClient) -> None:
        self.create(staff_client, 1, enabled=True)
        self.create(staff_client, 2, enabled=False)
        off = staff_client.get(self.url, {"enabled": "false"}).json()
        assert [row["enabled"] for row in off["results"]] == [False]
        assert staff_client.get(self.url, {"enabled": "maybe"}).status_code == 400

    def test_search(self, staff_client: APIClient) -> None:
        wanted = self.create(staff_client, 1)
        self.create(staff_client, 2)
        found = staff_client.get(self.url, {"search": wanted[self.search_field]}).json()["results"]
        assert [row["id"] for row in found] == [wanted["id"]]

    def test_ordering(self, staff_client: APIClient) -> None:
        for n in (2, 1, 3):
            self.create(staff_client, n)
        down = staff_client.get(self.url, {"ordering": f"-{self.unique_field}"}).json()["results"]
        values = [row[self.unique_field] for row in down]
        assert values == sorted(values, reverse=True)

    def test_unknown_id_is_404_json(self, staff_client: APIClient) -> None:
        for method in ("get", "put", "patch", "delete"):
            response = getattr(staff_client, method)(self.detail(987654), {}, format="json")
            assert response.status_code == 404, method
            assert response.json()["error"] == "not_found"
        assert staff_client.post(f"{self.detail(987654)}/toggle").status_code == 404
        assert staff_client.get(f"{self.url}/not-a-number").status_code == 404

    # --- writing ---------------------------------------------------------------------------

    def test_create_generates_secret_shown_once(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        assert len(created["secret"]) >= 16
        stored = self.model.objects.get(pk=created["id"])
        assert stored.secret == created["secret"]
        listing = staff_client.get(self.url).content.decode()
        assert created["secret"] not in listing

    def test_create_with_strong_secret_does_not_echo_it(self, staff_client: APIClient) -> None:
        created = self.create(staff_client, secret="Very-strong-secret-42")
        assert "secret" not in created
        assert self.model.objects.get(pk=created["id"]).secret == "Very-strong-secret-42"

    @pytest.mark.parametrize("weak", ["short1", "", "IDENT-padding-1234"])
    def test_weak_secret_rejected(self, staff_client: APIClient, weak: str) -> None:
        data = self.valid()
        data["secret"] = weak.replace("IDENT", str(data[self.secret_identifier_field]))
        response = staff_client.post(self.url, data, format="json")
        assert response.status_code == 400
        assert "secret" in response.json()["fields"]
        assert self.model.objects.count() == 0

    def test_duplicate_names_the_field(self, staff_client: APIClient) -> None:
        self.create(staff_client)
        response = staff_client.post(self.url, self.valid(), format="json")
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid" and self.unique_field in body["fields"]
        assert self.model.objects.count() == 1

    def test_invalid_input_names_the_field(self, staff_client: APIClient) -> None:
        for changes, field in self.invalid:
            response = staff_client.post(self.url, {**self.valid(), **changes}, format="json")
            assert response.status_code == 400, (changes, response.content)
            assert field in response.json()["fields"], (changes, response.json())
        assert self.model.objects.count() == 0

    def test_malformed_json_and_non_object_bodies(self, staff_client: APIClient) -> None:
        for raw in ('{"name": ', "[1, 2]", '"text"', "null"):
            response = staff_client.generic("POST", self.url, raw, content_type="application/json")
            assert response.status_code == 400, raw
            assert response.json()["error"] in ("parse_error", "invalid"), raw
        response = staff_client.generic("POST", self.url, "a=b", content_type="application/x-www-form-urlencoded")
        assert response.status_code == 415

    def test_put_replaces_and_patch_updates(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        full = {**self.valid(), "notes": "replaced"}
        full.pop("secret", None)
        response = staff_client.put(self.detail(created["id"]), full, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["notes"] == "replaced" and "secret" not in response.json()
        response = staff_client.patch(self.detail(created["id"]), {"enabled": False}, format="json")
        assert response.status_code == 200 and response.json()["enabled"] is False
        stored = self.model.objects.get(pk=created["id"])
        assert stored.notes == "replaced" and stored.secret == created["secret"]

    def test_patch_with_bad_value_changes_nothing(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        changes, field = self.invalid[0]
        response = staff_client.patch(self.detail(created["id"]), changes, format="json")
        assert response.status_code == 400 and field in response.json()["fields"]
        assert self.model.objects.get(pk=created["id"]).updated_at.isoformat().startswith(created["updated_at"][:19])

    def test_toggle_flips_enabled(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        first = staff_client.post(f"{self.detail(created['id'])}/toggle")
        assert first.status_code == 200 and first.json()["enabled"] is (not created["enabled"])
        second = staff_client.post(f"{self.detail(created['id'])}/toggle")
        assert second.json()["enabled"] is created["enabled"]
        assert "secret" not in second.json()

    def test_delete(self, staff_client: APIClient) -> None:
        created = self.create(staff_client)
        assert staff_client.delete(self.detail(created["id"])).status_code == 204
        assert not self.model.objects.filter(pk=created["id"]).exists()

    # --- auth ------------------------------------------------------------------------------

    def test_anonymous_gets_401_json(self, anon_client: APIClient) -> None:
        for method in ("get", "post"):
            response = getattr(anon_client, method)(self.url, {}, format="json")
            assert response.status_code == 401
            assert response.json()["error"] == "not_authenticated"
        bad = APIClient()
        bad.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
        assert bad.get(self.url).status_code == 401

    def test_reader_reads_but_cannot_write(self, staff_client: APIClient, reader_client: APIClient) -> None:
        created = self.create(staff_client)
        assert reader_client.get(self.url).status_code == 200
        attempts = [
            reader_client.post(self.url, self.valid(2), format="json"),
            reader_client.patch(self.detail(created["id"]), {"enabled": False}, format="json"),
            reader_client.put(self.detail(created["id"]), self.valid(), format="json"),
            reader_client.delete(self.detail(created["id"])),
            reader_client.post(f"{self.detail(created['id'])}/toggle"),
        ]
        assert [r.status_code for r in attempts] == [403] * 5
        assert attempts[0].json()["error"] == "permission_denied"
        assert self.model.objects.count() == 1

    def test_secret_never_logged(self, staff_client: APIClient, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG)
        created = self.create(staff_client)
        staff_client.patch(self.detail(created["id"]), {"secret": "Another-strong-one-77"}, format="json")
        staff_client.get(self.url)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert created["secret"] not in logged and "Another-strong-one-77" not in logged
        assert json.dumps(created["secret"]) not in logged
