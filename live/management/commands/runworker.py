"""``runworker``: channels' worker, which also runs the background work of its channels."""

from __future__ import annotations

from typing import Any

from channels.management.commands import runworker
from django.conf import settings
from django.core.management import CommandError

from live.worker import PollingWorker
from rayanpbx import background


class Command(runworker.Command):
    help = (
        f"Run background work: `runworker {settings.LIVE_WORKER_CHANNEL}` polls the database for outside "
        f"changes; `runworker {settings.PBX_WORKER_CHANNEL}` drives Asterisk (one active per deployment)."
    )
    worker_class = PollingWorker

    def handle(self, *args: Any, **options: Any) -> None:
        ours = {settings.LIVE_WORKER_CHANNEL, *background.channels()} & set(options["channels"])
        if ours and not settings.REDIS_URL:
            raise CommandError(
                f"runworker {' '.join(sorted(ours))} needs REDIS_URL: without Redis this work already runs "
                "inside the server process."
            )
        if settings.PBX_WORKER_CHANNEL in options["channels"] and not settings.AMI_USERNAME:
            raise CommandError(
                f"runworker {settings.PBX_WORKER_CHANNEL}: the PBX link is not configured (set AMI_USERNAME "
                "and AMI_SECRET; see README 'The Asterisk link')."
            )
        super().handle(*args, **options)
