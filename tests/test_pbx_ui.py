"""The PBX link's state in a real browser: the banners on every page, the dashboard's card.

Debian's Chromium driven by Playwright against a real daphne (``tests.stack.Stack``), as in
tests/test_browser.py. Without an AMI user the link is unconfigured: the dashboard says so
and how to configure it, and no page shows a banner. With one (and Redis), ``pbx.*`` events
published from a Django shell drive the banners and the card live, without a reload; no link
needs to run for that (AMI_PORT is a port nothing listens on). A status document put in the
cache shows that the server renders the same thing before any script runs. Screenshots of
the dashboard at desktop and phone widths go to tests/artifacts/screenshots/.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import chromium, close, open_page
from tests.services import redis_url
from tests.stack import Server, Stack, free_port

pytestmark = [pytest.mark.services, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts" / "screenshots"
LIVE = 5000  # ms a live change may take to show (generous: this is not a timing test)
PHONE = {"width": 390, "height": 844}
AMI_VARIABLES = ("AMI_USERNAME", "AMI_SECRET", "AMI_HOST", "AMI_PORT")
UNREACHABLE = re.compile(
    r"^\s*Asterisk is not reachable since .+ \(Connection refused\)"
    r" — changes are kept and applied when it returns\.\s*$"
)
BANNERS = ("#pbx-link-banner", "#pbx-failed-banner", "#pbx-pending-banner", "#pbx-drift-banner")

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def unlinked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    """The embedded default with no AMI user: no link at all."""
    stack = Stack(tmp_path_factory.mktemp("pbx-ui-unlinked"))
    for name in AMI_VARIABLES:  # whatever the shell running the tests has set
        stack.env.pop(name, None)
    yield stack, stack.start_server()
    stack.close()


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    """Redis, and an AMI user pointing at a port nothing listens on: configured, never connected."""
    ami = {"AMI_USERNAME": "x", "AMI_SECRET": "y", "AMI_HOST": "127.0.0.1", "AMI_PORT": str(free_port())}
    stack = Stack(tmp_path_factory.mktemp("pbx-ui-linked"), redis_url=redis_url(), env=ami)
    yield stack, stack.start_server()
    stack.close()


def publish(stack: Stack, *events: tuple[str, dict[str, Any]]) -> None:
    """Publish pbx.* events from a Django shell, as the link's process does."""
    lines = ["import json", "from live.publisher import publish_event"]
    lines += [f"publish_event({type_!r}, json.loads({json.dumps(payload)!r}))" for type_, payload in events]
    stack.shell("\n".join(lines))


def link(state: str, *, since: str | None = None, error: str | None = None) -> tuple[str, dict[str, Any]]:
    return "pbx.link", {"state": state, "asterisk_version": "22.10.1", "since": since or iso(), "error": error}


def apply(id_: int, state: str, pending: int, duration_ms: int | None = None, errors=()) -> tuple[str, dict[str, Any]]:
    payload = {
        "id": id_,
        "state": state,
        "pending_changes": pending,
        "duration_ms": duration_ms,
        "errors": list(errors),
    }
    return "pbx.apply", payload


def drift(in_db_only=(), in_asterisk_only=()) -> tuple[str, dict[str, Any]]:
    return "pbx.drift", {"in_db_only": list(in_db_only), "in_asterisk_only": list(in_asterisk_only)}


def iso(seconds_ago: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - seconds_ago))


def visible_banners(page) -> list[str]:
    return [selector for selector in BANNERS if page.locator(selector).is_visible()]


def no_sideways_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways"


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"pbx-{name}.png", full_page=True)


# --- no link configured -------------------------------------------------------------------


