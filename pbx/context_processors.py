"""Template context: the PBX link's status, for the banners every page shows."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from pbx import status


def pbx(request: HttpRequest) -> dict[str, Any]:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"pbx_status": status.read()}
