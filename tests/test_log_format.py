"""Structured logs and request ids (issue 13, part 5): ``LOG_FORMAT=json`` and ``X-Request-ID``.

* The JSON formatter: one object per line with time, level, logger, message, request id and
  the traceback as a string; a broken record still gives a line.
* The request id: made by the server, or taken from ``X-Request-ID`` only when a trusted
  proxy sent it and it looks like an id; answered in the response.
* A real server with ``LOG_FORMAT=json``: every stderr line is a JSON object, and the line a
  request logged carries that request's id (the one answered to the client); the default
  stays the plain format.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.test import Client, override_settings

from rayanpbx import log_format
from rayanpbx.proxies import parse_trusted_proxies
from tests.stack import ROOT, Server, Stack, free_port

FIELDS = {"time", "level", "logger", "message", "request_id", "process"}


def record(message: str = "hello %s", args: tuple = ("world",), **extra) -> logging.LogRecord:
    made = logging.LogRecord("rayanpbx.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_the_json_formatter_writes_one_object_per_line() -> None:
    formatter = log_format.JsonFormatter()
    line = formatter.format(record(request_id="abc123"))
    document = json.loads(line)
    assert set(document) == FIELDS
    assert document["message"] == "hello world" and document["level"] == "WARNING"
    assert document["logger"] == "rayanpbx.test" and document["request_id"] == "abc123"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", document["time"])
    multi = formatter.format(record('two\nlines "quoted" %s', ("ünïcode",)))
    assert "\n" not in multi and json.loads(multi)["message"] == 'two\nlines "quoted" ünïcode'
    broken = formatter.format(record("needs %d %d", ("one",)))  # a bad format: still a line
    assert json.loads(broken)["message"].startswith("'needs %d %d'")


def test_the_json_formatter_puts_the_traceback_in_one_string_field() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("failed", (), exc_info=sys.exc_info())
    document = json.loads(log_format.JsonFormatter().format(failed))
    assert document["exc_info"].startswith("Traceback (most recent call last):")
    assert document["exc_info"].rstrip().endswith("ValueError: boom")


def test_the_filter_gives_every_record_the_current_request_id() -> None:
    handler_filter = log_format.RequestIdFilter()
    outside = record()
    assert handler_filter.filter(outside) and outside.request_id is None
    token = log_format.current_request_id.set("req-1")
    try:
        inside = record()
        handler_filter.filter(inside)
        assert inside.request_id == "req-1"
    finally:
        log_format.current_request_id.reset(token)


def test_log_format_is_checked_at_start_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "RAYANPBX_DATA_DIR": str(tmp_path), "LOG_FORMAT": "xml"},
    )  # fmt: skip
    assert result.returncode != 0 and "LOG_FORMAT must be plain or json, got 'xml'" in result.stderr


# --- the request id, in-process -------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_gets_an_id_of_its_own_unless_a_trusted_proxy_sent_one() -> None:
    client = Client()  # REMOTE_ADDR 127.0.0.1
    made = client.get("/login/")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and client.get("/login/")["X-Request-ID"] != made
    # From a client that is not a trusted proxy, its own X-Request-ID is ignored.
    assert client.get("/login/", HTTP_X_REQUEST_ID="forged-id")["X-Request-ID"] != "forged-id"
    with override_settings(TRUSTED_PROXIES=parse_trusted_proxies("127.0.0.0/8")):
        assert client.get("/login/", HTTP_X_REQUEST_ID="proxy-id.1:2_3-4")["X-Request-ID"] == "proxy-id.1:2_3-4"
        for bad in ("two words", "x" * 129, "line\nbreak", '"quoted"', "ünï"):
            answered = client.get("/login/", HTTP_X_REQUEST_ID=bad)["X-Request-ID"]
            assert re.fullmatch(r"[0-9a-f]{32}", answered), bad
    assert log_format.current_request_id.get() is None  # reset after a WSGI-style request


# --- a real server ------------------------------------------------------------------------


def start(stack: Stack, tmp_path: Path) -> tuple[Server, Path]:
    """``manage.py serve`` with stderr (the log) apart from stdout (banner and access log)."""
    port = free_port()
    err = tmp_path / f"server-{port}.err"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=stack.env,
        stdout=(tmp_path / f"server-{port}.out").open("ab"), stderr=err.open("ab"), start_new_session=True,
    )  # fmt: skip
    stack.processes.append(process)
    server = Server(port, process, err)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, err.read_text()[-2000:]
        try:
            if stack.request(server, "GET", "/health")[0] == 200:
                return server, err
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server did not start: {err.read_text()[-2000:]}")


def get(server: Server, path: str, source: str, request_id: str | None = None) -> str:
    """GET ``path`` from the address ``source``; the X-Request-ID answered."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers={"X-Request-ID": request_id} if request_id else {})
        response = connection.getresponse()
        response.read()
        assert response.status == 404, path
        return response.getheader("X-Request-ID")
    finally:
        connection.close()


def wait_for(log: Path, text: str, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines()
        if any(text in line for line in lines):
            return lines
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged: {log.read_text()[-2000:]}")


@pytest.mark.services
def test_json_logs_of_a_real_server_parse_and_carry_the_request_id(tmp_path: Path) -> None:
    """127.0.0.2 is the trusted proxy: its X-Request-ID is kept; 127.0.0.1's is not."""
    stack = Stack(tmp_path, env={"LOG_FORMAT": "json", "TRUSTED_PROXIES": "127.0.0.2"})
    try:
        server, log = start(stack, tmp_path)
        direct, proxied = f"/api/nowhere-{uuid.uuid4().hex[:8]}", f"/nowhere-{uuid.uuid4().hex[:8]}"
        direct_id = get(server, direct, "127.0.0.1", request_id="forged-by-a-client")
        assert direct_id != "forged-by-a-client" and re.fullmatch(r"[0-9a-f]{32}", direct_id)
        proxied_id = get(server, proxied, "127.0.0.2", request_id="nginx-0123456789abcdef")
        assert proxied_id == "nginx-0123456789abcdef"
        stack.request(server, "POST", "/api/auth/login", {"username": "admin", "password": "wrong"})
        wait_for(log, proxied)
        lines = wait_for(log, direct)
    finally:
        stack.close()
    documents = []
    for line in lines:
        document = json.loads(line)  # every stderr line is one JSON object
        assert set(document) >= FIELDS, line
        documents.append(document)
    by_message = {document["message"]: document for document in documents}
    assert by_message[f"Not Found: {direct}"]["request_id"] == direct_id
    assert by_message[f"Not Found: {proxied}"]["request_id"] == proxied_id
    assert by_message[f"Not Found: {direct}"]["level"] == "WARNING"
    assert any(document["logger"] == "daphne.server" and document["request_id"] is None for document in documents)


@pytest.mark.services
def test_the_default_log_format_stays_plain(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        server, log = start(stack, tmp_path)
        path = f"/api/nowhere-{uuid.uuid4().hex[:8]}"
        get(server, path, "127.0.0.1")
        lines = wait_for(log, path)
    finally:
        stack.close()
    assert lines
    for line in lines:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ", line), line
    assert any(line.endswith(f"WARNING django.request: Not Found: {path}") for line in lines), lines