def test_unconfigured_dashboard_says_so_and_no_page_shows_a_banner(browser, unlinked) -> None:
    _, server = unlinked
    for viewport, name in (({"width": 1280, "height": 860}, "desktop"), (PHONE, "phone")):
        page = open_page(browser, server, "/", viewport=viewport)
        expect(page.locator("#pbx-pill")).to_have_text("Not configured")
        expect(page.locator("#pbx-help")).to_be_visible()
        expect(page.locator("#pbx-help")).to_contain_text("No Asterisk link is configured")
        expect(page.locator("#pbx-help")).to_contain_text("AMI_USERNAME")
        expect(page.locator("#pbx-facts")).to_be_hidden()
        assert visible_banners(page) == []
        no_sideways_scroll(page)
        shoot(page, f"unconfigured-dashboard-{name}")
        close(page)
    page = open_page(browser, server, "/extensions/")
    expect(page.locator("#rows")).to_be_attached()
    assert visible_banners(page) == []
    expect(page.locator("#pbx-banners")).to_have_text(re.compile(r"^\s*$"), use_inner_text=True)  # nor for readers
    close(page)


def test_unconfigured_dashboard_is_right_without_javascript(browser, unlinked) -> None:
    _, server = unlinked
    page = open_page(browser, server, "/", javascript=False)
    expect(page.locator("#pbx-pill")).to_have_text("Not configured")
    expect(page.locator("#pbx-help")).to_contain_text("AMI_USERNAME")
    assert visible_banners(page) == []
    status = json.loads(page.locator("#pbx-status").text_content())
    assert status["configured"] is False and status["link"]["state"] == "unconfigured"
    close(page)


# --- live: pbx.* events drive the banners and the card --------------------------------------


