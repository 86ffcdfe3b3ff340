"""Security headers and settings (issue 13, part 6): the Content-Security-Policy, the other
headers, HTTPS behind the ``SECURE`` switch, and ``manage.py check --deploy``.

* In-process: every page and API answers with the headers; the policy has nothing inline;
  the API docs' policy allows its one inline script and style by this response's nonce.
* A real server with ``SECURE=1`` behind a trusted proxy: http is redirected to https (but
  ``/health`` is not), https gets HSTS and secure cookies.
* ``check --deploy`` in a subprocess with the production settings of docs/security.md reports
  nothing (and without ``SECURE=1`` it does: the test can fail).
* Chromium: every page loads with zero CSP violations and goes Live; an injected inline
  script and style attribute are refused and seen (the detector works).
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from tests.stack import ADMIN_PASSWORD, ROOT, Server, Stack

#: What every response's policy must say, directive by directive.
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self'",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: At least these pages; the tests visit every page the header's navigation links to, so a
#: page added later is checked too.
PAGES = ["/", "/extensions/", "/trunks/", "/calls/", "/traffic/", "/logs/", "/console/"]


def pages(admin: Client) -> list[str]:
    """Every page the superuser's navigation links to (at least :data:`PAGES`)."""
    html = admin.get("/").content.decode()
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', html, re.S).group(1)
    links = re.findall(r'<a href="([^"]+)"', nav)
    assert set(PAGES) <= set(links), links
    return links


def parse_policy(header: str) -> dict[str, str]:
    directives = [part.strip().split(None, 1) for part in header.split(";") if part.strip()]
    return {parts[0]: parts[1] if len(parts) > 1 else "" for parts in directives}


def assert_headers(response, what: str) -> None:
    policy = parse_policy(response["Content-Security-Policy"])
    assert policy == POLICY, what
    for name, value in HEADERS.items():
        assert response[name] == value, (what, name)
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"]), what
    assert "Strict-Transport-Security" not in response, what  # plain http: no HSTS


# --- in-process ---------------------------------------------------------------------------


@pytest.fixture
def admin(db) -> Client:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root-headers", password="correct-horse-battery-staple")
    client = Client()
    client.force_login(user)
    return client


def test_every_page_and_the_api_answer_with_the_headers(admin: Client) -> None:
    anonymous = Client()
    assert_headers(anonymous.get("/login/"), "/login/")
    assert_headers(anonymous.get("/"), "a redirect to the login page")
    assert_headers(anonymous.get("/api/extensions"), "the API, 401")
    assert_headers(anonymous.post("/api/auth/login", {}, content_type="application/json"), "login, 400")
    assert_headers(anonymous.get("/api/nowhere"), "an API 404")
    assert_headers(anonymous.get("/health"), "/health")
    for path in pages(admin):
        response = admin.get(path)
        assert response.status_code == 200, path
        assert_headers(response, path)
    for path in ("/api/extensions", "/api/trunks", "/api/pbx", "/api/schema/", "/api/auth/user", "/admin/"):
        response = admin.get(path)
        assert response.status_code == 200, path
        assert_headers(response, path)


def test_no_page_has_inline_scripts_or_styles(admin: Client) -> None:
    """What the policy refuses is not in the pages either (the Chromium test below loads them)."""
    for path in ["/login/", *pages(admin)]:
        client = Client() if path == "/login/" else admin
        html = client.get(path).content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert " src=" in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"<[^>]+\sstyle=", html), path
        assert not re.search(r"<[^>]+\son[a-z]+=", html), path
        assert "<style" not in html, path


