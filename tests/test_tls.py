"""``manage.py serve`` with ``TLS_CERT_FILE``/``TLS_KEY_FILE``: HTTPS and WSS from daphne itself.

Certificates are made by ``openssl`` at test time (an EC P-256 self-signed one for
``localhost``/``127.0.0.1``, and a root → intermediate → server chain); clients trust only
the test CA, so a handshake succeeds only with the certificate the server was given.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.services import missing, redis_url
from tests.stack import ADMIN_PASSWORD, ROOT, Server, Stack, free_port

pytestmark = pytest.mark.services

OPENSSL = "openssl"
TIMEOUT = 10.0


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        missing("openssl", "the openssl command is not installed (apt-get install openssl)")


def make_certificate(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed EC certificate for localhost and 127.0.0.1 (valid one day): (cert, key).
    Being self-signed, the certificate is also the CA a client trusts."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert), cwd=directory,
    )  # fmt: skip
    return cert, key


def make_chain(directory: Path) -> tuple[Path, Path, Path]:
    """A root CA, an intermediate CA it signs, and a server certificate the intermediate
    signs: (root CA, ``fullchain.pem`` = server + intermediate, server key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    ca_ext = directory / "ca.ext"
    ca_ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    server_ext = directory / "server.ext"
    server_ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=Test Root", "-addext",
             "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", "root.key", "-out", "root.crt", cwd=directory)  # fmt: skip
    _openssl("req", *ec, "-subj", "/CN=Test Intermediate", "-keyout", "mid.key", "-out", "mid.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "mid.csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
             "-days", "1", "-extfile", str(ca_ext), "-out", "mid.crt", cwd=directory)  # fmt: skip
    _openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr", cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "mid.crt", "-CAkey", "mid.key", "-CAcreateserial",
             "-days", "1", "-extfile", str(server_ext), "-out", "server.crt", cwd=directory)  # fmt: skip
    fullchain = directory / "fullchain.pem"
    fullchain.write_bytes((directory / "server.crt").read_bytes() + (directory / "mid.crt").read_bytes())
    return directory / "root.crt", fullchain, directory / "server.key"


def trusting(ca: Path) -> ssl.SSLContext:
    """A client context that trusts ``ca`` only (hostname checked)."""
    return ssl.create_default_context(cafile=str(ca))


def https(
    url: str, context: ssl.SSLContext, method: str = "GET", body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def start_tls_server(stack: Stack, context: ssl.SSLContext) -> Server:
    """``manage.py serve`` on a free port (TLS from the stack's env); waits for /health over HTTPS."""
    return stack.start_server(probe=lambda server: https(f"https://localhost:{server.port}/health", context)[0] == 200)


def serve_fails(tmp: Path, **env: str) -> str:
    """Run ``manage.py serve`` with these settings, expecting it to stop at once: its output."""
    import os

    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ.update(RAYANPBX_DATA_DIR=str(tmp), SECRET_KEY="test-secret-key-" + "x" * 40, **env)
    done = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(free_port())], cwd=ROOT, env=environ,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


# --- HTTPS and WSS ---------------------------------------------------------------------------


