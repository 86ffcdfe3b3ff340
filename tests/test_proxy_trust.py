"""Forwarding headers are believed only from TRUSTED_PROXIES, and the login throttle keys on
the right-most hop no trusted proxy vouches for (rayanpbx/proxies.py)."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest

from rayanpbx.proxies import (
    ProxyHeadersMiddleware,
    client_address,
    forwarded_scheme,
    parse_address,
    parse_trusted_proxies,
    resolve_scope,
)
from tests.stack import ROOT, Server, Stack, free_port

TRUSTED = parse_trusted_proxies("10.0.0.0/8, 192.0.2.1, fd00::/8, 2001:db8::7")


# --- parsing -------------------------------------------------------------------------------


def test_parse_trusted_proxies_accepts_addresses_and_networks() -> None:
    expected = ("10.0.0.0/8", "192.0.2.1/32", "fd00::/8", "2001:db8::7/128")
    assert tuple(ipaddress.ip_network(network) for network in expected) == TRUSTED
    assert parse_trusted_proxies("") == () and parse_trusted_proxies(None) == ()


@pytest.mark.parametrize(
    "value",
    [
        "proxy.example.com",
        "10.0.0.1/8",
        "10.0.0.0/33",
        "10.0.0.1,,10.0.0.2",
        "10.0.0.1,",
        "*",
        "300.1.1.1",
        "fd00::/129",
    ],
)
def test_parse_trusted_proxies_is_strict(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="TRUSTED_PROXIES"):
        parse_trusted_proxies(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9:4711 ", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("unknown", None),
        ("", None),
        ("203.0.113.9:http", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("fe80::1%eth0", None),
        ("<script>", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    address = parse_address(text)
    assert (None if address is None else str(address)) == expected


def test_settings_refuse_a_malformed_trusted_proxies(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "RAYANPBX_DATA_DIR": str(tmp_path), "TRUSTED_PROXIES": "10.0.0.1, nginx"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "TRUSTED_PROXIES" in result.stderr


# --- choosing the address -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # an untrusted peer: its headers are ignored, whatever they say
        ("203.0.113.9", ["10.0.0.5"], "203.0.113.9"),
        ("203.0.113.9", ["198.51.100.1, 198.51.100.2"], "203.0.113.9"),
        ("2001:db8::99", ["10.0.0.5"], "2001:db8::99"),
        # a trusted peer without the header: the peer
        ("10.0.0.5", [], "10.0.0.5"),
        # one trusted proxy: the entry it appended, not the client's forged left-most ones
        ("10.0.0.5", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.5", ["1.1.1.1, 2.2.2.2, 203.0.113.9"], "203.0.113.9"),
        ("10.0.0.5", ["1.1.1.1", "203.0.113.9"], "203.0.113.9"),  # two header lines are one list
        # a chain of trusted proxies (CIDR and single addresses, v4 and v6)
        ("10.0.0.5", ["6.6.6.6, 203.0.113.9, 192.0.2.1, 10.9.9.9"], "203.0.113.9"),
        ("fd00::1", ["6.6.6.6, 2001:db8::42, 2001:db8::7"], "2001:db8::42"),
        ("2001:db8::7", ["[2001:db8::42]:5060"], "2001:db8::42"),
        ("::ffff:10.0.0.5", ["203.0.113.9"], "203.0.113.9"),  # a v4 proxy on a dual-stack socket
        # a forged trusted-looking entry left of the client is never reached
        ("10.0.0.5", ["10.1.1.1, 203.0.113.9"], "203.0.113.9"),
        # every hop trusted: the left-most (an internal host)
        ("10.0.0.5", ["10.1.1.1, 192.0.2.1"], "10.1.1.1"),
        # garbage where a trusted proxy should have written an address: that proxy
        ("10.0.0.5", ["203.0.113.9, unknown"], "10.0.0.5"),
        ("10.0.0.5", ["203.0.113.9, unknown, 10.2.2.2"], "10.2.2.2"),
        ("10.0.0.5", ["<script>, 203.0.113.9"], "203.0.113.9"),  # garbage left of the client: unread
        ("10.0.0.5", [" , ,"], "10.0.0.5"),
    ],
)
def test_client_address(peer: str, forwarded_for: list[str], expected: str) -> None:
    assert client_address(peer, forwarded_for, TRUSTED) == expected


def test_nobody_is_trusted_by_default() -> None:
    assert client_address("127.0.0.1", ["203.0.113.9"], ()) == "127.0.0.1"


def test_forwarded_scheme() -> None:
    assert forwarded_scheme(["https"], websocket=False) == "https"
    assert forwarded_scheme(["HTTPS"], websocket=True) == "wss"
    assert forwarded_scheme(["https, http"], websocket=False) == "http"  # the nearest proxy's
    assert forwarded_scheme(["gopher"], websocket=False) is None
    assert forwarded_scheme([], websocket=False) is None


def _scope(peer: str, headers: list[tuple[bytes, bytes]], kind: str = "http") -> dict:
    return {
        "type": kind, "scheme": "http" if kind == "http" else "ws", "path": "/", "method": "GET",
        "query_string": b"", "headers": headers, "client": [peer, 40000], "server": ["127.0.0.1", 8000],
    }  # fmt: skip


def test_resolve_scope_only_for_trusted_peers() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1, 203.0.113.9"), (b"x-forwarded-proto", b"https")]
    untrusted = _scope("203.0.113.50", headers)
    assert resolve_scope(untrusted, TRUSTED) is untrusted  # untouched: no copy, no rewrite
    resolved = resolve_scope(_scope("10.0.0.5", headers), TRUSTED)
    assert resolved["client"] == ["203.0.113.9", 0] and resolved["scheme"] == "https"
    assert resolved["rayanpbx.peer"] == ["10.0.0.5", 40000]
    socket = resolve_scope(_scope("10.0.0.5", headers, "websocket"), TRUSTED)
    assert socket["client"] == ["203.0.113.9", 0] and socket["scheme"] == "wss"


async def test_django_sees_the_resolved_address_and_scheme() -> None:
    """REMOTE_ADDR and request.is_secure() come from a trusted proxy's headers only."""
    seen: list[dict] = []

    async def app(scope, receive, send) -> None:
        seen.append(scope)

    middleware = ProxyHeadersMiddleware(app, TRUSTED)
    headers = [(b"x-forwarded-for", b"1.1.1.1, 203.0.113.9"), (b"x-forwarded-proto", b"https")]
    await middleware(_scope("10.0.0.5", headers), None, None)
    await middleware(_scope("203.0.113.50", headers), None, None)
    await middleware({"type": "lifespan"}, None, None)
    proxied, direct = (ASGIRequest(scope, io.BytesIO()) for scope in seen[:2])
    assert proxied.META["REMOTE_ADDR"] == "203.0.113.9" and proxied.is_secure()
    assert direct.META["REMOTE_ADDR"] == "203.0.113.50" and not direct.is_secure()
    assert seen[2] == {"type": "lifespan"}


