"""``/api/trunks``: the shared contract plus trunk-specific rules."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_contract import ApiContract
from trunks.models import Trunk


class TestTrunksApi(ApiContract):
    url = "/api/trunks"
    model = Trunk
    unique_field = "name"
    secret_identifier_field = "username"
    search_field = "host"

    def valid(self, n: int = 1) -> dict[str, Any]:
        return {"name": f"provider-{n}", "host": f"sip{n}.example.net", "username": f"acct{n}x"}

    invalid = [
        ({"name": "has space"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"host": "not a host"}, "host"),
        ({"host": "-bad-.example.com"}, "host"),
        ({"host": "999.1.1.1"}, "host"),
        ({"host": ""}, "host"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "five"}, "port"),
        ({"type": "alien"}, "type"),
        ({"priority": 0}, "priority"),
        ({"prefix": "9a"}, "prefix"),
        ({"strip_digits": 21}, "strip_digits"),
        ({"max_channels": -1}, "max_channels"),
        ({"codecs": ["ulaw", 7]}, "codecs"),
        ({"transport": "sctp"}, "transport"),
    ]

    @pytest.mark.parametrize("host", ["10.0.0.1", "2001:db8::1", "sip.example.com", "pbx-2"])
    def test_hosts_accepted(self, staff_client, host: str) -> None:
        assert self.create(staff_client, host=host)["host"] == host

    def test_defaults(self, staff_client) -> None:
        created = self.create(staff_client)
        assert (created["port"], created["context"], created["type"]) == (5060, "from-trunk", "peer")
