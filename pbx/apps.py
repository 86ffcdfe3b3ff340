from django.apps import AppConfig


async def run_link() -> None:
    """The PBX link's background task (imported when it starts, not with every process)."""
    from pbx import link

    await link.run()


async def run_traffic() -> None:
    """The traffic page's sampler (``pbx.traffic``): one sample every TRAFFIC_INTERVAL seconds."""
    from pbx import traffic

    await traffic.run()


async def run_watchdog() -> None:
    """Every server process's watch on the link's heartbeat (``pbx.watchdog``)."""
    from pbx import watchdog

    await watchdog.run()


class PbxConfig(AppConfig):
    name = "pbx"
    verbose_name = "Asterisk link"

    def ready(self) -> None:
        from django.conf import settings

        from live import publisher
        from pbx import feed, status
        from rayanpbx import background

        # status_update gains `registered` and `active_calls` once the link is configured.
        if status.configured():
            publisher.register_counts(feed.counts)

        # `runworker rayanpbx-pbx` with Redis; inside the server process in the embedded default.
        background.register("pbx-link", settings.PBX_WORKER_CHANNEL, run_link, when=status.configured)
        # The traffic series: on the poller's channel, which every deployment runs (docs/traffic.md).
        background.register("traffic-sampler", settings.LIVE_WORKER_CHANNEL, run_traffic)
        # With Redis the link is another process: every server watches that it still runs.
        background.register(
            "pbx-watchdog",
            background.SERVER,
            run_watchdog,
            embedded=False,
            when=lambda: status.configured() and bool(settings.REDIS_URL),
        )
