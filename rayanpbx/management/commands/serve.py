"""``manage.py serve``: run daphne (UI, API and WebSocket on one port) with our settings.

Listens on ``HOST``:``PORT``; ``--port``/``--host`` override them. A client WebSocket
message over 64 KiB is refused by the protocol layer itself, before it is buffered, with
close code 1009 (see ``_ClosingWebSocketFactory``).
"""

from __future__ import annotations

from typing import Any

import daphne.server
from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class _ClosingWebSocketFactory(WebSocketFactory):
    """Daphne's factory, but protocol violations (such as an oversized message) end with a
    close frame carrying the RFC 6455 code (1009 "message too big") instead of a silently
    dropped TCP connection, so clients can tell what happened."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setProtocolOptions(failByDrop=False)


class Command(BaseCommand):
    help = "Serve RayanPBX (UI, REST API and WebSocket) with daphne."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--proxy-headers", action="store_true", help="Trust X-Forwarded-For/-Proto.")

    def handle(self, *args: Any, host: str, port: int, proxy_headers: bool, **options: Any) -> None:
        self.stdout.write(f"RayanPBX on http://{host}:{port}/ (Ctrl-C stops it)")
        self.stdout.flush()
        daphne.server.WebSocketFactory = _ClosingWebSocketFactory
        limit = str(settings.LIVE_MAX_CLIENT_FRAME)
        argv = [
            "--bind", host,
            "--port", str(port),
            "--websocket-max-message-size", limit,
            "--websocket-max-frame-size", limit,
            "--application-close-timeout", "5",
        ]  # fmt: skip
        if proxy_headers:
            argv.append("--proxy-headers")
        CommandLineInterface().run([*argv, settings.ASGI_APPLICATION.replace(".application", ":application")])
