"""Template context: the PBX link's status, for the banners every page shows, as the user
may see it (an apply's errors for staff only), and what the user may see (``sees``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from pbx import status
from rayanpbx import audiences


def pbx(request: HttpRequest) -> dict[str, Any]:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    sees = audiences.of_user(request.user)
    document = status.read()
    if document.get("apply"):
        document = {**document, "apply": audiences.redact_apply(document["apply"], sees)}
    return {"pbx_status": document, "sees": sees, "sees_calls": audiences.CALLS in sees}
