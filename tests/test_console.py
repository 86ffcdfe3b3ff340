"""The console (pbx/console.py, pbx/console_views.py): Asterisk CLI commands through AMI.

Against a real Asterisk 22 (the ``pbx`` fixture) behind a real daphne server (``Stack``):
a command and its output, an unknown command's error, destructive commands refused without
their confirmation (Asterisk still up) and run with it, the audit records, per-user history,
who may use it, bad input, and the ``console.command`` message on the ``console`` topic. The
AMI session itself (``console.execute``) also against an AMI user without the ``command``
write class, a server that never answers, and a tiny output cap. The matcher and the
response parser as units, the parser on the recorded Asterisk sessions in ../shared/ami/.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings
from websockets.sync.client import connect

from pbx import console
from tests.asterisk import Asterisk
from tests.conftest import make_user
from tests.pbx_helpers import pbx_stack, start_linked
from tests.stack import Stack

SHARED_AMI = Path(__file__).resolve().parent.parent.parent / "shared" / "ami"
USERS = {"alice": True, "bob": True, "carol": False}  # name -> superuser (carol: staff only)
USER_PASSWORD = "console-user-password-1"
NOCMD_USER = "nocmd"
NOCMD_SECRET = "nocmd-" + "5" * 12


# --- units: the matcher, validation, the response parser ----------------------------------


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("core show uptime", ["core", "show", "uptime"]),
        ('  "core"   show uptime ', ["core", "show", "uptime"]),
        ('co""re show uptime', ["core", "show", "uptime"]),
        ("core sh\\ow uptime", ["core", "show", "uptime"]),
        ('core "show uptime"', ["core", "show uptime"]),
        ('core "" x', ["core", "", "x"]),
        ("core\\ show", ["core show"]),
    ],
)
def test_words_are_read_as_asterisk_reads_them(command: str, words: list[str]) -> None:
    assert console.asterisk_words(command) == words


@pytest.mark.parametrize(
    "command",
    [
        "core stop now",
        "core stop gracefully",
        "CORE  Restart   when convenient",
        '"core" stop now',
        "core st\\op now",
        'co""re restart now',
        'core "stop now"',  # not a command for Asterisk, but it reads as one: erring on the safe side
        "module unload app_echo.so",
        "channel request hangup all",
        "channel request hangup PJSIP/101-00000001",
        "pjsip send unregister *all",
        "database deltree rayanpbx",
        "dialplan remove extension 600@site-tests",
        "dialplan save",
        "! rm -rf /",
    ],
)
def test_destructive_commands_are_caught(command: str) -> None:
    assert console.destructive(command) is not None


@pytest.mark.parametrize(
    "command",
    [
        "core show version",
        "core show channels",
        "core stopped",
        "module show like echo",
        "dialplan show",
        "database show",
    ],
)
def test_harmless_commands_are_not(command: str) -> None:
    assert console.destructive(command) is None


def test_the_confirmation_is_the_command_again() -> None:
    assert console.confirmed("core stop now", "core stop now")
    assert console.confirmed("core stop now", "  CORE   stop NOW ")
    assert not console.confirmed("core stop now", "core stop gracefully")
    assert not console.confirmed("core stop now", "")
    assert not console.confirmed("core stop now", None)


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("core show version\r\nAction: Originate", "CR and LF"),
        ("core show version\n", "CR and LF"),
        ("core show\rversion", "CR and LF"),
        ("   ", "empty"),
        ("core show\tversion", "printable"),
        ("core show \x00version", "printable"),
        ("x" * 513, "at most 512"),
        (42, "string"),
    ],
)
def test_bad_commands_are_refused(command: Any, problem: str) -> None:
    with pytest.raises(console.CommandInvalid, match=problem):
        console.validate(command)


def test_a_valid_command_loses_its_outer_spaces_only() -> None:
    assert console.validate("  core show  version ") == "core show  version"


def _recorded_frame(name: str, action_id: str) -> bytes:
    """The server's frame answering ``action_id`` in a recorded session of ../shared/ami/."""
    path = SHARED_AMI / f"{name}.server.txt"
    if not path.exists():
        pytest.skip(f"{path} not found")
    for frame in path.read_bytes().split(console.TERMINATOR):
        if f"ActionID: {action_id}\r\n".encode() in frame + b"\r\n":
            return frame
    raise AssertionError(f"no frame for {action_id} in {path}")


