"""``manage.py serve``: run daphne (UI, API and WebSocket on one port) with our settings.

Listens on ``HOST``:``PORT``; ``--port``/``--host`` override them. A client WebSocket
message over 64 KiB is refused by the protocol layer itself, before it is buffered, with
close code 1009; the live layer writes events straight to the sockets (see ``live.server``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from live.server import LiveCommandLineInterface


class Command(BaseCommand):
    help = "Serve RayanPBX (UI, REST API and WebSocket) with daphne."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument("--proxy-headers", action="store_true", help="Trust X-Forwarded-For/-Proto.")

    def handle(self, *args: Any, host: str, port: int, proxy_headers: bool, **options: Any) -> None:
        self.stdout.write(f"RayanPBX on http://{host}:{port}/ (Ctrl-C stops it)")
        self.stdout.flush()
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
        LiveCommandLineInterface().run([*argv, settings.ASGI_APPLICATION.replace(".application", ":application")])
