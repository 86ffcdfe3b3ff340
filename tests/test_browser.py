"""The web UI in a real browser: Debian's Chromium driven by Playwright.

Two browser contexts follow each other's changes (and the REST API's) without a reload,
on the embedded default (one server) and on Redis with two daphne processes (one browser
on each). Screenshots of every page at desktop and phone widths go to tests/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chromium import chromium
from tests.services import redis_url
from tests.stack import ADMIN_PASSWORD, Server, Stack

pytestmark = [pytest.mark.services, pytest.mark.browser]

ARTIFACTS = Path(__file__).parent / "artifacts" / "screenshots"
LIVE = 5000  # ms a live change may take to show (generous: this is not a timing test)
READER_PASSWORD = "reader-password-1234"

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module", params=["embedded", "redis"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A deployment with two servers for the two browsers (the same one when embedded)."""
    url = redis_url() if request.param == "redis" else None
    stack = Stack(tmp_path_factory.mktemp(f"ui-{request.param}"), redis_url=url)
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        f"get_user_model().objects.create_user('reader', password='{READER_PASSWORD}')\n"
    )
    first = stack.start_server()
    stack.servers = [first, stack.start_server() if url else first]
    stack.mode = request.param
    yield stack
    stack.close()


def open_page(
    browser, server: Server, path: str, *, user: str = "admin", password: str = ADMIN_PASSWORD, viewport=None
):
    # bypass_csp: wait_for_function's predicates are eval'd (see tests/chromium.py)
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 860}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{server.http}/login/?next={path}")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE)
    page.evaluate("window.__noReload = true")  # gone if the page ever reloads
    return page


def assert_not_reloaded(page) -> None:
    assert page.evaluate("window.__noReload === true")


def row(page, topic: str, pk: int):
    return page.locator(f"#{topic}-{pk}")


# --- the lists follow every change --------------------------------------------------------


def test_extensions_follow_changes_from_everywhere(browser, site: Stack) -> None:
    a = open_page(browser, site.servers[0], "/extensions/")
    b = open_page(browser, site.servers[1], "/extensions/")
    # Create in A, through the dialog.
    a.click("[data-action=create]")
    a.fill("#f-extension_number", "3101")
    a.fill("#f-name", "Front desk")
    a.click("#save-button")
    expect(a.locator("#secret-dialog")).to_be_visible()
    assert len(a.locator("#secret-value").inner_text()) >= 16
    a.click("#secret-dialog button[type=submit]")
    created = b.locator("tr", has_text="Front desk")
    expect(created).to_be_visible(timeout=LIVE)
    pk = int(created.get_attribute("data-id"))
    # Rename in A.
    row(a, "extension", pk).locator("[data-action=edit]").click()
    expect(a.locator("#f-extension_number")).to_have_value("3101")
    a.fill("#f-name", "Lobby phone")
    a.click("#save-button")
    expect(row(b, "extension", pk)).to_contain_text("Lobby phone", timeout=LIVE)
    # Toggle in A.
    row(a, "extension", pk).locator("[data-action=toggle]").click()
    expect(row(b, "extension", pk).locator("[data-action=toggle]")).to_have_attribute(
        "aria-checked", "false", timeout=LIVE
    )
    # Change through the REST API: both pages follow.
    token = site.login(site.servers[0])
    site.request(site.servers[0], "PATCH", f"/api/extensions/{pk}", {"name": "Renamed by API"}, token)
    for page in (a, b):
        expect(row(page, "extension", pk)).to_contain_text("Renamed by API", timeout=LIVE)
    # A created row lands in its sorted place (numbers sort as numbers).
    site.request(site.servers[0], "POST", "/api/extensions", {"extension_number": "99", "name": "Sorted"}, token)
    expect(b.locator("#rows tr").first).to_contain_text("Sorted", timeout=LIVE)
    # Delete in A, with the confirmation.
    row(a, "extension", pk).locator("[data-action=delete]").click()
    expect(a.locator("#confirm-dialog")).to_be_visible()
    a.click("#confirm-button")
    for page in (a, b):
        expect(row(page, "extension", pk)).to_have_count(0, timeout=LIVE)
    assert_not_reloaded(a), assert_not_reloaded(b)
    a.context.close(), b.context.close()


