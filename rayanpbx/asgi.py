"""ASGI entry point: HTTP (pages and API), WebSocket ``/ws`` and the worker channel.

Every connection first passes ``rayanpbx.proxies.ProxyHeadersMiddleware``: its client
address and scheme come from forwarding headers only when its peer is in ``TRUSTED_PROXIES``.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rayanpbx.settings")
django_asgi_app = get_asgi_application()

from live.routing import build_application  # noqa: E402  (needs Django set up first)
from rayanpbx.proxies import ProxyHeadersMiddleware  # noqa: E402

application = ProxyHeadersMiddleware(build_application(django_asgi_app))
