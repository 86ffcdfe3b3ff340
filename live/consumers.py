"""The WebSocket consumer at ``/ws``: one per socket, thin.

It authenticates (see ``live.auth``), says ``welcome``, resumes from the client's last
``seq`` when asked, and then receives stream frames from the process's hub. Clients may
send only ``ping``, ``auth`` (renew the token in band) and ``resume``; nothing a client
sends is ever relayed to another client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from live import auth
from live.events import control, seq_of
from live.hub import get_hub
from live.server import EXTENSION

logger = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
CLOSE_FLOOD = 4008  # more client frames than the rate limit allows (daphne cannot send 1008)

#: Client frames allowed: a burst of ``RATE_BURST``, refilled at ``RATE_PER_SECOND``.
RATE_BURST = 30
RATE_PER_SECOND = 10.0


def _query_int(scope: dict[str, Any], name: str) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return -1
    return value


def _size(text_data: str | None, bytes_data: bytes | None) -> int:
    """A frame's size on the wire in bytes (a text frame is UTF-8: a character may be 4)."""
    if text_data is None:
        return len(bytes_data or b"")
    if len(text_data) > settings.LIVE_MAX_CLIENT_FRAME:  # too big whatever the encoding
        return len(text_data)
    return len(text_data.encode("utf-8", "surrogatepass"))


