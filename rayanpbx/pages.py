"""The web pages: login, logout, dashboard, calls, and the extensions and trunks lists.

Pages are server-rendered. A list page shows one page of rows (``/extensions/?page=2&sort=
-name&status=enabled&q=12``: paged, sorted, filtered and searched on the server, see
``rayanpbx.listing``), with its counts and prev/next links that work without JavaScript.
Each row comes from one template include, served in the page, one row at a time
(``/extensions/<id>/row``, so the script can put a changed row in place) and as the rows of
one page (``/extensions/rows?`` the same query: JSON ``{html, pager, total, count, page,
pages, start, end, query, seq}``).

**Stream position of a fragment.** ``seq`` is the bus position read before the query (by
``live.middleware``, as for a whole page): the rows reflect every event up to ``seq``. The
page script (static/js/listpage.js) therefore ignores row events at or below the ``seq`` of
the rows it shows (already in them), and when a row event above it arrived while the
fragment was being fetched, it fetches the page once more: a change committed between the
query and the socket's next event is never lost, only possibly fetched twice.

Writes go through the REST API with the session cookie and CSRF token; no token is ever
handed to page scripts.

Live PBX state (registrations, calls, failed SIP logins) is embedded in the pages that show
it as ``pbx_snapshot`` (a part of ``pbx.feed.snapshot()`` with its ``seq``, rendered with
``json_script``) when the PBX link is configured; the page scripts draw it and apply the
``extension.registration``, ``trunk.registration``, ``call.*`` and ``security.*`` events
after that ``seq``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import models
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.urls import path
from django.views.decorators.http import require_GET

from extensions.models import Extension
from live.bus import get_bus
from live.publisher import current_counts
from pbx import feed
from pbx import status as pbx_status
from rayanpbx import audiences, listing, login_throttle
from rayanpbx.sip import CODECS, WIDEBAND_CODECS, Transport
from trunks.models import Trunk

View = Callable[..., HttpResponse]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListPage:
    """One list page: its model, templates and what the page script needs to know."""

    model: type[models.Model]
    slug: str  # URL segment and API collection: "extensions"
    topic: str  # live event prefix: "extension"
    title: str
    spec: listing.ListSpec
    live_state: tuple[str, ...]  # the parts of the PBX snapshot the list shows: ("registrations", ...)

    def result(self, request: HttpRequest) -> listing.ListResult:
        """The page of rows the request's query string asks for."""
        live = pbx_status.configured()
        query = listing.ListQuery.parse(request.GET, self.spec, live=live)
        registrations = None
        if live and (query.sort_key == "status" or query.status in ("registered", "unregistered")):
            registrations = registrations_now(self.live_state[0], f"{self.topic}.registration", self.spec.live_key)
        return listing.run(self.model, self.spec, query, registrations)

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
        result = self.result(request)
        return self.context(
            request,
            rows=result.rows,
            result=result,
            **pager_context(result),
            **pbx_context(*self.live_state, request=request),
        )


def _frames_after(seq: int) -> list[str]:
    """The bus's stream frames after ``seq`` (its replay history), read from a request thread.

    Nothing when it cannot be read (the snapshot then stands)."""
    try:
        return get_bus().frames_after_now(seq)
    except Exception as exc:  # Redis away: the snapshot alone
        logger.warning("Could not read the stream history for the list's registrations: %s", exc)
        return []


def registrations_now(part: str, event: str, key: str) -> list[dict[str, Any]]:
    """The registrations as they are now: the PBX snapshot's ``part`` with the ``event``
    frames published after its ``seq`` applied (the link publishes, then writes the
    snapshot, so the snapshot alone may miss the last events the page has already drawn)."""
    document = feed.snapshot()
    items = {str(item.get(key)): item for item in document.get(part) or [] if isinstance(item, dict)}
    seq = document.get("seq")
    if isinstance(seq, int):
        marker = f'"{event}"'
        for frame in _frames_after(seq):
            if marker not in frame:
                continue
            try:
                data = json.loads(frame)
            except ValueError:
                continue
            payload = data.get("payload")
            if data.get("type") == event and isinstance(payload, dict):
                items[str(payload.get(key))] = payload
    return list(items.values())