def test_the_api_docs_policy_allows_its_inline_script_and_style_by_nonce(admin: Client) -> None:
    response = admin.get("/api/docs/")
    assert response.status_code == 200
    policy = parse_policy(response["Content-Security-Policy"])
    nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9+/=]+)'", policy["script-src"]).group(1)
    assert policy["style-src"] == f"'self' 'nonce-{nonce}'"
    assert policy["img-src"] == "'self' data:"
    assert "unsafe" not in response["Content-Security-Policy"]
    assert {k: v for k, v in policy.items() if k not in ("script-src", "style-src", "img-src")} == {
        k: v for k, v in POLICY.items() if k not in ("script-src", "style-src", "img-src")
    }
    html = response.content.decode()
    inline = re.findall(r"<(script|style)\b([^>]*)>", html)
    assert [name for name, attributes in inline if "src=" not in attributes] == ["style", "script"]
    for name, attributes in inline:
        if "src=" not in attributes:
            assert attributes == f' nonce="{nonce}"', name
    again = admin.get("/api/docs/")["Content-Security-Policy"]
    assert nonce not in again  # a new nonce per response


def test_the_policy_built_once_is_django_csps_and_follows_the_settings() -> None:
    from csp.middleware import CSPMiddleware
    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from rayanpbx.security import ContentSecurityPolicyMiddleware

    ours = ContentSecurityPolicyMiddleware(lambda request: HttpResponse("x"))
    theirs = CSPMiddleware(lambda request: HttpResponse("x"))
    factory = RequestFactory()
    header = ours(factory.get("/"))["Content-Security-Policy"]
    assert header == theirs(factory.get("/"))["Content-Security-Policy"] and parse_policy(header) == POLICY
    with override_settings(CONTENT_SECURITY_POLICY={"DIRECTIVES": {"default-src": ["'none'"]}}):
        assert ours(factory.get("/"))["Content-Security-Policy"] == "default-src 'none'"
    assert ours(factory.get("/"))["Content-Security-Policy"] == header
    # A response that used a nonce goes through django-csp itself; the site's policy names none.
    used = factory.get("/")
    ours.process_request(used)
    assert str(used.csp_nonce)
    assert ours.process_response(used, HttpResponse("x"))["Content-Security-Policy"] == header


# --- a real server behind a trusted proxy, SECURE=1 ---------------------------------------


def get(server: Server, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None):
    """One GET from ``source`` (127.0.0.2 is the trusted proxy below), unredirected."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"Host": "127.0.0.1", **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


@pytest.mark.services
def test_secure_turns_on_https_redirect_hsts_and_secure_cookies(tmp_path: Path) -> None:
    stack = Stack(tmp_path, env={"SECURE": "1", "TRUSTED_PROXIES": "127.0.0.2"})
    try:
        server = stack.start_server(healthy=False)
        plain = get(server, "/login/?next=/calls/")
        assert plain.status == 301 and plain.getheader("Location") == "https://127.0.0.1/login/?next=/calls/"
        assert get(server, "/health").status in (200, 503)  # probes talk http to daphne: not redirected
        # A client cannot claim https itself: only the trusted proxy's X-Forwarded-Proto counts.
        assert get(server, "/login/", headers={"X-Forwarded-Proto": "https"}).status == 301
        secure = get(server, "/login/", source="127.0.0.2", headers={"X-Forwarded-Proto": "https"})
        assert secure.status == 200
        assert secure.getheader("Strict-Transport-Security") == "max-age=31536000; includeSubDomains"
        cookies = secure.headers.get_all("Set-Cookie")
        assert cookies and all("; Secure" in cookie for cookie in cookies), cookies
        assert parse_policy(secure.getheader("Content-Security-Policy")) == POLICY
    finally:
        stack.close()


def test_without_secure_cookies_are_not_secure_and_nothing_redirects(db) -> None:
    response = Client().get("/login/")
    assert response.status_code == 200 and "Strict-Transport-Security" not in response
    assert not response.cookies["csrftoken"]["secure"]


# --- manage.py check --deploy -------------------------------------------------------------


def check_deploy(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``manage.py check --deploy`` with only the given settings (and a data directory)."""
    ours = ("SECURE", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "TLS_", "CSRF_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    base.update(RAYANPBX_DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_deploy_reports_nothing_with_the_production_settings(tmp_path: Path) -> None:
    """docs/security.md's production settings: SECRET_KEY long and random, ALLOWED_HOSTS, SECURE=1."""
    production = {"SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "pbx.example.com", "SECURE": "1"}
    result = check_deploy(tmp_path, **production)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
    # Without the switch it does complain: what the test asserts is real.
    insecure = check_deploy(tmp_path, **{**production, "SECURE": "0"})
    assert insecure.returncode != 0
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in insecure.stderr, insecure.stderr


# --- Chromium: zero CSP violations --------------------------------------------------------

#: Runs before any page script: collects the document's CSP violation events.
COLLECT = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  const where = `${event.sourceFile}:${event.lineNumber}`;
  window.__csp.push(`${event.effectiveDirective} ${event.blockedURI || "inline"} ${where}`);
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from tests.chromium import chromium

    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module", params=["embedded", "asterisk"])
def csp_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Server]]:
    """The embedded default, and a site linked to a real Asterisk (the pages then show the
    PBX state: registrations, calls, the console enabled and configured); each with a row."""
    tmp = tmp_path_factory.mktemp(f"csp-{request.param}")
    if request.param == "asterisk":
        from tests.pbx_helpers import pbx_stack, start_linked

        stack = start_linked(pbx_stack(tmp, request.getfixturevalue("pbx"), PBX_CONSOLE="1"))
        server = stack.server
    else:
        stack = Stack(tmp, env={"PBX_CONSOLE": "1"})
    try:
        if request.param != "asterisk":
            server = stack.start_server()
        token = stack.login(server)
        for path, row in (
            ("/api/extensions", {"extension_number": "4801", "name": "CSP phone"}),
            ("/api/trunks", {"name": "csp-trunk", "host": "sip.example.com"}),
        ):
            status, body = stack.request(server, "POST", path, row, token)
            assert status == 201, body
        yield stack, server
    finally:
        stack.close()