# --- end to end: a real daphne ----------------------------------------------------------------

LIMIT = 3


def _serve(stack: Stack) -> Server:
    """``manage.py serve --proxy-headers``, as deployments behind a proxy were told to run it."""
    port = free_port()
    log = stack.tmp / f"server-{port}.log"
    server = Server(port, stack._spawn(["serve", "--port", str(port), "--proxy-headers"], log), log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if stack.request(server, "GET", "/health")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def _login(server: Server, forwarded_for: str, password: str = "wrong-password") -> int:
    body = json.dumps({"username": "admin", "password": password}).encode()
    request = urllib.request.Request(
        server.http + "/api/auth/login",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-Forwarded-For": forwarded_for},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def make_stack(tmp_path: Path):
    stacks: list[Stack] = []

    def make(**env: str) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", env={"LOGIN_FAILURE_LIMIT": str(LIMIT), **env})
        stacks.append(stack)
        return stack

    for directory in ("stack0", "stack1"):
        (tmp_path / directory).mkdir()
    yield make
    for stack in stacks:
        stack.close()


def test_rotating_x_forwarded_for_does_not_escape_the_throttle(make_stack) -> None:
    """From an untrusted peer (nobody is trusted by default) every attempt is the peer's."""
    stack = make_stack()
    server = _serve(stack)
    statuses = [_login(server, f"198.51.100.{n}") for n in range(LIMIT + 2)]
    assert statuses == [401] * LIMIT + [429, 429]
    assert _login(server, "198.51.100.200", password="admin-password-for-tests") == 429  # even the right one


def test_behind_a_trusted_proxy_the_right_most_untrusted_hop_is_throttled(make_stack) -> None:
    stack = make_stack(TRUSTED_PROXIES="127.0.0.1")
    server = _serve(stack)
    # the client forges a new left-most entry each time; the proxy appends what it saw
    statuses = [_login(server, f"198.51.100.{n}, 203.0.113.7") for n in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [429]
    # another client behind the same proxy is a different address: not locked out
    assert _login(server, "203.0.113.8") == 401
    assert _login(server, "6.6.6.6, 203.0.113.8", password="admin-password-for-tests") == 200
    assert _login(server, "203.0.113.7", password="admin-password-for-tests") == 429
