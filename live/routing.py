"""The ASGI protocol router: HTTP to Django; ``/ws`` and the worker channel to ``live``."""

from __future__ import annotations

from typing import Any

from channels.routing import ProtocolTypeRouter


def build_application(http_app: Any) -> ProtocolTypeRouter:
    return ProtocolTypeRouter({"http": http_app})
