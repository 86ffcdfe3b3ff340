"""Presence: who has a page open (and in how many tabs), and what they are editing.

A page's socket says where it is with ``{"type": "presence", "tab": "<id>", "page":
"extensions", "editing": "extension:101" | null}`` after every ``welcome`` and whenever its
edit dialog opens or closes (``static/js/live.js`` does it). ``tab`` is the page's own random
id, the same across its reconnects. Sockets that never send one (API clients, scripts) are
not shown: presence is about people.

The state every ``presence`` subscriber receives, whole, each time it changes::

    {"topic": "presence", "type": "presence.state", "payload": {"version": 17, "users": [
        {"username": "alice", "tabs": 2, "pages": ["console", "extensions"],
         "editing": ["extension:101"]}]}}

``version`` grows; a client keeps the highest it has seen (states from two processes may
cross on the way). A subscriber gets the current state right after ``subscribed``, so a page
needs no REST call for it (``GET /api/presence`` has it too, for API clients).

**No flicker.** A socket that closes leaves its entry for ``GRACE`` seconds; the same tab
reconnecting within it takes the entry back, and nobody sees the user leave and return.

**Across processes.** Each server process keeps its own sockets' entries. With Redis they are
written to one hash (a field per process, refreshed every ``HEARTBEAT``; a field older than
``STALE_AFTER`` belongs to a dead process and is dropped), and every change is published as
the merged state of all processes. A change bumps ``version`` *before* reading the hash, so the
highest version always includes every change made before it. Embedded (no Redis) there is one
process and the same code keeps the hash in memory.

**Bounds.** One entry per socket that reported (a socket that changes its ``tab`` moves its
entry), plus the closed ones within their grace period; changes are coalesced for
``COALESCE`` seconds, so a reconnect storm publishes a few states, not one per socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from live import topics

logger = logging.getLogger(__name__)

GRACE = 5.0
HEARTBEAT = 10.0
STALE_AFTER = 30.0
COALESCE = 0.1

_TAB = re.compile(r"[A-Za-z0-9_-]{8,40}")
_PAGE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: What a user may be editing: a row of a list page, by the key the pages use.
_EDITING = re.compile(r"(extension|trunk):[A-Za-z0-9_.+@-]{1,64}")


@dataclass
class Entry:
    username: str
    page: str
    editing: str | None
    gone_at: float | None = None  # its socket closed: kept until gone_at + GRACE


@dataclass(frozen=True)
class Report:
    """A valid presence frame."""

    tab: str
    page: str
    editing: str | None


def parse(frame: dict[str, Any]) -> Report | str:
    """A client's presence frame, or the error message for a malformed one."""
    tab, page, editing = frame.get("tab"), frame.get("page"), frame.get("editing")
    if not isinstance(tab, str) or not _TAB.fullmatch(tab):
        return '"tab" must be 8 to 40 letters, digits, "-" or "_".'
    if not isinstance(page, str) or not _PAGE.fullmatch(page):
        return '"page" must be a page name (lowercase letters, digits, "-" or "_").'
    if editing is not None and (not isinstance(editing, str) or not _EDITING.fullmatch(editing)):
        return '"editing" must be null or "extension:<number>" / "trunk:<name>".'
    return Report(tab, page, editing)


