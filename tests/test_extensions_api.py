"""``/api/extensions``: the shared contract plus extension-specific rules."""

from __future__ import annotations

from typing import Any

import pytest

from extensions.models import Extension
from tests.api_contract import ApiContract


class TestExtensionsApi(ApiContract):
    url = "/api/extensions"
    model = Extension
    unique_field = "extension_number"
    secret_identifier_field = "extension_number"
    search_field = "email"

    def valid(self, n: int = 1) -> dict[str, Any]:
        return {"extension_number": f"{100 + n}", "name": f"Desk phone {n}", "email": f"desk{n}@example.com"}

    invalid = [
        ({"extension_number": "12a"}, "extension_number"),
        ({"extension_number": "1"}, "extension_number"),
        ({"extension_number": "12345678901"}, "extension_number"),
        ({"extension_number": 101.5}, "extension_number"),
        ({"name": "x" * 101}, "name"),
        ({"name": ""}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"enabled": "sometimes"}, "enabled"),
        ({"transport": "carrier-pigeon"}, "transport"),
        ({"codecs": ["ulaw", "mp3"]}, "codecs"),
        ({"codecs": []}, "codecs"),
        ({"codecs": "ulaw"}, "codecs"),
        ({"codecs": ["ulaw", "ulaw"]}, "codecs"),
        ({"max_contacts": 0}, "max_contacts"),
        ({"max_contacts": 11}, "max_contacts"),
        ({"qualify_frequency": -1}, "qualify_frequency"),
        ({"qualify_frequency": 3601}, "qualify_frequency"),
        ({"qualify_frequency": 10**30}, "qualify_frequency"),
        ({"context": "bad context!"}, "context"),
        ({"secret": ["not", "a", "string"]}, "secret"),
        ({"secret": "x" * 129}, "secret"),
        ({"notes": "n" * 2001}, "notes"),
    ]

    def test_defaults_and_hd_badge(self, staff_client) -> None:
        created = self.create(staff_client)
        assert created["context"] == "from-internal"
        assert created["transport"] == "udp"
        assert created["codecs"] == ["ulaw", "alaw", "g722"] and created["hd"] is True
        narrow = self.create(staff_client, 2, codecs=["alaw", "ulaw"])
        assert narrow["codecs"] == ["alaw", "ulaw"] and narrow["hd"] is False

    @pytest.mark.parametrize("number", ["10", "1234567890"])
    def test_number_length_bounds_accepted(self, staff_client, number: str) -> None:
        assert self.create(staff_client, extension_number=number)["extension_number"] == number

    def test_number_is_unique_on_update_too(self, staff_client) -> None:
        first = self.create(staff_client, 1)
        second = self.create(staff_client, 2)
        response = staff_client.patch(
            self.detail(second["id"]), {"extension_number": first["extension_number"]}, format="json"
        )
        assert response.status_code == 400 and "extension_number" in response.json()["fields"]

    def test_secret_containing_new_number_is_weak(self, staff_client) -> None:
        created = self.create(staff_client)
        response = staff_client.patch(
            self.detail(created["id"]), {"extension_number": "4321", "secret": "x-4321-strong-enough"}, format="json"
        )
        assert response.status_code == 400 and "secret" in response.json()["fields"]
