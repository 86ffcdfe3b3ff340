"""The event bus: numbers events, keeps the recent history, and carries them to every process.

Two implementations behind one interface:

* ``LocalBus`` (embedded default): everything in this process, under a lock.
* ``RedisBus`` (``REDIS_URL`` set): one Lua script numbers the event (``INCR``), stores it
  in a bounded sorted-set history, updates the state table and ``PUBLISH``es it, atomically.
  Because the script is atomic, Redis pub/sub delivers events to every process in ``seq``
  order, with no gaps except across a lost subscription, which the hub repairs from the
  history. Each process subscribes once and writes to its own sockets (see ``hub``): one
  Redis delivery per process per event, instead of one channel-layer message per socket.

``seq`` starts from the clock in microseconds when the counter is first created, so it keeps
increasing across restarts of Redis or of the embedded server, and a stale client position
is recognised (older than the history, or newer than the counter) and answered with resync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from live.events import body, number

logger = logging.getLogger(__name__)

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

#: A quiet subscription is pinged after this many seconds, and replaced when the answer
#: takes longer than the timeout (module attributes, so tests can shorten them).
SUBSCRIPTION_IDLE = 10.0
SUBSCRIPTION_PING_TIMEOUT = 5.0
#: How often the subscriber wakes to check, when nothing arrives.
SUBSCRIPTION_POLL = 1.0
#: The longest a request thread waits for Redis (a write's publish, /health).
PUBLISH_TIMEOUT = 1.0
#: A process's socket count older than this is ignored (each reports every 5 s).
CLIENTS_TTL = 15.0
#: At most this many frames in one batch of ``batches()``: the frames already received
#: when the hub asks, never a wait for more (a quiet stream gives batches of one).
BATCH_FRAMES = 256


async def _flatten(batches: Any) -> AsyncIterator[str | None]:
    try:
        async for batch in batches:
            if batch is None:
                yield None
            else:
                for frame in batch:
                    yield frame
    finally:
        await batches.aclose()  # unsubscribes now, not whenever the generator is collected


@dataclass
class Publication:
    """One event to publish, and how it changes the bus's state table.

    ``mode``: ``always`` publishes; ``changed`` publishes only if ``state`` differs from the
    stored one and is not older; ``expect`` publishes only if the stored state equals
    ``expect``; ``silent`` stores ``state`` without publishing (priming). An empty ``state``
    removes the entry.
    """

    type: str
    payload: dict[str, Any]
    key: str
    state: str
    mode: str = "always"
    expect: str = ""


def _should_publish(pub: Publication, current: str) -> bool:
    if pub.mode in ("always", "silent"):
        return True
    if pub.mode == "expect":
        return current == pub.expect
    if not current:
        return True
    cur_version, cur_digest, _ = current.split("|", 2)
    new_version, new_digest, _ = pub.state.split("|", 2)
    return cur_digest != new_digest and int(cur_version) <= int(new_version)


def replay_range(after: int, current: int, oldest: int | None) -> bool:
    """Whether events after ``after`` can be replayed from a history starting at ``oldest``."""
    if after == current:
        return True
    if after > current:
        return False  # a position from another epoch (the counter was reset)
    return oldest is not None and oldest <= after + 1


class _FailureLog:
    """Log a failing bus once, not once per event, and say when it recovers: when every
    path that failed (publish, subscribe) works again, not when the first of them does."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def failed(self, what: str, exc: Exception) -> None:
        if not self.failing:
            logger.error("Live event bus unavailable (%s): %s. Events are not delivered until it recovers.", what, exc)
        self.failing.add(what)

    def ok(self, what: str) -> None:
        if what in self.failing:
            self.failing.discard(what)
            if not self.failing:
                logger.warning("Live event bus recovered.")


