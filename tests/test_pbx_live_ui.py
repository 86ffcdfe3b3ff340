"""Live PBX state in a real browser: registrations on the lists, calls and failed logins.

Debian's Chromium driven by Playwright against a real daphne (``tests.stack.Stack``) on
Redis, with an AMI user pointing at a port nothing listens on (configured, never connected:
no link runs). The state events the link would publish (``extension.registration``,
``trunk.registration``, ``call.*``, ``security.sip_auth_failed``, ``status_update``) are
published from a Django shell; the pages follow them without a reload. A PBX snapshot put in
the cache shows that the pages start from it (``pbx.feed.snapshot()``). Screenshots of the
dashboard, the extensions list and the Calls page go to tests/artifacts/screenshots/.
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
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
AMI_VARIABLES = ("AMI_USERNAME", "AMI_SECRET", "AMI_HOST", "AMI_PORT")

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect


def iso(seconds_ago: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - seconds_ago))


def contact(ip: str, rtt_ms: float | None, agent: str) -> dict[str, Any]:
    return {
        "uri": f"sip:phone@{ip}:5060",
        "ip": ip,
        "port": 5060,
        "user_agent": agent,
        "rtt_ms": rtt_ms,
        "expires_at": iso(-60),
    }


def registration(number: str, state: str, *contacts: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "extension.registration", {"extension_number": number, "state": state, "contacts": list(contacts)}


def publish(stack: Stack, *events: tuple[str, dict[str, Any]]) -> None:
    """Publish stream events from a Django shell, in one bus call, as the link's feed does."""
    stack.shell(
        "import json\nfrom live.publisher import publish_events\n"
        f"publish_events([tuple(e) for e in json.loads({json.dumps(events)!r})])"
    )