def pager_context(result: listing.ListResult) -> dict[str, Any]:
    """The links of the pager and the sort buttons (``sort_next``: what each sort button asks
    for, ``sort_state``: its ``aria-sort``), as query strings of the same view."""
    query = result.query

    def link(**changes: Any) -> str:
        return "?" + urlencode(query.params(**changes))

    keys = [*result.spec_sorts, "status"]
    return {
        "sort_next": {key: f"-{key}" if query.sort == key else key for key in keys},
        "sort_state": {
            key: ("descending" if query.descending else "ascending") if query.sort_key == key else "" for key in keys
        },
        "prev_link": link(page=result.page - 1) if result.page > 1 else "",
        "next_link": link(page=result.page + 1) if result.page < result.pages else "",
        "first_link": link(page=1),
        "last_link": link(page=result.pages),
        "list_query": query,
    }


def pbx_context(*parts: str, request: HttpRequest | None = None) -> dict[str, Any]:
    """``pbx_snapshot``: the parts of the live PBX state a page shows, at their ``seq``, plus
    the server's clock (for durations counted in the browser); nothing when no link is set up.

    The snapshot may be older than the page's stream position (the link publishes, then
    writes it): the page then connects from the snapshot's ``seq``, so the PBX events in
    between are replayed rather than missed (row events replayed twice are harmless)."""
    if not pbx_status.configured():
        return {}
    if request is not None:  # the parts this user may see (rayanpbx.audiences); the page says so
        sees = audiences.of_user(request.user)
        parts = tuple(part for part in parts if audiences.may_read(part, sees))
    document = feed.snapshot()
    seq = document.get("seq")
    if request is not None and isinstance(seq, int) and getattr(request, "live_seq", None) is not None:
        request.live_seq = min(request.live_seq, seq)
    snapshot = {part: document.get(part) for part in parts}
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"pbx_snapshot": {"seq": document.get("seq"), "server_time": now, **snapshot}}


EXTENSIONS = ListPage(
    Extension,
    "extensions",
    "extension",
    "Extensions",
    listing.EXTENSION_LIST,
    ("registrations", "auth_failures"),  # failed logins for the diagnostics dialog
)
TRUNKS = ListPage(Trunk, "trunks", "trunk", "Trunks", listing.TRUNK_LIST, ("trunks",))


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
    """Calls in progress and the last ended ones, live (drawn by static/js/calls.js); for
    staff and users with the ``pbx.view_calls`` permission (``rayanpbx.audiences``)."""
    if audiences.CALLS not in audiences.of_user(request.user):
        return render(request, "calls.html", {"refused": True}, status=403)
    return render(request, "calls.html", pbx_context("calls", request=request))


def list_view(page: ListPage) -> View:
    """One page of the list, as a whole page (``list.html``)."""

    @login_required
    @require_GET
    def view(request: HttpRequest) -> HttpResponse:
        return render(request, f"{page.slug}/list.html", page.list_context(request))

    return view


def rows_view(page: ListPage) -> View:
    """One page of the list as JSON for the page script: its rows, pager, counts and ``seq``."""

    @login_required
    @require_GET
    def view(request: HttpRequest) -> HttpResponse:
        result = page.result(request)
        context = page.context(request, rows=result.rows, result=result, **pager_context(result))
        return JsonResponse(
            {
                "html": render_to_string(f"{page.slug}/_rows.html", context, request=request),
                "pager": render_to_string("_pager.html", context, request=request),
                "seq": getattr(request, "live_seq", None),
                **result.as_json(),
            },
            headers={"Cache-Control": "no-store"},
        )

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
        path(f"{_page.slug}/", list_view(_page), name=_page.slug),
        path(f"{_page.slug}/rows", rows_view(_page), name=f"{_page.slug}-rows"),
        path(f"{_page.slug}/<int:pk>/row", row_view(_page), name=f"{_page.slug}-row"),
    ]
