"""An asyncio client for the Asterisk Manager Interface (AMI) that keeps one link alive.

:class:`AmiClient` connects, logs in, reads frames, pings, and reconnects for as long as
``run()`` runs. Callers use it in three ways:

* ``await client.action("CoreStatus")`` / ``await client.action_list("PJSIPShowEndpoints")``
  send one action and wait for its answer, matched by ActionID. An action never hangs: it
  fails with :class:`AmiTimeout` after ``action_timeout`` seconds, and at once with
  :class:`AmiConnectionLost` when the link is down or drops while it is in flight.
* ``add_event_listener(cb)``: ``cb(message)`` is called for every unsolicited event. Event
  listeners are plain functions and must be fast (hand real work to a task): they run on a
  dispatcher task, apart from the reader, which hands the loop back every few milliseconds,
  so a burst of events (one bad SIP client makes 15 in 5 ms) does not hold up responses or
  Pings queued behind it. When listeners fall more than ``max_event_backlog`` events
  behind, newer events are dropped with a warning, and once the backlog has drained the
  connect listeners run, so that the caller re-reads what it missed.
* ``add_connect_listener(cb)``: ``await cb()`` after each login and after each
  ``FullyBooted`` event. After a restart Asterisk accepts the login before it has finished
  booting (transcript 09), so the caller re-reads everything at both moments. Requests that
  come while the listeners have not started yet are merged into one run.

``state`` is ``"connecting"`` from ``run()`` until the first attempt has succeeded or
failed, then ``"connected"`` or ``"disconnected"``; while reconnecting it stays
``"disconnected"`` and ``error`` says why (``since`` is when the link went down, not when
the last attempt failed). The secret is sent in the Login action and never logged.

Why not a library (surveyed on PyPI): panoramisk 1.4 (last release 2021) parks actions
that are in flight at a disconnect to resend them after a reconnect, so their futures hang
while Asterisk is down, and it decodes the stream as ASCII, dropping other bytes; astami 1.1
reads responses inline and throws away the events in between, and does not reconnect;
asterisk-ami 0.1.7 is thread-based and aiopyami 0.1.4 does not collect event lists. None
fails in-flight actions fast, so this module is ours; the wire format is in
:mod:`pbx.ami_protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from pbx.ami_protocol import FrameParser, Message, describe_action, encode_action
from rayanpbx import metrics

__all__ = [
    "AmiAuthFailed",
    "AmiClient",
    "AmiConnectionLost",
    "AmiError",
    "AmiTimeout",
    "Backoff",
    "FrameParser",
    "Message",
]

logger = logging.getLogger("pbx.ami")

READ_SIZE = 256 * 1024
#: How long the dispatcher calls listeners before it lets the reader and actions run.
DISPATCH_SLICE = 0.005
#: `Response: Error` texts that mean "the list is empty", e.g. "No endpoints found".
EMPTY_LIST_ERROR = re.compile(r"^\s*no\b.*\bfound\b", re.IGNORECASE)

EventListener = Callable[[Message], None]
ConnectListener = Callable[[], Awaitable[None]]
StateListener = Callable[[str, "str | None"], None]


class AmiError(Exception):
    """An action failed; ``response`` is Asterisk's `Response: Error` frame when there is one."""

    def __init__(self, text: str, response: Message | None = None) -> None:
        super().__init__(text)
        self.response = response


class AmiTimeout(AmiError):
    """No answer within the action's timeout."""


class AmiConnectionLost(AmiError):
    """Not connected, or the link dropped while the action was in flight."""


class AmiAuthFailed(AmiError):
    """Asterisk refused the username or secret (a configuration error, retried slowly)."""


