"""The recommended deployment: a real nginx with ``docs/deploy/nginx.conf`` in front of two
daphne processes on Redis, driven by Chromium over ``https://`` and ``wss://``.

The config is the guide's own file, with only its ``@PLACEHOLDERS@`` (ports and paths)
filled in; the certificate is made by ``openssl`` at test time and trusted by Chromium as a
CA in an NSS database of its own (``certutil``, Debian's ``libnss3-tools``): no certificate
errors are ignored anywhere. nginx runs unprivileged-style, every path under the test's
temporary folder (``nginx -c FILE -p PREFIX -g 'daemon off; pid ...;'``).

Client addresses are checked through the login throttle (failures count per address and
username): clients bound to different loopback addresses (127.0.0.5, 127.0.0.6) are told
apart through nginx only when RayanPBX trusts it (``TRUSTED_PROXIES``), and an
``X-Forwarded-For`` the client writes itself changes nothing.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import ARGS, CHROMIUM, LIVE_MS
from tests.services import missing, redis_url
from tests.stack import ADMIN_PASSWORD, ROOT, Server, Stack, free_port
from tests.test_tls import make_certificate, trusting

pytestmark = [pytest.mark.services, pytest.mark.browser]

NGINX = "/usr/sbin/nginx"
CONFIG = ROOT / "docs" / "deploy" / "nginx.conf"
TIMEOUT = 10.0
LIMIT = 5  # LOGIN_FAILURE_LIMIT's default


def render(values: dict[str, str]) -> str:
    """``docs/deploy/nginx.conf`` with its placeholders filled (all of them, or it fails)."""
    text = CONFIG.read_text()
    for name, value in values.items():
        assert f"@{name}@" in text, f"@{name}@ is not in {CONFIG}"
        text = text.replace(f"@{name}@", value)
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "@" not in body.replace("@rayanpbx_web", ""), "a placeholder was left unfilled"
    return text


@dataclass
class Nginx:
    process: subprocess.Popen
    https_port: int
    http_port: int
    prefix: Path

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https_port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_nginx(prefix: Path, cert: Path, key: Path, web_ports: tuple[int, int]) -> Nginx:
    """nginx in the foreground with the guide's config, every path under ``prefix``."""
    if not os.path.exists(NGINX):
        missing("nginx", f"{NGINX} not found (apt-get install nginx)")
    prefix.mkdir(parents=True, exist_ok=True)
    https_port, http_port = free_port(), free_port()
    site = render(
        {
            "SERVER_NAME": "localhost",
            "HTTP_PORT": str(http_port),
            "HTTPS_PORT": str(https_port),
            "CERT_FILE": str(cert),
            "KEY_FILE": str(key),
            "APP_DIR": str(ROOT),
            "LOG_DIR": str(prefix),
            "WEB_PORT_1": str(web_ports[0]),
            "WEB_PORT_2": str(web_ports[1]),
        }
    )
    (prefix / "rayanpbx.conf").write_text(site)
    temp = "\n".join(
        f"    {name}_temp_path {prefix / name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # What Debian's /etc/nginx/nginx.conf provides around a site; as root (CI), the workers
    # stay root so they can read the test's private temporary folder.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\nerror_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    include /etc/nginx/mime.types;\n    default_type application/octet-stream;\n{temp}\n"
        f"    include {prefix / 'rayanpbx.conf'};\n}}\n"
    )
    check = subprocess.run(
        [NGINX, "-t", "-c", str(prefix / "nginx.conf"), "-p", str(prefix), "-g", f"pid {prefix / 'nginx.pid'};"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix), "-g", f"daemon off; pid {prefix / 'nginx.pid'};"],
        stdout=(prefix / "stdout.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    nginx = Nginx(process, https_port, http_port, prefix)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(prefix / 'error.log').read_text()[-2000:]}")
        try:
            status, _, _ = request(nginx, "GET", "/health", context=trusting(cert))
            if status == 200:
                return nginx
        except OSError:
            pass
        time.sleep(0.1)
    nginx.stop()
    raise RuntimeError(f"nginx did not answer: {(prefix / 'error.log').read_text()[-2000:]}")


