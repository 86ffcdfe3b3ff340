"""``runworker``: channels' worker, which also runs the database poller on its channel."""

from __future__ import annotations

from typing import Any

from channels.management.commands import runworker
from django.conf import settings
from django.core.management import CommandError

from live.worker import PollingWorker


class Command(runworker.Command):
    help = f"Run background work: `runworker {settings.LIVE_WORKER_CHANNEL}` polls the database for outside changes."
    worker_class = PollingWorker

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.LIVE_WORKER_CHANNEL in options["channels"] and not settings.REDIS_URL:
            raise CommandError(
                "runworker needs REDIS_URL: without Redis the poller already runs inside the server process."
            )
        super().handle(*args, **options)