class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, each shortened by up to ``jitter``.

    The jitter spreads out the reconnects of many processes after one Asterisk restart.
    ``rng`` returns a float in [0, 1) and is there for tests.
    """

    def __init__(
        self, initial: float, maximum: float, *, jitter: float = 0.2, rng: Callable[[], float] = random.random
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        base = min(self.maximum, self.initial * 2 ** min(self.attempt, 64))
        self.attempt += 1
        return base * (1 - self.jitter * self.rng())

    def reset(self) -> None:
        self.attempt = 0


class _Pending:
    """An action waiting for its response (and, for an event list, its events)."""

    __slots__ = ("events", "future", "is_list", "long", "response")

    def __init__(self, future: asyncio.Future[None], is_list: bool, long: bool = False) -> None:
        self.future = future
        self.is_list = is_list
        #: Allowed more than ``action_timeout`` (a reload of a large configuration).
        self.long = long
        self.response: Message | None = None
        self.events: list[Message] = []

    def answer(self) -> Message:
        # Only an event list can finish without a response frame; plain actions finish on it.
        if self.response is None:
            raise AmiError("AMI sent no response frame")
        return self.response

    def finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class _Link:
    """One TCP connection: its streams, its parser and the actions awaiting an answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: FrameParser) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = parser
        self.pending: dict[str, _Pending] = {}
        #: Why the link ended; None while it is up.
        self.lost: str | None = None
        self.shutdown_seen = False

    def drop(self, reason: str) -> None:
        """Close the socket and fail every action in flight (idempotent)."""
        if self.lost is None:
            self.lost = reason
        pending, self.pending = self.pending, {}
        for entry in pending.values():
            if not entry.future.done():
                entry.future.set_exception(AmiConnectionLost(self.lost))
        self.writer.close()


def _os_error_text(exc: OSError) -> str:
    if isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def _is_power_of_ten(n: int) -> bool:
    digits = str(n)
    return digits[0] == "1" and not digits[1:].strip("0")