def put_snapshot(stack: Stack, **changes: Any) -> None:
    """Change the PBX snapshot in the cache (what the pages start from), at the stream's position."""
    stack.shell(
        "import json\nfrom django.core.cache import cache\nfrom live.bus import get_bus\nfrom pbx import feed\n"
        f"changes = json.loads({json.dumps(changes)!r})\n"
        "document = dict(cache.get(feed.KEY) or {})\n"
        "document.update({k: v for k, v in changes.items() if k != 'active'})\n"
        "if 'active' in changes: document['calls'] = {**document['calls'], 'active': changes['active']}\n"
        "document['seq'] = get_bus().position_now()\n"
        "cache.set(feed.KEY, document, timeout=None)"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    """Redis, an AMI user (configured, never connected), two extensions, a trunk, and a PBX
    snapshot in the cache: 102 registered, acme registered, one ended call, one failed login."""
    ami = {"AMI_USERNAME": "x", "AMI_SECRET": "y", "AMI_HOST": "127.0.0.1", "AMI_PORT": str(free_port())}
    stack = Stack(tmp_path_factory.mktemp("pbx-live-ui"), redis_url=redis_url(), env=ami)
    server = stack.start_server()
    token = stack.login(server)
    for number, name in (("101", "Reception"), ("102", "Sales")):
        stack.request(server, "POST", "/api/extensions", {"extension_number": number, "name": name}, token)
    stack.request(server, "POST", "/api/trunks", {"name": "acme", "host": "sip.acme.example"}, token)
    snapshot = {
        "registrations": [
            {"extension_number": "101", "state": "unregistered", "contacts": []},
            {"extension_number": "102", "state": "registered",
             "contacts": [contact("192.0.2.12", 3.4, "Grandstream GXP")]},
        ],
        "calls": {
            "active": [],
            "ended": [
                {"id": "old.1", "from": "102", "to": "101", "direction": "internal", "trunk": None,
                 "started_at": iso(600), "answered_at": iso(598), "ended_at": iso(540),
                 "cause": 16, "cause_text": "Normal Clearing", "duration_s": 60.0, "talk_s": 58.0},
            ],
        },
        "trunks": [{"name": "acme", "state": "registered", "server_uri": "sip:sip.acme.example",
                    "last_attempt_at": iso(30)}],
        "auth_failures": [
            {"username": "admin", "remote_ip": "198.51.100.7", "attempts": 40,
             "first_at": iso(300), "last_at": iso(290)},
        ],
        "counts": {"registered": 1, "active_calls": 0},
    }  # fmt: skip
    put_snapshot(stack, **snapshot)
    stack.initial_snapshot = snapshot
    yield stack, server
    stack.close()


@pytest.fixture(scope="module")
def unlinked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    stack = Stack(tmp_path_factory.mktemp("pbx-live-ui-unlinked"))
    for name in AMI_VARIABLES:
        stack.env.pop(name, None)
    yield stack, stack.start_server()
    stack.close()


def extension_row(page, number: str):
    return page.locator(f'#rows tr[data-live-key="{number}"]')


def no_sideways_scroll(page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways"


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"pbx-live-{name}.png", full_page=True)


def seconds(text: str) -> int:
    minutes, secs = text.split(":")[-2:]
    return int(minutes) * 60 + int(secs)


# --- the lists ----------------------------------------------------------------------------


def test_extension_status_follows_registration_events(browser, linked) -> None:
    stack, server = linked
    page = open_page(browser, server, "/extensions/")
    r101, r102 = extension_row(page, "101"), extension_row(page, "102")
    # From the snapshot the page was rendered with.
    expect(r102.locator(".reg")).to_have_attribute("data-state", "registered")
    expect(r102.locator(".reg")).to_contain_text("Registered")
    expect(r102.locator(".reg [data-part=rtt]")).to_have_text("3.4 ms")
    expect(r102.locator("[data-part=ip]")).to_have_text("192.0.2.12")
    expect(r102.locator(".reg")).to_have_attribute("title", "User agent: Grandstream GXP")
    expect(r101.locator(".reg")).to_have_text("Not registered")
    expect(r101.locator("[data-part=ip]")).to_be_hidden()

    # 101 registers: a pulsing dot, the word, its RTT, the phone's IP, the user agent.
    publish(stack, registration("101", "registered", contact("192.0.2.55", 12.34, "Yealink <b>T46</b>")))
    cell = r101.locator(".reg")
    expect(cell).to_have_attribute("data-state", "registered", timeout=LIVE)
    expect(cell).to_have_text("Registered12 ms")
    expect(cell).to_have_attribute("title", "User agent: Yealink <b>T46</b>")
    expect(r101.locator("[data-part=ip]")).to_have_text("192.0.2.55")
    expect(r101.locator("[data-part=ip]")).to_be_visible()
    expect(page.locator("#rows b")).to_have_count(0)
    animation = cell.locator(".reg-dot").evaluate("e => getComputedStyle(e).animationName")
    assert animation == "pulse"

    # The row is re-fetched from the server (a rename): the live state stays on it.
    token = stack.login(server)
    pk = r101.get_attribute("data-id")
    stack.request(server, "PATCH", f"/api/extensions/{pk}", {"name": "Front desk"}, token)
    expect(r101).to_contain_text("Front desk", timeout=LIVE)
    expect(r101.locator(".reg")).to_have_attribute("data-state", "registered")
    expect(r101.locator("[data-part=ip]")).to_have_text("192.0.2.55")

    # The status filter: registered phones only.
    page.select_option("#status-filter", "registered")
    expect(r101).to_be_visible()
    expect(r102).to_be_visible()

    # Both go: unregistered, no IP; the filter follows.
    publish(
        stack, registration("101", "unregistered"), registration("102", "unreachable", contact("192.0.2.12", None, ""))
    )
    expect(cell).to_have_attribute("data-state", "unregistered", timeout=LIVE)
    expect(cell).to_have_text("Not registered")
    expect(r101.locator("[data-part=ip]")).to_be_hidden()
    expect(r102.locator(".reg")).to_have_text("Unreachable")
    expect(r101).to_be_hidden()
    expect(r102).to_be_hidden()
    expect(page.locator("#list")).to_have_attribute("data-shown", "0")
    page.select_option("#status-filter", "all")
    expect(r101).to_be_visible()
    close(page)


def test_diagnostics_dialog_shows_contacts_failed_logins_and_what_to_check(browser, linked) -> None:
    stack, server = linked
    page = open_page(browser, server, "/extensions/")
    r101 = extension_row(page, "101")
    publish(stack, registration("101", "unregistered"))
    expect(r101.locator(".reg")).to_have_attribute("data-state", "unregistered", timeout=LIVE)
    # The status is a button named for what it shows and does; Enter opens the dialog.
    r101.get_by_role("button", name="Extension 101: Not registered. Diagnostics").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#diag-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#diag-title")).to_have_text("Extension 101")
    expect(dialog.locator("[data-part=state]")).to_have_text("Not registered")
    expect(dialog.locator("#diag-no-contacts")).to_be_visible()
    expect(dialog.locator("#diag-contacts")).to_be_hidden()
    hints = dialog.locator("#diag-hints")
    expect(hints).to_contain_text("the user name and the authentication name are both 101")
    expect(hints).not_to_contain_text("failed login")

    # While it is open: a wrong password from somewhere, then two phones register.
    failure = {"username": "101", "remote_ip": "203.0.113.50", "attempts": 7, "first_at": iso(5), "last_at": iso(1)}
    publish(stack, ("security.sip_auth_failed", failure))
    expect(dialog.locator("#diag-failures li")).to_have_count(1, timeout=LIVE)
    expect(dialog.locator("#diag-failures li")).to_contain_text("7 attempts from 203.0.113.50, last ")
    expect(hints).to_contain_text("7 failed logins from 203.0.113.50 in the last hour")
    publish(
        stack,
        registration(
            "101", "registered", contact("192.0.2.55", 12.34, "Yealink <b>T46</b>"), contact("198.51.100.3", None, "")
        ),
    )
    contacts = dialog.locator("#diag-contacts tbody tr")
    expect(contacts).to_have_count(2, timeout=LIVE)
    expect(dialog.locator("[data-part=state]")).to_have_text("Registered")
    first = contacts.first.locator("td")
    expect(first.nth(0)).to_have_text("192.0.2.55:5060sip:phone@192.0.2.55:5060")
    expect(first.nth(1)).to_have_text("Yealink <b>T46</b>")
    expect(first.nth(2)).to_have_text("12 ms")
    expect(first.nth(3)).to_have_text(re.compile(r"^in \d+ s \(.+\)$"))
    expect(contacts.nth(1).locator("td").nth(1)).to_have_text("—")
    expect(dialog.locator("b")).to_have_count(0)  # a user agent is text, never markup
    expect(hints).not_to_contain_text("On the phone's SIP account")  # registered: no checklist
    expect(hints).to_contain_text("failed logins")  # but the wrong password still shows

    # Unreachable: the NAT advice.
    publish(stack, registration("101", "unreachable", contact("192.0.2.55", None, "Yealink T46")))
    expect(hints).to_contain_text("does not answer Asterisk's keep-alive checks", timeout=LIVE)
    expect(contacts.first.locator("td").nth(2)).to_have_text("no answer")
    shoot(page, "diagnostics")

    # Escape closes it and gives the focus back to the row's status.
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(r101.locator("button.reg")).to_be_focused()
    close(page)
    # Later pages start from here, not from the snapshot's old position (no replay of these events).
    put_snapshot(stack)


def test_trunk_registration_is_live(browser, linked) -> None:
    stack, server = linked
    page = open_page(browser, server, "/trunks/")
    cell = page.locator('#rows tr[data-live-key="acme"] .reg')
    expect(cell).to_have_attribute("data-state", "registered")
    expect(cell.locator("[data-part=state]")).to_have_text("Registered")
    expect(cell.locator("[data-part=attempt]")).to_have_text(re.compile(r"^Last attempt .+"))
    rejected = {"name": "acme", "state": "rejected", "server_uri": "sip:sip.acme.example", "last_attempt_at": iso()}
    publish(stack, ("trunk.registration", rejected))
    expect(cell).to_have_attribute("data-state", "rejected", timeout=LIVE)
    expect(cell.locator("[data-part=state]")).to_have_text("Rejected")
    expect(cell).to_have_attribute("title", "Registers to sip:sip.acme.example")
    close(page)


# --- the dashboard and the Calls page -----------------------------------------------------


def test_dashboard_and_calls_page_follow_calls_live(browser, linked) -> None:
    stack, server = linked
    # Earlier tests published registration events after the snapshot's seq, and pages replay
    # the events after it: start this one from a fresh snapshot, as the link's feed writes them.
    put_snapshot(stack, **stack.initial_snapshot)
    dashboard = open_page(browser, server, "/")
    calls = open_page(browser, server, "/calls/")
    table = dashboard.locator("#dash-calls tbody tr")
    expect(dashboard.locator("#dash-calls-empty")).to_be_visible()
    expect(dashboard.locator("#dash-active-count")).to_have_text("0")
    expect(dashboard.locator('[data-count="registered"]').first).to_have_text("1")  # from the snapshot
    expect(dashboard.locator("#dash-registrations li")).to_have_count(1)
    # The Calls page starts from the snapshot's ended call.
    expect(calls.locator("#ended-calls tbody tr")).to_have_count(1)
    expect(calls.locator('#ended-calls tr[data-call-id="old.1"] td[data-col=duration]')).to_have_text("1:00")

    # A call starts (3 s ago on the server's clock): the dashboard's table gains it, ticking.
    started = ("call.started", {"id": "c.1", "from": "101", "to": "0912345678", "direction": "outbound",
                                "trunk": "acme", "started_at": iso(3)})  # fmt: skip
    publish(stack, started, ("status_update", {"registered": 2, "active_calls": 1}))
    expect(table).to_have_count(1, timeout=LIVE)
    row = dashboard.locator('#dash-calls tr[data-call-id="c.1"]')
    expect(row.locator("td[data-col=from]")).to_have_text("101")
    expect(row.locator("td[data-col=to]")).to_have_text("0912345678")
    expect(row.locator("td[data-col=trunk]")).to_have_text("acme")
    expect(dashboard.locator("#dash-active-count")).to_have_text("1")
    expect(dashboard.locator("#dash-calls-empty")).to_be_hidden()
    expect(dashboard.locator('[data-count="registered"]').first).to_have_text("2", timeout=LIVE)
    duration = row.locator("td[data-col=duration]")
    first = seconds(duration.inner_text())
    assert 2 <= first <= 15, first
    dashboard.wait_for_timeout(2200)
    assert seconds(duration.inner_text()) >= first + 2  # it counts up, no event needed
    active = calls.locator('#active-calls tr[data-call-id="c.1"]')
    expect(active).to_be_visible(timeout=LIVE)
    expect(active.locator("td[data-col=state]")).to_have_text("Ringing")
    expect(active.locator("td[data-col=direction]")).to_have_text("Outbound")

    publish(stack, ("call.answered", {"id": "c.1", "answered_at": iso()}))
    expect(active.locator("td[data-col=state]")).to_have_text("Talking", timeout=LIVE)

    # It ends: gone from the dashboard; on the Calls page it moves to the ended calls.
    ended = (
        "call.ended",
        {"id": "c.1", "cause": 16, "cause_text": "Normal Clearing", "duration_s": 9.4, "talk_s": 7.0},
    )
    publish(stack, ended)
    expect(table).to_have_count(0, timeout=LIVE)
    expect(dashboard.locator("#dash-calls-empty")).to_be_visible()
    expect(dashboard.locator("#dash-active-count")).to_have_text("0")
    expect(calls.locator("#active-calls tbody tr")).to_have_count(0, timeout=LIVE)
    expect(calls.locator("#active-empty")).to_be_visible()
    last = calls.locator("#ended-calls tbody tr").first
    expect(last).to_have_attribute("data-call-id", "c.1", timeout=LIVE)
    expect(last.locator("td[data-col=from]")).to_have_text("101")
    expect(last.locator("td[data-col=trunk]")).to_have_text("acme")
    expect(last.locator("td[data-col=duration]")).to_have_text("0:09")
    expect(last.locator("td[data-col=cause]")).to_have_text("Normal Clearing")
    expect(calls.locator("#ended-count")).to_have_text("2")
    expect(calls.locator("nav a[aria-current=page]")).to_have_text("Calls")
    close(dashboard, calls)


def test_failed_sip_logins_show_on_the_dashboard(browser, linked) -> None:
    stack, server = linked
    page = open_page(browser, server, "/")
    items = page.locator("#dash-auth-failures li")
    expect(items).to_have_count(1)  # the snapshot's
    expect(items.first).to_contain_text("admin from 198.51.100.7 — 40 attempts")
    failure = {"username": "<img src=x onerror=alert(1)>", "remote_ip": "203.0.113.9", "attempts": 15,
               "first_at": iso(10), "last_at": iso(1)}  # fmt: skip
    publish(stack, ("security.sip_auth_failed", failure))
    expect(items).to_have_count(2, timeout=LIVE)
    expect(items.first).to_contain_text("<img src=x onerror=alert(1)> from 203.0.113.9 — 15 attempts")
    expect(page.locator("#dash-auth-failures img")).to_have_count(0)
    # The same aggregate again (more attempts in its window) replaces its line.
    publish(stack, ("security.sip_auth_failed", {**failure, "attempts": 30}))
    expect(items.first).to_contain_text("— 30 attempts", timeout=LIVE)
    expect(items).to_have_count(2)
    close(page)


READER_PASSWORD = "reader-password-1234"


def test_a_read_only_user_sees_counts_but_no_calls_or_failed_logins_until_allowed(browser, linked) -> None:
    """rayanpbx.audiences: a non-staff user gets the call count but not who called whom, no
    failed logins, no Calls page; given ``pbx.view_calls``, its open page reloads with calls."""
    stack, server = linked
    put_snapshot(stack, **stack.initial_snapshot)
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "if not User.objects.filter(username='reader').exists():\n"
        f"    User.objects.create_user('reader', password='{READER_PASSWORD}')\n"
    )
    page = open_page(browser, server, "/", user="reader", password=READER_PASSWORD)
    expect(page.locator("#dash-calls-restricted")).to_be_visible()
    expect(page.locator("#dash-auth-restricted")).to_contain_text("staff only")
    expect(page.locator("#dash-calls, #dash-auth-failures")).to_have_count(0)
    expect(page.locator("nav a", has_text="Calls")).to_have_count(0)
    expect(page.locator("#dash-registrations li")).to_have_count(1)  # registrations: for everyone
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))

    started = ("call.started", {"id": "r.1", "from": "101", "to": "0912345678", "direction": "outbound",
                                "trunk": "acme", "started_at": iso(3)})  # fmt: skip
    failure = {"username": "101", "remote_ip": "203.0.113.77", "attempts": 9, "first_at": iso(5), "last_at": iso(1)}
    publish(stack, started, ("security.sip_auth_failed", failure), ("status_update", {"active_calls": 1}))
    expect(page.locator('#card-calls [data-count="active_calls"]')).to_have_text("1", timeout=LIVE)
    assert "0912345678" not in page.content() and "203.0.113.77" not in page.content()

    refused = page.context.new_page()
    response = refused.goto(f"{server.http}/calls/")
    assert response.status == 403
    expect(refused.locator("#calls-restricted")).to_contain_text("Calls are not shown to you")
    refused.close()
    assert page.script_errors == []

    # Given the permission in the admin (here a shell): the open page reloads itself, with calls.
    stack.shell(
        "from django.contrib.auth import get_user_model\nfrom django.contrib.auth.models import Permission\n"
        "get_user_model().objects.get(username='reader').user_permissions.add("
        "Permission.objects.get(content_type__app_label='pbx', codename='view_calls'))"
    )
    expect(page.locator("#dash-calls")).to_have_count(1, timeout=LIVE)
    expect(page.locator("nav a", has_text="Calls")).to_have_count(1)
    expect(page.locator("#dash-auth-restricted")).to_be_visible()  # failed logins: still staff only
    publish(stack, ("call.ended", {"id": "r.1", "cause": 16, "cause_text": "Normal Clearing",
                                   "duration_s": 4.0, "talk_s": 0.0}))  # fmt: skip
    expect(page.locator('#dash-calls tr[data-call-id="r.1"]')).to_have_count(0, timeout=LIVE)
    assert page.script_errors == []
    page.context.close()