def test_trunks_follow_changes_from_everywhere(browser, site: Stack) -> None:
    a = open_page(browser, site.servers[0], "/trunks/")
    b = open_page(browser, site.servers[1], "/trunks/")
    a.click("[data-action=create]")
    a.fill("#f-name", "carrier-ui")
    a.fill("#f-host", "sip.carrier.example")
    a.fill("#f-username", "acct5512")
    a.fill("#f-secret", "A-strong-trunk-secret-9")
    a.click("#save-button")
    created = b.locator("tr", has_text="carrier-ui")
    expect(created).to_be_visible(timeout=LIVE)
    pk = int(created.get_attribute("data-id"))
    expect(a.locator("#secret-dialog")).to_be_hidden()  # a supplied secret is not shown back
    row(a, "trunk", pk).locator("[data-action=edit]").click()
    a.fill("#f-host", "10.20.30.40")
    a.click("#save-button")
    expect(row(b, "trunk", pk)).to_contain_text("10.20.30.40", timeout=LIVE)
    row(b, "trunk", pk).locator("[data-action=toggle]").click()
    expect(row(a, "trunk", pk).locator("[data-action=toggle]")).to_have_attribute("aria-checked", "false", timeout=LIVE)
    token = site.login(site.servers[0])
    site.request(site.servers[0], "DELETE", f"/api/trunks/{pk}", None, token)
    for page in (a, b):
        expect(row(page, "trunk", pk)).to_have_count(0, timeout=LIVE)
    assert_not_reloaded(a), assert_not_reloaded(b)
    a.context.close(), b.context.close()


def test_dashboard_counts_change_live(browser, site: Stack) -> None:
    page = open_page(browser, site.servers[1], "/")
    total = page.locator("[data-count=extensions_total]")
    enabled = page.locator("[data-count=extensions]")
    before_total, before_enabled = int(total.inner_text()), int(enabled.inner_text())
    token = site.login(site.servers[0])
    _, created = site.request(
        site.servers[0], "POST", "/api/extensions", {"extension_number": "3201", "name": "Count me"}, token
    )
    expect(total).to_have_text(str(before_total + 1), timeout=LIVE)
    expect(enabled).to_have_text(str(before_enabled + 1), timeout=LIVE)
    site.request(site.servers[0], "POST", f"/api/extensions/{created['id']}/toggle", None, token)
    expect(enabled).to_have_text(str(before_enabled), timeout=LIVE)
    expect(page.locator("#activity li").first).to_contain_text("Extension 3201", timeout=LIVE)
    assert_not_reloaded(page)
    page.context.close()