def request(
    nginx: Nginx,
    method: str,
    path: str,
    body: Any = None,
    *,
    context: ssl.SSLContext,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS request to nginx from the loopback address ``source``."""
    connection = http.client.HTTPSConnection(
        "localhost", nginx.https_port, context=context, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        connection.close()


def login(nginx: Nginx, context: ssl.SSLContext, source: str, password: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    body = {"username": "admin", "password": password}
    return request(nginx, "POST", "/api/auth/login", body, context=context, source=source, headers=headers)[0]


# --- the deployment --------------------------------------------------------------------------


@dataclass
class Deployment:
    stack: Stack
    servers: list[Server]
    nginx: Nginx
    cert: Path
    context: ssl.SSLContext
    tmp: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deploy-nginx")
    cert, key = make_certificate(tmp / "tls")
    # The guide's settings: nginx trusted, and SECURE=1 (which would redirect every request
    # to https, forever, if nginx's X-Forwarded-Proto were not believed).
    stack = Stack(tmp, redis_url=redis_url(), env={"TRUSTED_PROXIES": "127.0.0.1", "SECURE": "1"})
    nginx = None
    try:
        servers = [stack.start_server(), stack.start_server()]
        nginx = start_nginx(tmp / "nginx", cert, key, (servers[0].port, servers[1].port))
        yield Deployment(stack, servers, nginx, cert, trusting(cert), tmp)
    finally:
        if nginx:
            nginx.stop()
        stack.close()


@pytest.fixture(scope="module")
def browser(deployment: Deployment) -> Iterator[Any]:
    """Chromium trusting the test certificate as a CA, through an NSS database of its own."""
    from playwright import sync_api

    if not os.path.exists(CHROMIUM):
        missing("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    if not shutil.which("certutil"):
        missing("certutil", "Chromium's CA store is managed with certutil (apt-get install libnss3-tools)")
    home = deployment.tmp / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, timeout=30)
    subprocess.run(
        ["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "rayanpbx-test-ca", "-i", str(deployment.cert)],
        check=True, timeout=30,
    )  # fmt: skip
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, env={**os.environ, "HOME": str(home)})
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, base: str, path: str) -> Any:
    """A signed-in page at ``path`` through nginx, live; its WebSocket URLs in ``page.sockets``."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.sockets = []
    page.script_errors = []
    page.on("websocket", lambda socket: page.sockets.append(socket.url))
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    page.goto(f"{base}/login/?next={path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE_MS)
    # Every state the connection goes through from now on, and a marker a reload would lose.
    page.evaluate(
        "window.__noReload = true; window.__states = [];"
        "new MutationObserver(() => window.__states.push(document.getElementById('live-status').dataset.state))"
        ".observe(document.getElementById('live-status'), {attributes: true, attributeFilter: ['data-state']});"
    )
    return page


def ws_connects(server: Server) -> int:
    """WebSocket handshakes daphne's access log shows for this server."""
    return server.log.read_text(errors="replace").count("WSCONNECT /ws")


def test_login_live_change_and_a_daphne_killed_through_nginx(deployment: Deployment, browser: Any) -> None:
    from playwright.sync_api import expect

    nginx, stack = deployment.nginx, deployment.stack
    assert ws_connects(deployment.servers[0]) == ws_connects(deployment.servers[1]) == 0
    pages = [open_page(browser, nginx.base, "/extensions/") for _ in range(2)]
    for page in pages:
        assert page.url.startswith(f"https://localhost:{nginx.https_port}/")
        assert page.sockets and all(url.startswith(f"wss://localhost:{nginx.https_port}/ws") for url in page.sockets)
    # Both sockets went through nginx to the daphne processes (least_conn: usually one each).
    counts = [ws_connects(server) for server in deployment.servers]
    assert sum(counts) == 2, counts
    victim = 0 if counts[0] >= counts[1] else 1

    status, _, body = request(
        nginx, "POST", "/api/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}, context=deployment.context
    )
    assert status == 200, body
    token = {"Authorization": f"Bearer {body['access']}"}
    status, _, created = request(
        nginx, "POST", "/api/extensions", {"extension_number": "4101", "name": "Through nginx"},
        context=deployment.context, headers=token,
    )  # fmt: skip
    assert status == 201, created
    for page in pages:
        expect(page.locator("tr", has_text="Through nginx")).to_be_visible(timeout=LIVE_MS)

    # One daphne process dies: the page whose socket it held reconnects through the other.
    stack.stop(deployment.servers[victim].process)
    for page in pages:
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=4 * LIVE_MS)
    status, _, changed = request(
        nginx, "POST", "/api/extensions", {"extension_number": "4102", "name": "After the kill"},
        context=deployment.context, headers=token,
    )  # fmt: skip
    assert status == 201, changed
    for page in pages:
        expect(page.locator("tr", has_text="After the kill")).to_be_visible(timeout=LIVE_MS)
    states = [page.evaluate("window.__states") for page in pages]
    dropped = [page for page, seen in zip(pages, states, strict=True) if any(s != "connected" for s in seen)]
    # Exactly the pages whose socket the dead process held dropped, and came back on the other.
    assert len(dropped) == counts[victim], (counts, states)
    assert ws_connects(deployment.servers[1 - victim]) == 2
    for page in dropped:  # one new socket each, resuming from the last seq it saw
        assert len(page.sockets) == 2 and "last_seq=" in page.sockets[1], page.sockets
    for page in pages:
        assert page.evaluate("window.__noReload === true"), "the page reloaded"
        assert page.script_errors == [], page.script_errors
        page.context.close()
    log = (nginx.prefix / "rayanpbx.access.log").read_text()
    assert 'GET /ws HTTP/1.1" 101' in log and "?" not in log  # upgraded; no query string logged


def test_http_redirects_to_https_and_static_files_come_from_nginx(deployment: Deployment) -> None:
    nginx = deployment.nginx
    connection = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=TIMEOUT)
    connection.request("GET", "/extensions/?page=2")
    response = connection.getresponse()
    assert response.status == 301
    assert response.getheader("Location") == f"https://127.0.0.1:{nginx.https_port}/extensions/?page=2"
    connection.close()

    # nginx's request id is RayanPBX's (a trusted proxy's X-Request-ID): one id in both logs.
    status, headers, _ = request(nginx, "GET", "/api/auth/user", context=deployment.context)
    assert status == 401 and re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), headers
    deadline = time.monotonic() + 5  # nginx writes its access log line once the response is sent
    while f"id={headers['x-request-id']}" not in (nginx.prefix / "rayanpbx.access.log").read_text():
        assert time.monotonic() < deadline, "nginx's access log lacks the request id RayanPBX answered with"
        time.sleep(0.05)

    before = [server.log.read_text() for server in deployment.servers]
    status, headers, body = request(nginx, "GET", "/static/js/live.js", context=deployment.context)
    assert status == 200 and body == (ROOT / "static" / "js" / "live.js").read_bytes()
    assert headers["cache-control"] == "public, max-age=60" and headers["x-content-type-options"] == "nosniff"
    # The Django admin's stylesheet is not in the checkout: daphne (WhiteNoise) serves it.
    status, _, _ = request(nginx, "GET", "/static/admin/css/base.css", context=deployment.context)
    assert status == 200
    after = [server.log.read_text() for server in deployment.servers]
    daphne = "".join(new[len(old) :] for old, new in zip(before, after, strict=True))
    assert "/static/admin/css/base.css" in daphne and "/static/js/live.js" not in daphne