def test_recorded_answers_are_interpreted() -> None:
    version = console.interpret(_recorded_frame("11-misc-info", "version"), False, username="u", max_output=1 << 20)
    assert version.outcome == "ok" and version.output.startswith("Asterisk 22.10.1 built by")
    bad = console.interpret(_recorded_frame("08-reload", "cmd-bad"), False, username="u", max_output=1 << 20)
    assert bad.outcome == "error" and bad.error.startswith("No such command 'no such cli command'")


def test_output_keeps_its_indentation_and_blank_lines() -> None:
    frame = b"Response: Success\r\nActionID: c\r\nMessage: Command output follows\r\nOutput: [ ctx ]\r\nOutput:   '600' =>  1. Answer()\r\nOutput: \r\nOutput: end"  # noqa: E501
    result = console.interpret(frame, False, username="u", max_output=1 << 20)
    assert result.output == "[ ctx ]\n  '600' =>  1. Answer()\n\nend"


def test_permission_denied_names_the_command_class() -> None:
    frame = b"Response: Error\r\nActionID: c\r\nMessage: Permission denied"
    result = console.interpret(frame, False, username="rayan", max_output=1 << 20)
    assert result.outcome == "error" and "'command' write class" in result.error and "'rayan'" in result.error


# --- the REST API in process: who may use it, and when ------------------------------------


@pytest.mark.django_db
def test_only_superusers_get_the_page_and_the_api(client: Client) -> None:
    staff = make_user(staff=True)
    client.force_login(staff)
    with override_settings(PBX_CONSOLE=True, AMI_USERNAME="x", AMI_SECRET="y"):
        assert client.get("/console/").status_code == 403
        response = client.post("/api/pbx/console", {"command": "core show version"}, content_type="application/json")
        assert response.status_code == 403 and response.json()["error"] == "permission_denied"
        assert client.get("/api/pbx/console/history").status_code == 403


@pytest.mark.django_db
def test_disabled_console_says_so(client: Client) -> None:
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    with override_settings(PBX_CONSOLE=False, AMI_USERNAME="x", AMI_SECRET="y"):
        page = client.get("/console/")
        assert page.status_code == 200 and b"console disabled: see README" in page.content
        assert b'id="console-input"' not in page.content
        response = client.post("/api/pbx/console", {"command": "core show version"}, content_type="application/json")
        assert response.status_code == 403
        assert response.json() == {"error": "console_disabled", "detail": "console disabled: see README"}
        assert client.get("/api/pbx/console/history").json()["error"] == "console_disabled"
    with override_settings(PBX_CONSOLE=True, AMI_USERNAME=""):
        page = client.get("/console/")
        assert b"The PBX link is not configured" in page.content and b'id="console-input"' not in page.content
        response = client.post("/api/pbx/console", {"command": "core show version"}, content_type="application/json")
        assert response.status_code == 409 and response.json()["error"] == "pbx_unconfigured"


def _superuser_client(client: Client) -> Client:
    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    return client