@pytest.fixture
def tls_stack(tmp_path: Path) -> Iterator[tuple[Stack, Server, ssl.SSLContext]]:
    cert, key = make_certificate(tmp_path / "tls")
    stack = Stack(tmp_path, env={"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)})
    context = trusting(cert)
    try:
        yield stack, start_tls_server(stack, context), context
    finally:
        stack.close()


async def test_https_and_wss_with_the_test_ca_trusted(tls_stack) -> None:
    _, server, context = tls_stack
    base = f"https://localhost:{server.port}"
    status, body = await asyncio.to_thread(https, f"{base}/health", context)
    assert status == 200 and body["status"] == "healthy"
    # Nothing in clear on that port, and a client that does not trust the CA is refused.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=TIMEOUT).read()
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"{base}/health", timeout=TIMEOUT, context=ssl.create_default_context()).read()
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)

    status, body = await asyncio.to_thread(
        https, f"{base}/api/auth/login", context, "POST", {"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert status == 200, body
    token = body["access"]
    async with websockets.connect(
        f"wss://localhost:{server.port}/ws", ssl=context, subprotocols=["rayanpbx", f"bearer.{token}"],
        open_timeout=TIMEOUT,
    ) as socket_:  # fmt: skip
        welcome = json.loads(await asyncio.wait_for(socket_.recv(), TIMEOUT))
        assert welcome["type"] == "welcome"
        status, created = await asyncio.to_thread(
            https, f"{base}/api/extensions", context, "POST", {"extension_number": "7001", "name": "TLS"}, token
        )
        assert status == 201, created
        while True:
            frame = json.loads(await asyncio.wait_for(socket_.recv(), TIMEOUT))
            if frame["type"] == "extension.created":
                break
        assert frame["payload"]["extension_number"] == "7001"
        assert frame["seq"] > welcome["seq"]
    assert "https://" in server.log.read_text()  # serve says where it listens, scheme included


def test_a_certificate_chain_is_sent_whole(tmp_path: Path) -> None:
    """fullchain.pem (server + intermediate): a client trusting only the root verifies."""
    root, fullchain, key = make_chain(tmp_path / "tls")
    stack = Stack(tmp_path, env={"TLS_CERT_FILE": str(fullchain), "TLS_KEY_FILE": str(key)})
    try:
        server = start_tls_server(stack, trusting(root))
        status, _ = https(f"https://localhost:{server.port}/health", trusting(root))
        assert status == 200
        # Verified against the root alone: only possible with the intermediate sent.
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as raw,
            trusting(root).wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.getpeercert()["subject"] == ((("commonName", "localhost"),),)
    finally:
        stack.close()


# --- start-up refuses bad files, naming the variable --------------------------------------


def test_unreadable_missing_or_mismatched_files_stop_serve(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path / "a", "one")
    other_cert, other_key = make_certificate(tmp_path / "b", "two")
    missing_key = serve_fails(tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(tmp_path / "nope.key"))
    assert "TLS_KEY_FILE" in missing_key and "nope.key" in missing_key and "Traceback" not in missing_key
    missing_cert = serve_fails(tmp_path, TLS_CERT_FILE=str(tmp_path / "nope.crt"), TLS_KEY_FILE=str(key))
    assert "TLS_CERT_FILE" in missing_cert and "nope.crt" in missing_cert
    only_one = serve_fails(tmp_path, TLS_CERT_FILE=str(cert))
    assert "TLS_CERT_FILE and TLS_KEY_FILE" in only_one and "TLS_CERT_FILE" in only_one
    mismatched = serve_fails(tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(other_key))
    assert "TLS_KEY_FILE" in mismatched and "is not the private key" in mismatched
    swapped = serve_fails(tmp_path, TLS_CERT_FILE=str(key), TLS_KEY_FILE=str(cert))
    assert "TLS_CERT_FILE" in swapped and "no PEM certificate" in swapped
    # The key's bytes never reach the output.
    key_body = "".join(key.read_text().splitlines()[1:-1])[:40]
    assert key_body not in missing_key + mismatched + swapped
    assert other_cert.exists()


# --- the per-socket bound holds under TLS ---------------------------------------------------


BOUND = 256 * 1024
EVENTS = 2000


def _burst(stack: Stack) -> None:
    stack.shell(
        "from live.publisher import publish_events\n"
        "contact = lambda n, i: {'uri': f'sip:{n}@192.0.2.{i}:5060', 'ip': f'192.0.2.{i}', 'port': 5060,"
        " 'user_agent': 'Phone firmware ' + 'x' * 500, 'rtt_ms': 1.5, 'expires_at': None}\n"
        "publish_events([('extension.registration', {'extension_number': str(n), 'state': 'registered',"
        f" 'contacts': [contact(n, i) for i in range(5)]}}) for n in range({EVENTS})])\n"
    )


async def test_a_tls_socket_that_does_not_read_is_closed_4009(tmp_path: Path) -> None:
    """The encrypted bytes waiting under the TLS wrapper count towards LIVE_MAX_SOCKET_BUFFER."""
    cert, key = make_certificate(tmp_path / "tls")
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "LIVE_MAX_SOCKET_BUFFER": str(BOUND)}
    stack = Stack(tmp_path, redis_url=redis_url(), env=env)
    context = trusting(cert)
    try:
        server = start_tls_server(stack, context)
        _, body = https(
            f"https://localhost:{server.port}/api/auth/login", context, "POST",
            {"username": "admin", "password": ADMIN_PASSWORD},
        )  # fmt: skip
        protocols = ["rayanpbx", f"bearer.{body['access']}"]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        url = f"wss://localhost:{server.port}/ws"
        async with (
            websockets.connect(url, ssl=context, subprotocols=protocols, open_timeout=TIMEOUT) as healthy,
            websockets.connect(
                url, ssl=context, subprotocols=protocols, open_timeout=TIMEOUT, sock=sock,
                server_hostname="localhost", max_queue=1,
            ) as slow,
        ):  # fmt: skip
            start = json.loads(await healthy.recv())["seq"]
            assert json.loads(await slow.recv())["seq"] == start
            publishing = asyncio.create_task(asyncio.to_thread(_burst, stack))
            received = [json.loads(await asyncio.wait_for(healthy.recv(), 30))["seq"] for _ in range(EVENTS)]
            await publishing
            assert received == list(range(start + 1, start + EVENTS + 1))
            seen = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    seen.append(json.loads(await asyncio.wait_for(slow.recv(), 10))["seq"])
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4009, closed.value
            assert len(seen) < EVENTS, "the bound did not apply over TLS"
            assert seen == list(range(start + 1, start + 1 + len(seen)))
        assert "Traceback" not in server.log.read_text()
    finally:
        stack.close()
