"""The traffic series: one sample every ``TRAFFIC_INTERVAL`` seconds, the last hour kept.

A *sample* says, for one moment (``t``, seconds since 1970, on the interval's grid):

* ``events_per_s``: how fast the numbered stream's position (``live.bus``) advanced since
  the sample before (every event of every kind, configuration and PBX state alike);
* ``calls``, ``registered``: calls in progress and registered phones, from the PBX link's
  shared snapshot (``pbx.feed``);
* ``calls_per_min``: ``call.started`` events seen on the stream in the last 60 s, and
  ``started``, those of this interval alone;
* ``trunks``: calls in progress on each trunk (from the active calls' ``trunk`` field; a
  trunk that carries none is absent, i.e. 0);
* ``pbx``: ``"ok"``, ``"unconfigured"`` or ``"disconnected"``; the PBX fields are ``None``
  unless it is ``"ok"`` (the page then says why instead of drawing a zero).

**Where it runs.** One supervised background task, ``traffic-sampler``, on the poller's
channel (``runworker rayanpbx-poller`` with Redis, the server process in the embedded
default): the poller's worker runs in every deployment, the PBX link's only when a link
is configured, and events per second must work without one. Everything it reads is valid
there: the bus and Channels' layer are shared through Redis, and the link's snapshot and
status live in Django's cache (Redis; this process's memory when embedded, where the link
runs in the same process).

**One point per interval, however many samplers.** Samples are keyed by their slot on the
grid (``t / interval``); the store appends a sample only if its slot is newer than the last
one stored (a Lua script on Redis: compare, ``RPUSH``, ``LTRIM``, atomically). Two workers
running the sampler (a standby, a rolling restart) give one point per slot, and only the
sampler whose append won publishes it on the ``traffic`` topic.

**Bounds.** ``POINTS`` (360) samples are kept (the oldest dropped: an hour at 10 s); at most
``MAX_TRUNKS`` trunks per sample and per listing (the busiest, then by name), the rest
counted in ``trunks_omitted`` so the page can say so. The sampler's call counter is one
integer per interval of the last minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

#: Samples kept: the last hour at 10 s.
POINTS = 360
#: Trunks one sample or one listing carries at most.
MAX_TRUNKS = 50
TASK = "traffic-sampler"
TOPIC = "traffic"
TYPE = "traffic.sample"
PBX_STATES = ("ok", "unconfigured", "disconnected")
#: What the page shows instead of the PBX series, by ``pbx`` state.
PBX_MESSAGES = {
    "ok": None,
    "unconfigured": "PBX link not configured",
    "disconnected": "PBX link not connected",
}

_APPEND_LUA = """
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
return 1
"""


def interval() -> float:
    return float(settings.TRAFFIC_INTERVAL)


def slot_of(t: float, step: float) -> int:
    """The grid slot of time ``t`` (a sample's identity: one per slot)."""
    return math.floor(t / step + 1e-6)


# --- samples: built here, checked when read back ------------------------------------------


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else None


def clean(sample: Any) -> dict[str, Any] | None:
    """A stored sample as the API serves it, or None when it is not one (nothing read back
    from Redis is trusted: a foreign or older writer could have put anything there)."""
    if not isinstance(sample, dict):
        return None
    t = sample.get("t")
    if not isinstance(t, int | float) or isinstance(t, bool) or not 0 < t < 10**11:
        return None
    rate = sample.get("events_per_s")
    rate = float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) and 0 <= rate < 10**9 else None
    pbx = sample.get("pbx") if sample.get("pbx") in PBX_STATES else "disconnected"
    trunks: dict[str, int] | None = None
    if pbx == "ok" and isinstance(sample.get("trunks"), dict):
        trunks = {}
        for name, count in list(sample["trunks"].items())[:MAX_TRUNKS]:
            if isinstance(name, str) and len(name) <= 64 and _count(count) is not None:
                trunks[name] = count
    ok = pbx == "ok"
    return {
        "t": round(float(t), 3),
        "events_per_s": None if rate is None else round(rate, 2),
        "pbx": pbx,
        "calls": _count(sample.get("calls")) if ok else None,
        "calls_per_min": _count(sample.get("calls_per_min")) if ok else None,
        "started": _count(sample.get("started")) if ok else None,
        "registered": _count(sample.get("registered")) if ok else None,
        "trunks": trunks,
        "trunks_omitted": _count(sample.get("trunks_omitted")) or 0,
    }


