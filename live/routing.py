"""The ASGI protocol router: HTTP to Django; ``/ws`` and the worker channel to ``live``."""

from __future__ import annotations

from typing import Any

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from channels.sessions import SessionMiddlewareStack
from django.conf import settings
from django.urls import re_path

from live.auth import CredentialsMiddleware
from live.consumers import LiveConsumer
from live.origin import OriginGuard
from live.worker import PollerConsumer


def build_application(http_app: Any) -> ProtocolTypeRouter:
    websocket = OriginGuard(
        SessionMiddlewareStack(CredentialsMiddleware(URLRouter([re_path(r"^ws/?$", LiveConsumer.as_asgi())])))
    )
    return ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": websocket,
            "channel": ChannelNameRouter({settings.LIVE_WORKER_CHANNEL: PollerConsumer.as_asgi()}),
        }
    )