def test_client_addresses_only_from_a_trusted_nginx(deployment: Deployment) -> None:
    """Behind a trusted nginx each client is its own address, whatever X-Forwarded-For it
    forges; behind an untrusted one every client is nginx (and shares one throttle)."""
    context, nginx = deployment.context, deployment.nginx
    # Trusted (TRUSTED_PROXIES=127.0.0.1): 127.0.0.5 locks itself out, and only itself.
    assert [login(nginx, context, "127.0.0.5", "wrong-password") for _ in range(LIMIT)] == [401] * LIMIT
    assert login(nginx, context, "127.0.0.5", ADMIN_PASSWORD) == 429
    assert login(nginx, context, "127.0.0.5", ADMIN_PASSWORD, forwarded="127.0.0.6") == 429  # a forged hop
    assert login(nginx, context, "127.0.0.5", ADMIN_PASSWORD, forwarded="203.0.113.9") == 429
    assert login(nginx, context, "127.0.0.6", ADMIN_PASSWORD) == 200
    assert login(nginx, context, "127.0.0.6", ADMIN_PASSWORD, forwarded="127.0.0.5") == 200  # not taken for .5

    # The same nginx config in front of a daphne that does not trust it.
    stack = deployment.stack
    saved = dict(stack.env)
    stack.env.update(TRUSTED_PROXIES="", SECURE="0")  # SECURE=1 would redirect its every request
    try:
        untrusted = stack.start_server()
    finally:
        stack.env = saved
    other = start_nginx(deployment.tmp / "nginx-untrusted", deployment.cert, deployment.cert.with_suffix(".key"),
                        (untrusted.port, untrusted.port))  # fmt: skip
    try:
        statuses = [login(other, context, "127.0.0.7", "wrong-password") for _ in range(LIMIT)]
        assert statuses == [401] * LIMIT
        # 127.0.0.8 never failed, yet is locked out: the app sees nginx (127.0.0.1) for both.
        assert login(other, context, "127.0.0.8", ADMIN_PASSWORD) == 429
    finally:
        other.stop()