def merge(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries (one per tab, from every process) as one row per user, sorted by name."""
    users: dict[str, dict[str, Any]] = {}
    for entry in entries:
        user = users.setdefault(entry["username"], {"tabs": 0, "pages": set(), "editing": set()})
        user["tabs"] += 1
        user["pages"].add(entry["page"])
        if entry["editing"]:
            user["editing"].add(entry["editing"])
    return [
        {"username": name, "tabs": u["tabs"], "pages": sorted(u["pages"]), "editing": sorted(u["editing"])}
        for name, u in sorted(users.items())
    ]


class _MemoryStore:
    """The shared part in one process (the embedded default)."""

    def __init__(self) -> None:
        self.fields: dict[str, list[dict[str, Any]]] = {}
        self.version = 0
        self.state: dict[str, Any] = {"version": 0, "users": []}

    async def write(self, process: str, entries: list[dict[str, Any]]) -> None:
        self.fields[process] = entries

    async def next_version(self) -> int:
        self.version += 1
        return self.version

    async def read_all(self) -> list[dict[str, Any]]:
        return [entry for entries in self.fields.values() for entry in entries]

    async def current(self) -> dict[str, Any]:
        return self.state

    def current_now(self) -> dict[str, Any]:
        return self.state

    async def store(self, state: dict[str, Any]) -> None:
        if state["version"] > self.state["version"]:
            self.state = state


class _RedisStore:
    """The shared part in Redis: a hash of every process's entries, a version, the last state."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self._client: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self.hash, self.version_key, self.state_key = f"{prefix}presence", f"{prefix}presence:v", f"{prefix}presence:s"

    @property
    def redis(self) -> Any:
        """This event loop's client (a redis.asyncio client works on the loop that made it)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            import redis.asyncio

            self._client = (loop, redis.asyncio.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5))
        return self._client[1]

    async def write(self, process: str, entries: list[dict[str, Any]]) -> None:
        value = json.dumps({"at": time.time(), "entries": entries})
        await self.redis.hset(self.hash, process, value)

    async def next_version(self) -> int:
        return int(await self.redis.incr(self.version_key))

    async def read_all(self) -> list[dict[str, Any]]:
        now, result, dead = time.time(), [], []
        for field, value in (await self.redis.hgetall(self.hash)).items():
            try:
                document = json.loads(value)
                at, entries = float(document["at"]), list(document["entries"])
            except (ValueError, KeyError, TypeError):  # not ours (or damaged): dropped with the dead
                dead.append(field)
                continue
            if now - at > STALE_AFTER:
                dead.append(field)
            else:
                result.extend(entries)
        if dead:
            await self.redis.hdel(self.hash, *dead)
        return result

    async def current(self) -> dict[str, Any]:
        return self._state(await self.redis.get(self.state_key))

    def current_now(self) -> dict[str, Any]:
        """``current()`` from synchronous code (a request thread), on a client of its own."""
        import redis

        with redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5) as client:
            return self._state(client.get(self.state_key))

    @staticmethod
    def _state(raw: bytes | None) -> dict[str, Any]:
        try:
            state = json.loads(raw) if raw else None
        except ValueError:
            state = None
        return state if isinstance(state, dict) else {"version": 0, "users": []}

    async def store(self, state: dict[str, Any]) -> None:
        # Kept for ``current()`` only: a lost race leaves an older state here until the next
        # change or heartbeat (at most HEARTBEAT), and clients still order by version.
        current = await self.current()
        if state["version"] > int(current.get("version", 0)):
            await self.redis.set(self.state_key, json.dumps(state), ex=int(STALE_AFTER * 10))


class Presence:
    """This process's sockets' presence, and the task that shares and publishes it."""

    def __init__(self) -> None:
        self.process = uuid.uuid4().hex
        self.entries: dict[tuple[Any, str], Entry] = {}
        self.holders: dict[tuple[Any, str], set[Any]] = {}
        self.keys: dict[Any, tuple[Any, str]] = {}
        self.store: _MemoryStore | _RedisStore = (
            _RedisStore(settings.REDIS_URL, settings.REDIS_KEY_PREFIX) if settings.REDIS_URL else _MemoryStore()
        )
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # --- from the sockets (the event loop's thread) ---

    def update(self, socket: Any, user: Any, report: Report) -> None:
        key = (user.pk, report.tab)
        old = self.keys.get(socket)
        if old is not None and old != key:
            self._release(socket, old)
        self.keys[socket] = key
        self.holders.setdefault(key, set()).add(socket)
        self.entries[key] = Entry(user.username, report.page, report.editing)
        self._changed()

    def leave(self, socket: Any) -> None:
        key = self.keys.pop(socket, None)
        if key is not None:
            self._release(socket, key)

    def _release(self, socket: Any, key: tuple[Any, str]) -> None:
        holders = self.holders.get(key, set())
        holders.discard(socket)
        if not holders:
            self.holders.pop(key, None)
            entry = self.entries.get(key)
            if entry is not None:
                entry.gone_at = time.monotonic()
                self._changed()  # nothing shows yet; the task wakes to expire it after GRACE

    def _changed(self) -> None:
        if self._task is None or self._task.done():
            from rayanpbx import background

            self._dirty = asyncio.Event()
            self._task = background.spawn("live-presence", self._run)
        assert self._dirty is not None
        self._dirty.set()

    # --- sharing and publishing ---

    def _expire(self) -> float:
        """Drop entries past their grace; the seconds until the next one is due (or HEARTBEAT)."""
        now, wait = time.monotonic(), HEARTBEAT
        for key, entry in list(self.entries.items()):
            if entry.gone_at is None:
                continue
            left = entry.gone_at + GRACE - now
            if left <= 0:
                del self.entries[key]
            else:
                wait = min(wait, left)
        return wait

    def local(self) -> list[dict[str, Any]]:
        return [{"username": e.username, "page": e.page, "editing": e.editing} for e in self.entries.values()]

    async def _run(self) -> None:
        """Share this process's entries and publish the merged state when it changes."""
        assert self._dirty is not None
        while True:
            wait = self._expire()
            try:
                await asyncio.wait_for(self._dirty.wait(), wait)
                await asyncio.sleep(COALESCE)  # a burst of changes: one state
            except TimeoutError:
                pass  # the heartbeat, or a grace period ending
            self._dirty.clear()
            self._expire()
            await self.sync()

    async def sync(self) -> None:
        await self.store.write(self.process, self.local())
        version = await self.store.next_version()  # before the read: see the module's docstring
        users = merge(await self.store.read_all())
        current = await self.store.current()
        if users == current.get("users"):
            return
        state = {"version": version, "users": users}
        await self.store.store(state)
        await topics.publish("presence", "presence.state", state)

    async def current(self) -> dict[str, Any]:
        """The last published state (sent to a new subscriber)."""
        return await self.store.current()

    def current_now(self) -> dict[str, Any]:
        """The last published state, from synchronous code (``GET /api/presence``)."""
        return self.store.current_now()


_presence: Presence | None = None


def get_presence() -> Presence:
    global _presence
    if _presence is None:
        _presence = Presence()
    return _presence
