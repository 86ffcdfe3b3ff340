"""The paged lists: server-side paging, sorting, filtering and search, the view in the URL,
and live events applied to the rows in view (Chromium against a real daphne on Redis).

The browser tests share one deployment with 120 extensions (2001..2120, "Person 001"..
"Person 120"); the ones that change rows put them back, and the bulk change runs last.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from extensions.models import Extension
from tests.chromium import chromium, close, open_page
from tests.services import redis_url
from tests.stack import Stack
from trunks.models import Trunk

LIVE = 5000  # ms a live change may take to show (generous: not a timing test)
ROWS = 120

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
browser_test = [pytest.mark.services, pytest.mark.browser]


# --- the server: query parameters ----------------------------------------------------------


def _extensions(count: int) -> None:
    Extension.objects.bulk_create(
        Extension(
            extension_number=str(2000 + i), name=f"Person {i:03d}", secret="Strong-secret-123", enabled=i % 4 != 0
        )
        for i in range(1, count + 1)
    )


def _numbers(html: str) -> list[str]:
    return re.findall(r'data-live-key="(\d+)"', html)


@pytest.mark.django_db
def test_list_page_shows_one_page_with_its_counts(client: Client, staff_user) -> None:
    _extensions(ROWS)
    client.force_login(staff_user)
    page = client.get("/extensions/").content.decode()
    assert _numbers(page) == [str(2000 + i) for i in range(1, 51)]
    assert "120 extensions" in page and "Showing 1\N{EN DASH}50 of 120" in page
    assert 'href="?page=2"' in page and 'aria-label="Next page"' in page
    second = client.get("/extensions/?page=2&sort=-name").content.decode()
    assert _numbers(second)[0] == "2070" and "Page 2 of 3" in second
    assert 'aria-sort="descending"' in second


@pytest.mark.django_db
def test_rows_fragment_answers_search_filter_and_sort_as_json(client: Client, staff_user) -> None:
    _extensions(ROWS)
    client.force_login(staff_user)
    data = client.get("/extensions/rows?q=12").json()
    assert _numbers(data["html"]) == ["2012", "2112", "2120"]
    assert (data["count"], data["total"], data["page"], data["pages"]) == (3, 120, 1, 1)
    assert isinstance(data["seq"], int) and data["query"] == {"q": "12"}
    assert "Page 1 of 1" in data["pager"]
    data = client.get("/extensions/rows?q=person%2011&status=disabled&sort=-number").json()
    assert _numbers(data["html"]) == ["2116", "2112"]  # i % 4 == 0 are disabled
    data = client.get("/extensions/rows?status=enabled&page_size=10&page=9").json()
    assert data["count"] == 90 and data["page"] == 9 and len(_numbers(data["html"])) == 10


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "page=abc",
        "page=-4",
        "page=99999999999999999999",
        "page_size=100000",
        "page_size=0",
        "page_size=x",
        "sort=evil",
        "sort=-",
        "sort=status",  # no PBX link: no status
        "status=evil",
        "status=registered",
        "q=" + "x" * 5000,
        "q=%00%27%22",
    ],
)
def test_bad_query_parameters_are_clamped_never_an_error(client: Client, staff_user, query: str) -> None:
    _extensions(5)
    client.force_login(staff_user)
    for path in ("/extensions/", "/extensions/rows", "/trunks/", "/trunks/rows"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 200, (path, query)
    data = client.get(f"/extensions/rows?{query}").json()
    assert 1 <= data["page"] <= data["pages"]
    assert data["query"].get("sort", "number") in ("number",) or query.startswith("page")


@pytest.mark.django_db
def test_page_size_is_capped_and_a_page_past_the_end_is_the_last(client: Client, staff_user) -> None:
    _extensions(250)
    client.force_login(staff_user)
    data = client.get("/extensions/rows?page_size=100000").json()
    assert len(_numbers(data["html"])) == 200 and data["pages"] == 2
    data = client.get("/extensions/rows?page=40").json()
    assert data["page"] == 5 and _numbers(data["html"])[-1] == "2250"


@pytest.mark.django_db
def test_trunks_search_host_and_sort_by_priority(client: Client, staff_user) -> None:
    for name, host, priority in (("beta", "sip.b.example", 2), ("alpha", "sip.a.example", 3), ("gamma", "a.sip", 1)):
        Trunk.objects.create(name=name, host=host, priority=priority)
    client.force_login(staff_user)
    keys = lambda data: re.findall(r'data-live-key="([a-z]+)"', data["html"])  # noqa: E731
    assert keys(client.get("/trunks/rows").json()) == ["gamma", "beta", "alpha"]
    assert keys(client.get("/trunks/rows?sort=name").json()) == ["alpha", "beta", "gamma"]
    assert keys(client.get("/trunks/rows?q=SIP.A").json()) == ["alpha"]


@pytest.fixture(params=["parameters", "json"])
def key_lists(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the registered numbers reach the database: as ``IN (...)`` parameters, and
    as one JSON parameter (what 100,000 registered phones take; here from two keys on)."""
    if request.param == "json":
        monkeypatch.setattr("rayanpbx.listing.MAX_IN_LIST", 1)
    return request.param


