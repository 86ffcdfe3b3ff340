"""The logs page's tail (live/logs.py, live/logtail.py, live/log_views.py): the follower on
real files, redaction, the REST API's permissions, and a real server following a log file
(a burst of 10,000 lines, secrets in lines), with and without a readable file.

The Asterisk test (a line Asterisk logs reaches a subscribed socket, and keeps coming after
``logger rotate``) and the Chromium test are in tests/test_logs_browser.py.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live import logs
from live.logtail import Follower
from tests.pbx_helpers import Stream, wait_until
from tests.stack import Stack

# --- the follower, on real files --------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_follower_reads_new_lines_and_keeps_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("old line before the start\n")
    follower = Follower(str(path))
    assert follower.read() == []  # a tail: what was there at the first open is not read
    _write(path, "one\ntwo\nthr")
    assert follower.read() == ["one", "two"]
    _write(path, "ee\n")
    assert follower.read() == ["three"]
    assert follower.readable and follower.error is None


def test_follower_follows_a_rotation_reading_the_old_file_to_its_end(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("")
    follower = Follower(str(path))
    follower.read()
    _write(path, "a1\n")
    assert follower.read() == ["a1"]
    _write(path, "a2\n")  # written before the rotation, not yet read
    path.rename(tmp_path / "messages.0")
    _write(tmp_path / "messages.0", "a3\n")  # the writer still had the old file open
    _write(path, "b1\nb2\n")  # the new file
    assert follower.read() == ["a2", "a3", "b1", "b2"]
    _write(path, "b3\n")
    assert follower.read() == ["b3"]
    assert follower.switches == 1


def test_follower_rereads_a_truncated_file_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("")
    follower = Follower(str(path))
    follower.read()
    _write(path, "x" * 100 + "\n" + "y" * 100 + "\n")
    assert len(follower.read()) == 2
    with path.open("r+") as handle:  # copytruncate, or "> messages"
        handle.truncate(0)
    _write(path, "after\n")
    assert follower.read() == ["after"]
    assert follower.switches == 1


def test_follower_survives_delete_and_recreate(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("")
    follower = Follower(str(path))
    follower.read()
    _write(path, "before\n")
    assert follower.read() == ["before"]
    path.unlink()
    assert follower.read() == []  # nothing at the path: the open file is kept
    assert follower.readable
    path.write_text("recreated 1\nrecreated 2\n")
    assert follower.read() == ["recreated 1", "recreated 2"]
    _write(path, "more\n")
    assert follower.read() == ["more"]


def test_follower_waits_for_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    follower = Follower(str(path))
    assert follower.read() == [] and not follower.readable
    assert "FileNotFoundError" in (follower.error or "")
    path.write_text("first\n")  # created after the start: read from its beginning
    assert follower.read() == ["first"]
    if os.geteuid() != 0:  # root reads anything
        other = Follower(str(tmp_path / "locked"))
        (tmp_path / "locked").write_text("x\n")
        (tmp_path / "locked").chmod(0)
        assert other.read() == [] and "PermissionError" in (other.error or "")


def test_follower_cuts_long_lines_and_bounds_one_read(tmp_path: Path) -> None:
    path = tmp_path / "messages"
    path.write_text("")
    follower = Follower(str(path), max_line=100, max_read=1000)
    follower.read()
    _write(path, "z" * 5000 + "\nshort\n")
    lines: list[str] = []
    for _ in range(10):
        lines += follower.read()
    assert lines == ["z" * 100, "short"]
    assert follower.cut == 1


# --- parsing and redaction ---------------------------------------------------------------------


def test_parses_asterisk_lines_strictly() -> None:
    line = logs.parse_asterisk(
        "[Dec  2 05:31:31] WARNING[7139][C-00000002] res_musiconhold.c: No music on hold classes configured"
    )
    assert (line["source"], line["level"], line["logger"]) == ("asterisk", "warning", "res_musiconhold.c")
    assert line["message"] == "[C-00000002] No music on hold classes configured"
    assert logs.parse_asterisk("[Dec  2 05:31:31] NOTICE[1] loader.c: 58 modules will be loaded.")["level"] == "notice"
    # Not the format: kept whole, nothing guessed.
    text = "[Dec  2 05:31:31] Asterisk 22.10.1 built by root"
    banner = logs.parse_asterisk(text)
    assert (banner["level"], banner["logger"], banner["message"]) == ("info", "", text)
    fake = logs.parse_asterisk("ERROR[1] x.c: <script>alert(1)</script>\x1b[31m")
    assert fake["level"] == "info" and "\x1b" not in fake["message"]
    # Asterisk 22's [json] format, as `messages.json => [json]notice,...` writes it.
    as_json = logs.parse_asterisk(
        '{"hostname":"","timestamp":"Dec  2 05:41:21","identifiers":{"lwp":17377,"callid":"C-00000003"},'
        '"logmsg":{"location":{"filename":"pbx.c","function":"f","line":1},"level":"ERROR",'
        '"message":"bad secret=abc123xyz\\n"}}'
    )
    assert (as_json["level"], as_json["logger"]) == ("error", "pbx.c")
    assert as_json["message"] == "[C-00000003] bad secret=[redacted]"


JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiMSJ9.c2lnbmF0dXJlLWhlcmU"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("register secret=Hunter2hunter2 ok", "Hunter2hunter2"),
        ('auth password = "two words" end', "two words"),
        ("auth_pass=abcdefgh; next", "abcdefgh"),
        ("Action: Login\nSecret: plainAMIsecret", "plainAMIsecret"),
        ('Authorization: Digest username="101", response="0f1e2d3c4b5a"', "0f1e2d3c4b5a"),
        (f"ws?token={JWT}", JWT),
        (f"header bearer.{JWT} end", JWT),
        ("md5_cred => 5f4dcc3b5aa765d61d8327deb882cf99", "5f4dcc3b5aa765d61d8327deb882cf99"),
    ],
)
def test_redacts_credentials(text: str, gone: str) -> None:
    out = logs.redact(text)
    assert gone not in out and "[redacted]" in out


def test_redacts_the_ami_secret_and_known_sip_secrets_verbatim(settings) -> None:
    settings.AMI_SECRET = "ami-verbatim-0123"
    logs.SECRETS.set(["Ext-secret-98765", "odd secret;with=delims"])
    try:
        out = logs.redact("login with ami-verbatim-0123, ext Ext-secret-98765 and odd secret;with=delims")
        assert "ami-verbatim-0123" not in out and "Ext-secret-98765" not in out and "delims" not in out
        # A longer word that merely contains a secret is another word (documented limit).
        assert "Ext-secret-98765x" in logs.redact("Ext-secret-98765x")
    finally:
        logs.SECRETS.set([])


def test_record_handler_redacts_is_bounded_and_ignores_what_publishing_logs(settings) -> None:
    settings.REDIS_URL = ""  # the buffer itself (with Redis a flusher thread would empty it)
    handler = logs.RecordHandler()
    log = logging.getLogger("live.test_logs_handler")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.warning("token=%s given", JWT)
        lines, dropped = handler.take()
        assert [(line["source"], line["level"], line["logger"]) for line in lines] == [
            ("rayanpbx", "warning", "live.test_logs_handler")
        ]
        assert JWT not in lines[0]["message"] and dropped == 0
        for n in range(logs.RECORD_BUFFER + 25):
            log.info("record %d", n)
        lines, dropped = handler.take()
        assert len(lines) == logs.RECORD_BUFFER and dropped == 25
        assert lines[-1]["message"] == f"record {logs.RECORD_BUFFER + 24}"
        token = logs._publishing.set(True)
        try:
            log.warning("logged while publishing")
        finally:
            logs._publishing.reset(token)
        logging.getLogger("live.logs").addHandler(handler)
        logging.getLogger("live.logs").warning("the tail's own record")
        logging.getLogger("live.logs").removeHandler(handler)
        assert handler.take() == ([], 0)
    finally:
        log.removeHandler(handler)


# --- the REST API, in process -------------------------------------------------------------------


@pytest.fixture
def stored_lines(settings) -> Iterator[list[dict[str, Any]]]:
    """Four lines in this process's store: the in-process deque, or (REDIS_URL set) the Redis
    list under a key prefix of this test's own."""
    import uuid

    settings.REDIS_KEY_PREFIX = f"test-logs-{uuid.uuid4().hex[:8]}:"
    store = logs.store()
    saved = list(store.lines) if isinstance(store, logs.LocalStore) else []
    if isinstance(store, logs.LocalStore):
        store.lines.clear()
    lines = [
        logs.parse_asterisk(f"[Dec  2 05:31:31] {level}[1] chan_pjsip.c: line {n} secret=xyz12345")
        for n, level in enumerate(["VERBOSE", "NOTICE", "WARNING", "ERROR"])
    ]
    store.add(lines)
    yield lines
    if isinstance(store, logs.LocalStore):
        store.lines.clear()
        store.lines.extend(saved)
    else:
        store.client.delete(logs._key("recent"), logs._key("seq"))


