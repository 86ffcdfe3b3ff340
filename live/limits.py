"""Connection limits on ``/ws``: per client address, per user, per process.

A refused socket is accepted and closed at once with a code and a reason the page shows
(docs/live-events.md, "Close codes"), never an HTTP error or a 500:

* ``4029`` **connecting too fast**: each client address (the one ``rayanpbx.proxies`` trusts)
  has a token bucket of ``LIVE_CONNECT_BURST`` connects, refilled at ``LIVE_CONNECT_RATE``
  per second, per server process. Checked before the credentials, so a flood costs no
  database work. A socket without a known address (a unix socket, an in-process test) is not
  rate-limited. At most ``MAX_ADDRESSES`` buckets are kept: past that, the full (idle) ones
  are forgotten first, which costs a forgotten address nothing.
* ``4030`` **too many sockets for this user**: at most ``LIVE_MAX_SOCKETS_PER_USER`` open at
  once, over the whole deployment: with Redis, a sorted set per user of socket ids scored by
  when they expire (each process refreshes its sockets every ``REFRESH`` seconds, so a
  crashed process's sockets stop counting after ``TTL``); embedded, this process's count.
* ``4031`` **server full**: this process holds ``LIVE_MAX_SOCKETS`` sockets (nginx, or the
  client's reconnect, goes to another process).

``0`` turns a limit off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

CLOSE_RATE = 4029
CLOSE_USER_SOCKETS = 4030
CLOSE_SERVER_FULL = 4031
CODES = (CLOSE_RATE, CLOSE_USER_SOCKETS, CLOSE_SERVER_FULL)

MAX_ADDRESSES = 10_000
TTL = 60.0
REFRESH = 20.0


class ConnectRate:
    """Token buckets per client address (one process's)."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)

    def allow(self, address: str | None) -> bool:
        rate, burst = settings.LIVE_CONNECT_RATE, float(settings.LIVE_CONNECT_BURST)
        if not rate or address is None:
            return True
        now = time.monotonic()
        tokens, at = self.buckets.get(address, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens < 1:
            self.buckets[address] = (tokens, now)
            return False
        if address not in self.buckets and len(self.buckets) >= MAX_ADDRESSES:
            self._forget(now, rate, burst)
        self.buckets[address] = (tokens - 1, now)
        return True

    def _forget(self, now: float, rate: float, burst: float) -> None:
        full = [a for a, (t, at) in self.buckets.items() if t + (now - at) * rate >= burst]
        for address in full or list(self.buckets)[: MAX_ADDRESSES // 10]:
            del self.buckets[address]


connect_rate = ConnectRate()


def rate_refusal(scope: dict[str, Any]) -> str | None:
    """The reason to refuse this handshake for its address's connect rate, or None."""
    client = scope.get("client")
    if connect_rate.allow(client[0] if client else None):
        return None
    return f"connecting too fast from your address (more than {settings.LIVE_CONNECT_RATE:g}/s): retry shortly"


_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if tonumber(ARGV[4]) > 0 and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class UserSockets:
    """Sockets open per user: this process's, and with Redis the deployment's."""

    def __init__(self) -> None:
        self.local: dict[Any, set[str]] = {}
        self._redis: Any = None
        self._script: Any = None
        self._refresher: asyncio.Task[None] | None = None
        if settings.REDIS_URL:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
            self._script = self._redis.register_script(_ACQUIRE)

    @staticmethod
    def _key(user_pk: Any) -> str:
        return f"{settings.REDIS_KEY_PREFIX}live:sockets:{user_pk}"

    async def acquire(self, user_pk: Any, socket_id: str) -> bool:
        limit = settings.LIVE_MAX_SOCKETS_PER_USER
        mine = self.local.setdefault(user_pk, set())
        if self._redis is None or not limit:
            if limit and len(mine) >= limit:
                return False
        else:
            now = time.time()
            try:
                taken = await self._script(keys=[self._key(user_pk)], args=[now, now + TTL, socket_id, limit, int(TTL)])
            except Exception as exc:  # Redis away: count this process's only, and say so once per socket
                logger.warning("Per-user socket limit checked in this process only (Redis: %s)", exc)
                taken = len(mine) < limit
            if not taken:
                return False
            self._start_refresher()
        mine.add(socket_id)
        return True

    async def release(self, user_pk: Any, socket_id: str) -> None:
        mine = self.local.get(user_pk)
        if mine is None or socket_id not in mine:
            return
        mine.discard(socket_id)
        if not mine:
            del self.local[user_pk]
        if self._redis is not None and settings.LIVE_MAX_SOCKETS_PER_USER:
            try:
                await self._redis.zrem(self._key(user_pk), socket_id)
            except Exception:  # Redis away: the entry expires by itself after TTL
                logger.debug("Could not release a socket's slot; it expires after %s s", TTL)

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            from rayanpbx import background

            self._refresher = background.spawn("live-socket-limits", self._refresh)

    async def _refresh(self) -> None:
        """Keep this process's sockets counted (their scores are when they expire)."""
        while True:
            await asyncio.sleep(REFRESH)
            expires = time.time() + TTL
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_pk, ids in list(self.local.items()):
                    if ids:
                        pipe.zadd(self._key(user_pk), dict.fromkeys(ids, expires))
                        pipe.expire(self._key(user_pk), int(TTL))
                await pipe.execute()