def test_banners_and_card_follow_pbx_events_live(browser, linked) -> None:
    stack, server = linked
    dashboard = open_page(browser, server, "/")
    extensions = open_page(browser, server, "/extensions/")
    pages = (dashboard, extensions)
    pill = dashboard.locator("#pbx-pill")
    expect(pill).to_have_text("Connecting…")  # configured, the link has said nothing yet
    expect(dashboard.locator("#pbx-help")).to_be_hidden()
    for page in pages:
        assert visible_banners(page) == []

    # The link comes up.
    publish(stack, link("connected"))
    expect(pill).to_have_text("Connected", timeout=LIVE)
    expect(pill).to_have_attribute("data-state", "connected")
    expect(dashboard.locator("#pbx-version")).to_have_text("22.10.1")
    expect(dashboard.locator("#pbx-since")).to_be_visible()

    # Changes wait, then are applied: "Applying 3 changes…" on every page. (pending_changes,
    # as in pbx/link.py: for "pending" what waits so far, otherwise what the apply takes.)
    publish(stack, apply(1, "pending", 3))
    for page in pages:
        banner = page.locator("#pbx-pending-banner")
        expect(banner).to_be_visible(timeout=LIVE)
        expect(banner).to_have_text("Applying 3 changes…")
        expect(banner).to_have_attribute("data-applying", "")
        expect(banner.locator("xpath=..")).to_have_attribute("aria-live", "polite")
    expect(dashboard.locator("#pbx-pending")).to_have_text("3")
    publish(stack, apply(1, "applying", 3))
    expect(dashboard.locator("#pbx-last-apply")).to_have_text("In progress…", timeout=LIVE)

    # It fails: each object and message shown as text, in an alert; nothing is pending any more
    # (a failed apply applied every object it does not name).
    errors = [
        {"object": "extension 101", "message": "<img src=x onerror=alert(1)> codec 'g729' is not loaded"},
        {"object": "configuration", "message": "Asterisk refused the reload"},
    ]
    publish(stack, apply(1, "failed", 3, 87, errors))
    for page in pages:
        failed = page.locator("#pbx-failed-banner")
        expect(failed).to_be_visible(timeout=LIVE)
        expect(failed.locator("xpath=..")).to_have_attribute("role", "alert")
        expect(failed.locator("li")).to_have_text(
            ["extension 101: <img src=x onerror=alert(1)> codec 'g729' is not loaded",
             "configuration: Asterisk refused the reload"]
        )  # fmt: skip
        expect(failed.locator("img")).to_have_count(0)
        expect(page.locator("#pbx-pending-banner")).to_be_hidden()
    expect(dashboard.locator("#pbx-last-apply")).to_have_text(re.compile(r"^Failed at .+ in 87 ms \(2 errors\)$"))
    expect(dashboard.locator("#pbx-last-apply")).to_have_attribute("data-state", "failed")

    # The next apply runs while another change comes in: that one is still to be applied after.
    publish(stack, apply(2, "pending", 1), apply(2, "applying", 2))
    for page in pages:
        expect(page.locator("#pbx-failed-banner")).to_be_hidden(timeout=LIVE)
        expect(page.locator("#pbx-pending-banner")).to_have_text("Applying 2 changes…")
    publish(stack, apply(3, "pending", 1), apply(2, "applied", 2, 412))
    for page in pages:
        expect(page.locator("#pbx-pending-banner")).to_have_text("1 change not yet applied", timeout=LIVE)
    expect(dashboard.locator("#pbx-last-apply")).to_have_text(re.compile(r"^Applied at .+ in 412 ms$"))
    expect(dashboard.locator("#pbx-pending")).to_have_text("1")
    publish(stack, apply(3, "applying", 1), apply(3, "applied", 1, 95))
    for page in pages:
        expect(page.locator("#pbx-pending-banner")).to_be_hidden(timeout=LIVE)
    expect(dashboard.locator("#pbx-pending")).to_have_text("None")
    # A verification (POST /api/pbx/apply, or after a reconnect) takes no change.
    publish(stack, apply(4, "applying", 0))
    expect(extensions.locator("#pbx-pending-banner")).to_have_text("Verifying Asterisk's configuration…", timeout=LIVE)
    publish(stack, apply(4, "applied", 0, 40))
    expect(extensions.locator("#pbx-pending-banner")).to_be_hidden(timeout=LIVE)

    # Drift appears, then clears.
    publish(stack, drift(["extension 105"], ["extension 107", "extension 108"]))
    for page in pages:
        banner = page.locator("#pbx-drift-banner")
        expect(banner).to_be_visible(timeout=LIVE)
        expect(banner).to_have_text(
            "RayanPBX and Asterisk disagree. In RayanPBX but not in Asterisk: extension 105; "
            "in Asterisk but removed here: extension 107, extension 108."
        )
    publish(stack, drift())
    for page in pages:
        expect(page.locator("#pbx-drift-banner")).to_be_hidden(timeout=LIVE)

    # Asterisk goes away: the pill and an alert on every page; changes made meanwhile wait.
    since = iso()
    publish(stack, link("disconnected", since=since, error="Connection refused"))
    expect(pill).to_have_text("Disconnected", timeout=LIVE)
    expect(dashboard.locator("#pbx-uptime")).to_have_text("—")
    for page in pages:
        banner = page.locator("#pbx-link-banner")
        expect(banner).to_be_visible(timeout=LIVE)
        expect(banner).to_have_text(UNREACHABLE)
        expect(banner.locator("time")).to_have_attribute("datetime", since)
    publish(stack, apply(5, "pending", 2))
    for page in pages:
        expect(page.locator("#pbx-pending-banner")).to_have_text("2 changes not yet applied", timeout=LIVE)
        expect(page.locator("#pbx-pending-banner")).not_to_have_attribute("data-applying", "")

    # It returns and applies what waited.
    publish(stack, link("connected"), apply(5, "applying", 2), apply(5, "applied", 2, 230))
    for page in pages:
        expect(page.locator("#pbx-link-banner")).to_be_hidden(timeout=LIVE)
        expect(page.locator("#pbx-pending-banner")).to_be_hidden()
    expect(pill).to_have_text("Connected")
    for page in pages:
        assert page.evaluate("window.__noReload === true"), "the page reloaded"
        close(page)


# --- what the server renders before any script runs ----------------------------------------


STATUS = {
    "configured": True,
    "link": {"state": "connected", "asterisk_version": "22.10.1", "since": None, "error": None},
    "asterisk": {"version": "22.10.1", "startup_at": None, "reload_at": None},
    "apply": {
        "id": 9, "state": "failed", "pending_changes": 3, "duration_ms": 412, "finished_at": None,
        "errors": [{"object": "trunk acme", "message": "host <acme> does not resolve"}],
    },
    "pending_changes": 2,
    "drift": {"in_db_only": [f"extension {n}" for n in range(200, 212)], "in_asterisk_only": ["extension 107"]},
    "site_endpoints": ["6001"],
    "help": None,
}  # fmt: skip