@pytest.mark.django_db
def test_rest_is_staff_only(stored_lines, staff_client, reader_client, anon_client) -> None:
    assert anon_client.get("/api/logs").status_code == 401
    denied = reader_client.get("/api/logs")
    assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
    answer = staff_client.get("/api/logs")
    assert answer.status_code == 200
    body = answer.json()
    assert [line["message"] for line in body["lines"]] == [f"line {n} secret=[redacted]" for n in range(4)]
    assert set(body["asterisk"]) == {"readable", "message", "error"}


@pytest.mark.django_db
def test_rest_filters_and_limits(stored_lines, staff_client) -> None:
    def messages(query: str) -> list[str]:
        answer = staff_client.get(f"/api/logs{query}")
        assert answer.status_code == 200, answer.content
        return [line["message"].split(" secret")[0] for line in answer.json()["lines"]]

    assert messages("?limit=2") == ["line 2", "line 3"]
    assert messages("?level=warning") == ["line 2", "line 3"]
    assert messages("?source=rayanpbx") == []
    assert messages("?q=LINE 1") == ["line 1"]
    for bad in ("?limit=0", "?limit=501", "?limit=x", "?level=loud", "?source=kernel", "?q=" + "x" * 201):
        answer = staff_client.get(f"/api/logs{bad}")
        assert answer.status_code == 400 and answer.json()["error"] == "invalid", bad


