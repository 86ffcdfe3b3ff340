"""The background worker: ``manage.py runworker rayanpbx-poller [rayanpbx-pbx]``.

``runworker`` (overridden in ``live/management/commands``) starts, beside the usual channel
listener, every background task registered for its channels (``rayanpbx.background``: the
database poller on ``rayanpbx-poller``, the PBX link on ``rayanpbx-pbx``), supervised, so
the one command is enough. Other processes can ask for an immediate poll by sending
``{"type": "poll.now"}`` to the ``rayanpbx-poller`` channel. Two workers may run at once:
the bus's compare-and-set publication means a change is announced once, whichever worker
sees it first, and the PBX link runs on one worker only (``rayanpbx.lease``).
"""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.worker import Worker

from live import poller
from rayanpbx import background


class PollerConsumer(AsyncConsumer):
    """Handles messages on the worker channel."""

    async def poll_now(self, message: dict[str, Any]) -> None:
        await database_sync_to_async(poller.poll_once)()


class PollingWorker(Worker):
    """A channels ``Worker`` that also runs the background work of its channels."""

    async def handle(self) -> None:
        tasks = background.start(background.for_channels(list(self.channels)))
        try:
            await super().handle()
        finally:
            for task in tasks:
                task.cancel()