def test_validation_errors_show_next_to_fields(browser, site: Stack) -> None:
    page = open_page(browser, site.servers[0], "/extensions/")
    count = page.locator("#rows tr").count()
    page.click("[data-action=create]")
    page.fill("#f-extension_number", "12ab")
    page.fill("#f-name", "Bad number")
    page.fill("#f-secret", "short")
    page.click("#save-button")
    expect(page.locator("[data-error-for=extension_number]")).not_to_be_empty()
    expect(page.locator("[data-error-for=secret]")).to_contain_text("12 characters")
    expect(page.locator("#f-extension_number")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#edit-dialog")).to_be_visible()
    assert page.locator("#rows tr").count() == count
    page.context.close()


def test_row_being_edited_is_never_overwritten_silently(browser, site: Stack) -> None:
    token = site.login(site.servers[0])
    _, ext = site.request(
        site.servers[0], "POST", "/api/extensions", {"extension_number": "3301", "name": "Original"}, token
    )
    page = open_page(browser, site.servers[1], "/extensions/")
    row(page, "extension", ext["id"]).locator("[data-action=edit]").click()
    page.fill("#f-name", "My unsaved edit")
    site.request(site.servers[0], "PATCH", f"/api/extensions/{ext['id']}", {"name": "Changed elsewhere"}, token)
    expect(page.locator("#edit-conflict")).to_be_visible(timeout=LIVE)
    expect(page.locator("#edit-conflict")).to_contain_text("changed")
    expect(page.locator("#f-name")).to_have_value("My unsaved edit")
    expect(row(page, "extension", ext["id"])).to_contain_text("Changed elsewhere")
    page.click("[data-action=reload-form]")
    expect(page.locator("#f-name")).to_have_value("Changed elsewhere")
    page.context.close()


def test_read_only_user_sees_no_edit_controls_and_cannot_write(browser, site: Stack) -> None:
    token = site.login(site.servers[0])
    _, ext = site.request(
        site.servers[0], "POST", "/api/extensions", {"extension_number": "3401", "name": "Visible"}, token
    )
    page = open_page(browser, site.servers[0], "/extensions/", user="reader", password=READER_PASSWORD)
    expect(row(page, "extension", ext["id"])).to_be_visible()
    for selector in (
        "[data-action=create]",
        "[data-action=edit]",
        "[data-action=delete]",
        "[data-action=toggle]",
        "#edit-dialog",
    ):
        expect(page.locator(selector)).to_have_count(0)
    status = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('input[name=csrfmiddlewaretoken]').value;
            const r = await fetch(`/api/extensions/${id}`, {method: 'DELETE', headers: {'X-CSRFToken': csrf}});
            return r.status;
        }""",
        ext["id"],
    )
    assert status == 403
    expect(row(page, "extension", ext["id"])).to_be_visible()
    page.context.close()


def test_cookie_write_without_csrf_token_is_refused(browser, site: Stack) -> None:
    page = open_page(browser, site.servers[0], "/extensions/")
    status = page.evaluate(
        """async () => (await fetch('/api/extensions', {method: 'POST', headers: {'Content-Type': 'application/json'},
                         body: JSON.stringify({extension_number: '3501', name: 'no csrf'})})).status"""
    )
    assert status == 403
    page.context.close()


def test_logout_closes_the_socket(browser, site: Stack) -> None:
    server = site.servers[0]
    page = open_page(browser, server, "/extensions/")
    page.wait_for_timeout(400)
    with_page = site.request(server, "GET", "/health")[1]["clients"]
    page.click("#logout-form button[type=submit]")
    expect(page).to_have_url(f"{server.http}/login/", timeout=LIVE)
    page.wait_for_timeout(600)
    assert site.request(server, "GET", "/health")[1]["clients"] == with_page - 1
    page.goto(f"{server.http}/extensions/")
    expect(page).to_have_url(f"{server.http}/login/?next=/extensions/")
    page.context.close()


# --- surviving a server restart ----------------------------------------------------------


def test_page_reconnects_after_restart_and_shows_what_changed(browser, site: Stack) -> None:
    token = site.login(site.servers[0])
    _, kept = site.request(
        site.servers[0], "POST", "/api/extensions", {"extension_number": "3601", "name": "Before"}, token
    )
    watched = site.servers[1]
    page = open_page(browser, watched, "/extensions/")
    site.stop(watched.process)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting", timeout=LIVE)
    expect(page.locator("#live-status")).to_contain_text("Reconnecting (attempt")
    expect(page.locator("#stale-banner")).to_be_visible()
    # Changes while this page's server is down: through the other server (Redis), or
    # straight into the database (embedded: nobody is serving).
    if site.mode == "redis":
        site.request(site.servers[0], "PATCH", f"/api/extensions/{kept['id']}", {"name": "Changed while down"}, token)
        site.request(
            site.servers[0], "POST", "/api/extensions", {"extension_number": "3602", "name": "Born while down"}, token
        )
    else:
        site.shell(
            "from extensions.models import Extension\n"
            f"Extension.objects.filter(pk={kept['id']}).update(name='Changed while down')\n"
            "Extension.objects.create(extension_number='3602', name='Born while down', secret='Strong-secret-123')\n"
        )
    restarted = site.start_server(port=watched.port)
    site.servers[site.servers.index(watched)] = restarted
    if site.mode == "embedded":
        site.servers[0] = restarted
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=20000)
    expect(row(page, "extension", kept["id"])).to_contain_text("Changed while down", timeout=LIVE)
    expect(page.locator("tr", has_text="Born while down")).to_be_visible(timeout=LIVE)
    expect(page.locator("#stale-banner")).to_be_hidden()
    assert_not_reloaded(page)
    page.context.close()


# --- how it looks ----------------------------------------------------------------------


@pytest.mark.parametrize("width,height,name", [(1280, 860, "desktop"), (390, 844, "phone")])
def test_screenshots(browser, site: Stack, width: int, height: int, name: str) -> None:
    token = site.login(site.servers[0])
    for number, label in (("120", "Reception"), ("121", "Sales")):
        site.request(site.servers[0], "POST", "/api/extensions", {"extension_number": number, "name": label}, token)
    site.request(
        site.servers[0],
        "POST",
        "/api/trunks",
        {"name": "carrier-shot", "host": "sip.example.net", "prefix": "9"},
        token,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(browser, site.servers[0], "/", viewport={"width": width, "height": height})
    for path, title in (("/", "dashboard"), ("/extensions/", "extensions"), ("/trunks/", "trunks")):
        page.goto(site.servers[0].http + path)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE)
        page.screenshot(path=ARTIFACTS / f"{site.mode}-{title}-{name}.png", full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{title} scrolls sideways at {width}px"
    page.goto(site.servers[0].http + "/extensions/")
    page.click("[data-action=create]")
    page.screenshot(path=ARTIFACTS / f"{site.mode}-extension-form-{name}.png")
    page.context.close()
    login = browser.new_context(viewport={"width": width, "height": height}).new_page()
    login.goto(site.servers[0].http + "/login/")
    login.screenshot(path=ARTIFACTS / f"{site.mode}-login-{name}.png")
    login.context.close()


def test_after_ten_failed_attempts_the_page_offers_reconnect(browser, tmp_path: Path) -> None:
    stack = Stack(tmp_path)  # a server of its own: this test stops it for a while
    try:
        server = stack.start_server()
        context = browser.new_context()
        page = context.new_page()
        page.clock.install()  # fake timers: the backoff's minutes pass in an instant
        page.goto(f"{server.http}/login/?next=/extensions/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        status = page.locator("#live-status")
        expect(status).to_have_attribute("data-state", "connected", timeout=LIVE)
        stack.stop(server.process)
        # The installed clock still flows: on a loaded machine short backoffs may pass on
        # their own between two looks. What must hold: attempts count up to 10 of 10, in order.
        seen: list[int] = []
        expect(status).to_contain_text("attempt 1 of 10", timeout=LIVE)
        while status.get_attribute("data-state") != "offline" and len(seen) < 40:
            found = re.search(r"attempt (\d+) of 10", status.inner_text())
            if found and (not seen or int(found[1]) != seen[-1]):
                seen.append(int(found[1]))
            page.clock.fast_forward(31_000)  # past the longest backoff (30 s)
            page.wait_for_timeout(50)
        assert seen == sorted(set(seen)) and seen[0] == 1 and seen[-1] == 10, seen
        expect(status).to_have_attribute("data-state", "offline", timeout=LIVE)
        page.clock.fast_forward(120_000)
        expect(status).to_have_attribute("data-state", "offline")  # it stopped trying
        expect(page.locator("#live-reconnect")).to_be_visible()
        expect(page.locator("#stale-banner")).to_be_visible()
        stack.start_server(port=server.port)
        page.click("#live-reconnect")
        expect(status).to_have_attribute("data-state", "connected", timeout=LIVE)
        expect(page.locator("#stale-banner")).to_be_hidden()
        context.close()
    finally:
        stack.close()


def test_auth_close_sends_the_page_to_login(browser, tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        server = stack.start_server()
        page = open_page(browser, server, "/trunks/")
        stack.stop(server.process)
        expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting", timeout=LIVE)
        stack.shell("from django.contrib.sessions.models import Session; Session.objects.all().delete()")
        stack.start_server(port=server.port)
        # The session is gone: the socket is refused with 4001 and the page goes to login.
        expect(page).to_have_url(f"{server.http}/login/?next=%2Ftrunks%2F", timeout=20000)
        page.context.close()
    finally:
        stack.close()


# --- topics through the page's own client (static/js/live.js) ------------------------------

_TOPIC_CLIENT = """async () => {
  const { LiveConnection, liveUrl } = await import("/static/js/live.js");
  const live = new LiveConnection({ url: liveUrl() });
  window.__topic = { frames: [], states: [], live };
  // (presence.state frames come too, as pages report themselves: only the shell's count here)
  live.onTopic("presence", (frame) => frame.type === "presence.online" && window.__topic.frames.push(frame));
  live.onTopicState((state) => window.__topic.states.push(state));
  live.connect();
  live.subscribe(["presence", "logs"]);
}"""


def test_the_page_client_subscribes_gets_topic_frames_and_resubscribes_after_a_reconnect(browser, site: Stack) -> None:
    """A reader (not staff) subscribes to presence and logs: presence is granted, logs
    refused with the server's reason; a presence frame published in a shell reaches the
    page; after the socket drops, the client subscribes again by itself."""
    page = open_page(browser, site.servers[0], "/", user="reader", password=READER_PASSWORD)
    page.evaluate(_TOPIC_CLIENT)
    page.wait_for_function("window.__topic.states.some((s) => s.type === 'subscribed')", timeout=LIVE)
    states = page.evaluate("window.__topic.states")
    assert {"type": "subscribed", "topics": ["presence"], "reason": None} in [
        {**s, "reason": s.get("reason")} for s in states
    ]
    assert any(s["type"] == "forbidden" and "logs: staff" in s["reason"] for s in states)
    # A shell reaches the server's layer only through Redis (embedded: an in-memory layer,
    # topics published inside the server process).
    publish = "from live import topics\ntopics.publish_now('presence', 'presence.online', {'n': %d})\n"
    if site.mode == "redis":
        site.shell(publish % 1)
        page.wait_for_function("window.__topic.frames.length === 1", timeout=LIVE)
        assert page.evaluate("window.__topic.frames[0].payload") == {"n": 1}
    # The socket drops (as a restart would): the client reconnects and subscribes again.
    page.evaluate("window.__topic.states = []; window.__topic.live.socket.close(4000)")
    page.wait_for_function("window.__topic.states.some((s) => s.type === 'subscribed')", timeout=15000)
    if site.mode == "redis":
        site.shell(publish % 2)
        page.wait_for_function("window.__topic.frames.length === 2", timeout=LIVE)
        assert page.evaluate("window.__topic.frames[1].payload") == {"n": 2}
    page.context.close()


# --- presence (live.presence, static/js/presence.js) ---------------------------------------

EDITOR_PASSWORD = "editor-password-1234"


def test_presence_shows_who_is_online_and_who_is_editing_a_row(browser, site: Stack) -> None:
    """Two staff users on two servers (one with Redis): the header counts them; when the
    admin opens an extension's edit dialog, the other's list marks that row "admin is
    editing", and the other's own edit dialog of it warns; closing the dialog clears both."""
    site.shell(
        "from django.contrib.auth import get_user_model\n"
        "if not get_user_model().objects.filter(username='editor').exists():\n"
        f"    get_user_model().objects.create_user('editor', password='{EDITOR_PASSWORD}', is_staff=True)\n"
    )
    token = site.login(site.servers[0])
    _, ext = site.request(
        site.servers[0], "POST", "/api/extensions", {"extension_number": "4242", "name": "Presence"}, token
    )
    admin = open_page(browser, site.servers[0], "/extensions/?q=4242")
    editor = open_page(browser, site.servers[1], "/extensions/?q=4242", user="editor", password=EDITOR_PASSWORD)
    # (by user, not by count: another test's page may still be in its grace period)
    for page in (admin, editor):
        for name in ("admin", "editor"):
            expect(page.locator(f"#presence [data-part=list] li[data-user={name}]")).to_have_count(1, timeout=LIVE)
        expect(page.locator("#presence")).to_be_visible()
    editor.locator("#presence summary").click()
    # An earlier test's admin tab may still be in its grace period (GRACE = 5 s): it goes.
    expect(editor.locator("#presence [data-part=list] li[data-user=admin]")).to_contain_text(
        "1 tab: Extensions", timeout=15000
    )
    expect(editor.locator("#presence [data-part=list] li[data-user=editor]")).to_contain_text("editor (you)")

    row(admin, "extension", ext["id"]).locator("[data-action=edit]").click()
    badge = row(editor, "extension", ext["id"]).locator(".editing-badge")
    expect(badge).to_have_text("admin is editing", timeout=LIVE)
    expect(row(admin, "extension", ext["id"]).locator(".editing-badge")).to_have_count(0)  # not for yourself
    row(editor, "extension", ext["id"]).locator("[data-action=edit]").click()
    expect(editor.locator("#edit-others")).to_contain_text("admin is editing this extension too", timeout=LIVE)
    expect(admin.locator("#edit-others")).to_contain_text("editor is editing this extension too", timeout=LIVE)

    admin.locator("#edit-dialog [data-action=close]").first.click()
    expect(editor.locator("#edit-others")).to_be_hidden(timeout=LIVE)
    editor.locator("#edit-dialog [data-action=close]").first.click()
    expect(badge).to_have_count(0)
    # The admin leaves: after the grace period the editor sees only themself.
    admin.context.close()
    expect(editor.locator("#presence [data-part=list] li[data-user=admin]")).to_have_count(0, timeout=15000)
    shown = editor.locator("#presence [data-part=list] li").count()
    expect(editor.locator("#presence [data-part=count]")).to_have_text(f"{shown} online")
    assert_not_reloaded(editor)
    editor.context.close()