def trunks_in_use(active_calls: Any) -> tuple[dict[str, int], int]:
    """Calls in progress per trunk, from the snapshot's active calls (their ``trunk``):
    the ``MAX_TRUNKS`` busiest (then by name), and how many more trunks carried calls."""
    counts: dict[str, int] = {}
    for call in active_calls if isinstance(active_calls, list) else []:
        trunk = call.get("trunk") if isinstance(call, dict) else None
        if isinstance(trunk, str) and trunk:
            counts[trunk] = counts.get(trunk, 0) + 1
    busiest = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(busiest[:MAX_TRUNKS]), max(0, len(busiest) - MAX_TRUNKS)


# --- the store -----------------------------------------------------------------------------


class LocalStore:
    """The embedded default's series: this process's memory (where its sampler runs)."""

    def __init__(self, points: int = POINTS) -> None:
        self._samples: deque[dict[str, Any]] = deque(maxlen=points)
        self._last_slot: int | None = None
        self._lock = threading.Lock()

    def append(self, sample: dict[str, Any], slot: int) -> bool:
        """Keep ``sample`` unless its slot already has one (or a newer slot does)."""
        with self._lock:
            if self._last_slot is not None and slot <= self._last_slot:
                return False
            self._last_slot = slot
            self._samples.append(sample)
            return True

    def samples(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._samples)

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()
            self._last_slot = None


class RedisStore:
    """The series in Redis, shared by every process: one list of JSON samples, trimmed to
    ``points``, and the last slot written beside it."""

    def __init__(self, url: str, prefix: str, points: int = POINTS) -> None:
        import redis

        self.points = points
        self.key = prefix + "traffic:samples"
        self.slot_key = prefix + "traffic:slot"
        # A request waits at most 2 s for Redis (like the cache); the sampler the same.
        self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self._append = self._client.register_script(_APPEND_LUA)

    def append(self, sample: dict[str, Any], slot: int) -> bool:
        keys = [self.key, self.slot_key]
        return bool(self._append(keys=keys, args=[slot, json.dumps(sample, separators=(",", ":")), self.points]))

    def samples(self) -> list[dict[str, Any]]:
        out = []
        for raw in self._client.lrange(self.key, -self.points, -1):
            try:
                out.append(json.loads(raw))
            except ValueError:  # not ours (see clean()): skipped, the rest is served
                continue
        return out

    def clear(self) -> None:
        self._client.delete(self.key, self.slot_key)


_store: LocalStore | RedisStore | None = None
_store_lock = threading.Lock()


def get_store() -> LocalStore | RedisStore:
    global _store
    with _store_lock:
        if _store is None:
            url = settings.REDIS_URL
            _store = RedisStore(url, settings.REDIS_KEY_PREFIX) if url else LocalStore()
        return _store


def series(since: float | None = None) -> list[dict[str, Any]]:
    """The stored samples, oldest first, checked (and only those after ``since``)."""
    out = []
    for raw in get_store().samples():
        sample = clean(raw)
        if sample is not None and (since is None or sample["t"] > since):
            out.append(sample)
    out.sort(key=lambda sample: sample["t"])
    return out