@pytest.mark.django_db
def test_registration_filter_and_sort_run_on_the_server(
    client: Client, staff_user, monkeypatch, request: pytest.FixtureRequest, key_lists: str
) -> None:
    from live.bus import get_bus
    from live.publisher import publish_events
    from pbx import feed

    monkeypatch.setattr("pbx.status.configured", lambda: True)
    _extensions(4)
    registered = [
        {"extension_number": number, "state": "registered", "contacts": []} for number in ("2003", "2004", "9999")
    ]
    document = {**feed.snapshot(), "seq": get_bus().position_now(), "registrations": registered}
    cache.set(feed.KEY, document, timeout=None)
    request.addfinalizer(lambda: cache.delete(feed.KEY))  # the cache outlives the test
    client.force_login(staff_user)
    assert _numbers(client.get("/extensions/rows?status=registered").json()["html"]) == ["2003", "2004"]
    assert _numbers(client.get("/extensions/rows?status=unregistered").json()["html"]) == ["2001", "2002"]
    # An event published after the snapshot counts too (the link writes the snapshot after).
    publish_events([("extension.registration", {"extension_number": "2001", "state": "unreachable", "contacts": []})])
    assert _numbers(client.get("/extensions/rows?sort=status").json()["html"]) == ["2003", "2004", "2001", "2002"]
    assert _numbers(client.get("/extensions/rows?sort=-status").json()["html"])[-2:] == ["2004", "2003"]


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("paged"), redis_url=redis_url())
    stack.shell(
        "from extensions.models import Extension\n"
        f"Extension.objects.bulk_create(Extension(extension_number=str(2000 + i), name=f'Person {{i:03d}}', "
        f"secret='Strong-secret-123') for i in range(1, {ROWS + 1}))\n"
    )
    stack.server = stack.start_server()
    stack.token = stack.login(stack.server)
    yield stack
    stack.close()


def pk_of(site: Stack, number: str) -> int:
    status, body = site.request(site.server, "GET", f"/api/extensions?search={number}", token=site.token)
    assert status == 200
    rows = body["results"] if isinstance(body, dict) else body
    return next(row["id"] for row in rows if row["extension_number"] == number)


def rename(site: Stack, number: str, name: str) -> None:
    status, _ = site.request(site.server, "PATCH", f"/api/extensions/{pk_of(site, number)}", {"name": name}, site.token)
    assert status == 200


def numbers(page) -> list[str]:
    return page.eval_on_selector_all("#rows tr:not([hidden])", "rows => rows.map(r => r.dataset.liveKey)")


def count_fragments(page) -> list[str]:
    requests: list[str] = []
    page.on(
        "request",
        lambda request: "/extensions/" in request.url and "/row" in request.url and requests.append(request.url),
    )
    return requests


@pytest.mark.services
@pytest.mark.browser
def test_first_page_next_page_and_sort_by_name(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    assert numbers(page)[:2] == ["2001", "2002"] and len(numbers(page)) == 50
    expect(page.locator("#row-count")).to_have_text("120 extensions")
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}50 of 120")
    page.get_by_role("link", name="Next page").click()
    expect(page.locator("#list-summary")).to_have_text("Showing 51\N{EN DASH}100 of 120", timeout=LIVE)
    assert numbers(page)[0] == "2051" and page.url.endswith("/extensions/?page=2")
    name = page.locator("button.sort[data-sort-key=name]")
    name.click()
    expect(name).to_have_attribute("aria-sort", "ascending", timeout=LIVE)
    name.click()
    expect(name).to_have_attribute("aria-sort", "descending")
    expect(page.locator("#rows tr").first).to_contain_text("Person 120", timeout=LIVE)
    assert "sort=-name" in page.url and "page=" not in page.url  # a new order starts at page 1
    assert page.locator("button.sort[data-sort-key=number]").get_attribute("aria-sort") is None
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_search_is_answered_by_the_server_and_kept_in_the_url(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    fragments = count_fragments(page)
    page.fill("#search", "12")
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}3 of 3 (filtered from 120)", timeout=LIVE)
    assert numbers(page) == ["2012", "2112", "2120"]
    assert any("q=12" in url for url in fragments) and len(fragments) == 1  # debounced: one request
    assert "q=12" in page.url
    assert page.evaluate("document.activeElement.id") == "search"
    page.reload()
    expect(page.locator("#search")).to_have_value("12")
    assert numbers(page) == ["2012", "2112", "2120"]
    page.context.close()


