"""Long-running background tasks: where each one runs, and the supervisor that keeps it running.

A task is an ``async`` function that runs until cancelled (the PBX link, for example). Apps
register theirs in ``AppConfig.ready()`` with the worker channel that runs it:
``manage.py runworker CHANNEL`` runs every task of its channels, and in the embedded
default (no ``REDIS_URL``) the server process runs the tasks marked ``embedded`` itself.
Tasks on the channel ``SERVER`` run in every server process (the PBX link's watchdog).

Every task runs under ``supervise()``: a task that raises is logged once per failure
streak, shown in ``/health`` (``tasks``), and restarted with exponential backoff (0.5 s
doubling, capped at 30 s); a task that returns is restarted too, since none is meant to.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: The channel of tasks that every server process (``manage.py serve``) runs itself.
SERVER = "(every server process)"

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
#: A run that lasted this long resets the backoff: the failure is a new one.
HEALTHY_AFTER = 60.0


@dataclass
class Task:
    name: str
    channel: str
    factory: Callable[[], Awaitable[None]]
    embedded: bool = True
    #: Whether this deployment needs the task at all (e.g. the PBX link only once configured).
    when: Callable[[], bool] = lambda: True
    #: Filled in while it runs in this process.
    state: str = "stopped"  # "running" | "restarting" | "failing" (see report()) | "stopped"
    error: str | None = None
    restarts: int = 0
    since: float = field(default_factory=time.time)


_tasks: dict[str, Task] = {}


def register(
    name: str,
    channel: str,
    factory: Callable[[], Awaitable[None]],
    *,
    embedded: bool = True,
    when: Callable[[], bool] = lambda: True,
) -> None:
    """Declare a background task run by ``runworker CHANNEL`` (and by the embedded server)."""
    _tasks[name] = Task(name, channel, factory, embedded, when)


def channels() -> set[str]:
    return {task.channel for task in _tasks.values()}


def for_channels(names: list[str]) -> list[Task]:
    return [task for task in _tasks.values() if task.channel in names and task.when()]


def embedded() -> list[Task]:
    return [task for task in _tasks.values() if task.embedded and task.when()]


def health() -> dict[str, dict[str, object]]:
    """The tasks running (or restarting, or failing) in this process, for ``/health``."""
    return {
        task.name: {"state": task.state, "error": task.error, "restarts": task.restarts}
        for task in _tasks.values()
        if task.state != "stopped"
    }


def report(name: str, error: str | None) -> None:
    """A running task says it is failing (``error``) or working again (``None``).

    For tasks that retry on their own rather than raise (the database poller retries every
    poll interval): ``/health`` answers 503 naming the task while it reports an error."""
    task = _tasks.get(name)
    if task is None or task.state == "stopped":
        return
    task.state, task.error = ("failing", error) if error else ("running", None)


def spawn(name: str, factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """Run a task of this process only (the live hub's listener, say) under supervision now.

    It is not run by any worker channel; it shows in ``/health`` while it runs."""
    task = _tasks.get(name)
    if task is None or task.channel:
        task = _tasks[name] = Task(name, "", factory, embedded=False)
    task.factory = factory
    return asyncio.ensure_future(supervise(task))


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Delay before restart ``attempt`` (1-based): 0.5 s doubling, capped, with jitter."""
    ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


async def supervise(task: Task) -> None:
    """Run ``task`` until cancelled, restarting it whenever it fails."""
    attempt = 0
    try:
        while True:
            task.state, task.since = "running", time.time()
            started = time.monotonic()
            try:
                await task.factory()
                raise RuntimeError("returned (background tasks run until cancelled)")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started > HEALTHY_AFTER:
                    attempt = 0
                attempt += 1
                task.state, task.error, task.restarts = "restarting", f"{type(exc).__name__}: {exc}", task.restarts + 1
                if attempt == 1:  # once per failure streak: the next ones are in /health
                    logger.exception("Background task %r failed; restarting it with backoff", task.name)
                await asyncio.sleep(backoff(attempt))
                if attempt > 1:
                    logger.warning("Restarting background task %r (attempt %d)", task.name, attempt)
    finally:
        task.state = "stopped"


def start(tasks: list[Task]) -> list[asyncio.Task[None]]:
    """Start ``tasks`` under supervision on the running event loop."""
    return [asyncio.ensure_future(supervise(task)) for task in tasks]
