from django.apps import AppConfig


async def run_poller() -> None:
    """The database poller's background task (see ``live.poller``)."""
    from live import poller

    await poller.run_forever()


async def run_logs_tail() -> None:
    """The logs page's tail of Asterisk's log and RayanPBX's records (see ``live.logs``).

    With Redis, under a lease: several ``runworker rayanpbx-poller`` would otherwise publish
    every line once each."""
    from django.conf import settings

    from live import logs

    if settings.REDIS_URL:
        from rayanpbx.lease import hold_and_run

        await hold_and_run(settings.REDIS_URL, settings.REDIS_KEY_PREFIX + "logs:lease", logs.run)
    else:
        await logs.run()


class LiveConfig(AppConfig):
    name = "live"
    verbose_name = "Live events"

    def ready(self) -> None:
        from django.conf import settings

        from live import logs, revocation
        from rayanpbx import background

        revocation.connect_signals()
        logs.install()  # RayanPBX's own log records, for the logs page, in every process

        # `runworker rayanpbx-poller` with Redis; inside the server process in the embedded default.
        background.register("live-poller", settings.LIVE_WORKER_CHANNEL, run_poller)
        background.register("logs-tail", settings.LIVE_WORKER_CHANNEL, run_logs_tail)
