"""The background worker: ``manage.py runworker rayanpbx-poller``.

``runworker`` (overridden in ``live/management/commands``) starts the database poller
beside the usual channel listener, so the one command is enough. Other processes can ask
for an immediate poll by sending ``{"type": "poll.now"}`` to the ``rayanpbx-poller``
channel. Two workers may run at once: the bus's compare-and-set publication means a change
is announced once, whichever worker sees it first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.worker import Worker
from django.conf import settings

from live import poller


class PollerConsumer(AsyncConsumer):
    """Handles messages on the worker channel."""

    async def poll_now(self, message: dict[str, Any]) -> None:
        await database_sync_to_async(poller.poll_once)()


class PollingWorker(Worker):
    """A channels ``Worker`` that also polls the database when given the poller channel."""

    async def handle(self) -> None:
        if settings.LIVE_WORKER_CHANNEL not in self.channels:
            await super().handle()
            return
        polling = asyncio.ensure_future(poller.run_forever())
        try:
            await super().handle()
        finally:
            polling.cancel()