@pytest.mark.services
@pytest.mark.browser
def test_a_row_in_view_is_updated_in_place(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    assert len(numbers(page)) == 50  # one page of the 120
    fragments = count_fragments(page)
    page.evaluate("window.__neighbour = document.querySelector('#rows tr[data-live-key=\"2004\"]')")
    rename(site, "2003", "Renamed in place")
    row = page.locator('#rows tr[data-live-key="2003"]')
    expect(row).to_contain_text("Renamed in place", timeout=LIVE)
    assert numbers(page)[:4] == ["2001", "2002", "2003", "2004"]
    assert page.evaluate("window.__neighbour.isConnected")  # the other rows were left alone
    assert all(re.search(r"/extensions/\d+/row$", url) for url in fragments), fragments
    rename(site, "2003", "Person 003")
    expect(row).to_contain_text("Person 003", timeout=LIVE)
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_a_row_that_no_longer_matches_the_search_leaves_the_view(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    page.goto(f"{site.server.http}/extensions/?q=person+11")  # (a space does not survive ?next=)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "connected", timeout=LIVE)
    page.evaluate("window.__noReload = true")
    assert len(numbers(page)) == 10
    rename(site, "2115", "Somebody else")
    expect(page.locator('#rows tr[data-live-key="2115"]')).to_have_count(0, timeout=LIVE)
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}9 of 9 (filtered from 120)")
    rename(site, "2115", "Person 115")  # back, and into the view again
    expect(page.locator('#rows tr[data-live-key="2115"]')).to_have_count(1, timeout=LIVE)
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_created_rows_are_counted_and_deleted_rows_removed(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    # Created off the page (number order: after 2120): counted, the view stays.
    status, body = site.request(
        site.server, "POST", "/api/extensions", {"extension_number": "2500", "name": "Late"}, site.token
    )
    assert status == 201
    expect(page.locator("#row-count")).to_have_text("121 extensions", timeout=LIVE)
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}50 of 121")
    assert numbers(page)[0] == "2001" and len(numbers(page)) == 50
    # Created into the page: it lands in its place.
    status, early = site.request(
        site.server, "POST", "/api/extensions", {"extension_number": "1999", "name": "Early"}, site.token
    )
    expect(page.locator("#rows tr").first).to_contain_text("Early", timeout=LIVE)
    assert len(numbers(page)) == 50
    # Deleted in view: it goes, the next row moves up into the page.
    for pk in (early["id"], body["id"]):
        assert site.request(site.server, "DELETE", f"/api/extensions/{pk}", token=site.token)[0] == 204
    expect(page.locator("#row-count")).to_have_text("120 extensions", timeout=LIVE)
    expect(page.locator('#rows tr[data-live-key="1999"]')).to_have_count(0)
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}50 of 120")
    assert numbers(page)[0] == "2001" and numbers(page)[-1] == "2050"
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_keyboard_tab_to_a_sort_button_and_enter_sorts(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/")
    page.focus("#search")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.sortKey") == "name":
            break
    else:
        pytest.fail("Tab never reached the Name sort button")
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    name = page.locator("button.sort[data-sort-key=name]")
    expect(name).to_have_attribute("aria-sort", "descending", timeout=LIVE)
    expect(page.locator("#rows tr").first).to_contain_text("Person 120", timeout=LIVE)
    assert page.evaluate("document.activeElement.dataset.sortKey") == "name"
    assert page.locator("#list-summary").get_attribute("aria-live") == "polite"
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_pager_and_sort_work_without_javascript(browser, site: Stack) -> None:
    page = open_page(browser, site.server, "/extensions/?page=2", javascript=False)
    assert numbers(page)[0] == "2051"
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url("**/extensions/?page=3")
    assert numbers(page) == [str(n) for n in range(2101, 2121)]
    page.click("button.sort[data-sort-key=name]")
    page.wait_for_url("**sort=name**")
    assert numbers(page)[0] == "2001"
    close(page)


@pytest.mark.services
@pytest.mark.browser
def test_a_bulk_change_leaves_the_page_correct_with_a_few_requests(browser, site: Stack) -> None:
    """Last: 400 rows created and every row renamed in one transaction (520 events)."""
    page = open_page(browser, site.server, "/extensions/")
    fragments = count_fragments(page)
    site.shell(
        "from django.db import transaction\nfrom extensions.models import Extension\n"
        "with transaction.atomic():\n"
        "    Extension.objects.bulk_create(Extension(extension_number=str(3000 + i), name=f'New {i}', "
        "secret='Strong-secret-123') for i in range(400))\n"
        "    for e in Extension.objects.filter(extension_number__lt='3000'):\n"
        "        e.name = 'Bulk ' + e.extension_number\n"
        "        e.save()\n"
    )
    expect(page.locator("#row-count")).to_have_text("520 extensions", timeout=LIVE)
    expect(page.locator("#rows tr").first).to_contain_text("Bulk 2001", timeout=LIVE)
    expect(page.locator("#rows tr").last).to_contain_text("Bulk 2050", timeout=LIVE)
    expect(page.locator("#list-summary")).to_have_text("Showing 1\N{EN DASH}50 of 520", timeout=LIVE)
    page.wait_for_timeout(1500)  # anything still to come
    assert page.locator("#rows tr", has_text="Person").count() == 0
    assert len(fragments) <= 4, fragments
    close(page)