def trunk_limits() -> tuple[dict[str, dict[str, Any]], int]:
    """Every trunk's ``max_channels`` (0: unlimited) and ``enabled``, at most ``MAX_TRUNKS``
    (by name), and how many more there are. Reads the database (sync)."""
    from trunks.models import Trunk

    rows = list(Trunk.objects.order_by("name").values_list("name", "max_channels", "enabled")[: MAX_TRUNKS + 1])
    limits = {name: {"max_channels": limit, "enabled": enabled} for name, limit, enabled in rows[:MAX_TRUNKS]}
    omitted = Trunk.objects.count() - MAX_TRUNKS if len(rows) > MAX_TRUNKS else 0
    return limits, omitted


def pbx_state() -> str:
    """``ok`` (the link is connected to Asterisk), ``unconfigured`` or ``disconnected``."""
    from pbx import status

    if not status.configured():
        return "unconfigured"
    return "ok" if status.read()["link"]["state"] == "connected" else "disconnected"


# --- the sampler ---------------------------------------------------------------------------


class Sampler:
    """Takes a sample at every slot of the grid and appends it (and publishes it when its
    append won). ``clock`` is the wall clock; tests pass their own interval."""

    def __init__(self, step: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.step = step or interval()
        self.clock = clock
        window = max(1, math.ceil(60.0 / self.step))
        #: Calls started per interval of the last minute: (slot, count), oldest first.
        self._started: deque[tuple[int, int]] = deque(maxlen=window)
        self._window = window
        self._counting = 0  # call.started seen since the last sample
        self._resubscribed = False  # the stream subscription was re-made since the last sample
        self._position: int | None = None
        self._position_at = 0.0
        self._limits: tuple[dict[str, dict[str, Any]], int] = ({}, 0)
        self._failing = False

    # the stream: calls started, and gaps in what was seen

    async def _watch(self) -> None:
        from live.bus import get_bus

        subscribed = False
        async for frame in get_bus().frames():
            if frame is None:  # re-subscribed: what happened meanwhile was not seen
                self._resubscribed = subscribed
                subscribed = True
                continue
            if '"call.started"' in frame:  # cheap first: most frames are not
                with contextlib.suppress(ValueError, AttributeError):  # not an event: not counted
                    if json.loads(frame).get("type") == "call.started":
                        self._counting += 1

    # one sample

    async def sample(self, slot: int) -> dict[str, Any]:
        """The sample of ``slot``, from what is known now."""
        from asgiref.sync import sync_to_async

        position, now = await _position(), time.monotonic()
        rate = None
        if self._position is not None and not self._resubscribed and position >= self._position:
            rate = (position - self._position) / max(1e-3, now - self._position_at)
        self._position, self._position_at, self._resubscribed = position, now, False
        started, self._counting = self._counting, 0
        pbx, document = await sync_to_async(_pbx_now, thread_sensitive=False)()
        sample: dict[str, Any] = {
            "t": round(slot * self.step, 3),
            "events_per_s": None if rate is None else round(rate, 2),
            "pbx": pbx,
            "calls": None,
            "calls_per_min": None,
            "started": None,
            "registered": None,
            "trunks": None,
            "trunks_omitted": 0,
        }
        if pbx != "ok":
            self._started.clear()  # a minute with the link away is not a minute of no calls
            return sample
        self._started.append((slot, started))
        counts = document.get("counts") or {}
        calls = document.get("calls") or {}
        trunks, omitted = trunks_in_use(calls.get("active") if isinstance(calls, dict) else None)
        sample.update(
            calls=_count(counts.get("active_calls")) or 0,
            registered=_count(counts.get("registered")) or 0,
            started=started,
            calls_per_min=sum(count for s, count in self._started if s > slot - self._window),
            trunks=trunks,
            trunks_omitted=omitted,
        )
        return sample

    def _seed(self, samples: list[dict[str, Any]]) -> None:
        """Calls started in the last minute, from the stored series (a restart keeps the rate)."""
        now_slot = slot_of(self.clock(), self.step)
        for sample in samples:
            slot = slot_of(sample["t"], self.step)
            if sample["pbx"] == "ok" and sample["started"] is not None and slot > now_slot - self._window:
                self._started.append((slot, sample["started"]))

    async def run(self) -> None:
        """Sample at every slot until cancelled.

        An outage (the database, Redis) costs the points of its time, not the task: it is
        logged once per failure streak (one line), shown in ``/health`` while Redis fails
        (``traffic-sampler``; the database's own outage is shown there already), and the
        sampler tries again at the next slot, as the poller does. Anything else raises: the
        supervisor restarts the task with backoff."""
        try:
            self._seed(await asyncio.to_thread(series))
        except Exception as exc:  # an outage at start: the first minute's rate starts from 0
            self._failed("reading the series back", exc)
        watcher = asyncio.ensure_future(self._watch())
        try:
            with contextlib.suppress(Exception):  # Redis away: the first sample has no rate, that is all
                self._position, self._position_at = await _position(), time.monotonic()
            last = slot_of(self.clock(), self.step)
            while True:
                delay = (last + 1) * self.step - self.clock()
                await asyncio.wait([watcher], timeout=max(0.0, delay))
                if watcher.done():
                    watcher.result()  # the stream's watch failed: raise it
                    raise RuntimeError("the stream's watch ended")
                slot = slot_of(self.clock(), self.step)
                if slot <= last:
                    continue  # woke a hair early
                last = slot
                await self._tick(slot)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # ending anyway: its error is moot
                await watcher

    async def _tick(self, slot: int) -> None:
        from live import topics

        try:
            sample = await self.sample(slot)  # events_per_s null without a position before
            (limits, omitted), limits_read = await self._trunk_limits()
            if await asyncio.to_thread(get_store().append, sample, slot):
                payload = {"interval_s": self.step, "sample": clean(sample), "trunks": limits,
                           "trunk_limits_omitted": omitted}  # fmt: skip
                await topics.publish(TOPIC, TYPE, payload)
        except Exception as exc:
            if not _outage(exc):
                raise
            self._position = None  # the rate after the outage starts afresh
            self._failed("a sample", exc, report=True)
            return
        if self._failing and limits_read:
            self._failing = False
            logger.warning("Traffic sampler recovered")
            background_report(None)

    async def _trunk_limits(self) -> tuple[tuple[dict[str, dict[str, Any]], int], bool]:
        """The trunks' limits, and whether they were read now: while the database is away,
        the last ones read (the sample itself needs no database, so the series goes on
        through a database outage)."""
        try:
            self._limits = await _limits()
        except Exception as exc:
            if not _outage(exc):
                raise
            self._failed("reading the trunks", exc)
            return self._limits, False
        return self._limits, True

    def _failed(self, what: str, exc: Exception, *, report: bool = False) -> None:
        if not self._failing:
            logger.error("Traffic sampler: %s failed: %s; trying again every %.1f s", what, exc, self.step)
        self._failing = True
        if report:
            background_report(f"{type(exc).__name__}: {exc}")


def _outage(exc: Exception) -> bool:
    """The database or Redis unreachable: retried at the next slot, not a bug."""
    from django.db import DatabaseError

    return isinstance(exc, DatabaseError | OSError) or type(exc).__module__.startswith("redis")


def background_report(error: str | None) -> None:
    from rayanpbx import background

    background.report(TASK, error)


async def _position() -> int:
    from live.bus import get_bus

    return await get_bus().position()


def _pbx_now() -> tuple[str, dict[str, Any]]:
    """The PBX state and, when the link is connected, its shared snapshot (sync: the cache)."""
    from pbx import feed

    state = pbx_state()
    return state, (feed.snapshot() if state == "ok" else {})


async def _limits() -> tuple[dict[str, dict[str, Any]], int]:
    from channels.db import database_sync_to_async

    return await database_sync_to_async(trunk_limits)()


async def run() -> None:
    """The background task (``traffic-sampler``)."""
    await Sampler().run()
