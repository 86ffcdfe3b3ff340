"""The logs page against a real Asterisk 22: a line Asterisk logs reaches a subscribed socket
and keeps coming after ``logger rotate``; RayanPBX's own records come beside them; and the page
in Chromium (staff sees the lines, filters by level, pauses and resumes; a read-only user gets
no page and no nav link)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.asterisk import Asterisk
from tests.chromium import chromium, close, open_page
from tests.pbx_helpers import Stream, wait_until
from tests.stack import Stack
from tests.test_logs import subscribed

pytestmark = [pytest.mark.services]

READER_PASSWORD = "reader-password-logs-1"


def lines(stream: Stream, after: int, source: str) -> list[dict[str, Any]]:
    found = [line for frame in stream.of("logs.lines", after=after) for line in frame["payload"]["lines"]]
    return [line for line in found if line["source"] == source]


def reload_logged(pbx: Asterisk, stream: Stream) -> dict[str, Any]:
    """Reload res_pjsip in Asterisk; the line its loader logs, as the socket received it."""
    mark, log_mark = stream.mark(), pbx.log_mark()
    pbx.cli("module reload res_pjsip.so")
    assert "Reloading module 'res_pjsip.so'" in pbx.log_when(log_mark, "Reloading module 'res_pjsip.so'")

    def arrived() -> dict[str, Any] | None:
        for line in lines(stream, mark, "asterisk"):
            if "Reloading module 'res_pjsip.so'" in line["message"]:
                return line
        return None

    return wait_until(arrived, what="Asterisk's reload line on the socket")


def test_asterisk_lines_reach_a_socket_and_keep_flowing_after_logger_rotate(pbx: Asterisk, site: Stack) -> None:
    stream = subscribed(site)
    try:
        line = reload_logged(pbx, stream)
        assert line["logger"] == "loader.c" and line["level"] in ("info", "notice")
        pbx.cli("logger rotate")
        wait_until(lambda: pbx.log_file.with_name("messages.0").exists(), what="the rotated file")
        again = reload_logged(pbx, stream)
        assert again["id"] > line["id"]
        # RayanPBX's own records beside Asterisk's: an apply logs one (pbx.apply).
        mark = stream.mark()
        code, _ = site.request(site.server, "POST", "/api/pbx/apply", token=site.admin)
        assert code == 202
        record = wait_until(
            lambda: next((x for x in lines(stream, mark, "rayanpbx") if "applied" in x["message"]), None),
            what="the apply's log record",
        )
        assert record["logger"] == "pbx.apply" and record["level"] == "info"
        code, body = site.request(site.server, "GET", "/api/logs?q=Reloading%20module", token=site.admin)
        assert code == 200 and body["asterisk"]["readable"] is True
        assert {x["id"] for x in body["lines"]} >= {line["id"], again["id"]}
    finally:
        stream.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_logs_page_in_chromium(browser: Any, pbx: Asterisk, site: Stack) -> None:
    from playwright.sync_api import expect

    page = open_page(browser, site.server, "/logs/")
    try:
        view = page.locator("#logs-view")
        expect(page.locator("#logs-status")).to_have_text("Live", timeout=5000)
        expect(page.locator("#logs-asterisk-banner")).to_be_hidden()
        log_mark = pbx.log_mark()
        pbx.cli("module reload res_pjsip.so")
        pbx.log_when(log_mark, "Reloading module 'res_pjsip.so'")
        reload_line = view.locator(".log-line", has_text="Reloading module 'res_pjsip.so'")
        expect(reload_line.last).to_be_visible(timeout=5000)
        # Filter: warnings and above hide the reload line (VERBOSE), "All" brings it back.
        page.select_option("#logs-level", "warning")
        expect(reload_line).to_have_count(0)
        page.select_option("#logs-level", "")
        expect(reload_line.last).to_be_visible()
        # Search.
        page.fill("#logs-q", "no such text anywhere 0xdead")
        expect(view.locator(".log-line")).to_have_count(0)
        page.fill("#logs-q", "")
        expect(reload_line.last).to_be_visible()
        # Pause: new lines wait, the page says so; resume shows them.
        page.click("#logs-pause")
        expect(page.locator("#logs-pause")).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#logs-status")).to_have_text("Paused")
        before = reload_line.count()
        log_mark = pbx.log_mark()
        pbx.cli("module reload res_pjsip.so")
        pbx.log_when(log_mark, "Reloading module 'res_pjsip.so'")
        expect(page.locator("#logs-status")).to_contain_text("new line", timeout=5000)
        assert reload_line.count() == before
        page.click("#logs-pause")
        expect(page.locator("#logs-status")).to_have_text("Live")
        expect(reload_line).to_have_count(before + 1)
        # Untrusted text is text: a line with markup shows as written.
        with pbx.log_file.open("a") as handle:
            handle.write("[Dec  2 05:31:31] WARNING[1] x.c: <b id=injected>bold</b>\n")
        expect(view.locator(".log-line", has_text="<b id=injected>bold</b>")).to_be_visible(timeout=5000)
        expect(page.locator("#injected")).to_have_count(0)
    finally:
        close(page)


def test_read_only_user_gets_no_logs_page_and_no_link(browser: Any, site: Stack) -> None:
    site.shell(
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        "User.objects.filter(username='logs-reader').delete()\n"
        f"User.objects.create_user('logs-reader', password='{READER_PASSWORD}')\n"
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.server.http}/login/?next=/")
        page.fill("#id_username", "logs-reader")
        page.fill("#id_password", READER_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site.server.http}/")
        assert page.locator("nav a", has_text="Logs").count() == 0
        response = page.goto(f"{site.server.http}/logs/")
        assert response is not None and response.status == 403
        status = page.evaluate("async () => (await fetch('/api/logs')).status")
        assert status == 403
    finally:
        context.close()