@pytest.mark.services
@pytest.mark.browser
def test_every_page_loads_in_chromium_with_zero_csp_violations(browser, csp_site) -> None:
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import expect

    _, server = csp_site
    context = browser.new_context()
    context.add_init_script(COLLECT)
    page = context.new_page()
    refused: list[str] = []
    errors: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            or "Refused to" in message.text else None)  # fmt: skip
    page.on("pageerror", lambda error: errors.append(str(error)))

    def violations() -> list[str]:
        page.wait_for_timeout(200)  # violation events are queued as tasks
        return [*page.evaluate("window.__csp"), *refused]

    try:
        page.goto(f"{server.http}/login/")
        assert violations() == [], "/login/"
        page.fill("#id_username", "admin")
        page.fill("#id_password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.http}/")
        links = page.eval_on_selector_all("nav[aria-label=Main] a", "links => links.map(a => a.getAttribute('href'))")
        assert set(PAGES) <= set(links), links
        for path in links:
            page.goto(f"{server.http}{path}")
            expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=10000)
            assert violations() == [], path
        page.goto(f"{server.http}/api/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("RayanPBX API", timeout=10000)
        expect(page.locator(".opblock").first).to_be_visible()
        assert violations() == [], "/api/docs/"
        page.goto(f"{server.http}/admin/")
        expect(page.locator("#site-name")).to_be_visible()
        assert violations() == [], "/admin/"
        assert errors == []

        # The detector sees what the policy refuses, and the policy is in force.
        page.goto(f"{server.http}/calls/")
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=10000)
        page.evaluate(
            """() => {
              const script = document.createElement("script");
              script.textContent = "window.__injected = true";
              document.head.append(script);
              document.body.insertAdjacentHTML("beforeend", '<p id="styled" style="color: rgb(255, 0, 0)">x</p>');
            }"""
        )
        seen = violations()
        assert any(v.startswith("script-src-elem inline") for v in seen), seen
        assert any(v.startswith("style-src-attr inline") for v in seen), seen
        assert page.evaluate("window.__injected === undefined")
        assert page.evaluate("getComputedStyle(document.getElementById('styled')).color") != "rgb(255, 0, 0)"
    finally:
        context.close()