class LiveConsumer(AsyncWebsocketConsumer):
    # Events arrive through the process's hub, not through a channel per socket: no
    # channel-layer alias means no per-socket channel, receive loop or Redis traffic.
    channel_layer_alias = None

    user: Any = None
    last_seq = 0
    replaying = True
    delivered = False
    resumed = False
    #: Set once the server has closed the socket: nothing is sent or handled after that.
    closed = False
    _expiry: asyncio.TimerHandle | None = None
    _send_prepared: Any = None
    _expiring: asyncio.Task[None] | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels closes stale DB connections (a thread hop) before every message; this
        # consumer touches the database only through database_sync_to_async, which does that.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        creds: auth.Credentials = self.scope["live_auth"]
        offered = self.scope.get("subprotocols", [])
        await self.accept(auth.SUBPROTOCOL if auth.SUBPROTOCOL in offered else None)
        if creds.close_code is not None:
            await self.close(creds.close_code)
            return
        self.user = creds.user
        extension = self.scope.get("extensions", {}).get(EXTENSION)
        self._send_prepared = extension["send"] if extension else None
        self._tokens = float(RATE_BURST)
        self._tokens_at = time.monotonic()
        self._expire_at(creds.expires_at)

        hub = get_hub()
        await hub.start()
        resume_from = _query_int(self.scope, "last_seq")
        # From ``add`` on the hub may deliver, even while the welcome is being sent: a
        # resuming socket buffers from that moment, not only once ``_resume`` starts.
        self.replaying, self._buffer, self._resync_to = resume_from is not None, [], None
        hub.add(self)
        user = {"id": self.user.pk, "username": self.user.username, "is_staff": self.user.is_staff}
        welcome = {"message": "Connected to RayanPBX live events", "user": user}
        if resume_from is None:
            self.last_seq, self.replaying = hub.last_seq, False
            await self.send(control("welcome", welcome, self.last_seq))
        else:
            await self.send(control("welcome", welcome, max(resume_from, 0)))
            await self._resume(resume_from)

    async def disconnect(self, code: int) -> None:
        get_hub().discard(self)
        if self._expiry is not None:
            self._expiry.cancel()

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close once. A closed socket leaves the hub and sends nothing more (RFC 6455: no
        data after a close frame): no events after 4002, no answers after 1009 or 4008."""
        if self.closed:
            return
        self.closed = True
        get_hub().discard(self)
        if self._expiry is not None:
            self._expiry.cancel()
        await super().close(code, reason)

    # --- from the hub ---------------------------------------------------------------------

    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any = None) -> None:
        if self.closed:
            return
        if self.replaying:
            self._buffer.append((seq, message, prepared))
            return
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        self.delivered = True
        if self._send_prepared is not None and prepared is not None:
            self._send_prepared(prepared)  # straight to the socket (see live.server)
        else:
            await self.base_send(message)

    async def resync(self, seq: int) -> None:
        if self.closed:
            return
        if self.replaying:
            self._resync_to = seq
            return
        self.last_seq = seq
        await self.send(control("resync", {"reason": "events were lost; reload from the REST API"}, seq))

    async def _resume(self, after: int) -> None:
        """Send every event after ``after`` in order, then hand over to the live stream."""
        self.replaying = True  # keeps what ``connect`` may have buffered already
        self.resumed = True
        current, frames = (
            await get_hub().bus.history_after(after) if after >= 0 else (await get_hub().bus.position(), None)
        )
        if self.closed:  # expired while reading the history
            return
        if frames is None:
            self.last_seq = current
            await self.send(control("resync", {"reason": "last_seq is older than the event history"}, current))
        else:
            self.last_seq = after
            for frame in frames:
                seq = seq_of(frame)
                if seq > self.last_seq:
                    self.last_seq = seq
                    await self.send(frame)
        if self._resync_to is not None and self._resync_to > self.last_seq:
            self.last_seq = self._resync_to
            await self.send(control("resync", {"reason": "events were lost; reload from the REST API"}, self.last_seq))
        buffered, self._buffer = self._buffer, []
        self.replaying = False
        for seq, message, prepared in buffered:
            await self.deliver(seq, message, prepared)

    # --- from the client ------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closed:
            return
        if not self._take_token():
            await self.close(CLOSE_FLOOD)
            return
        if _size(text_data, bytes_data) > settings.LIVE_MAX_CLIENT_FRAME:
            await self.close(CLOSE_TOO_BIG)
            return
        if text_data is None:
            await self._error("binary_unsupported", "Send JSON text frames.")
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: nesting too deep to decode
            await self._error("malformed", "Frames must be JSON objects.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._error("malformed", 'Frames must be JSON objects with a string "type".')
            return
        handler = {"ping": self._on_ping, "auth": self._on_auth, "resume": self._on_resume}.get(frame["type"])
        if handler is None:
            await self._error("unknown_type", "Known types: ping, auth, resume.")
            return
        await handler(frame)

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self.send(control("pong", {}, self.last_seq))

    async def _on_auth(self, frame: dict[str, Any]) -> None:
        raw = frame.get("token")
        if not isinstance(raw, str) or not raw:
            await self._error("invalid_token", 'Send {"type": "auth", "token": "<access token>"}.')
            return
        creds = await auth.check_token(raw, expected_user=self.user)
        if creds.close_code == auth.CLOSE_FORBIDDEN:
            await self.close(auth.CLOSE_FORBIDDEN)
            return
        if creds.close_code is not None:
            await self._error("invalid_token", f"Token not accepted: {creds.reason}.")
            return
        self._expire_at(creds.expires_at)
        await self.send(control("auth.ok", {"expires_at": creds.expires_at}, self.last_seq))

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        after = frame.get("last_seq")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self._error("malformed", '"last_seq" must be a non-negative integer.')
            return
        if self.resumed or self.delivered or after > self.last_seq:
            # Events after the requested position were already streamed: they cannot be
            # put back in order, so the client reloads instead.
            await self.resync(get_hub().last_seq)
            return
        await self._resume(after)

    # --- helpers --------------------------------------------------------------------------

    async def _error(self, code: str, message: str) -> None:
        await self.send(control("error", {"code": code, "message": message}, self.last_seq))

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(RATE_BURST, self._tokens + (now - self._tokens_at) * RATE_PER_SECOND)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _expire_at(self, expires_at: float | None) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if expires_at is not None:
            delay = max(0.0, expires_at - time.time())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self._expire)

    def _expire(self) -> None:
        # Keep a reference: the event loop holds only a weak one to a running task.
        self._expiring = asyncio.get_running_loop().create_task(self.close(auth.CLOSE_EXPIRED))
