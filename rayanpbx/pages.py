"""The web pages: login, logout, dashboard, calls, and the extensions and trunks lists.

Pages are server-rendered; each list row comes from one template include, served whole
(``/extensions/``) and one row at a time (``/extensions/<id>/row``) so the page can put a
live-updated row in place without re-fetching the list. Writes go through the REST API
with the session cookie and CSRF token; no token is ever handed to page scripts.

Live PBX state (registrations, calls, failed SIP logins) is embedded in the pages that show
it as ``pbx_snapshot`` (a part of ``pbx.feed.snapshot()`` with its ``seq``, rendered with
``json_script``) when the PBX link is configured; the page scripts draw it and apply the
``extension.registration``, ``trunk.registration``, ``call.*`` and ``security.*`` events
after that ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import models
from django.db.models.functions import Length, Lower
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from extensions.models import Extension
from live.publisher import current_counts
from pbx import feed
from pbx import status as pbx_status
from rayanpbx import login_throttle
from rayanpbx.sip import CODECS, WIDEBAND_CODECS, Transport
from trunks.models import Trunk

View = Callable[..., HttpResponse]


@dataclass(frozen=True)
class ListPage:
    """One list page: its model, templates and what the page script needs to know."""

    model: type[models.Model]
    slug: str  # URL segment and API collection: "extensions"
    topic: str  # live event prefix: "extension"
    title: str
    ordering: tuple[Any, ...]
    live_state: str  # the part of the PBX snapshot the list shows: "registrations"

    def rows(self) -> models.QuerySet:
        return self.model.objects.order_by(*self.ordering)

    def context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {
            "page": self,
            "can_edit": request.user.is_staff,
            "codecs": CODECS,
            "default_codecs": self.model._meta.get_field("codecs").get_default(),
            "default_context": self.model._meta.get_field("context").get_default(),
            "wideband": sorted(WIDEBAND_CODECS),
            "transports": Transport.choices,
            **extra,
        }

    def list_context(self, request: HttpRequest) -> dict[str, Any]:
        return self.context(request, rows=self.rows(), **pbx_context(self.live_state, request=request))


def pbx_context(*parts: str, request: HttpRequest | None = None) -> dict[str, Any]:
    """``pbx_snapshot``: the parts of the live PBX state a page shows, at their ``seq``, plus
    the server's clock (for durations counted in the browser); nothing when no link is set up.

    The snapshot may be older than the page's stream position (the link publishes, then
    writes it): the page then connects from the snapshot's ``seq``, so the PBX events in
    between are replayed rather than missed (row events replayed twice are harmless)."""
    if not pbx_status.configured():
        return {}
    document = feed.snapshot()
    seq = document.get("seq")
    if request is not None and isinstance(seq, int) and getattr(request, "live_seq", None) is not None:
        request.live_seq = min(request.live_seq, seq)
    snapshot = {part: document.get(part) for part in parts}
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"pbx_snapshot": {"seq": document.get("seq"), "server_time": now, **snapshot}}


# Numbers sort as numbers (2 before 10), names without regard to case: the same order the
# page script keeps when it inserts a live-created row (see the rows' data-k-* keys).
EXTENSIONS = ListPage(
    Extension,
    "extensions",
    "extension",
    "Extensions",
    (Length("extension_number"), "extension_number"),
    "registrations",
)
TRUNKS = ListPage(Trunk, "trunks", "trunk", "Trunks", ("priority", Lower("name")), "trunks")


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {"counts": current_counts()}
    context.update(pbx_context("registrations", "calls", "auth_failures", "counts", request=request))
    if "pbx_snapshot" in context:  # the registered count before the link's first status_update
        context["counts"].setdefault("registered", context["pbx_snapshot"]["counts"].get("registered", 0))
    return render(request, "dashboard.html", context)


@login_required
@require_GET
def calls(request: HttpRequest) -> HttpResponse:
    """Calls in progress and the last ended ones, live (drawn by static/js/calls.js)."""
    return render(request, "calls.html", pbx_context("calls", request=request))


def rows_view(page: ListPage, template: str) -> View:
    """The whole list: as a page (``list.html``) or as its rows only (``_rows.html``)."""

    @login_required
    @require_GET
    def view(request: HttpRequest) -> HttpResponse:
        if template == "list.html":
            return render(request, f"{page.slug}/{template}", page.list_context(request))
        return render(request, f"{page.slug}/{template}", page.context(request, rows=page.rows()))

    return view


def row_view(page: ListPage) -> View:
    """One row, rendered by the same include as the list."""

    @login_required
    @require_GET
    def view(request: HttpRequest, pk: int) -> HttpResponse:
        row = get_object_or_404(page.model, pk=pk)
        return render(request, f"{page.slug}/_row.html", page.context(request, row=row))

    return view


class LoginView(auth_views.LoginView):
    """Django's login page, with the same failed-login throttle as the API login."""

    template_name = "login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        if login_throttle.locked_out(request, username):
            form = self.get_form()
            form.errors.clear()
            form.add_error(None, "Too many failed logins; try again later.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        response = super().post(request, *args, **kwargs)
        if request.user.is_authenticated:
            login_throttle.succeeded(request, username)
        else:
            login_throttle.failed(request, username)
        return response


urlpatterns = [
    path("", dashboard, name="dashboard"),
    path("calls/", calls, name="calls"),
    path("login/", LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]
for _page in (EXTENSIONS, TRUNKS):
    urlpatterns += [
        path(f"{_page.slug}/", rows_view(_page, "list.html"), name=_page.slug),
        path(f"{_page.slug}/rows", rows_view(_page, "_rows.html"), name=f"{_page.slug}-rows"),
        path(f"{_page.slug}/<int:pk>/row", row_view(_page), name=f"{_page.slug}-row"),
    ]
