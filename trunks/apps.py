from django.apps import AppConfig


class TrunksConfig(AppConfig):
    name = "trunks"
    verbose_name = "Trunks"

    def ready(self) -> None:
        from trunks import broadcasts  # noqa: F401  (registers what is broadcast)