def put_status(stack: Stack, status: dict[str, Any]) -> None:
    """Write the status document as the link does (with a fresh heartbeat)."""
    stack.shell(
        "import json, time\nfrom django.core.cache import cache\nfrom pbx import status\n"
        f"cache.set(status.KEY, {{**json.loads({json.dumps(status)!r}), 'heartbeat': time.time()}}, timeout=None)\n"
    )


def test_server_render_matches_the_live_render_and_uptime_ticks(browser, linked) -> None:
    stack, server = linked
    status = json.loads(json.dumps(STATUS))
    status["link"]["since"] = iso(3600)
    status["asterisk"]["startup_at"] = iso(2 * 3600 + 5)
    status["asterisk"]["reload_at"] = iso(600)
    status["apply"]["finished_at"] = iso(60)
    put_status(stack, status)
    try:
        static = open_page(browser, server, "/", javascript=False)
        live = open_page(browser, server, "/")
        for page in (static, live):
            # Times aside (the server writes UTC, the page the browser's local time), the same words.
            expect(page.locator("#pbx-pending-banner")).to_have_text("2 changes not yet applied")
            expect(page.locator("#pbx-failed-banner li")).to_have_text(["trunk acme: host <acme> does not resolve"])
            expect(page.locator("#pbx-drift-banner")).to_have_text(
                "RayanPBX and Asterisk disagree. In RayanPBX but not in Asterisk: "
                + ", ".join(f"extension {n}" for n in range(200, 210))
                + " and 2 more; in Asterisk but removed here: extension 107."
            )
            expect(page.locator("#pbx-link-banner")).to_be_hidden()
            expect(page.locator("#pbx-pill")).to_have_text("Connected")
            expect(page.locator("#pbx-version")).to_have_text("22.10.1")
            expect(page.locator("#pbx-pending")).to_have_text("2")
            expect(page.locator("#pbx-last-apply")).to_have_text(re.compile(r"^Failed at .+ in 412 ms \(1 error\)$"))
        expect(static.locator("#pbx-uptime")).to_contain_text("UTC")  # "since <start>" until scripts run
        uptime = live.locator("#pbx-uptime")
        expect(uptime).to_have_text(re.compile(r"^2 h 0 min \d+ s$"))
        first = uptime.inner_text()
        expect(uptime).not_to_have_text(first, timeout=2500)  # it ticks, with no request
        for viewport, name in (({"width": 1280, "height": 860}, "desktop"), (PHONE, "phone")):
            page = open_page(browser, server, "/", viewport=viewport)
            expect(page.locator("#pbx-uptime")).to_have_text(re.compile(r" s$"))
            no_sideways_scroll(page)
            shoot(page, f"linked-dashboard-{name}")
            close(page)
        dark = open_page(browser, server, "/", dark=True)
        shoot(dark, "linked-dashboard-desktop-dark")
        close(dark)
        close(static, live)
    finally:
        stack.shell("from django.core.cache import cache\nfrom pbx import status\ncache.delete(status.KEY)")


def test_disconnected_screenshots(browser, linked) -> None:
    stack, server = linked
    status = json.loads(json.dumps(STATUS))
    status["link"] = link("disconnected", since=iso(90), error="Connection refused")[1]
    status["apply"] = {**apply(10, "pending", 4)[1], "finished_at": None}
    status["pending_changes"] = 4
    status["drift"] = {"in_db_only": [], "in_asterisk_only": []}
    put_status(stack, status)
    try:
        for viewport, name, dark in (
            ({"width": 1280, "height": 860}, "desktop", False),
            (PHONE, "phone", False),
            (PHONE, "phone-dark", True),
        ):
            page = open_page(browser, server, "/extensions/" if name == "phone" else "/", viewport=viewport, dark=dark)
            expect(page.locator("#pbx-link-banner")).to_contain_text("(Connection refused)")
            expect(page.locator("#pbx-pending-banner")).to_have_text("4 changes not yet applied")
            no_sideways_scroll(page)
            shoot(page, f"disconnected-{'extensions' if name == 'phone' else 'dashboard'}-{name}")
            close(page)
    finally:
        stack.shell("from django.core.cache import cache\nfrom pbx import status\ncache.delete(status.KEY)")
