"""The ASGI protocol router: HTTP to Django; ``/ws`` and the worker channel to ``live``."""

from __future__ import annotations

from typing import Any

from channels.routing import ChannelNameRouter, ProtocolTypeRouter
from django.conf import settings

from live.consumers import LiveConsumer
from live.origin import WebSocketGate
from live.worker import PollerConsumer


def build_application(http_app: Any) -> ProtocolTypeRouter:
    return ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": WebSocketGate(LiveConsumer.as_asgi(), path="/ws"),
            "channel": ChannelNameRouter({settings.LIVE_WORKER_CHANNEL: PollerConsumer.as_asgi()}),
        }
    )
