"""Nothing typed into the API can inject Asterisk configuration.

Every free-text field that reaches ``pjsip_rayanpbx.conf`` is either refused with a 400 that
names the field (what cannot be written as plain text: line breaks, control characters,
caller ID syntax, characters that have a meaning in a SIP URI or a section id) or accepted and
written escaped (``;``, ``[``, ``#include``, ``=``): ``test_config_asterisk.py`` shows Asterisk
reads those back as typed.
"""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from extensions.models import Extension
from pbx import config
from trunks.models import Trunk

CONTROL = ["a\nb", "a\rb", "a\tb", "a\x00b", "a\u2028b", "a\x1bb", "a\u202eb"]

EXTENSION_REFUSED = [
    *(("name", value) for value in CONTROL),
    ("name", 'Say "hi"'),
    ("name", "a<b"),
    ("name", "a>b"),
    ("name", "back\\slash"),
    *(("caller_id", value) for value in CONTROL),
    ("caller_id", '"A" <1;2>'),
    ("caller_id", '"Quote"d" <101>'),
    ("caller_id", "Name <101> trailing"),
    ("caller_id", "Name <>"),
    ("caller_id", "<1 2>"),
    ("caller_id", 'Name" <101>'),
    ("caller_id", '"back\\slash" <101>'),
    ("secret", "Strong-secret-1\n[evil]"),
    ("secret", "Strong-secret-1\r#include /etc/passwd"),
    ("secret", "Strong\tsecret-1"),
    ("secret", "Strong-secret-1\x00"),
    ("secret", "Str\u00f6ng-secret-1"),
    ("secret", " Strong-secret-1"),
    ("secret", "Strong-secret-1 "),
    ("context", "general"),
    ("context", "Globals"),
    ("context", "rayanpbx-outbound"),
    ("context", "from-internal\n[evil]"),
    ("context", "a;b"),
]

TRUNK_REFUSED = [
    ("name", "12345"),
    ("name", "rayanpbx-udp"),
    ("name", "ac\nme"),
    ("name", "a;b"),
    ("name", "[acme]"),
    ("username", "user;x=1"),
    ("username", "user@host"),
    ("username", "us er"),
    ("username", "u\nv"),
    ("username", 'u"'),
    ("username", "u<v>"),
    ("secret", "Strong-secret-1\n[evil]"),
    ("secret", "Strong-secret-1\x00"),
    ("secret", "Str\u00f6ng-secret-1"),
    ("host", "sip.example.com;transport=tcp"),
    ("host", "sip.example.com\n[evil]"),
    ("host", "[evil]"),
    ("host", "a=b"),
    ("context", "general"),
    ("context", "from-trunk\n[x]"),
    ("prefix", "9\n1"),
    ("prefix", "9;"),
]


def post(client: APIClient, url: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post(url, data, format="json")
    return response.status_code, response.json()


@pytest.mark.django_db
def test_extension_values_that_cannot_be_written_are_refused(staff_client: APIClient) -> None:
    for field, value in EXTENSION_REFUSED:
        data = {"extension_number": "101", "name": "Desk", field: value}
        code, body = post(staff_client, "/api/extensions", data)
        assert code == 400, (field, value, body)
        assert body["error"] == "invalid" and list(body["fields"]) == [field], (field, value, body)
    assert Extension.objects.count() == 0


@pytest.mark.django_db
def test_trunk_values_that_cannot_be_written_are_refused(staff_client: APIClient) -> None:
    for field, value in TRUNK_REFUSED:
        data = {"name": "acme", "host": "sip.example.com", "username": "acct", field: value}
        code, body = post(staff_client, "/api/trunks", data)
        assert code == 400, (field, value, body)
        assert body["error"] == "invalid" and list(body["fields"]) == [field], (field, value, body)
    assert Trunk.objects.count() == 0


@pytest.mark.django_db
def test_an_all_digit_trunk_name_is_refused_with_a_reason(staff_client: APIClient) -> None:
    code, body = post(staff_client, "/api/trunks", {"name": "101", "host": "sip.example.com"})
    assert code == 400
    assert body["fields"]["name"] == ["A trunk name must not be all digits: it would collide with an extension number."]


@pytest.mark.django_db
def test_values_written_escaped_are_accepted_and_escaped(staff_client: APIClient) -> None:
    name = "Acme; [x] #include /etc/passwd a=b"
    secret = 'Strong;secret[x]#include="a=b"'
    code, body = post(
        staff_client,
        "/api/extensions",
        {"extension_number": "101", "name": name, "secret": secret, "caller_id": '"Sales; [1]" <+4930123>'},
    )
    assert code == 201, body
    code, body = post(
        staff_client,
        "/api/trunks",
        {"name": "acme", "host": "sip.example.com", "username": "acct.1+x~y", "secret": secret},
    )
    assert code == 201, body

    text = config.generate().files[config.PJSIP_FILE]
    assert 'callerid = "Sales\\; [1]" <+4930123>' in text
    assert text.count('password = Strong\\;secret[x]#include="a=b"') == 2
    assert "client_uri = sip:acct.1+x~y@sip.example.com:5060" in text
    # Every section header is one we generated: nothing came out of a value.
    headers = {line for line in text.splitlines() if line.startswith("[")}
    assert headers == {"[101]", "[acme]"}


@pytest.mark.django_db
def test_persian_names_with_a_zero_width_non_joiner_are_accepted(staff_client: APIClient) -> None:
    name = "\u0645\u06cc\u200c\u0631\u0648\u06cc\u0645"  # "we are going" with a ZWNJ, as written in Persian
    code, body = post(staff_client, "/api/extensions", {"extension_number": "101", "name": name})
    assert code == 201, body
    assert f'callerid = "{name}" <101>' in config.generate().files[config.PJSIP_FILE]
