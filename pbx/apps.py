from django.apps import AppConfig


async def run_link() -> None:
    """The PBX link's background task (imported when it starts, not with every process)."""
    from pbx import link

    await link.run()


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
