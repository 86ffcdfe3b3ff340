"""Edit conflicts: versions, ``ETag`` and ``If-Match`` on extensions and trunks (issue 13, part 8).

The API (in process, real database): every save and every ``QuerySet.update()`` bumps the
version; GET/PUT/PATCH/toggle send it as a strong ETag; a stale ``If-Match`` gets 412 with
the current object and writes nothing; a fresh one succeeds with a new ETag; no ``If-Match``
works as before. Chromium against a real server: two pages edit the same extension, the
second save gets the conflict view (field by field), and both choices work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extensions.models import Extension
from rayanpbx.sip import generate_secret
from tests.stack import Stack
from trunks.models import Trunk

ARTIFACTS = Path(__file__).parent / "artifacts" / "screenshots"

OBJECTS: dict[str, tuple[type, dict[str, Any], dict[str, Any]]] = {
    "extensions": (Extension, {"extension_number": "4101", "name": "Front desk"}, {"name": "Renamed"}),
    "trunks": (Trunk, {"name": "carrier-a", "host": "sip.example.com", "username": "acct"}, {"notes": "moved"}),
}


@pytest.fixture(params=list(OBJECTS))
def target(request: pytest.FixtureRequest, db: None) -> tuple[str, Any, dict[str, Any]]:
    model, fields, change = OBJECTS[request.param]
    return request.param, model.objects.create(secret=generate_secret(), **fields), change


def tag(pk: int, version: int) -> str:
    return f'"{pk}-{version}"'


@pytest.mark.django_db
def test_every_save_and_queryset_update_bumps_the_version() -> None:
    ext = Extension.objects.create(extension_number="4102", name="A", secret=generate_secret())
    assert ext.version == 1
    ext.name = "B"
    ext.save()
    assert ext.version == 2 and Extension.objects.get(pk=ext.pk).version == 2
    ext.save(update_fields=["name"])
    assert Extension.objects.get(pk=ext.pk).version == 3
    assert Extension.objects.filter(pk=ext.pk).update(enabled=False) == 1
    assert Extension.objects.get(pk=ext.pk).version == 4
    trunk = Trunk.objects.create(name="t-bump", host="sip.example.com", secret=generate_secret())
    Trunk.objects.filter(pk=trunk.pk).update(priority=5)
    assert Trunk.objects.get(pk=trunk.pk).version == 2


def test_get_sends_a_strong_etag(staff_client, target) -> None:
    slug, obj, _ = target
    response = staff_client.get(f"/api/{slug}/{obj.pk}")
    assert response.status_code == 200
    assert response["ETag"] == tag(obj.pk, 1) and response.json()["version"] == 1


@pytest.mark.parametrize("method", ["put", "patch"])
def test_stale_if_match_is_412_with_the_current_object(staff_client, target, method: str) -> None:
    slug, obj, change = target
    other = type(obj).objects.get(pk=obj.pk)
    other.notes = "someone else's edit"
    other.save()  # version 2
    body = {**staff_client.get(f"/api/{slug}/{obj.pk}").json(), **change}
    body = {k: v for k, v in body.items() if k not in ("id", "version", "hd", "created_at", "updated_at")}
    response = getattr(staff_client, method)(f"/api/{slug}/{obj.pk}", body, format="json", HTTP_IF_MATCH=tag(obj.pk, 1))
    assert response.status_code == 412
    data = response.json()
    assert data["error"] == "precondition_failed" and data["detail"]
    assert data["current"]["version"] == 2 and data["current"]["notes"] == "someone else's edit"
    assert "secret" not in data["current"]
    assert response["ETag"] == tag(obj.pk, 2)
    fresh = type(obj).objects.get(pk=obj.pk)
    assert fresh.version == 2 and all(getattr(fresh, k) != v for k, v in change.items())  # nothing written


def test_fresh_if_match_succeeds_and_sends_the_new_etag(staff_client, target) -> None:
    slug, obj, change = target
    response = staff_client.patch(f"/api/{slug}/{obj.pk}", change, format="json", HTTP_IF_MATCH=tag(obj.pk, 1))
    assert response.status_code == 200, response.json()
    assert response["ETag"] == tag(obj.pk, 2) and response.json()["version"] == 2
    # The same (now stale) tag again: refused.
    again = staff_client.patch(f"/api/{slug}/{obj.pk}", change, format="json", HTTP_IF_MATCH=tag(obj.pk, 1))
    assert again.status_code == 412
    # A list of tags with the current one in it, and "*", both match.
    listed = staff_client.patch(
        f"/api/{slug}/{obj.pk}", change, format="json", HTTP_IF_MATCH=f'"x-1", {tag(obj.pk, 2)}'
    )
    assert listed.status_code == 200 and listed["ETag"] == tag(obj.pk, 3)
    star = staff_client.patch(f"/api/{slug}/{obj.pk}", change, format="json", HTTP_IF_MATCH="*")
    assert star.status_code == 200 and star["ETag"] == tag(obj.pk, 4)


def test_a_weak_or_garbled_tag_never_matches(staff_client, target) -> None:
    slug, obj, change = target
    for header in (f"W/{tag(obj.pk, 1)}", f"{obj.pk}-1", "garbage", '"1-1"' if obj.pk != 1 else '"2-1"'):
        response = staff_client.patch(f"/api/{slug}/{obj.pk}", change, format="json", HTTP_IF_MATCH=header)
        assert response.status_code == 412, header
    assert type(obj).objects.get(pk=obj.pk).version == 1


def test_without_if_match_writes_work_as_before(staff_client, target) -> None:
    slug, obj, change = target
    type(obj).objects.filter(pk=obj.pk).update(notes="bumped")  # version 2, the client never saw it
    response = staff_client.patch(f"/api/{slug}/{obj.pk}", change, format="json")
    assert response.status_code == 200 and response["ETag"] == tag(obj.pk, 3)


def test_toggle_and_delete_check_if_match_too(staff_client, target) -> None:
    slug, obj, _ = target
    assert staff_client.post(f"/api/{slug}/{obj.pk}/toggle", HTTP_IF_MATCH=tag(obj.pk, 9)).status_code == 412
    toggled = staff_client.post(f"/api/{slug}/{obj.pk}/toggle", HTTP_IF_MATCH=tag(obj.pk, 1))
    assert toggled.status_code == 200 and toggled["ETag"] == tag(obj.pk, 2) and toggled.json()["enabled"] is False
    refused = staff_client.delete(f"/api/{slug}/{obj.pk}", HTTP_IF_MATCH=tag(obj.pk, 1))
    assert refused.status_code == 412 and refused.json()["current"]["enabled"] is False
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert staff_client.delete(f"/api/{slug}/{obj.pk}", HTTP_IF_MATCH=tag(obj.pk, 2)).status_code == 204


def test_the_schema_documents_if_match_etag_and_412(staff_client) -> None:
    schema = staff_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/extensions/{id}/"]["patch"]
    assert any(p["in"] == "header" and p["name"] == "If-Match" for p in operation["parameters"])
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert operation["responses"]["412"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")
    assert "current" in schema["components"]["schemas"]["Error"]["properties"]
    assert "If-Match" not in str(schema["paths"]["/api/extensions/"]["get"].get("parameters", []))


# --- the edit dialog in Chromium ----------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Any]]:
    stack = Stack(tmp_path_factory.mktemp("conflicts"))
    server = stack.start_server()
    yield stack, server
    stack.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    pytest.importorskip("playwright.sync_api")
    from tests.chromium import chromium

    with chromium() as launched:
        yield launched


def _edit(page: Any, pk: int, name: str) -> None:
    page.locator(f"#extension-{pk} [data-action=edit]").click()
    page.fill("#f-name", name)


@pytest.mark.services
@pytest.mark.browser
def test_two_pages_edit_the_same_extension_and_the_second_chooses(browser, site) -> None:
    from playwright.sync_api import expect

    from tests.chromium import close, open_page

    stack, server = site
    token = stack.login(server)
    status, ext = stack.request(
        server, "POST", "/api/extensions", {"extension_number": "4201", "name": "Original", "notes": "n0"}, token
    )
    assert status == 201
    pk = ext["id"]
    first, second = open_page(browser, server, "/extensions/"), open_page(browser, server, "/extensions/")
    _edit(first, pk, "First's name")
    _edit(second, pk, "Second's name")
    second.fill("#f-notes", "second's notes")
    first.click("#save-button")
    expect(first.locator("#edit-dialog")).not_to_be_visible(timeout=5000)

    # The second save is refused: the conflict view lists the field that differs, theirs vs yours.
    second.click("#save-button")
    view = second.locator("#edit-stale")
    expect(view).to_be_visible(timeout=5000)
    name_row = second.locator("#edit-stale-rows tr[data-field=name]")
    expect(name_row).to_contain_text("First's name")
    expect(name_row).to_contain_text("Second's name")
    expect(second.locator("#edit-stale-rows tr[data-field=notes]")).to_contain_text("second's notes")
    assert stack.request(server, "GET", f"/api/extensions/{pk}", token=token)[1]["name"] == "First's name"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    second.locator("#edit-dialog").screenshot(path=str(ARTIFACTS / "edit-conflict.png"))

    # Take theirs: the form shows the saved values; nothing is written.
    second.click("[data-action=take-theirs]")
    expect(view).to_be_hidden()
    expect(second.locator("#f-name")).to_have_value("First's name")
    expect(second.locator("#f-notes")).to_have_value("n0")

    # First saves again; second edits from theirs (now stale again) and keeps its own.
    _edit(first, pk, "First again")
    first.click("#save-button")
    expect(first.locator("#edit-dialog")).not_to_be_visible(timeout=5000)
    second.fill("#f-name", "Second wins")
    second.click("#save-button")
    expect(view).to_be_visible(timeout=5000)
    expect(second.locator("#edit-stale-rows tr[data-field=name]")).to_contain_text("First again")
    second.click("[data-action=keep-mine]")
    expect(second.locator("#edit-dialog")).not_to_be_visible(timeout=5000)
    saved = stack.request(server, "GET", f"/api/extensions/{pk}", token=token)[1]
    assert saved["name"] == "Second wins" and saved["version"] == 4
    expect(first.locator(f"#extension-{pk}")).to_contain_text("Second wins", timeout=5000)
    close(first, second)
