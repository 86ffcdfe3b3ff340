"""One holder per deployment for work that must not run twice: a Redis lease.

The PBX link (one worker drives Asterisk) and the logs page's tail (one worker publishes each
log line) run under one each. Every worker that runs such a task tries to take the lease
(redis-py's ``Lock``: ``SET NX PX`` with a token, renewed and released by token-checked
scripts). The holder renews it every
``RENEW_EVERY`` seconds; a standby tries every ``RETRY_EVERY`` seconds, so when the holder
dies its lease expires after at most ``TTL`` seconds and a standby takes over within
``TTL + RETRY_EVERY`` (12 s). A holder that cannot renew (Redis away, or the lease taken
over after a long pause) stops driving Asterisk at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

TTL = 10.0
RENEW_EVERY = 3.0
RETRY_EVERY = 2.0


class LeaseLost(Exception):
    """The lease could not be renewed: another worker may now hold it."""


async def hold_and_run(url: str, name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Wait for the lease ``name``, then run ``work`` for as long as the lease is held."""
    import redis.asyncio
    from redis.exceptions import LockError, RedisError

    client = redis.asyncio.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    lock = client.lock(name, timeout=TTL, thread_local=False)
    waiting_logged = False
    try:
        while True:
            try:
                if await lock.acquire(blocking=False):
                    break
            except RedisError as exc:
                logger.warning("Lease %s: Redis unavailable (%s); retrying", name, exc)
            if not waiting_logged:
                logger.info("On standby: another worker holds the lease %s", name)
                waiting_logged = True
            await asyncio.sleep(RETRY_EVERY)
        logger.info("Lease %s taken: this worker runs its work", name)
        runner = asyncio.ensure_future(work())
        try:
            while not runner.done():
                await asyncio.wait([runner], timeout=RENEW_EVERY)
                if runner.done():
                    break
                try:
                    await lock.reacquire()
                except (LockError, RedisError) as exc:
                    raise LeaseLost(f"could not renew the lease {name}: {exc}") from exc
            runner.result()  # re-raise what ended the work
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
            # Released on a clean stop so a standby takes over at once; a lost lease is not ours.
            with contextlib.suppress(LockError, RedisError):
                await lock.release()
    finally:
        await client.aclose()
