"""Who may do what: any signed-in user reads; only staff users write; some reads are for an
audience only (``rayanpbx.audiences``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

from rayanpbx import audiences

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.views import APIView


class IsStaffOrReadOnly(BasePermission):
    message = "Only staff users may change the PBX configuration."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or bool(user.is_staff)


class InAudience(BasePermission):
    """Signed in, and in ``view.audience`` (``rayanpbx.audiences``): calls, or staff."""

    MESSAGES = {
        audiences.CALLS: "Only staff users and users with the 'see calls' permission (pbx.view_calls) may see calls.",
        audiences.STAFF: "Only staff users may see this.",
    }

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        audience = getattr(view, "audience", None)
        if audience is None or audience in audiences.of_user(user):
            return True
        self.message = self.MESSAGES[audience]
        return False
