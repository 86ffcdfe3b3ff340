"""A page's data and its live stream cannot race: a change committed while the page was
loading (after its rows were read, before its socket said ``welcome``) is shown anyway.

The page renders the stream position its rows are valid at (``<body data-live-seq>``) and
its socket resumes from there. Tested in a real Chromium whose WebSocket is held back until
the change has been made, on the embedded default and with Redis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chromium import chromium
from tests.services import redis_url
from tests.stack import ADMIN_PASSWORD, Stack

pytestmark = [pytest.mark.services, pytest.mark.browser]

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

# Every WebSocket the page opens waits until the test calls window.__openSockets().
HOLD_SOCKETS = """
(() => {
  const Real = window.WebSocket;
  const waiting = [];
  window.__openSockets = () => { while (waiting.length) waiting.shift()(); };
  window.WebSocket = function (url, protocols) {
    const proxy = new EventTarget();
    proxy.readyState = 0;
    waiting.push(() => {
      const socket = new Real(url, protocols);
      for (const type of ["open", "message", "close", "error"]) {
        socket.addEventListener(type, (event) => {
          proxy.readyState = socket.readyState;
          proxy.dispatchEvent(new event.constructor(type, event));
        });
      }
      proxy.send = (data) => socket.send(data);
      proxy.close = (code, reason) => socket.close(code, reason);
    });
    proxy.send = () => {};
    proxy.close = () => {};
    return proxy;
  };
  window.WebSocket.OPEN = 1;
})();
"""


@pytest.fixture(scope="module", params=["embedded", "redis"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp(f"position-{request.param}"),
        redis_url=redis_url() if request.param == "redis" else None,
    )
    stack.server = stack.start_server()
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as browser:
        yield browser


def test_a_change_made_while_the_page_loads_is_not_lost(browser, site: Stack) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.goto(f"{site.server.http}/login/?next=/extensions/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", ADMIN_PASSWORD)
    page.add_init_script(HOLD_SOCKETS)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.server.http}/extensions/")
    rendered = int(page.locator("body").get_attribute("data-live-seq"))
    assert rendered > 0

    # The rows are on the page; the socket is not open yet. Someone creates an extension.
    token = site.login(site.server)
    code, created = site.request(
        site.server, "POST", "/api/extensions", {"extension_number": "4101", "name": "Late"}, token
    )
    assert code == 201
    expect(page.locator(f"#extension-{created['id']}")).to_have_count(0)

    page.evaluate("window.__openSockets()")
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=5000)
    expect(page.locator(f"#extension-{created['id']}")).to_contain_text("Late", timeout=5000)
    context.close()