@pytest.fixture
def silent_ami() -> Iterator[int]:
    """A port that accepts AMI connections and never says anything."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.mark.django_db(transaction=True)
def test_a_command_that_outlasts_the_timeout_is_recorded_as_such(client: Client, silent_ami: int) -> None:
    from pbx.models import ConsoleCommand

    _superuser_client(client)
    with override_settings(
        PBX_CONSOLE=True, AMI_USERNAME="x", AMI_SECRET="y", AMI_PORT=silent_ami, PBX_CONSOLE_TIMEOUT=1
    ):
        response = client.post("/api/pbx/console", {"command": "core show version"}, content_type="application/json")
    body = response.json()
    assert response.status_code == 200 and body["outcome"] == "timeout", body
    assert "no answer within 1 s" in body["error"] and 900 <= body["duration_ms"] < 5000
    record = ConsoleCommand.objects.get(pk=body["id"])
    assert record.outcome == "timeout" and record.duration_ms == body["duration_ms"]


@pytest.mark.django_db
def test_too_many_commands_at_once_is_429(client: Client) -> None:
    _superuser_client(client)
    held = 0
    while console._running.acquire(blocking=False):  # what PBX_CONSOLE_MAX_RUNNING commands in flight hold
        held += 1
    try:
        with override_settings(PBX_CONSOLE=True, AMI_USERNAME="x", AMI_SECRET="y"):
            response = client.post(
                "/api/pbx/console", {"command": "core show version"}, content_type="application/json"
            )
            assert response.status_code == 429 and response.json()["error"] == "console_busy"
            # A refusal for a missing confirmation needs no AMI session: it still answers.
            response = client.post("/api/pbx/console", {"command": "core stop now"}, content_type="application/json")
            assert response.status_code == 428
    finally:
        for _ in range(held):
            console._running.release()
    assert held == 4


@pytest.mark.django_db
def test_the_audit_records_are_read_only_in_the_admin(client: Client) -> None:
    from pbx.models import ConsoleCommand

    admin = make_user(staff=True)
    admin.is_superuser = True
    admin.save()
    record = ConsoleCommand.objects.create(
        user=admin, username=admin.username, command="core show version", outcome="ok"
    )
    client.force_login(admin)
    listing = client.get("/admin/pbx/consolecommand/")
    assert listing.status_code == 200 and b"core show version" in listing.content
    assert b"delete_selected" not in listing.content
    assert client.get(f"/admin/pbx/consolecommand/{record.pk}/change/").status_code == 200  # the view page
    assert client.get("/admin/pbx/consolecommand/add/").status_code == 403
    assert client.get(f"/admin/pbx/consolecommand/{record.pk}/delete/").status_code == 403
    changed = client.post(f"/admin/pbx/consolecommand/{record.pk}/change/", {"command": "core stop now"})
    assert changed.status_code == 403
    record.refresh_from_db()
    assert record.command == "core show version"


# --- against the real Asterisk, through a real server -------------------------------------


def _create_users(stack: Stack) -> None:
    lines = ["from django.contrib.auth import get_user_model", "User = get_user_model()"]
    for name, superuser in USERS.items():
        lines.append(
            f"User.objects.create_user({name!r}, password={USER_PASSWORD!r}, is_staff=True, is_superuser={superuser})"
        )
    stack.shell("\n".join(lines))


@pytest.fixture(scope="module")
def site(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default, linked to the private Asterisk, with the console on."""
    stack = pbx_stack(tmp_path_factory.mktemp("console"), pbx, PBX_CONSOLE="1", PBX_CONSOLE_TIMEOUT="10")
    try:
        _create_users(stack)
        start_linked(stack)
        stack.tokens = {name: stack.login(stack.server, name, USER_PASSWORD) for name in USERS}
        yield stack
    finally:
        stack.close()


def run(site: Stack, user: str, command: str, **extra: Any) -> tuple[int, Any]:
    return site.request(site.server, "POST", "/api/pbx/console", {"command": command, **extra}, site.tokens[user])


def audit(site: Stack, record_id: int | None = None) -> list[dict[str, Any]]:
    """Audit records (newest first) as the Django admin would show them, read by a shell."""
    code = (
        "import json\nfrom pbx.models import ConsoleCommand\n"
        "rows = ConsoleCommand.objects.order_by('-id')"
        + (f".filter(pk={record_id})" if record_id is not None else "")
        + "\nprint(json.dumps(list(rows.values('id', 'username', 'command', 'outcome', 'error', 'duration_ms',"
        " 'output_bytes', 'truncated', 'confirmed', 'address', 'started_at')), default=str))"
    )
    return json.loads(site.shell(code).strip().splitlines()[-1])