def test_screenshots(browser, linked) -> None:
    """The pages drawn from a snapshot with calls in progress (their durations ticking from it)."""
    stack, server = linked
    phones = [
        {"extension_number": "101", "state": "registered", "contacts": [contact("192.0.2.55", 12.3, "Yealink T46")]},
        {"extension_number": "102", "state": "registered", "contacts": [contact("192.0.2.12", 3.4, "Grandstream")]},
    ]
    active = [
        {"id": "s.1", "from": "102", "to": "101", "direction": "internal", "trunk": None,
         "started_at": iso(75), "answered_at": iso(70)},
        {"id": "s.2", "from": "09123456789", "to": "101", "direction": "inbound", "trunk": "acme",
         "started_at": iso(4), "answered_at": None},
    ]  # fmt: skip
    put_snapshot(stack, registrations=phones, active=active, counts={"registered": 2, "active_calls": 2})
    for viewport, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
        for dark in (False, True) if name == "desktop" else (False,):
            theme = "-dark" if dark else ""
            for path, title in (("/", "dashboard"), ("/extensions/", "extensions"), ("/calls/", "calls")):
                page = open_page(browser, server, path, viewport=viewport, dark=dark)
                if title == "dashboard":
                    expect(page.locator("#dash-calls tbody tr")).to_have_count(2)
                    expect(page.locator("#dash-registrations li")).to_have_count(2)
                    duration = page.locator('#dash-calls tr[data-call-id="s.1"] td[data-col=duration]')
                    assert 75 <= seconds(duration.inner_text()) <= 120
                elif title == "extensions":
                    expect(extension_row(page, "101").locator(".reg")).to_have_attribute("data-state", "registered")
                no_sideways_scroll(page)
                shoot(page, f"{title}-{name}{theme}")
                close(page)
    put_snapshot(stack, registrations=phones, active=[], counts={"registered": 2, "active_calls": 0})


# --- no link configured -------------------------------------------------------------------


def test_without_a_link_no_pbx_state_is_shown(browser, unlinked) -> None:
    _, server = unlinked
    page = open_page(browser, server, "/")
    expect(page.locator("#pbx-snapshot")).to_have_count(0)
    expect(page.locator("#dash-calls")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("once RayanPBX is linked to Asterisk")
    page.goto(f"{server.http}/extensions/")
    expect(page.locator("#list thead")).not_to_contain_text("Status")
    expect(page.locator("#status-filter option[value=registered]")).to_have_count(0)
    page.goto(f"{server.http}/calls/")
    expect(page.locator("main")).to_contain_text("No Asterisk link is configured")
    assert page.script_errors == []
    page.context.close()
