"""The WebSocket consumer at ``/ws``: one per socket, thin.

It authenticates (see ``live.auth``), says ``welcome``, resumes from the client's last
``seq`` when asked, and then receives stream frames from the process's hub (one message per
frame, or with ``?batch=1`` consecutive frames as one JSON array). Clients may
send only ``ping``, ``auth`` (renew the token in band), ``resume``, ``subscribe`` /
``unsubscribe`` (opt-in topics, ``live.topics``), ``presence`` (where the page is and what it
edits, ``live.presence``) and ``typing`` (on the console); nothing a client sends is ever
relayed to another client: what others see is the server's own summary (who, not what).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError

from live import auth, limits, revocation, topics
from live.bus import BATCH_FRAMES
from live.events import control, seq_of
from live.hub import CHANNEL_PREFIX, Batch, batch_text, get_hub
from live.presence import get_presence, parse
from live.server import EXTENSION
from rayanpbx import audiences, metrics

logger = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
# autobahn sends no 1011/1013 (only 1000 and 3000-4999 from a server): the 40xx twins.
CLOSE_SERVER_ERROR = 4011  # a send or a history read failed: reconnect and resume
CLOSE_FLOOD = 4008  # more client frames than the rate limit allows (daphne cannot send 1008)
#: Seconds before a session's expiry is checked again when the database did not answer.
SESSION_RECHECK = 30.0
CLOSE_TOO_SLOW = 4009  # more than LIVE_MAX_SOCKET_BUFFER waiting for this socket: resume

#: Seconds between two ``console.typing`` messages one socket may cause (more are dropped:
#: the indicator lasts longer than this, so nothing shows differently).
TYPING_EVERY = 0.5

#: Client frames allowed: a burst of ``RATE_BURST``, refilled at ``RATE_PER_SECOND``.
RATE_BURST = 30
RATE_PER_SECOND = 10.0


def _user_now(pk: Any) -> Any:
    """The user as the database holds it now (None once deleted)."""
    return get_user_model()._base_manager.filter(pk=pk).first()


_fresh_user = database_sync_to_async(_user_now)


@database_sync_to_async
def _fresh_rights(pk: Any) -> tuple[Any, frozenset[str]]:
    """The user now (None once deleted) and its audiences (``rayanpbx.audiences``)."""
    user = _user_now(pk)
    return user, audiences.of_user(user)


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
    #: ``?batch=1``: consecutive frames may come as one JSON array (``live.hub.Batch``).
    batched = False
    #: Set once the server has closed the socket: nothing is sent or handled after that.
    closed = False
    #: Topics this socket is subscribed to (live.topics); a layer channel only once it has one.
    topics: frozenset[str] = frozenset()
    _topic_channel: str | None = None
    _topic_task: asyncio.Task[None] | None = None
    _expiry: asyncio.TimerHandle | None = None
    _send_prepared: Any = None
    _expiring: asyncio.Task[None] | None = None
    _aborting: asyncio.Task[None] | None = None
    _session_key: str | None = None
    _typed_at = 0.0
    #: This socket's slot in its user's count (live.limits), once admitted.
    _slot: str | None = None
    revocation_groups: tuple[str, ...] = ()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # However the application ends (a disconnect, an error, daphne cancelling it without
        # a disconnect message), the socket leaves the hub and its topics: no hub entry or
        # group membership outlives its socket.
        try:
            await super().__call__(scope, receive, send)
        finally:
            get_hub().discard(self)
            get_presence().leave(self)
            if self._slot is not None:
                await get_hub().user_sockets.release(self.user.pk, self._slot)
            if self._expiry is not None:
                self._expiry.cancel()
            await self._leave_topics()

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
            if creds.close_code == limits.CLOSE_RATE:
                metrics.refused("rate")
            # A limit's refusal says why (the page shows it); the others' codes say it all.
            await self.close(creds.close_code, creds.reason if creds.close_code in limits.CODES else None)
            return
        self.user = creds.user
        self._session_key = creds.session_key
        # Closed by live.revocation when this user's access, or this session, ends.
        self.revocation_groups = (revocation.user_group(self.user.pk),) + (
            (revocation.session_group(creds.session_key),) if creds.session_key else ()
        )
        # ``?batch=1``: consecutive frames the hub has at once come as one JSON array.
        self.batched = _query_int(self.scope, "batch") == 1
        extension = self.scope.get("extensions", {}).get(EXTENSION)
        self._send_prepared = extension["send"] if extension else None
        self._tokens = float(RATE_BURST)
        self._tokens_at = time.monotonic()
        self._expire_at(creds.expires_at)

        hub = get_hub()
        await hub.start()
        slot = uuid.uuid4().hex
        refused = await hub.admit(self.user.pk, slot)
        if refused is not None:
            await self.close(*refused)
            return
        self._slot = slot
        resume_from = _query_int(self.scope, "last_seq")
        # From ``add`` on the hub may deliver, even while the welcome is being sent: a
        # resuming socket buffers from that moment, not only once ``_resume`` starts.
        self.replaying, self._buffer, self._resync_to = resume_from is not None, [], None
        hub.add(self)
        await hub.join(self)
        user = {"id": self.user.pk, "username": self.user.username, "is_staff": self.user.is_staff}
        welcome = {"message": "Connected to RayanPBX live events", "user": user, "sees": sorted(self.sees)}
        if resume_from is None:
            self.last_seq, self.replaying = hub.last_seq, False
            await self.send(control("welcome", welcome, self.last_seq))
        else:
            await self.send(control("welcome", welcome, max(resume_from, 0)))
            try:
                await self._resume(resume_from)
            except Exception:  # the history unreadable (Redis down): the client retries later
                logger.warning("Could not resume a socket from %s; closing it to retry", resume_from, exc_info=True)
                await self.close(CLOSE_SERVER_ERROR)

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

    @property
    def sees(self) -> frozenset[str]:
        """The user's audiences (rayanpbx.audiences): the hub frames restricted events per set."""
        return self.user.sees if self.user is not None else audiences.EVERYONE

    def abort(self) -> None:
        """A send failed: close with 4011 (the client reconnects and resumes from its seq)."""
        self._aborting = asyncio.get_running_loop().create_task(self._close_quietly(CLOSE_SERVER_ERROR))

    def revoke(self, code: int) -> None:
        """The user's access or this session ended (live.revocation): close with ``code``."""
        self._aborting = asyncio.get_running_loop().create_task(self._close_quietly(code))

    async def _close_quietly(self, code: int) -> None:
        # The socket may be broken already: then daphne has nothing to close and the hub
        # entry is gone anyway; nothing else can be done for it.
        with contextlib.suppress(Exception):
            await self.close(code)

    async def deliver(self, seq: int, message: dict[str, Any], prepared: Any = None) -> None:
        if self.closed:
            return
        if self.replaying:
            if len(self._buffer) >= settings.LIVE_HISTORY_SIZE:
                # A resume slower than the stream: past the history's worth of events the
                # client reloads (resync at the newest) rather than the buffer grow.
                self._buffer.clear()
                self._resync_to = seq
                return
            self._buffer.append((seq, message, prepared))
            return
        if seq <= self.last_seq:
            return
        if self._send_prepared is not None and prepared is not None:
            if not self._send_prepared(prepared):  # straight to the socket (see live.server)
                metrics.slow_close()
                await self.close(CLOSE_TOO_SLOW, "too slow: reconnect and resume from your last seq")
                return
        else:
            await self.base_send(message)
        self.last_seq = seq
        self.delivered = True

    async def deliver_batch(self, batch: Batch) -> None:
        """Consecutive frames as one message (a socket that asked for ``?batch=1``)."""
        if self.closed or batch.last <= self.last_seq:
            return
        if self.replaying or batch.first <= self.last_seq:  # (rare: around a resume) frame by frame
            for seq, message, prepared in batch.singles():
                await self.deliver(seq, message, prepared)
            return
        message, prepared = batch.combined()
        await self.deliver(batch.last, message, prepared)

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
            # The same rule as the live fan-out: what this user may not see comes as a
            # same-seq ``restricted`` frame (rayanpbx.audiences).
            fresh = [(seq, audiences.view(frame, self.sees)) for frame in frames if (seq := seq_of(frame)) > after]
            step = BATCH_FRAMES if self.batched else 1
            for start in range(0, len(fresh), step):
                chunk = fresh[start : start + step]
                self.last_seq = chunk[-1][0]
                await self.send(batch_text(chunk))
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
        handler = {
            "ping": self._on_ping,
            "auth": self._on_auth,
            "resume": self._on_resume,
            "subscribe": self._on_subscribe,
            "unsubscribe": self._on_unsubscribe,
            "presence": self._on_presence,
            "typing": self._on_typing,
        }.get(frame["type"])
        if handler is None:
            known = "ping, auth, resume, subscribe, unsubscribe, presence, typing"
            await self._error("unknown_type", f"Known types: {known}.")
            return
        await handler(frame)

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self.send(control("pong", {}, self.last_seq))

    async def _on_auth(self, frame: dict[str, Any]) -> None:
        raw = frame.get("token")
        if not isinstance(raw, str) or not raw:
            await self._error("invalid_token", 'Send {"type": "auth", "token": "<access token>"}.')
            return
        try:
            creds = await auth.check_token(raw, expected_user=self.user)
        except DatabaseError:  # an outage: the socket keeps its current expiry and may retry
            await self._error("unavailable", "The token cannot be checked now (database unavailable); retry shortly.")
            return
        if creds.close_code == auth.CLOSE_FORBIDDEN:
            await self.close(auth.CLOSE_FORBIDDEN)
            return
        if creds.close_code is not None:
            await self._error("invalid_token", f"Token not accepted: {creds.reason}.")
            return
        self._session_key = None  # from now on the token's expiry is the socket's
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

    # --- topics (live.topics) -------------------------------------------------------------

    async def _topic_names(self, frame: dict[str, Any]) -> list[str] | None:
        names = frame.get("topics")
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= topics.MAX_TOPICS
            or not all(isinstance(name, str) for name in names)
        ):
            await self._error("malformed", f'"topics" must be a list of 1 to {topics.MAX_TOPICS} topic names.')
            return None
        unknown = sorted({name for name in names if name not in topics.TOPICS})
        if unknown:
            known = ", ".join(topics.TOPICS)
            await self._error("unknown_topic", f"Unknown topic(s): {', '.join(unknown)[:200]}. Known: {known}.")
            return None
        return list(dict.fromkeys(names))

    async def _on_subscribe(self, frame: dict[str, Any]) -> None:
        names = await self._topic_names(frame)
        if names is None:
            return
        try:
            user = await _fresh_user(self.user.pk)  # rights as they are now, not at connect
        except DatabaseError:
            await self._error("unavailable", "Your rights cannot be checked now (database unavailable); retry shortly.")
            return
        allowed = [name for name in names if user is not None and topics.TOPICS[name].allowed(user)]
        refused = [name for name in names if name not in allowed]
        if refused:
            audiences = "; ".join(f"{name}: {topics.TOPICS[name].audience}" for name in refused)
            await self._error("forbidden_topic", f"Not allowed to subscribe to {', '.join(refused)} ({audiences}).")
        new = [name for name in allowed if name not in self.topics]
        if new:
            layer = get_channel_layer()
            if self._topic_channel is None:
                self._topic_channel = await layer.new_channel(CHANNEL_PREFIX)
                self._topic_task = asyncio.get_running_loop().create_task(self._topic_loop(layer, self._topic_channel))
            for name in new:
                await layer.group_add(topics.group(name), self._topic_channel)
            self.topics = self.topics | set(new)
        if allowed:
            await self.send(control("subscribed", {"topics": sorted(self.topics)}, self.last_seq))
        if "presence" in new:  # the state now; its changes follow on the topic
            try:
                state = await get_presence().current()
            except Exception:  # Redis unreachable: the next change or heartbeat brings the state
                logger.warning("Presence state unreadable for a new subscriber", exc_info=True)
            else:
                await self.send(json.dumps(topics.frame("presence", "presence.state", state), separators=(",", ":")))

    async def _on_unsubscribe(self, frame: dict[str, Any]) -> None:
        names = await self._topic_names(frame)
        if names is None:
            return
        await self._drop_topics([name for name in names if name in self.topics])
        await self.send(control("unsubscribed", {"topics": sorted(names), "reason": "asked"}, self.last_seq))

    async def _drop_topics(self, names: list[str]) -> None:
        if not names or self._topic_channel is None:
            return
        self.topics = self.topics - set(names)
        layer = get_channel_layer()
        for name in names:
            await layer.group_discard(topics.group(name), self._topic_channel)

    async def _leave_topics(self) -> None:
        if self._topic_task is not None:
            self._topic_task.cancel()
        # The layer unreachable at close: its group memberships expire on their own (a day).
        with contextlib.suppress(Exception):
            await self._drop_topics(sorted(self.topics))

    async def _topic_loop(self, layer: Any, channel: str) -> None:
        """This socket's layer channel: the messages of its topics, written to it."""
        try:
            while not self.closed:
                message = await layer.receive(channel)
                if message.get("type") == topics.MESSAGE and message.get("topic") in self.topics:
                    await self.send(json.dumps(message.get("frame"), separators=(",", ":")))
        except asyncio.CancelledError:
            raise
        except Exception:
            # The layer failed under this socket: close it (4011) so the client reconnects
            # and subscribes again, rather than stay subscribed and silent.
            logger.warning("A socket's topic channel failed; closing it so it reconnects", exc_info=True)
            await self._close_quietly(CLOSE_SERVER_ERROR)

    # --- presence and typing (live.presence) ---------------------------------------------

    async def _on_presence(self, frame: dict[str, Any]) -> None:
        report = parse(frame)
        if isinstance(report, str):
            await self._error("malformed", report)
            return
        get_presence().update(self, self.user, report)

    async def _on_typing(self, frame: dict[str, Any]) -> None:
        if frame.get("topic") != "console" or "console" not in self.topics:
            await self._error("not_subscribed", 'Send {"type": "typing", "topic": "console"} once subscribed to it.')
            return
        now = time.monotonic()
        if now - self._typed_at < TYPING_EVERY:
            return
        self._typed_at = now
        await topics.publish("console", "console.typing", {"user": self.user.username})

    def rights_changed(self) -> None:
        """The user's rights changed (live.revocation): check its audiences and topics again."""
        self._rechecking = asyncio.get_running_loop().create_task(self._recheck_rights())

    async def _recheck_rights(self) -> None:
        try:
            user, sees = await _fresh_rights(self.user.pk)
        except DatabaseError:
            # Its rights cannot be read now: close with "try again" (4013) rather than keep
            # sending by the old ones; the client reconnects with backoff, is checked afresh
            # then, and resumes from its seq (nothing lost).
            logger.warning("Could not re-check the rights of user %s; closing its socket", self.user.pk)
            await self._close_quietly(auth.CLOSE_TRY_AGAIN)
            return
        lost = sorted(name for name in self.topics if user is None or not topics.TOPICS[name].allowed(user))
        if lost and not self.closed:
            await self._drop_topics(lost)
            reason = "your rights changed"
            await self.send(control("unsubscribed", {"topics": lost, "reason": reason}, self.last_seq))
        if sees != self.sees and not self.closed:
            # From the next frame on the hub frames events for the new set; what the page
            # holds was drawn for the old one, so it reloads (resync at the current seq):
            # a user who gained a right sees at once what it now may, one who lost it no
            # longer holds what it may not.
            # ``reload``: a page drew its sections for the old rights; it reloads whole.
            self.user = self.user._replace(sees=sees)
            reason = "your rights changed; reload the page"
            await self.send(control("resync", {"reason": reason, "reload": True}, self.last_seq))

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
        self._expiring = asyncio.get_running_loop().create_task(self._expired())

    async def _expired(self) -> None:
        if self._session_key is not None:
            # A session's expiry can move (a later request saved it): look again.
            try:
                creds = await auth.check_session(self._session_key)
            except DatabaseError:  # cannot tell now: the socket stays, and asks again soon
                self._expire_at(time.time() + SESSION_RECHECK)
                return
            if creds.user is not None and creds.user.pk == self.user.pk and creds.expires_at > time.time():
                self._expire_at(creds.expires_at)
                return
        await self.close(auth.CLOSE_EXPIRED)
