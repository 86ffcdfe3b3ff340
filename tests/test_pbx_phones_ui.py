"""The live PBX state in a real browser, driven by real SIP phones: a private Asterisk 22,
baresip phones registering and calling, RayanPBX's link, and Debian's Chromium.

What the published-event tests (``test_pbx_live_ui.py``) cannot show: that what a phone
really does reaches the page without a reload: its row going online with the phone's own
address and user agent and offline again, the diagnostics dialog showing the phone's
contact and a wrong password's failed logins, and the dashboard's call table gaining a call
when one phone calls another and losing it when it hangs up.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.asterisk import Asterisk, Phone
from tests.chromium import chromium, close, open_page
from tests.pbx_helpers import is_apply, open_stream
from tests.stack import Stack

pytestmark = [pytest.mark.services, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

LIVE = 5000  # ms: a phone's registration reaches Asterisk, the link, the stream and the page


@pytest.fixture(scope="module")
def secrets(site: Stack) -> dict[str, str]:
    """Extensions 7101 and 7102, applied to Asterisk: their SIP passwords."""
    stream = open_stream(site)
    try:
        out = {}
        for number in ("7101", "7102"):
            mark = stream.mark()
            body = {"extension_number": number, "name": f"Desk {number}"}
            code, body = site.request(site.server, "POST", "/api/extensions", body, site.admin)
            assert code == 201, body
            stream.wait(is_apply("applied"), after=mark)
            out[number] = body["secret"]
        return out
    finally:
        stream.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


def phone(home: Path, pbx: Asterisk, number: str, secret: str, **options: Any) -> Phone:
    """A started baresip phone for ``number``, its files under ``home``."""
    started = Phone(home, number, secret, pbx, **options)
    started.start()
    return started


def test_a_phone_going_online_and_offline_shows_on_the_list_and_in_its_diagnostics(
    browser, site: Stack, pbx: Asterisk, secrets: dict[str, str], tmp_path: Path
) -> None:
    page = open_page(browser, site.server, "/extensions/")
    row = page.locator('#rows tr[data-live-key="7101"]')
    status = row.locator("button.reg")
    expect(status).to_have_attribute("data-state", "unregistered")

    desk = phone(tmp_path / "desk", pbx, "7101", secrets["7101"])
    try:
        expect(status).to_have_attribute("data-state", "registered", timeout=LIVE)
        expect(status.locator("[data-part=state]")).to_have_text("Registered")
        expect(status.locator("[data-part=rtt]")).to_have_text(re.compile(r"^[\d.]+ ms$"), timeout=LIVE)
        expect(row.locator("[data-part=ip]")).to_have_text("127.0.0.1", timeout=LIVE)
        expect(status).to_have_attribute("title", re.compile(r"^User agent: baresip", re.I))

        status.click()
        dialog = page.locator("#diag-dialog")
        cells = dialog.locator("#diag-contacts tbody tr").first.locator("td")
        expect(cells.nth(0)).to_contain_text(f"127.0.0.1:{desk.sip_port}")
        expect(cells.nth(1)).to_have_text(re.compile("baresip", re.I))
        expect(cells.nth(3)).to_have_text(re.compile(r"^in \d+ (s|min) "))
        expect(dialog.locator("#diag-hints-box")).to_be_hidden()  # registered and answering
        # The phone leaves while the dialog is open: it says so, and what to check.
        desk.stop()
        expect(dialog.locator("[data-part=state]")).to_have_text("Not registered", timeout=LIVE)
        expect(dialog.locator("#diag-no-contacts")).to_be_visible()
        expect(dialog.locator("#diag-hints")).to_contain_text("are both 7101")
        page.keyboard.press("Escape")
    finally:
        desk.stop()
    expect(status).to_have_attribute("data-state", "unregistered")
    expect(row.locator("[data-part=ip]")).to_be_hidden()

    # A phone with a wrong password: its failed logins, in the dialog, without a reload.
    intruder = phone(tmp_path / "intruder", pbx, "7101", "Wrong-password-000")
    try:
        status.click()
        failures = page.locator("#diag-failures li")
        expect(failures.first).to_contain_text(re.compile(r"^\d+ attempts from 127\.0\.0\.1, last "), timeout=15_000)
        expect(page.locator("#diag-hints")).to_contain_text("failed logins from 127.0.0.1")
        expect(status).to_have_attribute("data-state", "unregistered")
    finally:
        intruder.stop()
    close(page)


def test_the_dashboard_gains_and_loses_a_real_call(
    browser, site: Stack, pbx: Asterisk, secrets: dict[str, str], tmp_path: Path
) -> None:
    caller = phone(tmp_path / "caller", pbx, "7101", secrets["7101"])
    callee = phone(tmp_path / "callee", pbx, "7102", secrets["7102"], auto_answer=True)
    page = None
    try:
        assert caller.wait_registered(5) and callee.wait_registered(5)
        page = open_page(browser, site.server, "/")
        expect(page.locator('[data-count="registered"]')).to_have_text("2", timeout=LIVE)
        calls = page.locator("#dash-calls tbody tr")
        expect(calls).to_have_count(0)
        expect(page.locator("#dash-calls-empty")).to_be_visible()

        caller.dial("7102")
        caller.wait_event("CALL_ESTABLISHED", 10)
        expect(calls).to_have_count(1, timeout=LIVE)
        expect(calls.first.locator("td[data-col=from]")).to_have_text("7101")
        expect(calls.first.locator("td[data-col=to]")).to_have_text("7102")
        expect(page.locator("#dash-active-count")).to_have_text("1")
        # The duration counts up in the page, with no event needed.
        expect(calls.first.locator("td[data-col=duration]")).to_have_text(re.compile(r"^0:0[1-9]$"), timeout=LIVE)

        # A page opened mid-call shows it at once, from its snapshot.
        late = open_page(browser, site.server, "/calls/")
        expect(late.locator("#active-calls tbody tr")).to_have_count(1)

        caller.hangup()
        expect(calls).to_have_count(0, timeout=LIVE)
        expect(page.locator("#dash-active-count")).to_have_text("0")
        expect(page.locator("#dash-calls-empty")).to_be_visible()
        ended = late.locator("#ended-calls tbody tr").first
        expect(ended.locator("td[data-col=from]")).to_have_text("7101", timeout=LIVE)
        expect(late.locator("#active-calls tbody tr")).to_have_count(0)
        close(late)
    finally:
        caller.stop()
        callee.stop()
    expect(page.locator('[data-count="registered"]')).to_have_text("0", timeout=LIVE)
    close(page)