class LocalBus:
    """The whole bus inside one process (no Redis)."""

    def __init__(self, history_size: int) -> None:
        self._lock = threading.Lock()
        self._seq = time.time_ns() // 1000
        self._history: deque[tuple[int, str]] = deque(maxlen=history_size)
        self._state: dict[str, str] = {}
        self._queues: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[list[str]]]] = []
        self._clients: dict[str, int] = {}

    def publish(self, publications: list[Publication]) -> list[int]:
        seqs: list[int] = []
        frames: list[str] = []
        with self._lock:
            for pub in publications:
                if not _should_publish(pub, self._state.get(pub.key, "")):
                    continue
                if pub.state:
                    self._state[pub.key] = pub.state
                else:
                    self._state.pop(pub.key, None)
                if pub.mode == "silent":
                    continue
                self._seq += 1
                frame = number(body(pub.type, pub.payload), self._seq)
                self._history.append((self._seq, frame))
                frames.append(frame)
                seqs.append(self._seq)
            if frames:  # one hand-over per publish: a bulk change reaches the hub in one piece
                for loop, queue in list(self._queues):
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, frames)
                    except RuntimeError:  # that listener's event loop is closed
                        self._queues.remove((loop, queue))
        return seqs

    def state(self) -> dict[str, str]:
        with self._lock:
            return dict(self._state)

    def state_of(self, keys: list[str]) -> dict[str, str]:
        """The stored states of ``keys`` (absent keys left out)."""
        with self._lock:
            return {key: self._state[key] for key in keys if key in self._state}

    async def position(self) -> int:
        return self._seq

    def position_now(self) -> int:
        """The last seq issued (sync, for request threads)."""
        return self._seq

    def frames_after_now(self, after: int) -> list[str]:
        """The history's frames after ``after`` (sync, for request threads; what it holds)."""
        with self._lock:
            return [frame for seq, frame in self._history if seq > after]

    def frames(self) -> AsyncIterator[str | None]:
        """Frames in ``seq`` order; ``None`` once subscribed."""
        return _flatten(self.batches())

    async def batches(self) -> AsyncIterator[list[str] | None]:
        """The frames already published, at most ``BATCH_FRAMES`` at a time; ``None`` once subscribed."""
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        entry = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._queues.append(entry)
        try:
            yield None  # subscribed
            pending: deque[str] = deque()
            while True:
                if not pending:
                    pending.extend(await queue.get())
                while not queue.empty():
                    pending.extend(queue.get_nowait())
                yield [pending.popleft() for _ in range(min(BATCH_FRAMES, len(pending)))]
        finally:
            with self._lock:
                if entry in self._queues:
                    self._queues.remove(entry)

    async def history_after(self, after: int) -> tuple[int, list[str] | None]:
        with self._lock:
            oldest = self._history[0][0] if self._history else None
            if not replay_range(after, self._seq, oldest):
                return self._seq, None
            return self._seq, [frame for seq, frame in self._history if seq > after]

    async def report_clients(self, count: int) -> None:
        self._clients[PROCESS_ID] = count

    def client_count(self) -> int:
        return sum(self._clients.values())

    def ping(self) -> None:
        """The local bus is always reachable."""


# Publishes a batch atomically. KEYS: seq, history, state. ARGV: history size, channel,
# then five values per publication: mode, key, state, expect, body (a frame without seq).
_PUBLISH_LUA = """
local out = {}
for i = 3, #ARGV, 5 do
  local mode, key, state, expect, body = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local go = true
  if mode == 'expect' then
    go = (redis.call('HGET', KEYS[3], key) or '') == expect
  elseif mode == 'changed' then
    local cur = redis.call('HGET', KEYS[3], key)
    if cur then
      local cv, cd = string.match(cur, '^(%d+)|([^|]*)|')
      local nv, nd = string.match(state, '^(%d+)|([^|]*)|')
      go = cd ~= nd and tonumber(cv) <= tonumber(nv)
    end
  end
  if go then
    if state == '' then redis.call('HDEL', KEYS[3], key) else redis.call('HSET', KEYS[3], key, state) end
    if mode ~= 'silent' then
      if redis.call('EXISTS', KEYS[1]) == 0 then
        local t = redis.call('TIME')
        redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
      end
      local seq = redis.call('INCR', KEYS[1])
      local frame = '{"seq":' .. string.format('%d', seq) .. ',' .. string.sub(body, 2)
      redis.call('ZADD', KEYS[2], seq, frame)
      redis.call('PUBLISH', ARGV[2], frame)
      out[#out + 1] = seq
    end
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[1]) + 1))
return out
"""


