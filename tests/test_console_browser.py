"""The console page in a real Chromium against a real daphne and a real Asterisk 22.

One superuser runs commands (output as text, cut past the cap, the typed confirmation of a destructive one,
the history on the up arrow after a reload); two superusers in two browser contexts see each
other: bob's console shows "alice is typing…" while alice types, "Also here: alice", and the
command alice ran (``console`` and ``presence`` topics).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.asterisk import Asterisk
from tests.chromium import LIVE_MS, chromium
from tests.pbx_helpers import pbx_stack, start_linked
from tests.stack import Server

pytestmark = [pytest.mark.services, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

PASSWORD = "console-browser-password-1"
SUPERUSERS = ("alice", "bob")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def server(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    stack = pbx_stack(tmp_path_factory.mktemp("console-browser"), pbx, PBX_CONSOLE="1", PBX_CONSOLE_MAX_OUTPUT="2048")
    try:
        stack.shell(
            "from django.contrib.auth import get_user_model\n"
            + "".join(
                f"get_user_model().objects.create_superuser({name!r}, password={PASSWORD!r})\n" for name in SUPERUSERS
            )
        )
        start_linked(stack)
        yield stack.server
    finally:
        stack.close()


def console_page(browser: Any, server: Server, username: str) -> Any:
    """A new browser context signed in as ``username`` on the console, live."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    page.goto(f"{server.http}/login/?next=/console/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.http}/console/")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE_MS)
    return page


def run(page: Any, command: str) -> Any:
    """Type ``command``, press Enter, and return its result once it is no longer running."""
    count = page.locator(".console-result").count()
    page.fill("#console-input", command)
    page.press("#console-input", "Enter")
    result = page.locator(".console-result").nth(count)
    expect(result).not_to_have_attribute("data-outcome", "running", timeout=15000)
    return result


def test_commands_output_confirmation_and_history(browser: Any, server: Server, pbx: Asterisk) -> None:
    page = console_page(browser, server, "alice")
    try:
        result = run(page, "core show version")
        expect(result).to_have_attribute("data-outcome", "ok")
        expect(result.locator("pre.console-text")).to_contain_text("Asterisk 22")

        # Output is text: a command echoed back with markup in it makes no element.
        result = run(page, "core show help <b>bold</b>")
        expect(result.locator(".console-text, .console-error").first).to_be_visible()
        assert page.locator("#console-output b").count() == 0
        assert "<b>bold</b>" in result.inner_text()

        # Output past PBX_CONSOLE_MAX_OUTPUT (2 KiB here; `core show help` is ~13 KiB) is cut, visibly.
        result = run(page, "core show help")
        expect(result.locator(".console-truncated")).to_have_text("output truncated")
        assert len(result.locator("pre").inner_text().encode()) <= 2048

        # A destructive command: refused until typed again; cancelling leaves Asterisk up.
        result = run(page, "core stop now")
        expect(result).to_have_attribute("data-outcome", "refused")
        expect(page.locator("#console-confirm")).to_be_visible()
        expect(page.locator("#console-confirm-text")).to_contain_text("stops Asterisk")
        page.click("#console-confirm-cancel")
        expect(page.locator("#console-confirm")).to_be_hidden()
        assert pbx.running and "System uptime" in pbx.cli("core show uptime")

        # A listed command that is harmless here runs once confirmed.
        run(page, "database put rayanpbx-browser key value")
        result = run(page, "database deltree rayanpbx-browser")
        expect(result).to_have_attribute("data-outcome", "refused")
        page.fill("#console-confirm-input", "database deltree rayanpbx-browser")
        count = page.locator(".console-result").count()
        page.click("#console-confirm-run")
        confirmed = page.locator(".console-result").nth(count)
        expect(confirmed).to_have_attribute("data-outcome", "ok", timeout=15000)
        expect(confirmed.locator("pre")).to_contain_text("removed")

        # The history is the server's: after a reload the up arrow brings the last command back.
        page.reload()
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE_MS)
        page.wait_for_timeout(300)  # the history request
        page.focus("#console-input")
        page.press("#console-input", "ArrowUp")
        expect(page.locator("#console-input")).to_have_value("database deltree rayanpbx-browser")
        page.press("#console-input", "ArrowUp")
        expect(page.locator("#console-input")).to_have_value("database put rayanpbx-browser key value")
        page.press("#console-input", "ArrowDown")
        page.press("#console-input", "ArrowDown")
        expect(page.locator("#console-input")).to_have_value("")
        assert page.script_errors == []
    finally:
        page.context.close()


def test_typing_and_presence_between_two_admins(browser: Any, server: Server) -> None:
    bob = console_page(browser, server, "bob")
    alice = console_page(browser, server, "alice")
    try:
        expect(bob.locator("#console-here")).to_have_text("Also here: alice", timeout=LIVE_MS)
        expect(alice.locator("#console-here")).to_have_text("Also here: bob", timeout=LIVE_MS)
        alice.locator("#console-input").press_sequentially("core show chan", delay=50)
        expect(bob.locator("#console-typing")).to_have_text("alice is typing…", timeout=LIVE_MS)
        expect(alice.locator("#console-typing")).to_be_hidden()  # one's own typing is not shown
        # 3 s after alice's last keystroke the note goes.
        expect(bob.locator("#console-typing")).to_be_hidden(timeout=6000)
        alice.fill("#console-input", "core show channels")
        alice.press("#console-input", "Enter")
        expect(bob.locator("#console-activity li").first).to_have_text(
            "alice ran core show channels — ok", timeout=LIVE_MS
        )
        alice.context.close()
        expect(bob.locator("#console-here")).to_be_hidden(timeout=LIVE_MS * 2)
        assert bob.script_errors == [] and alice.script_errors == []
    finally:
        for page in (bob, alice):
            if not page.is_closed():
                page.context.close()
