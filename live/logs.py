"""The logs page's live tail: Asterisk's log file and RayanPBX's own log records.

One supervised background task (``run``, registered in ``live/apps.py`` on the poller's
channel: inside the server in the embedded default, in ``runworker rayanpbx-poller`` with
Redis) follows ``ASTERISK_LOG_FILE`` (``live.logtail``) and collects RayanPBX's records,
and every ``LOGS_BATCH_INTERVAL`` seconds publishes what arrived as one ``logs.lines``
message on the ``logs`` topic (staff only) with at most ``LOGS_BATCH_LINES`` lines, the
newest; what did not fit is counted in the message's ``skipped`` (the page shows "n lines
skipped"). Nothing waits without bound: lines beyond a batch are dropped at once, never
parsed or queued.

Each line: ``{"id", "ts", "source": "asterisk"|"rayanpbx", "level", "logger", "message"}``
(``level``: debug, info, notice, warning, error; ``logger``: Asterisk's source file or the
Python logger's name). The last 500 lines published are kept for ``GET /api/logs`` (a Redis
list with ``REDIS_URL``, this process's memory otherwise).

RayanPBX's records: ``RecordHandler``, on the project's loggers, redacts a record and puts
it in a bounded in-process buffer; it never publishes or does I/O inside ``emit()``. With
Redis, a small flusher thread per process moves the buffer to a capped Redis stream
(``logs:records``) that the task reads; embedded, the task takes the buffer directly.
Records logged while the task itself publishes are not collected (no loop).

Redaction (``redact``), before a line leaves this module: ``secret=``/``password=``-style
pairs, ``Secret:``/``Authorization:`` headers, JWTs, the configured AMI secret, and SIP
secrets of extensions and trunks appearing as a whole word (refreshed every 30 s). See
docs/logs.md for what it cannot catch.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from live.logtail import Follower

logger = logging.getLogger(__name__)

#: Lines kept for ``GET /api/logs``.
HISTORY = 500
#: Records waiting in one process before the oldest are dropped (and counted).
RECORD_BUFFER = 2000
#: The Redis stream of records from every process, waiting for the task (capped).
RECORD_STREAM_MAX = 2000
#: Loggers whose records the page shows (the project's own).
PROJECT_LOGGERS = ("rayanpbx", "live", "pbx", "extensions", "trunks")
NOT_READABLE = "Asterisk log not readable: set ASTERISK_LOG_FILE"
SECRETS_REFRESH = 30.0
LEVELS = ("debug", "info", "notice", "warning", "error")

# --- redaction ----------------------------------------------------------------------------

REDACTED = "[redacted]"
_KEYS = r"(?:secret|password|passwd|auth_pass|authpass|md5_cred|token|access_token|refresh|api_key|apikey)"
#: key=value / key: value / key => value, the value quoted or up to a delimiter.
_PAIR = re.compile(
    rf"""(?ix)
    (\b{_KEYS}\b["']?\s*(?:=>|=|:)\s*)
    (?:"[^"]*"|'[^']*'|[^\s,;&"'<>]+)
    """
)
#: An Authorization header's whole value (a digest response, a Basic or Bearer credential).
_AUTH_HEADER = re.compile(r"(?i)(\b(?:proxy-)?authorization\s*:\s*)[^\r\n]*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}")
#: What separates words for the verbatim-secret check.
_WORDS = re.compile(r"[^\s\"'=:,;<>()\[\]{}@/]+")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


class _Secrets:
    """Secrets that must never appear verbatim: the AMI secret and the SIP secrets."""

    def __init__(self) -> None:
        self.words: frozenset[str] = frozenset()
        self.odd: tuple[str, ...] = ()  # secrets containing a word delimiter: substring check
        self.loaded_at = 0.0

    def set(self, values: Iterable[str]) -> None:
        values = {value for value in values if value and len(value) >= 6}
        self.words = frozenset(v for v in values if _WORDS.fullmatch(v))
        self.odd = tuple(sorted(values - self.words, key=len, reverse=True))
        self.loaded_at = time.monotonic()

    def scrub(self, text: str) -> str:
        ami = settings.AMI_SECRET
        if ami and len(ami) >= 4 and ami in text:
            text = text.replace(ami, REDACTED)
        for value in self.odd:
            if value in text:
                text = text.replace(value, REDACTED)
        if self.words:
            text = _WORDS.sub(lambda m: REDACTED if m.group(0) in self.words else m.group(0), text)
        return text


SECRETS = _Secrets()


def redact(text: str) -> str:
    """``text`` without credentials (see the module's docstring)."""
    text = SECRETS.scrub(text)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _PAIR.sub(lambda m: m.group(1) + REDACTED, text)


def clean(text: str, limit: int | None = None) -> str:
    """Control characters out, at most ``limit`` characters (``LOGS_MAX_LINE``)."""
    limit = limit or settings.LOGS_MAX_LINE
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _load_sip_secrets() -> list[str]:
    from extensions.models import Extension
    from trunks.models import Trunk

    return [
        *Extension.objects.exclude(secret="").values_list("secret", flat=True),
        *Trunk.objects.exclude(secret="").values_list("secret", flat=True),
    ]


# --- lines --------------------------------------------------------------------------------

#: ``[Dec  2 05:31:02] WARNING[1234][C-00000001] chan_pjsip.c: message`` (the date as
#: logger.conf's dateformat writes it: any bracketed text without "]").
_ASTERISK = re.compile(
    r"^\[(?P<stamp>[^\]]{1,40})\] (?P<level>[A-Z]{2,10})\[(?P<lwp>\d{1,10})\](?:\[(?P<callid>[^\]]{1,40})\])? "
    r"(?P<file>[\w./-]{1,100}): (?P<message>.*)$",
    re.DOTALL,
)
_ASTERISK_LEVELS = {
    "DEBUG": "debug",
    "TRACE": "debug",
    "VERBOSE": "info",
    "DTMF": "info",
    "FAX": "info",
    "NOTICE": "notice",
    "SECURITY": "notice",
    "WARNING": "warning",
    "ERROR": "error",
}
_PYTHON_LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warning", "ERROR": "error", "CRITICAL": "error"}


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{int(when % 1 * 1000):03d}Z"


def parse_asterisk(raw: str, when: float | None = None) -> dict[str, Any]:
    """One line of Asterisk's log as a line dict (without ``id``).

    The plain format (``[date] LEVEL[lwp][callid] file.c: message``) and Asterisk 22's
    ``[json]`` format (one JSON document a line) are understood; anything else (the start-up banner, a continuation
    line) is kept whole with level ``info`` and logger ``""``."""
    when = time.time() if when is None else when
    line: dict[str, Any] = {"ts": _iso(when), "source": "asterisk", "level": "info", "logger": "", "message": ""}
    text = raw
    if raw.startswith("{"):
        try:
            document = json.loads(raw)
        except ValueError:
            document = None
        # Asterisk 22's [json] format: {"hostname", "timestamp", "identifiers": {"lwp",
        # "callid"}, "logmsg": {"location": {"filename", "function", "line"}, "level", "message"}}
        entry = document.get("logmsg") if isinstance(document, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("message"), str):
            location = entry.get("location") if isinstance(entry.get("location"), dict) else {}
            ids = document.get("identifiers") if isinstance(document.get("identifiers"), dict) else {}
            line["level"] = _ASTERISK_LEVELS.get(str(entry.get("level", "")).strip().upper(), "info")
            line["logger"] = clean(str(location.get("filename", "")), 100)
            text = entry["message"].rstrip("\n")
            if isinstance(ids.get("callid"), str) and ids["callid"]:
                text = f"[{ids['callid'][:40]}] {text}"
            line["message"] = clean(redact(text))
            return line
    match = _ASTERISK.match(text)
    if match:
        line["level"] = _ASTERISK_LEVELS.get(match["level"], "info")
        line["logger"] = match["file"]
        text = match["message"]
        if match["callid"]:
            text = f"[{match['callid']}] {text}"
    line["message"] = clean(redact(text))
    return line


# --- RayanPBX's own records ---------------------------------------------------------------

#: Set while the task publishes: records logged meanwhile (by the layer, Redis) are not
#: collected, so publishing can never feed itself.
_publishing: contextvars.ContextVar[bool] = contextvars.ContextVar("live_logs_publishing", default=False)


class RecordHandler(logging.Handler):
    """Hands the project's log records to the tail, redacted, through a bounded buffer."""

    def __init__(self) -> None:
        super().__init__(level=settings.LOGS_RECORD_LEVEL)
        self.buffer: collections.deque[dict[str, Any]] = collections.deque()
        self.dropped = 0
        self._buffer_lock = threading.Lock()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if _publishing.get() or record.name.startswith(__name__) or record.name.startswith("live.logtail"):
            return
        if self._flusher is not None and threading.current_thread() is self._flusher:
            return
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            line = {
                "ts": _iso(record.created),
                "source": "rayanpbx",
                "level": _PYTHON_LEVELS.get(record.levelname, "info"),
                "logger": clean(record.name, 100),
                "message": clean(redact(text)),
            }
        except Exception:  # a record that cannot be formatted: logging's own error path
            self.handleError(record)
            return
        with self._buffer_lock:
            if len(self.buffer) >= RECORD_BUFFER:
                self.buffer.popleft()
                self.dropped += 1
            self.buffer.append(line)
        if settings.REDIS_URL and self._flusher is None:
            self._start_flusher()

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """What is buffered and how many were dropped since the last take."""
        with self._buffer_lock:
            lines, dropped = list(self.buffer), self.dropped
            self.buffer.clear()
            self.dropped = 0
        return lines, dropped

    def _start_flusher(self) -> None:
        with self._buffer_lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_forever, name="logs-record-flusher", daemon=True)
        self._flusher.start()

    def _flush_forever(self) -> None:
        """With Redis: every batch interval, this process's records to the shared stream.

        A thread, not a background task: a logging handler serves every thread of the
        process, including those without an event loop (request threads, a shell), and the
        flusher must never be the thing whose records it flushes."""
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
        failing = False
        while True:
            time.sleep(settings.LOGS_BATCH_INTERVAL)
            lines, dropped = self.take()
            if not lines and not dropped:
                continue
            try:
                pipe = client.pipeline(transaction=False)
                for line in lines:
                    pipe.xadd(_key("records"), {"j": json.dumps(line)}, maxlen=RECORD_STREAM_MAX, approximate=True)
                if dropped:
                    pipe.xadd(_key("records"), {"dropped": str(dropped)}, maxlen=RECORD_STREAM_MAX, approximate=True)
                pipe.execute()
                failing = False
            except Exception:  # Redis away: these records are lost (the stderr log still has them)
                if not failing:
                    failing = True  # said once per outage, and not through this handler
                    print("logs: cannot hand log records to Redis; dropping them until it answers", flush=True)


HANDLER: RecordHandler | None = None


def install() -> RecordHandler:
    """Put the record handler on the project's loggers (once per process)."""
    global HANDLER
    if HANDLER is None:
        HANDLER = RecordHandler()
        for name in PROJECT_LOGGERS:
            logging.getLogger(name).addHandler(HANDLER)
    return HANDLER


# --- where the last lines are kept --------------------------------------------------------


def _key(name: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}logs:{name}"


class LocalStore:
    """The embedded default: this process's memory (one process serves everything)."""

    def __init__(self) -> None:
        self.lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.state: dict[str, Any] | None = None

    def add(self, lines: list[dict[str, Any]]) -> None:
        with self._lock:
            for line in lines:
                line["id"] = next(self._ids)
                self.lines.append(line)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.lines)[-limit:] if limit else []

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def get_state(self) -> dict[str, Any] | None:
        return self.state


class RedisStore:
    """With ``REDIS_URL``: a capped Redis list, right from every process."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    def add(self, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        last = self.client.incrby(_key("seq"), len(lines))
        pipe = self.client.pipeline(transaction=True)
        for offset, line in enumerate(lines):
            line["id"] = last - len(lines) + 1 + offset
            pipe.lpush(_key("recent"), json.dumps(line))
        pipe.ltrim(_key("recent"), 0, HISTORY - 1)
        pipe.execute()

    def recent(self, limit: int) -> list[dict[str, Any]]:
        if not limit:
            return []
        raw = self.client.lrange(_key("recent"), 0, limit - 1)
        return [json.loads(item) for item in reversed(raw)]

    def set_state(self, state: dict[str, Any]) -> None:
        self.client.set(_key("state"), json.dumps(state), ex=30)

    def get_state(self) -> dict[str, Any] | None:
        raw = self.client.get(_key("state"))
        return json.loads(raw) if raw else None


_store: LocalStore | RedisStore | None = None


def store() -> LocalStore | RedisStore:
    global _store
    if _store is None:
        _store = RedisStore(settings.REDIS_URL) if settings.REDIS_URL else LocalStore()
    return _store


def asterisk_state() -> dict[str, Any]:
    """Whether Asterisk's log is being followed, as the tail last said (or as seen from here)."""
    try:
        state = store().get_state()
    except Exception:  # Redis away: say what this process can see instead
        state = None
    if state is not None:
        return state
    path = settings.ASTERISK_LOG_FILE
    readable = bool(path) and os.path.isfile(path) and os.access(path, os.R_OK)
    return _state(readable, None if readable else ("no file configured" if not path else "cannot read the file"))


def _state(readable: bool, error: str | None) -> dict[str, Any]:
    return {
        "readable": readable,
        "message": None if readable else NOT_READABLE,
        "error": None if readable else error,
    }


# --- the task -----------------------------------------------------------------------------


@dataclass
class Batch:
    """What one interval gathered: the newest ``limit`` lines and a count of the rest."""

    limit: int
    lines: collections.deque[tuple[str, Any]] = field(default_factory=collections.deque)
    skipped: dict[str, int] = field(default_factory=lambda: {"asterisk": 0, "rayanpbx": 0})

    def add(self, source: str, items: list[Any]) -> None:
        """``items``: raw Asterisk lines or record dicts; parsed only if they are kept."""
        for item in items[-self.limit :]:
            if len(self.lines) >= self.limit:
                old_source, _ = self.lines.popleft()
                self.skipped[old_source] += 1
            self.lines.append((source, item))
        self.skipped[source] += max(0, len(items) - self.limit)

    def skip(self, source: str, count: int) -> None:
        self.skipped[source] += count

    def take(self, when: float) -> tuple[list[dict[str, Any]], dict[str, int]]:
        lines = [parse_asterisk(item, when) if source == "asterisk" else item for source, item in self.lines]
        skipped = dict(self.skipped)
        self.lines.clear()
        self.skipped = {"asterisk": 0, "rayanpbx": 0}
        return lines, skipped


class Tail:
    """The state of one run of the task (see ``run``)."""

    def __init__(self) -> None:
        self.handler = install()
        self.follower = Follower(settings.ASTERISK_LOG_FILE or "", max_line=settings.LOGS_MAX_LINE * 4)
        self.batch = Batch(settings.LOGS_BATCH_LINES)
        self.readable: bool | None = None
        self.redis: Any = None
        self.record_cursor = "$"
        self.state_written = 0.0

    async def step(self) -> None:
        """One interval's work: read, collect, publish."""
        from live import topics

        raw = await asyncio.to_thread(self.follower.read)
        if raw:
            self.batch.add("asterisk", raw)
        await self._collect_records()
        await self._refresh_secrets()
        readable = self.follower.readable
        now = time.time()
        token = _publishing.set(True)
        try:
            state = _state(readable, self.follower.error)
            if readable != self.readable or now - self.state_written > 10:
                await asyncio.to_thread(store().set_state, state)
                self.state_written = now
            if readable != self.readable:
                self.readable = readable
                await topics.publish("logs", "logs.state", {"asterisk": state})
            lines, skipped = self.batch.take(now)
            if lines or any(skipped.values()):
                await asyncio.to_thread(store().add, lines)
                payload = {"lines": lines, "skipped": sum(skipped.values()), "skipped_by_source": skipped}
                await topics.publish("logs", "logs.lines", payload)
        finally:
            _publishing.reset(token)

    async def _collect_records(self) -> None:
        if not settings.REDIS_URL:
            lines, dropped = self.handler.take()
            self.batch.add("rayanpbx", lines)
            self.batch.skip("rayanpbx", dropped)
            return
        if self.redis is None:
            import redis.asyncio

            self.redis = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
        token = _publishing.set(True)
        try:
            if self.record_cursor == "$":  # the first read: from what is newest now
                newest = await self.redis.xrevrange(_key("records"), count=1)
                self.record_cursor = newest[0][0] if newest else "0-0"
            answer = await self.redis.xread({_key("records"): self.record_cursor}, count=RECORD_STREAM_MAX)
        finally:
            _publishing.reset(token)
        lines: list[dict[str, Any]] = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                self.record_cursor = entry_id
                if b"dropped" in fields:
                    self.batch.skip("rayanpbx", int(fields[b"dropped"]))
                    continue
                try:
                    line = json.loads(fields[b"j"])
                except (KeyError, ValueError):  # not ours: another writer's entry is ignored
                    continue
                if isinstance(line, dict):
                    line["message"] = clean(SECRETS.scrub(str(line.get("message", ""))))
                    lines.append(line)
        self.batch.add("rayanpbx", lines)

    async def _refresh_secrets(self) -> None:
        if time.monotonic() - SECRETS.loaded_at < SECRETS_REFRESH:
            return
        from channels.db import database_sync_to_async

        token = _publishing.set(True)
        try:
            SECRETS.set(await database_sync_to_async(_load_sip_secrets)())
        except Exception:  # database away: keep the secrets known, try again next interval
            SECRETS.loaded_at = time.monotonic() - SECRETS_REFRESH + 5
        finally:
            _publishing.reset(token)

    def close(self) -> None:
        self.follower.close()


async def run() -> None:
    """The background task: follow, batch, publish, until cancelled."""
    tail = Tail()
    try:
        while True:
            started = time.monotonic()
            await tail.step()
            await asyncio.sleep(max(0.0, settings.LOGS_BATCH_INTERVAL - (time.monotonic() - started)))
    finally:
        tail.close()
