"""No query-string token and no SIP secret in any log file.

The check itself runs when the pytest session ends (``pytest_sessionfinish`` in
``tests/conftest.py``, the logic in ``tests/faults/logscan.py``) over every log the suite's
processes wrote. These tests prove it finds what it must: a planted token or secret fails
the run; and that a real server given the leakiest inputs (``?token=``, tokens in every
place, SIP secrets on create) writes none of them, in the plain and the JSON log format.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from tests.faults import logscan
from tests.stack import ROOT, Stack
from tests.test_live_e2e import connect, recv

#: Planted leaks live outside pytest's base temporary directory, or the session's own
#: scan (rightly) fails the run.


@pytest.fixture
def outside() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rayanpbx-logscan-") as folder:
        yield Path(folder)


JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiMSIsImV4cCI6MX0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def plant(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_clean_log_has_no_hits(outside: Path) -> None:
    plant(outside, "s/server-1.log", '127.0.0.1:1 - - [x] "WSCONNECT /ws" - -\nINFO all good, token refreshed\n')
    assert logscan.scan(outside) == []


@pytest.mark.parametrize(
    "line, what",
    [
        (f"WARNING something: Bearer {JWT}", "a JWT"),
        ('127.0.0.1:1 - - [x] "WSCONNECT /ws?token=abc.def.ghi" - -', "a token= query string"),
        ("GET /api/extensions?page=2&token=opaque", "a token= query string"),
        ("INFO created extension with secret Strong-secret-123", "a secret"),
        ('DEBUG password=Prov\\;ider[x]#include "a=b"', "a secret"),
    ],
)
def test_a_planted_leak_is_found(outside: Path, line: str, what: str) -> None:
    path = plant(outside, "s/worker-ab12.log", f"first line\n{line}\n")
    hits = logscan.scan(outside)
    assert [(hit.path, hit.line, hit.what) for hit in hits] == [(path, 2, what)]
    assert "Strong-secret-123" not in logscan.report(hits, outside)  # the report does not leak it again


def test_secrets_in_use_are_found_in_the_suites_own_files(outside: Path) -> None:
    """Generated SIP secrets (in a Stack's SQLite database, in the PJSIP file written for
    Asterisk) and the AMI secret (manager.conf) are looked for too, in Asterisk's logs too."""
    database = outside / "stack" / "rayanpbx.sqlite3"
    database.parent.mkdir()
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE extensions_extension (secret TEXT)")
        connection.execute("INSERT INTO extensions_extension VALUES ('Gen3rated-Secret-xyz1')")
    plant(outside, "asterisk/etc/pjsip_rayanpbx.conf", "[101-auth]\npassword = Pjsip-only-secret-9\n")
    plant(outside, "asterisk/etc/manager.conf", "[rayanpbx]\nsecret = ami-0123456789abcdef\n")
    assert {"Gen3rated-Secret-xyz1", "Pjsip-only-secret-9", "ami-0123456789abcdef"} <= logscan.secrets_in(outside)
    plant(outside, "asterisk/log/messages", "NOTICE login ami-0123456789abcdef\n")
    plant(outside, "stack/server-2.log", "oops Gen3rated-Secret-xyz1\n")
    plant(outside, "asterisk/console.log", "Pjsip-only-secret-9\n")
    plant(outside, "asterisk/etc/notes.txt", "Pjsip-only-secret-9\n")  # not a log: not scanned
    assert sorted(hit.path.name for hit in logscan.scan(outside)) == ["console.log", "messages", "server-2.log"]


def test_plant_a_leak(tmp_path: Path) -> None:
    """Only in the run of the next test: writes a log that leaks a token."""
    if not os.environ.get("RAYANPBX_PLANT_LEAK"):
        pytest.skip("plants a leak only when run by test_the_session_fails_when_a_log_leaks")
    (tmp_path / "server-1.log").write_text("GET /ws?token=leaked-token-value\n")


def test_the_session_fails_when_a_log_leaks(outside: Path) -> None:
    """The real hook, in a pytest run of its own: its one test passes and the run still fails."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={outside / 'base'}",
         f"{Path(__file__).relative_to(ROOT)}::test_plant_a_leak"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "RAYANPBX_PLANT_LEAK": "1"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "a token= query string" in result.stdout, result.stdout
    assert "leaked-token-value" not in result.stdout


def json_spellings(texts: list[str]) -> list[str]:
    """How each text is written inside a JSON string (LOG_FORMAT=json escapes ``"`` and ``\\``)."""
    return [json.dumps(text, ensure_ascii=False)[1:-1] for text in texts]


@pytest.mark.services
@pytest.mark.parametrize("log_format", ["plain", "json"])
async def test_a_real_server_logs_no_token_and_no_secret(tmp_path: Path, log_format: str) -> None:
    stack = Stack(tmp_path, env={"LOG_FORMAT": log_format})
    try:
        server = stack.start_server()
        token = stack.login(server)
        for source in (
            connect(server.ws, token),
            connect(server.ws, query=f"?token={token}"),
            connect(server.ws, query=f"?last_seq=0&token={token}"),
            websockets.connect(server.ws, additional_headers={"Authorization": f"Bearer {token}"}),
        ):
            async with source as ws:
                assert (await recv(ws))["type"] == "welcome"
        status, created = stack.request(
            server,
            "POST",
            "/api/extensions",
            {"extension_number": "4700", "name": "A", "secret": "Strong-secret-123"},
            token,
        )
        assert status == 201, created
        status, generated = stack.request(
            server, "POST", "/api/extensions", {"extension_number": "4701", "name": "B"}, token
        )
        assert status == 201 and generated["secret"]
        # Failures log too: a duplicate, a bad token, a refused socket, a 404 with a token in its query.
        stack.request(
            server,
            "POST",
            "/api/extensions",
            {"extension_number": "4700", "name": "C", "secret": "Raw-secret-12345"},
            token,
        )
        stack.request(server, "GET", f"/api/nowhere?token={token}", None, token + "x")
        async with connect(server.ws, query=f"?token={token}x") as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
    finally:
        stack.close()
    found = [generated["secret"], token]
    # In JSON a secret with a quote or a backslash is spelled escaped: look for that too.
    hits = logscan.scan(tmp_path, [*found, *json_spellings([*found, *logscan.FIXED_SECRETS])])
    logs = list(tmp_path.glob("server-*.log"))
    assert logs and hits == [], logscan.report(hits, tmp_path)
    if log_format == "json":  # the server's log lines were JSON (the banner and access log are not)
        records = [line for log in logs for line in log.read_text().splitlines() if line.startswith("{")]
        assert records and all(json.loads(line)["message"] for line in records)
