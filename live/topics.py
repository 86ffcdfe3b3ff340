"""Opt-in topics beside the numbered stream: ``logs``, ``console``, ``presence``, ``traffic``.

A socket gets the numbered stream (configuration, PBX state, counts) whatever it does. It
may also subscribe to topics (``{"type": "subscribe", "topics": ["logs"]}``, and leave them
with ``unsubscribe``). A topic's messages are not numbered and not part of the resumable
stream: a page reads a topic's recent past from REST when it opens, then follows it live.

Topics travel on Channels' channel layer, which is what it is for: one group per topic
(``rayanpbx.topic.<name>``); a socket that subscribes takes a layer channel of its own and
joins the group; a socket that never subscribes has no channel and no receive loop, so it
costs exactly what it did before topics existed.

Each topic has an audience, checked at subscribe and again whenever the user's rights
change (``live.revocation`` sends ``live.rights`` to the user's group on every process; the
hub hands it to that user's sockets, which drop what they may no longer see within a second).

Bounds: a socket's layer channel holds at most the layer's ``capacity`` messages (100 by
default) waiting for it; beyond that the layer drops messages for that socket (channels'
``group_send`` skips a full channel). A topic whose every message matters says so in its
messages (the logs topic's "n lines skipped").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

#: The layer message a topic's group receives (``LiveConsumer.live_topic``).
MESSAGE = "live.topic"
#: Topics one socket may hold, and the longest topic list one frame may carry.
MAX_TOPICS = 8


@dataclass(frozen=True)
class Topic:
    name: str
    audience: str  # as documented in docs/live-events.md
    allowed: Callable[[Any], bool]


def _staff(user: Any) -> bool:
    return bool(user.is_active and user.is_staff)


def _console(user: Any) -> bool:
    return bool(user.is_active and user.is_superuser and settings.PBX_CONSOLE)


def _signed_in(user: Any) -> bool:
    return bool(user.is_active)


TOPICS: dict[str, Topic] = {
    topic.name: topic
    for topic in (
        Topic("logs", "staff", _staff),
        Topic("console", "superusers, with PBX_CONSOLE=1", _console),
        Topic("presence", "every signed-in user", _signed_in),
        Topic("traffic", "every signed-in user", _signed_in),
        Topic("audit", "staff", _staff),
    )
}


def group(name: str) -> str:
    return f"rayanpbx.topic.{name}"


def frame(topic: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A topic frame: the stream's envelope with ``topic`` and without ``seq``."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    return {"topic": topic, "type": type_, "payload": payload, "timestamp": stamp}


async def publish(topic: str, type_: str, payload: dict[str, Any]) -> None:
    """Send one message to every socket subscribed to ``topic``, on every process."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(group(topic), {"type": MESSAGE, "topic": topic, "frame": frame(topic, type_, payload)})


#: The longest a request waits to hand a topic message to the layer. Topics are not the
#: numbered stream (a page reads their past from REST), so a layer that does not answer (Redis
#: blackholed: channels_redis has no timeouts) costs the message, never the request.
PUBLISH_TIMEOUT = 0.5


def publish_now(topic: str, type_: str, payload: dict[str, Any]) -> None:
    """``publish`` from synchronous code (a request thread, a shell), waiting at most
    ``PUBLISH_TIMEOUT``; raises ``TimeoutError`` past it (the message is dropped)."""

    async def bounded() -> None:
        await asyncio.wait_for(publish(topic, type_, payload), PUBLISH_TIMEOUT)

    async_to_sync(bounded)()
