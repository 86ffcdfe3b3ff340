"""ASGI entry point: HTTP (pages and API), WebSocket ``/ws`` and the worker channel."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rayanpbx.settings")
django_asgi_app = get_asgi_application()

from live.routing import build_application  # noqa: E402  (needs Django set up first)

application = build_application(django_asgi_app)
