from django.apps import AppConfig


class ExtensionsConfig(AppConfig):
    name = "extensions"
    verbose_name = "Extensions"

    def ready(self) -> None:
        from extensions import broadcasts  # noqa: F401  (registers what is broadcast)
