"""``manage.py serve``: run daphne (UI, API and WebSocket on one port) with our settings.

Listens on ``HOST``:``PORT``; ``--port``/``--host`` override them. With ``TLS_CERT_FILE``
and ``TLS_KEY_FILE`` set it serves HTTPS and WSS on that port (and nothing in clear): both
files are read and checked (the key must match the certificate) before daphne starts, and an
unreadable or mismatched file stops start-up naming its variable. A certificate file holding
a chain (Let's Encrypt's ``fullchain.pem``) sends the chain too. A client WebSocket
message over 64 KiB is refused by the protocol layer itself, before it is buffered, with
close code 1009; the live layer writes events straight to the sockets (see ``live.server``).

Behind a reverse proxy, set ``TRUSTED_PROXIES``: the client address and scheme are then
taken from ``X-Forwarded-For``/``-Proto`` of those proxies only (``rayanpbx.proxies``).
Daphne's own ``--proxy-headers`` is never passed: it believes the left-most
``X-Forwarded-For`` entry from any peer, which lets a client pick its address (and escape
the login throttle). ``--proxy-headers`` is still accepted here, and only warns.

Daphne's access log writes each HTTP request's whole URI, query string included: a token
sent as ``?token=`` (or ``access_token``, ``refresh``) is logged here as ``token=[redacted]``
instead, as is any WebSocket path.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from live.server import LiveCommandLineInterface

#: Query parameters whose values never reach a log.
_SECRET_PARAMS = re.compile(r"([?&;](?:token|access_token|access|refresh|password|secret)=)[^&;#\s]*", re.IGNORECASE)


def redact(path: str) -> str:
    """``/ws?last_seq=5&token=eyJ...`` → ``/ws?last_seq=5&token=[redacted]``."""
    return _SECRET_PARAMS.sub(r"\1[redacted]", path)


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def _endpoint_value(value: str) -> str:
    """Escape a value for a Twisted endpoint string (``:`` separates its fields)."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def _read(name: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"{name}: cannot read {path!r}: {exc.strerror or exc}") from None


def tls_endpoint(host: str, port: int, cert_file: str, key_file: str, data_dir: Path) -> str:
    """The Twisted endpoint string serving TLS on ``host``:``port`` from these files.

    Checks first that both files are readable, hold PEM, and that the key is the
    certificate's: each failure raises ``CommandError`` naming ``TLS_CERT_FILE`` or
    ``TLS_KEY_FILE``. The certificates after the first in ``cert_file`` (the chain) are
    copied to ``data_dir/tls-chain.pem`` for Twisted's ``extraCertChain``.
    """
    from OpenSSL import SSL, crypto

    cert_pem, key_pem = _read("TLS_CERT_FILE", cert_file), _read("TLS_KEY_FILE", key_file)
    certificates = _PEM_CERTIFICATE.findall(cert_pem)
    if not certificates:
        raise CommandError(f"TLS_CERT_FILE: {cert_file!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----).")
    try:
        certificate = crypto.load_certificate(crypto.FILETYPE_PEM, certificates[0])
    except crypto.Error as exc:
        raise CommandError(f"TLS_CERT_FILE: {cert_file!r} is not a valid PEM certificate: {exc}") from None
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    except crypto.Error:
        # The library's message may quote the file; a key's bytes never reach a log.
        raise CommandError(
            f"TLS_KEY_FILE: {key_file!r} is not an unencrypted PEM private key (a passphrase is not supported)."
        ) from None
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate(certificate)
    try:
        context.use_privatekey(key)  # raises on a key that is not the certificate's
        context.check_privatekey()
    except SSL.Error:
        raise CommandError(
            f"TLS_KEY_FILE: {key_file!r} is not the private key of TLS_CERT_FILE {cert_file!r}."
        ) from None
    fields = [
        f"ssl:port={port}",
        f"interface={_endpoint_value(host.strip('[]'))}",
        f"privateKey={_endpoint_value(key_file)}",
        f"certKey={_endpoint_value(cert_file)}",
    ]
    if len(certificates) > 1:
        chain = data_dir / "tls-chain.pem"
        chain.write_bytes(b"\n".join(certificates[1:]) + b"\n")
        fields.append(f"extraCertChain={_endpoint_value(str(chain))}")
    return ":".join(fields)


class RedactingAccessLog:
    """Wraps daphne's access log (its ``action_logger``): paths are redacted first."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if isinstance(details.get("path"), str):
            details = {**details, "path": redact(details["path"])}
        self.logger(protocol, action, details)


class _Server(LiveCommandLineInterface.server_class):
    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, action_logger=RedactingAccessLog(action_logger) if action_logger else None, **kwargs)


class _CommandLineInterface(LiveCommandLineInterface):
    server_class = _Server


class Command(BaseCommand):
    help = "Serve RayanPBX (UI, REST API and WebSocket) with daphne."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--proxy-headers",
            action="store_true",
            help="Ignored (kept for old scripts): forwarding headers are trusted from TRUSTED_PROXIES only.",
        )

    def handle(self, *args: Any, host: str, port: int, proxy_headers: bool, **options: Any) -> None:
        if settings.TLS_CERT_FILE:
            endpoint = tls_endpoint(host, port, settings.TLS_CERT_FILE, settings.TLS_KEY_FILE, settings.DATA_DIR)
            binding, scheme = ["--endpoint", endpoint], "https"
        else:
            binding, scheme = ["--bind", host, "--port", str(port)], "http"
        shown = f"[{host.strip('[]')}]" if ":" in host else host
        self.stdout.write(f"RayanPBX on {scheme}://{shown}:{port}/ (Ctrl-C stops it)")
        self.stdout.flush()
        limit = str(settings.LIVE_MAX_CLIENT_FRAME)
        argv = [
            *binding,
            "--websocket-max-message-size", limit,
            "--websocket-max-frame-size", limit,
            "--application-close-timeout", "5",
        ]  # fmt: skip
        if proxy_headers:
            trusted = ", ".join(str(network) for network in settings.TRUSTED_PROXIES) or "none"
            self.stderr.write(
                "--proxy-headers is ignored: X-Forwarded-For/-Proto are believed only from "
                f"TRUSTED_PROXIES (now: {trusted})."
            )
        _CommandLineInterface().run([*argv, settings.ASGI_APPLICATION.replace(".application", ":application")])