def test_a_command_and_its_output(site: Stack) -> None:
    code, body = run(site, "alice", "core show version")
    assert code == 200, body
    assert body["outcome"] == "ok" and body["error"] is None and not body["truncated"]
    assert "Asterisk 22" in body["output"] and body["command"] == "core show version"
    [record] = audit(site, body["id"])
    assert record["username"] == "alice" and record["command"] == "core show version"
    assert record["outcome"] == "ok" and record["output_bytes"] == len(body["output"].encode())
    assert record["duration_ms"] is not None and record["address"] == "127.0.0.1"


def test_indented_output_keeps_its_columns(site: Stack) -> None:
    code, body = run(site, "alice", "dialplan show site-tests")
    assert code == 200 and body["outcome"] == "ok", body
    assert "\n  '600' =>" in body["output"]  # the CLI's indentation, as the shell shows it


def test_an_unknown_command_is_an_error(site: Stack) -> None:
    code, body = run(site, "alice", "no such console command")
    assert code == 200, body
    assert body["outcome"] == "error" and body["error"].startswith("No such command 'no such console command'")
    [record] = audit(site, body["id"])
    assert record["outcome"] == "error" and record["error"].startswith("No such command")


@pytest.mark.parametrize("command", ["core stop now", '"CORE"  st\\op   now', "core restart now"])
def test_a_destructive_command_is_refused_without_confirmation(site: Stack, pbx: Asterisk, command: str) -> None:
    code, body = run(site, "alice", command)
    assert code == 428, body
    assert body["error"] == "confirmation_required"
    assert set(body) == {"error", "detail", "fields"}  # the shared error shape
    assert ("restarts Asterisk" if "restart" in command else "stops Asterisk") in body["fields"]["confirm"][0]
    code, body = run(site, "alice", command, confirm="core show version")
    assert code == 428 and "does not match" in body["detail"]
    # Asterisk never saw it: still up, not restarting.
    assert pbx.running and "System uptime" in pbx.cli("core show uptime")
    records = audit(site)[:2]
    assert [r["outcome"] for r in records] == ["refused", "refused"]
    assert all(r["command"] == command and r["username"] == "alice" and not r["confirmed"] for r in records)


def test_a_listed_command_runs_with_its_confirmation(site: Stack, pbx: Asterisk) -> None:
    family = "rayanpbx-console-test"
    code, body = run(site, "alice", f"database put {family} key value")
    assert code == 200 and body["outcome"] == "ok", body
    assert "value" in pbx.cli(f"database show {family}")
    code, body = run(site, "alice", f"database deltree {family}")
    assert code == 428 and "deletes" in body["fields"]["confirm"][0]
    assert "value" in pbx.cli(f"database show {family}")  # not run
    code, body = run(site, "alice", f"database deltree {family}", confirm=f"  DATABASE deltree   {family}")
    assert code == 200 and body["outcome"] == "ok", body
    assert "removed" in body["output"]
    assert "/key" not in pbx.cli(f"database show {family}")
    [record] = audit(site, body["id"])
    assert record["confirmed"] and record["outcome"] == "ok"


def test_history_is_per_user(site: Stack) -> None:
    run(site, "alice", "core show uptime")
    run(site, "bob", "core show channels")
    run(site, "alice", "core show uptime seconds")
    alice = site.request(site.server, "GET", "/api/pbx/console/history", token=site.tokens["alice"])[1]["results"]
    bob = site.request(site.server, "GET", "/api/pbx/console/history", token=site.tokens["bob"])[1]["results"]
    assert [row["command"] for row in alice[:2]] == ["core show uptime seconds", "core show uptime"]
    assert [row["command"] for row in bob] == ["core show channels"]
    assert "core show channels" not in {row["command"] for row in alice}


def test_staff_that_is_not_superuser_is_refused(site: Stack) -> None:
    before = len(audit(site))
    code, body = run(site, "carol", "core show version")
    assert code == 403 and body["error"] == "permission_denied"
    code, body = site.request(site.server, "GET", "/api/pbx/console/history", token=site.tokens["carol"])
    assert code == 403
    assert len(audit(site)) == before