class RedisBus:
    """The bus shared by every process through Redis."""

    def __init__(self, url: str, history_size: int, prefix: str = "rayanpbx:") -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One hash tag for all of the bus's keys: they land in one slot, so the publish
        # script (which touches three of them) also runs on Redis Cluster.
        self.prefix = "{" + prefix + "live}:"
        self.url = url
        self.history_size = history_size
        self.seq_key = self.prefix + "seq"
        self.history_key = self.prefix + "history"
        self.state_key = self.prefix + "state"
        self.channel = self.prefix + "events"
        self.clients_key = self.prefix + "clients"
        # Request threads (a write's publish, /health) wait at most PUBLISH_TIMEOUT for Redis,
        # with no retry: a blackholed Redis costs a write one second, not 4 x 5 s. What is not
        # published then is found by the poller once Redis answers again.
        self._sync = redis.Redis.from_url(
            url, socket_connect_timeout=PUBLISH_TIMEOUT, socket_timeout=PUBLISH_TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
        self._script = self._sync.register_script(_PUBLISH_LUA)
        self._failures = _FailureLog()
        self._publish_paused_until = 0.0
        self._async: tuple[asyncio.AbstractEventLoop, Any] | None = None

    # --- called from request threads (sync) -------------------------------------------

    def publish(self, publications: list[Publication]) -> list[int]:
        from redis.exceptions import RedisError

        if not publications:
            return []
        if time.monotonic() < self._publish_paused_until:
            # Redis failed a publish just now: a write does not wait on it again (a
            # transaction's changes and its counts are two publishes). The poller announces
            # what is not published here once Redis answers.
            return []
        args: list[Any] = [self.history_size, self.channel]
        for pub in publications:
            args += [pub.mode, pub.key, pub.state, pub.expect, body(pub.type, pub.payload)]
        try:
            seqs = self._script(keys=[self.seq_key, self.history_key, self.state_key], args=args)
        except RedisError as exc:
            self._failures.failed("publish", exc)
            self._publish_paused_until = time.monotonic() + PUBLISH_TIMEOUT
            return []
        self._failures.ok("publish")
        return [int(s) for s in seqs]

    def state(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self._sync.hgetall(self.state_key).items()}

    def state_of(self, keys: list[str]) -> dict[str, str]:
        """The stored states of ``keys`` (absent keys left out): one HMGET, not the table."""
        if not keys:
            return {}
        return {key: v.decode() for key, v in zip(keys, self._sync.hmget(self.state_key, keys), strict=True) if v}

    def position_now(self) -> int:
        """The last seq issued (sync, for request threads); created from the clock if absent."""
        self._sync.set(self.seq_key, time.time_ns() // 1000, nx=True)
        return int(self._sync.get(self.seq_key))

    def frames_after_now(self, after: int) -> list[str]:
        """The history's frames after ``after`` (sync, for request threads; what it holds)."""
        return [f.decode() for f in self._sync.zrangebyscore(self.history_key, f"({after}", "+inf")]

    def client_count(self) -> int:
        """Open sockets across the processes that reported within ``CLIENTS_TTL`` (one hash
        read: no key scan). Entries of processes gone quiet are ignored and removed."""
        now = time.time()
        total, stale = 0, []
        for process, value in self._sync.hgetall(self.clients_key).items():
            count, _, reported = value.decode().partition("|")
            if now - float(reported or 0) > CLIENTS_TTL:
                stale.append(process)
            else:
                total += int(count)
        if stale:
            self._sync.hdel(self.clients_key, *stale)
        return total

    def ping(self) -> None:
        self._sync.ping()

    # --- called from the hub (async) --------------------------------------------------

    def _client(self) -> Any:
        """An async client for the running event loop (clients cannot cross loops)."""
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[0] is not loop:
            import redis.asyncio

            self._async = (loop, redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5))
        return self._async[1]

    async def position(self) -> int:
        """The last seq issued, creating the counter (from the clock) if there is none yet."""
        async with self._client().pipeline(transaction=True) as pipe:
            self._ensure_counter(pipe)
            pipe.get(self.seq_key)
            _, current = await pipe.execute()
        return int(current)

    def _ensure_counter(self, pipe: Any) -> None:
        # After a Redis restart the counter is gone: recreate it from the clock now, so the
        # position a resync hands out is where the next event will follow (+1), not 0.
        pipe.set(self.seq_key, time.time_ns() // 1000, nx=True)

    def frames(self) -> AsyncIterator[str | None]:
        """Frames in ``seq`` order; ``None`` after every (re)subscription (see ``batches``)."""
        return _flatten(self.batches())

    async def batches(self) -> AsyncIterator[list[str] | None]:
        """Frames from the pub/sub channel, as many as have arrived (at most ``BATCH_FRAMES``);
        ``None`` after every (re)subscription.

        A subscription that goes silent for ``SUBSCRIPTION_IDLE`` seconds is pinged; one
        that does not answer within ``SUBSCRIPTION_PING_TIMEOUT`` is dead (a half-open TCP
        connection: a NAT or a failover dropped it without a word) and is replaced. The
        hub then repairs what it missed from the history. Detection: within 15 s."""
        import redis.asyncio
        from redis.exceptions import RedisError

        delay = 0.2
        while True:
            # No socket read timeout: quiet is normal; the pings below tell quiet from dead.
            client = redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=None)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    self._failures.ok("subscribe")
                    delay = 0.2
                    yield None
                    async for batch in self._listen(pubsub):
                        yield batch
            except (RedisError, OSError) as exc:
                self._failures.failed("subscribe", exc)
            finally:
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    @staticmethod
    async def _listen(pubsub: Any) -> AsyncIterator[list[str]]:
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged: float | None = None
        while True:
            message = await pubsub.get_message(timeout=SUBSCRIPTION_POLL)
            now = loop.time()
            if message is not None:
                heard, pinged = now, None
                batch = []
                while message is not None:
                    if message["type"] == "message":
                        batch.append(message["data"].decode())
                    if len(batch) >= BATCH_FRAMES:
                        break
                    message = await pubsub.get_message(timeout=0)  # what has arrived already: no wait
                if batch:
                    yield batch
            elif pinged is None and now - heard >= SUBSCRIPTION_IDLE:
                await pubsub.ping()
                pinged = now
            elif pinged is not None and now - pinged >= SUBSCRIPTION_PING_TIMEOUT:
                raise ConnectionError(f"no answer to a ping on the subscription in {SUBSCRIPTION_PING_TIMEOUT:.0f} s")

    async def history_after(self, after: int) -> tuple[int, list[str] | None]:
        async with self._client().pipeline(transaction=True) as pipe:
            self._ensure_counter(pipe)
            pipe.get(self.seq_key)
            pipe.zrange(self.history_key, 0, 0, withscores=True)
            pipe.zrangebyscore(self.history_key, f"({after}", "+inf")
            _, current, oldest, frames = await pipe.execute()
        current = int(current or 0)
        oldest_seq = int(oldest[0][1]) if oldest else None
        if not replay_range(after, current, oldest_seq):
            return current, None
        return current, [f.decode() for f in frames]

    async def report_clients(self, count: int) -> None:
        await self._client().hset(self.clients_key, PROCESS_ID, f"{count}|{time.time():.3f}")


_bus: LocalBus | RedisBus | None = None
_bus_lock = threading.Lock()


def get_bus() -> LocalBus | RedisBus:
    """The process's bus, built from settings on first use."""
    global _bus
    with _bus_lock:
        if _bus is None:
            if settings.REDIS_URL:
                _bus = RedisBus(settings.REDIS_URL, settings.LIVE_HISTORY_SIZE, settings.REDIS_KEY_PREFIX)
            else:
                _bus = LocalBus(settings.LIVE_HISTORY_SIZE)
        return _bus