class AmiClient:
    """One AMI link to one Asterisk, kept up by :meth:`run` (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        action_timeout: float = 10.0,
        ping_interval: float = 20.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        auth_retry: float = 60.0,
        connect_timeout: float = 5.0,
        events: str = "on",
        max_frame: int = 4 * 1024 * 1024,
        max_event_backlog: int = 100_000,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.action_timeout = action_timeout
        self.ping_interval = ping_interval
        self.auth_retry = auth_retry
        self.connect_timeout = connect_timeout
        self.events = events
        self.max_frame = max_frame
        self.max_event_backlog = max_event_backlog

        self.state = "disconnected"
        self.error: str | None = None
        self.since = datetime.now(UTC)
        self.banner: str | None = None

        self._backoff = Backoff(backoff_initial, backoff_max)
        self._action_ids = itertools.count(1)
        self._action_id_prefix = f"rpbx-{secrets.token_hex(3)}"
        self._link: _Link | None = None
        self._connected = asyncio.Event()
        self._event_listeners: list[EventListener] = []
        self._connect_listeners: list[ConnectListener] = []
        self._state_listeners: list[StateListener] = []
        self._listener_failures: dict[EventListener, int] = {}
        self._backlog: deque[Message] = deque()
        self._backlog_ready = asyncio.Event()
        self._events_dropped = 0
        self._resync_wanted = asyncio.Event()
        self._down_logged = False
        self._auth_failure_logged = False
        self._closed = False
        self._running = False
        self._stopped = asyncio.Event()
        self._main: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<AmiClient {self.username}@{self.host}:{self.port} {self.state}>"

    @property
    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    # --- listeners -------------------------------------------------------------------

    def add_event_listener(self, callback: EventListener) -> None:
        """Call ``callback(message)`` for every unsolicited event. It must be quick and not block."""
        self._event_listeners.append(callback)

    def add_connect_listener(self, callback: ConnectListener) -> None:
        """Run ``await callback()`` after each login and each FullyBooted event."""
        self._connect_listeners.append(callback)

    def add_state_listener(self, callback: StateListener) -> None:
        """Call ``callback(state, error)`` whenever ``state`` or ``error`` changes."""
        self._state_listeners.append(callback)

    # --- public API --------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, log in, read and ping, reconnecting for ever; returns after :meth:`close`."""
        if self._running:
            raise RuntimeError("AmiClient.run() is already running")
        if self._closed:
            return
        self._running = True
        self._stopped.clear()
        workers = [
            asyncio.create_task(self._dispatch_events(), name="ami-events"),
            asyncio.create_task(self._run_connect_listeners(), name="ami-connect-listeners"),
        ]
        self._main = asyncio.create_task(self._connect_loop(), name="ami-connect")
        self._set_state("connecting", None)
        try:
            # wait(), not await: close() cancels _main, which must not look like run() being cancelled.
            await asyncio.wait([self._main])
        finally:
            for task in (self._main, *workers):
                task.cancel()
            await asyncio.gather(self._main, *workers, return_exceptions=True)
            if self._link is not None:
                self._link.drop("AMI client closed")
                self._link = None
            self._set_state("disconnected", None)
            self._running = False
            self._stopped.set()

    async def close(self) -> None:
        """Log off politely if connected, stop :meth:`run` and wait until all its tasks are done."""
        self._closed = True
        link = self._link
        if link is not None and self.state == "connected":
            with contextlib.suppress(AmiError, OSError, ValueError):
                await self._request(link, "Logoff", None, timeout=min(2.0, self.action_timeout), is_list=False)
        if self._main is not None:
            self._main.cancel()
        if self._running:
            await self._stopped.wait()

    async def wait_connected(self, timeout: float) -> bool:
        """Whether the client is (or within ``timeout`` seconds becomes) connected and logged in."""
        if self.state == "connected":
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
        except TimeoutError:
            return False
        return self.state == "connected"

    async def action(
        self, name: str, headers: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> Message:
        """Send one action and return its response.

        Raises :class:`AmiError` (with ``.response``) on `Response: Error`, :class:`AmiTimeout`,
        :class:`AmiConnectionLost`, and ValueError for a header value with a line break.
        """
        pending = await self._request(self._usable_link(), name, headers, timeout=timeout, is_list=False)
        response = pending.answer()
        if (response.response or "").lower() == "error":
            raise AmiError(f"AMI action {name} failed: {response.message}", response)
        return response

    async def action_list(
        self, name: str, headers: dict[str, str] | None = None, *, timeout: float | None = None
    ) -> list[Message]:
        """Send a list action and return its events, without the closing `EventList: Complete` one.

        An error saying the list is empty ("No endpoints found") gives ``[]``; other errors raise
        as in :meth:`action`. ``timeout`` covers the whole list.
        """
        pending = await self._request(self._usable_link(), name, headers, timeout=timeout, is_list=True)
        response = pending.response
        if response is None:
            return pending.events  # the list completed before any response frame: lenient, it is complete
        if (response.response or "").lower() == "error":
            if EMPTY_LIST_ERROR.match(response.message or ""):
                return []
            raise AmiError(f"AMI action {name} failed: {response.message}", response)
        if response.get("EventList") is None:
            raise AmiError(f"AMI action {name} did not start an event list", response)
        return pending.events

    # --- connection lifecycle --------------------------------------------------------

    async def _connect_loop(self) -> None:
        while not self._closed:
            try:
                reason = await self._connect_once()
            except AmiAuthFailed as exc:
                self._set_state("disconnected", str(exc))
                if not self._auth_failure_logged:
                    self._auth_failure_logged = True
                    logger.error(
                        "AMI authentication failed at %s for user %r: check AMI_USERNAME/AMI_SECRET against "
                        "manager.conf; retrying every %g s",
                        self._where,
                        self.username,
                        self.auth_retry,
                    )
                else:
                    logger.debug("AMI authentication failed again at %s for user %r", self._where, self.username)
                delay = self.auth_retry
            except (OSError, TimeoutError, AmiError, ValueError) as exc:
                self._attempt_failed(self._failure_text(exc))
                delay = self._backoff.next()
            except Exception:
                # A bug must not end the link for good: log it and keep retrying with backoff.
                logger.exception("AMI: unexpected error while connecting to %s", self._where)
                self._attempt_failed("unexpected error (see the log)")
                delay = self._backoff.next()
            else:
                if self._closed:
                    break
                self._set_state("disconnected", reason)
                logger.warning("AMI link to %s lost: %s; reconnecting", self._where, reason)
                self._down_logged = True
                delay = self._backoff.next()
            if self._closed:
                break
            await asyncio.sleep(delay)

    def _failure_text(self, exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer from AMI at {self._where} within {self.connect_timeout:g} s"
        if isinstance(exc, OSError):
            return f"cannot connect to AMI at {self._where}: {_os_error_text(exc)}"
        return str(exc)

    def _attempt_failed(self, text: str) -> None:
        self._set_state("disconnected", text)
        if not self._down_logged:
            self._down_logged = True
            logger.warning("AMI link down: %s; retrying with backoff up to %g s", text, self._backoff.maximum)
        else:
            logger.debug("AMI still down: %s", text)

    async def _connect_once(self) -> str:
        """Connect, log in and serve one link; return why it ended. Raises when it never came up."""
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        link = _Link(reader, writer, FrameParser(self.max_frame))
        try:
            async with asyncio.timeout(self.connect_timeout):
                early = await self._read_banner(link)
            self.banner = link.parser.banner
            self._link = link
            reader_task = asyncio.create_task(self._read_frames(link, early), name="ami-reader")
            try:
                await self._login(link)
                self._logged_in()
                ping_task = asyncio.create_task(self._ping(link), name="ami-ping")
                try:
                    await asyncio.wait([reader_task, ping_task], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ping_task.cancel()
                    await asyncio.gather(ping_task, return_exceptions=True)
            finally:
                reader_task.cancel()
                await asyncio.gather(reader_task, return_exceptions=True)
        finally:
            link.drop("AMI connection closed")
            if self._link is link:
                self._link = None
            self._connected.clear()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
        return link.lost or "AMI connection closed"

    async def _read_banner(self, link: _Link) -> list[Message]:
        """Read up to the banner; return any frames that came in the same reads."""
        while True:
            data = await link.reader.read(READ_SIZE)
            if not data:
                # Seen during a restart: the TCP connect is accepted, then closed with no byte.
                raise AmiError(f"AMI at {self._where} closed the connection before its banner")
            messages = link.parser.feed(data)
            if link.parser.banner is not None:
                return messages
            if not link.parser.awaiting_banner:
                raise AmiError(f"{self._where} did not send an AMI banner; is this the AMI port?")

    async def _login(self, link: _Link) -> None:
        headers = {"Username": self.username, "Secret": self._secret}
        if self.events:
            headers["Events"] = self.events
        pending = await self._request(link, "Login", headers, timeout=self.action_timeout, is_list=False)
        response = pending.answer()
        if (response.response or "").lower() != "success":
            text = response.message or "no reason given"
            if "authentication" in text.lower():
                raise AmiAuthFailed(f"AMI authentication failed for user {self.username}", response)
            raise AmiError(f"AMI login refused for user {self.username}: {text}", response)

    def _logged_in(self) -> None:
        if self._down_logged or self._auth_failure_logged:
            logger.info("AMI link to %s is back", self._where)
        self._backoff.reset()
        self._down_logged = False
        self._auth_failure_logged = False
        logger.info("AMI connected to %s as %r (%s)", self._where, self.username, self.banner)
        self._set_state("connected", None)
        self._connected.set()
        self._resync_wanted.set()

    async def _ping(self, link: _Link) -> None:
        """Ping every ping_interval; return (ending the link) when a Ping fails."""
        while True:
            await asyncio.sleep(self.ping_interval)
            if any(entry.long for entry in list(link.pending.values())):
                # Asterisk answers one session's actions in order: a Ping sent now would wait
                # behind that long action (a 100,000-endpoint reload takes longer than a Ping
                # may) and end a healthy link. The long action's own timeout guards it.
                continue
            try:
                await self._request(link, "Ping", None, timeout=self.action_timeout, is_list=False)
            except AmiConnectionLost:
                return
            except AmiError as exc:
                if link.lost is None:
                    link.lost = f"AMI ping failed: {exc}"
                return

    async def _read_frames(self, link: _Link, early: list[Message]) -> None:
        try:
            for message in early:
                self._handle(link, message)
            while True:
                data = await link.reader.read(READ_SIZE)
                if not data:
                    if link.lost is None:
                        link.lost = (
                            "Asterisk shut down"
                            if link.shutdown_seen
                            else f"AMI at {self._where} closed the connection"
                        )
                    return
                for message in link.parser.feed(data):
                    self._handle(link, message)
                # Let action waiters and the event dispatcher run between chunks of a flood.
                await asyncio.sleep(0)
        except OSError as exc:
            if link.lost is None:
                link.lost = f"AMI connection to {self._where} failed: {_os_error_text(exc)}"
        finally:
            link.drop(link.lost or "AMI connection closed")
            if self._link is link and self.state == "connected":
                # Say so at once: callers must not see "connected" while the link is gone.
                self._set_state("disconnected", None if self._closed else link.lost)

    # --- frames ------------------------------------------------------------------------

    def _handle(self, link: _Link, message: Message) -> None:
        """Route one frame: to the action waiting for it, or to the event listeners."""
        try:
            action_id = message.action_id
            pending = link.pending.get(action_id) if action_id is not None else None
            if message.event is None and message.response is not None:
                if pending is None:
                    logger.debug("AMI: response nobody waits for: %r", message)
                elif pending.response is None:
                    pending.response = message
                    if (
                        not pending.is_list
                        or message.response.lower() != "success"
                        or (message.get("EventList") or "").lower() != "start"
                    ):
                        pending.finish()
                return
            if pending is not None and pending.is_list:
                if (message.get("EventList") or "").lower() == "complete":
                    pending.finish()
                else:
                    pending.events.append(message)
                return
            if message.event is None:
                logger.debug("AMI: frame is neither a response nor an event: %r", message)
                return
            metrics.ami_event()
            event = message.event.lower()
            if event == "fullybooted":
                self._resync_wanted.set()
            elif event == "shutdown":
                link.shutdown_seen = True
                logger.info(
                    "AMI: Asterisk at %s is shutting down (%s, restart: %s)",
                    self._where,
                    message.get("Shutdown"),
                    message.get("Restart"),
                )
            self._queue_event(message)
        except Exception:
            # One odd frame must not stop the reader (and with it the link).
            logger.exception("AMI: could not handle %r", message)

    def _usable_link(self) -> _Link | None:
        return self._link if self.state == "connected" else None

    async def _request(
        self, link: _Link | None, name: str, headers: Mapping[str, str] | None, *, timeout: float | None, is_list: bool
    ) -> _Pending:
        if link is None or link.lost is not None:
            raise AmiConnectionLost(f"AMI is not connected ({self.error or 'no link'}); {name} not sent")
        action_id = f"{self._action_id_prefix}-{next(self._action_ids)}"
        frame = encode_action(name, action_id, headers)
        limit = self.action_timeout if timeout is None else timeout
        pending = _Pending(asyncio.get_running_loop().create_future(), is_list, long=limit > self.action_timeout)
        link.pending[action_id] = pending
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("AMI > %s", describe_action(name, action_id, headers))
        try:
            async with asyncio.timeout(limit):
                link.writer.write(frame)
                await link.writer.drain()
                await pending.future
        except TimeoutError:
            raise AmiTimeout(f"no answer to AMI action {name} within {limit:g} s") from None
        except OSError as exc:
            raise AmiConnectionLost(link.lost or f"AMI connection lost: {_os_error_text(exc)}") from None
        finally:
            link.pending.pop(action_id, None)
            if not pending.future.done():
                pending.future.cancel()
            elif not pending.future.cancelled():
                pending.future.exception()  # mark it retrieved; it was raised above or is moot
        return pending

    # --- listeners, run on their own tasks ------------------------------------------

    def _queue_event(self, message: Message) -> None:
        if len(self._backlog) >= self.max_event_backlog:
            if self._events_dropped == 0:
                logger.warning(
                    "AMI: event listeners are %d events behind; dropping events until they catch up",
                    len(self._backlog),
                )
            self._events_dropped += 1
            return
        self._backlog.append(message)
        self._backlog_ready.set()

    async def _dispatch_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._backlog_ready.wait()
            self._backlog_ready.clear()
            deadline = loop.time() + DISPATCH_SLICE
            while self._backlog:
                message = self._backlog.popleft()
                for callback in tuple(self._event_listeners):
                    self._call_event_listener(callback, message)
                if loop.time() >= deadline:
                    await asyncio.sleep(0)
                    deadline = loop.time() + DISPATCH_SLICE
            if self._events_dropped:
                logger.warning("AMI: %d events were dropped; the connect listeners re-read state", self._events_dropped)
                self._events_dropped = 0
                self._resync_wanted.set()

    def _call_event_listener(self, callback: EventListener, message: Message) -> None:
        try:
            callback(message)
        except Exception:
            # A listener's bug must not stop delivery to the others, nor the link. Log the 1st,
            # 10th, 100th... failure so one failing on every event cannot flood the log.
            failures = self._listener_failures[callback] = self._listener_failures.get(callback, 0) + 1
            if _is_power_of_ten(failures):
                logger.exception("AMI event listener %r failed on %s (failure #%d)", callback, message.event, failures)

    async def _run_connect_listeners(self) -> None:
        while True:
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            if self.state != "connected":
                continue  # the next login asks again
            for callback in tuple(self._connect_listeners):
                try:
                    await callback()
                except AmiConnectionLost as exc:
                    logger.info("AMI connect listener %r stopped, the link dropped: %s", callback, exc)
                except Exception:
                    # The listener re-reads state; its failure must not take the link down with it.
                    logger.exception("AMI connect listener %r failed", callback)

    def _set_state(self, state: str, error: str | None) -> None:
        if state == self.state and error == self.error:
            return
        if state != self.state:
            self.since = datetime.now(UTC)
        self.state, self.error = state, error
        if state != "connected":
            self._connected.clear()
        for callback in tuple(self._state_listeners):
            try:
                callback(state, error)
            except Exception:
                # Reporting state is a side matter; a broken reporter must not stop the link.
                logger.exception("AMI state listener %r failed", callback)
