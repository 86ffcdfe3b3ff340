"""The audit log (issue 13, part 7): every write to an extension, a trunk, a user or the PBX.

In process (real database): a write through the API (token), the pages (session cookie on
/api) and the admin (Django test client) each make one entry with the right ``via``, user,
address and before/after; a secret or password change is "changed", never its value; a
rolled-back transaction leaves no entry; a save that changes nothing leaves none; console
commands and applies are recorded; non-staff get 403; the API and the admin are read-only.
Against real servers: a shell (``Stack.shell``) write is ``via: shell``; the ``audit`` topic
delivers a new entry to a staff socket (not to a reader's); the Audit page in Chromium
shows an entry made elsewhere, live.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import Client, override_settings
from rest_framework.test import APIClient

from audit.models import AuditEntry
from extensions.models import Extension
from rayanpbx.sip import generate_secret
from tests.conftest import PASSWORD, bearer_client, make_user
from tests.stack import Stack
from trunks.models import Trunk

ARTIFACTS = Path(__file__).parent / "artifacts" / "screenshots"
SECRET = "Audit-Secret-Value-4471"


def entries(**filters: Any) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(**filters).order_by("id"))


@pytest.mark.django_db
def test_an_api_write_is_recorded_with_who_where_and_before_after(staff_client, staff_user) -> None:
    created = staff_client.post("/api/extensions", {"extension_number": "5101", "name": "Desk"}, format="json")
    assert created.status_code == 201
    pk = created.json()["id"]
    staff_client.patch(f"/api/extensions/{pk}", {"name": "Front desk", "notes": "moved"}, format="json")
    staff_client.delete(f"/api/extensions/{pk}")
    create, update, delete = entries(object_type="extension", object_id=str(pk))
    for entry in (create, update, delete):
        assert (entry.via, entry.user_id, entry.username, entry.address) == (
            "api",
            staff_user.pk,
            staff_user.username,
            "127.0.0.1",
        )
    assert create.action == "create" and create.changes["name"] == {"after": "Desk"}
    assert create.changes["secret"] == "changed"  # generated, never stored
    assert update.action == "update" and update.object_label == "5101 (Front desk)"
    assert update.changes == {
        "name": {"before": "Desk", "after": "Front desk"},
        "notes": {"before": "", "after": "moved"},
    }
    assert delete.action == "delete" and delete.changes["name"] == {"before": "Front desk"}
    assert "secret" not in delete.changes


@pytest.mark.django_db
def test_a_page_write_is_ui_and_a_trunk_is_recorded_too(staff_user) -> None:
    client = APIClient()
    client.force_login(staff_user)  # the pages' session cookie, as static/js/api.js sends it
    created = client.post("/api/trunks", {"name": "carrier-x", "host": "sip.example.com"}, format="json")
    assert created.status_code == 201, created.json()
    client.post(f"/api/trunks/{created.json()['id']}/toggle")
    create, toggle = entries(object_type="trunk")
    assert create.via == toggle.via == "ui" and create.user_id == staff_user.pk
    assert toggle.changes == {"enabled": {"before": True, "after": False}}


@pytest.mark.django_db
def test_a_secret_change_is_changed_without_the_value(staff_client) -> None:
    ext = Extension.objects.create(extension_number="5102", name="A", secret=generate_secret())
    assert staff_client.patch(f"/api/extensions/{ext.pk}", {"secret": SECRET}, format="json").status_code == 200
    (entry,) = entries(object_type="extension", action="update")
    assert entry.changes == {"secret": "changed"}
    user = get_user_model().objects.create_user("pw-user", password=PASSWORD)
    user.set_password("Another-password-991")
    user.save()
    (changed,) = entries(object_type="user", action="update")
    assert changed.changes == {"password": "changed"}
    dumped = json.dumps([e.changes for e in AuditEntry.objects.all()]) + str(staff_client.get("/api/audit").json())
    assert SECRET not in dumped and user.password not in dumped and "pbkdf2" not in dumped


@pytest.mark.django_db
def test_a_rolled_back_write_leaves_no_entry_and_a_no_op_save_none() -> None:
    ext = Extension.objects.create(extension_number="5103", name="A", secret=generate_secret())
    before = AuditEntry.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        ext.name = "Never"
        ext.save()
        Trunk.objects.create(name="never", host="sip.example.com", secret=generate_secret())
        assert AuditEntry.objects.count() == before + 2  # recorded in the write's transaction...
        raise RuntimeError("roll back")
    assert AuditEntry.objects.count() == before  # ...and gone with it
    Extension.objects.get(pk=ext.pk).save()  # nothing changed: no entry
    assert AuditEntry.objects.count() == before


@pytest.mark.django_db
def test_an_admin_write_is_via_admin() -> None:
    root = get_user_model().objects.create_superuser("root-audit", "root@example.com", uuid.uuid4().hex)
    client = Client()
    client.force_login(root)
    ext = Extension.objects.create(extension_number="5104", name="Reception", secret=generate_secret())
    form = {
        "extension_number": "5104",
        "name": "Reception desk",
        "email": "",
        "enabled": "on",
        "context": "from-internal",
        "transport": "udp",
        "codecs": '["ulaw", "alaw"]',
        "max_contacts": "1",
        "qualify_frequency": "60",
        "caller_id": "",
        "notes": "",
    }
    response = client.post(f"/admin/extensions/extension/{ext.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    (entry,) = entries(object_type="extension", action="update")
    assert entry.via == "admin" and entry.username == "root-audit"
    assert entry.changes["name"] == {"before": "Reception", "after": "Reception desk"}
    assert "secret" not in entry.changes  # left blank: kept


@pytest.mark.django_db
def test_the_admin_refuses_changes_to_entries(staff_client) -> None:
    root = get_user_model().objects.create_superuser("root-audit2", "root@example.com", uuid.uuid4().hex)
    client = Client()
    client.force_login(root)
    Extension.objects.create(extension_number="5105", name="A", secret=generate_secret())
    entry = AuditEntry.objects.latest("id")
    base = "/admin/audit/auditentry/"
    assert client.get(base).status_code == 200  # it can be read
    assert client.get(f"{base}add/").status_code == 403
    assert client.post(f"{base}{entry.pk}/change/", {"username": "forged"}).status_code == 403
    assert client.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = client.post(base, {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert bulk.status_code in (200, 302, 403)
    AuditEntry.objects.get(pk=entry.pk, username=entry.username)  # unchanged, still there


@pytest.mark.django_db
def test_the_api_is_read_only_staff_only_and_filters(staff_client, staff_user, reader_client, anon_client) -> None:
    ext = Extension.objects.create(extension_number="5106", name="A", secret=generate_secret())
    Trunk.objects.create(name="t-filter", host="sip.example.com", secret=generate_secret())
    entry = entries(object_type="extension")[0]
    assert reader_client.get("/api/audit").status_code == 403
    assert anon_client.get("/api/audit").status_code == 401
    for method in ("put", "patch", "delete"):
        assert getattr(staff_client, method)(f"/api/audit/{entry.pk}", {}, format="json").status_code == 405
    assert staff_client.post("/api/audit", {}, format="json").status_code == 405
    body = staff_client.get("/api/audit", {"object_type": "extension", "object_id": str(ext.pk)}).json()
    assert body["count"] == 1 and body["results"][0]["object_label"] == "5106 (A)"
    assert staff_client.get("/api/audit", {"object_type": "trunk"}).json()["count"] == 1
    assert staff_client.get("/api/audit", {"user": staff_user.username}).json()["count"] == 0  # made by the system
    assert staff_client.get("/api/audit", {"since": "2999-01-01T00:00:00Z"}).json()["count"] == 0
    assert (
        staff_client.get("/api/audit", {"until": "2999-01-01T00:00:00Z", "object_type": "trunk"}).json()["count"] == 1
    )
    assert staff_client.get("/api/audit", {"until": "2000-01-01T00:00:00Z"}).json()["count"] == 0
    bad = staff_client.get("/api/audit", {"since": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid" and "since" in bad.json()["fields"]
    assert staff_client.get("/api/audit", {"user": "9" * 40}).status_code == 200  # no overflow
    staff_client.patch(f"/api/extensions/{ext.pk}", {"name": "B"}, format="json")
    assert staff_client.get("/api/audit", {"user": str(staff_user.pk)}).json()["count"] == 1
    assert staff_client.get(f"/api/audit/{entry.pk}").json()["via"] == "system"  # no request: pytest's process


@pytest.mark.django_db
def test_the_audit_page_is_for_staff(staff_user, reader_user) -> None:
    client = Client()
    client.force_login(reader_user)
    assert client.get("/audit/").status_code == 403
    assert 'href="/audit/"' not in client.get("/extensions/").content.decode()
    client.force_login(staff_user)
    page = client.get("/audit/")
    assert page.status_code == 200 and b'id="audit-rows"' in page.content
    assert 'href="/audit/"' in client.get("/extensions/").content.decode()


@pytest.mark.django_db
def test_console_commands_and_applies_are_recorded(staff_user, monkeypatch) -> None:
    from pbx import link
    from pbx.models import ConsoleCommand

    command = ConsoleCommand.objects.create(
        user=staff_user, username=staff_user.username, command="core show uptime", outcome="running", address="10.0.0.9"
    )
    command.outcome = "ok"
    command.save(update_fields=["outcome"])
    (entry,) = entries(action="console")
    assert (entry.object_id, entry.username, entry.address) == (str(command.pk), staff_user.username, "10.0.0.9")
    assert entry.changes["command"] == {"after": "core show uptime"} and entry.changes["outcome"] == {"after": "ok"}

    asked: list[bool] = []
    monkeypatch.setattr(link, "request_apply", lambda: asked.append(True))
    with override_settings(AMI_USERNAME="rayanpbx"):
        assert bearer_client(staff_user).post("/api/pbx/apply").status_code == 202
    (apply,) = entries(action="apply")
    assert asked and (apply.via, apply.user_id, apply.object_type) == ("api", staff_user.pk, "pbx")


@pytest.mark.django_db
def test_a_console_command_through_the_console_api_is_in_get_api_audit() -> None:
    root = get_user_model().objects.create_superuser("root-console", "root@example.com", uuid.uuid4().hex)
    client = APIClient()
    client.force_login(root)
    with override_settings(PBX_CONSOLE=True, AMI_USERNAME="x", AMI_SECRET="y"):
        # Destructive without its confirmation: refused and recorded, no AMI session needed.
        response = client.post("/api/pbx/console", {"command": "core stop now"}, format="json")
    assert response.status_code == 428
    listed = client.get("/api/audit", {"object_type": "console"}).json()
    assert listed["count"] == 1
    entry = listed["results"][0]
    assert (entry["action"], entry["via"], entry["username"], entry["address"]) == (
        "console",
        "ui",
        "root-console",
        "127.0.0.1",
    )
    assert entry["changes"]["command"] == {"after": "core stop now"}
    assert entry["changes"]["outcome"] == {"after": "refused"}


@pytest.mark.django_db
def test_users_are_recorded_and_a_sign_in_is_login(staff_user) -> None:
    client = Client()
    assert client.post("/login/", {"username": staff_user.username, "password": PASSWORD}).status_code == 302
    assert (
        APIClient()
        .post("/api/auth/login", {"username": staff_user.username, "password": PASSWORD}, format="json")
        .status_code
        == 200
    )
    page, token = entries(action="login")
    assert (page.object_id, page.via, page.user_id) == (str(staff_user.pk), "ui", staff_user.pk)
    assert (token.object_id, token.via, token.username) == (str(staff_user.pk), "api", staff_user.username)
    staff_user.is_staff = False
    staff_user.save()
    (update,) = entries(object_type="user", action="update")
    assert update.changes == {"is_staff": {"before": True, "after": False}}
    made = make_user(staff=False)
    (create,) = entries(object_type="user", action="create", object_id=str(made.pk))
    assert create.changes["password"] == "changed" and "last_login" not in create.changes


# --- real servers: the shell, the topic, the page ----------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("audit"))
    stack.shell(
        "from django.contrib.auth import get_user_model\n"
        f"get_user_model().objects.create_user('reader', password='{PASSWORD}')\n"
    )
    stack.server = stack.start_server()
    stack.admin = stack.login(stack.server)
    yield stack
    stack.close()


def test_a_shell_write_is_via_shell(site: Stack) -> None:
    out = site.shell(
        "from extensions.models import Extension\n"
        "from rayanpbx.sip import generate_secret\n"
        "e = Extension.objects.create(extension_number='5201', name='Shell', secret=generate_secret())\n"
        "e.name = 'Shell 2'\n"
        "e.save()\n"
        "print(e.pk)\n"
    )
    pk = out.strip().splitlines()[-1]
    status, body = site.request(
        site.server, "GET", f"/api/audit?object_type=extension&object_id={pk}", token=site.admin
    )
    assert status == 200
    update, create = body["results"]  # newest first
    assert create["via"] == update["via"] == "shell" and create["user"] is None
    assert update["changes"] == {"name": {"before": "Shell", "after": "Shell 2"}}


def _subscribe(site: Stack, token: str):
    from tests.pbx_helpers import Stream

    stream = Stream(site.server, token)
    stream.wait(lambda f: f["type"] == "welcome")
    stream._ws.send(json.dumps({"type": "subscribe", "topics": ["audit"]}))
    return stream


def test_the_topic_delivers_a_new_entry_to_staff_only(site: Stack) -> None:
    staff = _subscribe(site, site.admin)
    reader = _subscribe(site, site.login(site.server, "reader", PASSWORD))
    try:
        staff.wait(lambda f: f["type"] == "subscribed" and "audit" in f["payload"]["topics"])
        reader.wait(lambda f: f["type"] == "error" and f["payload"].get("code") == "forbidden_topic")
        mark, reader_mark = staff.mark(), reader.mark()
        status, ext = site.request(
            site.server, "POST", "/api/extensions", {"extension_number": "5202", "name": "Live"}, site.admin
        )
        assert status == 201
        frame = staff.wait(lambda f: f.get("topic") == "audit", after=mark)
        assert frame["type"] == "audit.entry" and "seq" not in frame
        entry = frame["payload"]
        assert (entry["action"], entry["object_type"], entry["object_id"], entry["via"]) == (
            "create",
            "extension",
            str(ext["id"]),
            "api",
        )
        assert entry["username"] == "admin" and entry["changes"]["secret"] == "changed"
        status, listed = site.request(site.server, "GET", "/api/audit?object_type=extension", token=site.admin)
        assert listed["results"][0] == entry  # the live copy is the REST one
        assert not [f for f in reader.frames[reader_mark:] if f.get("topic") == "audit"]
    finally:
        staff._ws.close()
        reader._ws.close()


@pytest.mark.services
@pytest.mark.browser
def test_the_audit_page_shows_an_entry_made_elsewhere_live(site: Stack) -> None:
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import expect

    from tests.chromium import chromium, close, open_page

    with chromium() as browser:
        page = open_page(browser, site.server, "/audit/")
        expect(page.locator("#audit-status")).to_contain_text("entr", timeout=5000)
        shown = int(page.locator("#audit-status").inner_text().split()[0])
        status, ext = site.request(
            site.server, "POST", "/api/extensions", {"extension_number": "5203", "name": "Seen live"}, site.admin
        )
        assert status == 201
        site.request(site.server, "PATCH", f"/api/extensions/{ext['id']}", {"name": "Renamed live"}, site.admin)
        rows = page.locator("#audit-rows tr")
        expect(rows.first).to_contain_text("Renamed live", timeout=5000)
        expect(rows.first).to_contain_text("name: Seen live → Renamed live")
        expect(rows.first).to_contain_text("api")
        expect(page.locator("#audit-status")).to_have_text(f"{shown + 2} entries")
        expect(page.locator("#audit-rows")).to_contain_text("secret: changed")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "audit.png"))
        # A filter the live entry does not match keeps it off the page.
        page.select_option("#audit-object-type", "trunk")
        page.click("#audit-filters button[type=submit]")
        expect(page.locator("#audit-rows tr")).to_have_count(0, timeout=5000)
        site.request(site.server, "PATCH", f"/api/extensions/{ext['id']}", {"name": "Unseen"}, site.admin)
        site.request(site.server, "POST", "/api/trunks", {"name": "live-trunk", "host": "sip.example.com"}, site.admin)
        expect(page.locator("#audit-rows tr")).to_have_count(1, timeout=5000)
        expect(page.locator("#audit-rows")).to_contain_text("live-trunk")
        expect(page.locator("#audit-rows")).not_to_contain_text("Unseen")
        close(page)