@pytest.mark.django_db
def test_page_is_staff_only(client, staff_user, reader_user) -> None:
    assert client.get("/logs/").status_code == 302  # to the login page
    client.force_login(reader_user)
    assert client.get("/logs/").status_code == 403
    client.force_login(staff_user)
    assert client.get("/logs/").status_code == 200


# --- a real server following a file ------------------------------------------------------------

AMI_SECRET = "Ami-secret-for-logs-test"


@pytest.fixture(scope="module")
def tail_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default with ASTERISK_LOG_FILE on a temporary file (not named like a
    log: the session's log scan must not find the secrets this module writes on purpose)."""
    folder = tmp_path_factory.mktemp("tail")
    log_file = folder / "asterisk-messages.txt"
    log_file.write_text("")
    stack = Stack(folder, env={"ASTERISK_LOG_FILE": str(log_file), "AMI_SECRET": AMI_SECRET})
    stack.log_file = log_file
    stack.server = stack.start_server()
    stack.admin = stack.login(stack.server)
    yield stack
    stack.close()


def subscribed(stack: Stack) -> Stream:
    stream = Stream(stack.server, stack.admin)
    stream.wait(lambda f: f["type"] == "welcome")
    stream._ws.send(json.dumps({"type": "subscribe", "topics": ["logs"]}))
    stream.wait(lambda f: f["type"] == "subscribed" and "logs" in f["payload"]["topics"])
    return stream


def log_lines(stream: Stream, after: int = 0) -> list[dict[str, Any]]:
    return [line for frame in stream.of("logs.lines", after=after) for line in frame["payload"]["lines"]]


def test_lines_reach_the_topic_and_rest_redacted(tail_site: Stack) -> None:
    stream = subscribed(tail_site)
    try:
        mark = stream.mark()
        _write(
            tail_site.log_file,
            f"[Dec  2 05:31:31] NOTICE[42] res_pjsip.c: probe-1 secret=Sip-secret-4567 jwt {JWT}\n"
            f"[Dec  2 05:31:31] WARNING[42] manager.c: probe-2 AMI login with {AMI_SECRET}\n",
        )
        wait_until(lambda: len([x for x in log_lines(stream, mark) if "probe-" in x["message"]]) == 2, what="lines")
        frame_text = json.dumps(stream.of("logs.lines", after=mark))
        for secret in ("Sip-secret-4567", JWT, AMI_SECRET):
            assert secret not in frame_text
        lines = [x for x in log_lines(stream, mark) if "probe-" in x["message"]]
        assert [(x["level"], x["logger"]) for x in lines] == [("notice", "res_pjsip.c"), ("warning", "manager.c")]
        code, body = tail_site.request(tail_site.server, "GET", "/api/logs?q=probe-", token=tail_site.admin)
        assert code == 200 and [x["message"][:7] for x in body["lines"]] == ["probe-1", "probe-2"]
        assert body["asterisk"]["readable"] is True
        rest_text = json.dumps(body)
        for secret in ("Sip-secret-4567", JWT, AMI_SECRET):
            assert secret not in rest_text
        assert [x["id"] for x in body["lines"]] == [x["id"] for x in lines]  # the page's de-duplication key
    finally:
        stream.close()


def _health_ms(stack: Stack) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(stack.server.http + "/health", timeout=10) as response:
        assert response.status == 200
    return (time.monotonic() - started) * 1000


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_burst_of_10000_lines_in_a_second_is_batched_and_accounted(tail_site: Stack) -> None:
    stream = subscribed(tail_site)
    try:
        mark = stream.mark()
        cpu_before = _cpu_seconds(tail_site.server.process.pid)
        health: list[float] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                health.append(_health_ms(tail_site))
                time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        started = time.monotonic()
        for chunk in range(10):  # 10,000 lines in one second
            text = "".join(
                f"[Dec  2 05:31:31] VERBOSE[7] pbx.c: burst-{chunk * 1000 + n} Executing [s@site:1] NoOp\n"
                for n in range(1000)
            )
            _write(tail_site.log_file, text)
            time.sleep(max(0.0, started + (chunk + 1) * 0.1 - time.monotonic()))
        written = time.monotonic() - started

        def accounted() -> int:
            frames = stream.of("logs.lines", after=mark)
            shown = sum(1 for f in frames for x in f["payload"]["lines"] if "burst-" in x["message"])
            return shown + sum(f["payload"]["skipped_by_source"]["asterisk"] for f in frames)

        wait_until(lambda: accounted() >= 10_000, timeout=15, what="all 10,000 lines accounted for")
        time.sleep(0.5)  # nothing more may come
        done.set()
        prober.join(5)
        cpu = _cpu_seconds(tail_site.server.process.pid) - cpu_before
        frames = stream.of("logs.lines", after=mark)
        assert accounted() == 10_000
        assert all(len(f["payload"]["lines"]) <= 200 for f in frames)  # LOGS_BATCH_LINES
        assert sum(f["payload"]["skipped"] for f in frames) > 0  # a browser is not sent 10,000 lines
        assert written < 1.5 and len(health) >= 5
        assert max(health) < 500, health  # the server stayed responsive during the burst
        shown = [x for f in frames for x in f["payload"]["lines"] if "burst-" in x["message"]]
        assert shown[-1]["message"].startswith("burst-9999 ")  # the newest lines are the ones kept
        print(
            f"\nburst: 10,000 lines in {written:.2f} s -> {len(frames)} messages, {len(shown)} lines shown, "
            f"{10_000 - len(shown)} skipped; /health max {max(health):.1f} ms, median "
            f"{sorted(health)[len(health) // 2]:.1f} ms over {len(health)} requests; server CPU {cpu:.2f} s "
            "(the /health requests included)"
        )
    finally:
        stream.close()


def test_the_file_rotated_under_the_server_keeps_flowing(tail_site: Stack) -> None:
    stream = subscribed(tail_site)
    try:
        mark = stream.mark()
        path = tail_site.log_file
        _write(path, "[Dec  2 05:31:31] NOTICE[1] x.c: rot-before\n")
        wait_until(lambda: any("rot-before" in x["message"] for x in log_lines(stream, mark)), what="before")
        path.rename(path.with_name("asterisk-messages.old"))
        _write(path.with_name("asterisk-messages.old"), "[Dec  2 05:31:31] NOTICE[1] x.c: rot-late-old\n")
        _write(path, "[Dec  2 05:31:31] NOTICE[1] x.c: rot-new\n")
        wait_until(lambda: any("rot-new" in x["message"] for x in log_lines(stream, mark)), what="new file")
        seen = [x["message"] for x in log_lines(stream, mark) if "rot-" in x["message"]]
        assert seen == ["rot-before", "rot-late-old", "rot-new"]
    finally:
        stream.close()


def test_without_a_readable_log_the_page_says_so(tmp_path: Path) -> None:
    stack = Stack(tmp_path)  # ASTERISK_LOG_FILE unset
    try:
        stack.server = stack.start_server()
        token = stack.login(stack.server)
        code, body = stack.request(stack.server, "GET", "/api/logs", token=token)
        assert code == 200
        assert body["asterisk"]["readable"] is False
        assert body["asterisk"]["message"] == "Asterisk log not readable: set ASTERISK_LOG_FILE"
    finally:
        stack.close()


# --- with Redis: the tail in `runworker rayanpbx-poller`, records from every process -----------


def test_with_redis_the_worker_tails_and_every_process_hands_in_its_records(tmp_path: Path) -> None:
    from tests.services import redis_url

    log_file = tmp_path / "asterisk-messages.txt"
    log_file.write_text("")
    stack = Stack(tmp_path, redis_url=redis_url(), env={"ASTERISK_LOG_FILE": str(log_file)})
    try:
        stack.server = stack.start_server()
        stack.start_worker()  # rayanpbx-poller: the poller and the logs tail
        stack.admin = stack.login(stack.server)
        stream = subscribed(stack)
        try:
            mark = stream.mark()
            wait_until(
                lambda: (
                    _write(log_file, "[Dec  2 05:31:31] NOTICE[9] chan_pjsip.c: via-redis\n"),
                    log_lines(stream, mark),
                )[1],
                timeout=15,
                what="the worker's first batch on the server's socket",
            )
            assert any("via-redis" in x["message"] for x in log_lines(stream, mark))
            # A record of another process (a shell), redacted there, shown here.
            stack.shell(
                "import logging, time\nfrom live import logs\nlogs.install()\n"
                "logging.getLogger('pbx.shell').warning('from a shell secret=Shell-secret-777')\ntime.sleep(1.5)\n"
            )
            record = wait_until(
                lambda: next((x for x in log_lines(stream, mark) if "from a shell" in x["message"]), None),
                what="the shell's record",
            )
            assert (record["source"], record["logger"], record["message"]) == (
                "rayanpbx", "pbx.shell", "from a shell secret=[redacted]"
            )  # fmt: skip
            # A record of the server process itself: a revoked user's socket closed by its hub.
            stack.shell(
                "from django.contrib.auth import get_user_model\n"
                "get_user_model().objects.create_user('tail-victim', password='Victim-pass-123', is_staff=True)\n"
            )
            victim = Stream(stack.server, stack.login(stack.server, "tail-victim", "Victim-pass-123"))
            victim.wait(lambda f: f["type"] == "welcome")
            stack.shell(
                "from django.contrib.auth import get_user_model\n"
                "u = get_user_model().objects.get(username='tail-victim')\nu.set_password('Other-pass-456')\nu.save()\n"
            )
            wait_until(
                lambda: any(
                    x["logger"] == "live.hub" and "Closed 1 socket" in x["message"] for x in log_lines(stream, mark)
                ),
                what="the server's own record",
            )
            victim.close()
            # REST on the server reads what the worker stored.
            code, body = stack.request(stack.server, "GET", "/api/logs", token=stack.admin)
            assert code == 200 and body["asterisk"]["readable"] is True
            messages = [x["message"] for x in body["lines"]]
            assert any("via-redis" in m for m in messages) and any("from a shell" in m for m in messages)
        finally:
            stream.close()
    finally:
        stack.close()