@pytest.mark.parametrize("command", ["core show version\r\nAction: Originate", "core show version\n", "x" * 513])
def test_a_command_with_a_line_break_is_400(site: Stack, command: str) -> None:
    before = len(audit(site))
    code, body = run(site, "alice", command)
    assert code == 400 and body["error"] == "invalid" and "command" in body["fields"], body
    assert len(audit(site)) == before


def test_other_admins_see_the_command_on_the_console_topic(site: Stack) -> None:
    with connect(site.server.ws, subprotocols=["rayanpbx", f"bearer.{site.tokens['bob']}"], open_timeout=10) as socket_:
        assert json.loads(socket_.recv(10))["type"] == "welcome"
        socket_.send(json.dumps({"type": "subscribe", "topics": ["console"]}))
        frame = json.loads(socket_.recv(10))
        assert frame["type"] == "subscribed" and "console" in frame["payload"]["topics"], frame
        assert run(site, "alice", "core show uptime")[0] == 200
        while True:
            frame = json.loads(socket_.recv(10))
            if frame.get("topic") == "console" and frame["type"] == "console.command":
                break
        assert frame["payload"] == {"user": "alice", "command": "core show uptime", "outcome": "ok"}
        assert "output" not in json.dumps(frame)


# --- the AMI session alone: permissions, timeouts, the output cap -------------------------


def _execute(pbx: Asterisk, command: str, **options: Any) -> console.Result:
    settings = {
        "host": "127.0.0.1",
        "port": pbx.ami_port,
        "username": pbx.ami_user,
        "secret": pbx.ami_secret,
        "timeout": 10.0,
        "max_output": 1 << 20,
        **options,
    }
    return asyncio.run(console.execute(command, **settings))


def test_an_ami_user_without_the_command_class_gets_a_clear_message(pbx: Asterisk) -> None:
    manager = pbx.etc_dir / "manager.conf"
    if f"[{NOCMD_USER}]" not in manager.read_text():
        manager.write_text(
            manager.read_text()
            + f"\n[{NOCMD_USER}]\nsecret = {NOCMD_SECRET}\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\n"
            "read = all\nwrite = system,call,config,originate\n"
        )
        pbx.cli("manager reload")
    result = _execute(pbx, "core show version", username=NOCMD_USER, secret=NOCMD_SECRET)
    assert result.outcome == "error" and "Permission denied" in result.error
    assert "'command' write class" in result.error and NOCMD_USER in result.error


def test_a_wrong_secret_is_a_login_error(pbx: Asterisk) -> None:
    result = _execute(pbx, "core show version", secret="not-the-secret")
    assert result.outcome == "error" and "AMI login refused" in result.error and "Authentication failed" in result.error
    assert "not-the-secret" not in result.error


def test_module_unload_is_refused_by_asterisk_itself(pbx: Asterisk) -> None:
    result = _execute(pbx, "module unload app_echo.so")
    assert result.outcome == "error" and "blacklisted" in result.error
    assert "app_echo.so" in pbx.cli("module show like echo")


def test_output_past_the_cap_is_cut(pbx: Asterisk) -> None:
    result = _execute(pbx, "core show help", max_output=1024)
    assert result.outcome == "ok" and result.truncated
    assert 900 < result.output_bytes <= 1024 and result.output.startswith("!")


def test_nothing_listening_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = asyncio.run(
        console.execute(
            "core show version", host="127.0.0.1", port=port, username="u", secret="s", timeout=5, max_output=1024
        )
    )
    assert result.outcome == "error" and result.error.startswith(f"cannot connect to AMI at 127.0.0.1:{port}")


def test_a_silent_server_times_out() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        thread.start()
        result = asyncio.run(
            console.execute(
                "core show version", host="127.0.0.1", port=port, username="u", secret="s", timeout=1.0, max_output=1024
            )
        )
        thread.join(5)
        for conn in accepted:
            conn.close()
    assert result.outcome == "timeout" and "no answer within 1 s" in result.error
