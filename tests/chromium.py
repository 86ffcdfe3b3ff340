"""The one way tests start a browser: Debian's Chromium through Playwright, headless.

Never ``playwright install`` (its downloads fail here): the system Chromium is launched
with the flags this machine needs. Missing Chromium skips the test (fails under
``REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.services import missing

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium, closed afterwards."""
    from playwright import sync_api

    if not os.path.exists(CHROMIUM):
        missing("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


DESKTOP = {"width": 1280, "height": 860}
LIVE_MS = 5000  # how long a page may take to go live (generous: these are not timing tests)


def open_page(
    browser: Any,
    server: Any,
    path: str,
    *,
    viewport=None,
    javascript: bool = True,
    dark: bool = False,
    user: str = "admin",
    password: str | None = None,
):
    """A new browser context signed in as ``user`` (the admin) on ``server``, at ``path``, live.

    Script errors are collected in ``page.script_errors`` and a marker set in ``window`` is
    gone if the page ever reloads: :func:`close` checks both."""
    from playwright.sync_api import expect

    from tests.stack import ADMIN_PASSWORD

    # bypass_csp: Playwright's wait_for_function evaluates its predicate with eval, which the
    # pages' policy forbids; the policy itself is checked in tests/test_security_headers.py.
    context = browser.new_context(
        viewport=viewport or DESKTOP,
        java_script_enabled=javascript,
        color_scheme="dark" if dark else "light",
        bypass_csp=True,
    )
    page = context.new_page()
    page.script_errors = []
    page.live = javascript
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    page.goto(f"{server.http}/login/?next={path}")
    page.fill("#id_username", user)
    page.fill("#id_password", password or ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.http}{path}")
    if javascript:
        expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE_MS)
        page.evaluate("window.__noReload = true")
    return page


def close(*pages: Any) -> None:
    """Close pages from :func:`open_page`, failing on a script error or a reload."""
    for page in pages:
        if page.live:
            assert page.evaluate("window.__noReload === true"), "the page reloaded"
        assert page.script_errors == [], page.script_errors
        page.context.close()
