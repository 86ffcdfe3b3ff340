"""No token and no secret in any log the test suite's processes wrote.

``scan(root)`` reads every log file under ``root`` (pytest's base temporary directory: each
``Stack`` writes ``server-*.log`` and ``worker-*.log`` in its own folder, an Asterisk its
``log/`` folder and ``console.log``) and reports every line that holds:

* a JWT (three base64url parts, the first two starting ``eyJ``);
* a ``token=`` query string (the seed's ``/ws?token=``);
* a SIP or AMI secret the tests used: the fixed ones below, and the ones found in the
  suite's own files (``password =`` in the PJSIP files RayanPBX wrote for Asterisk,
  ``secret =`` in ``manager.conf``, the ``secret`` column of every SQLite database a
  ``Stack`` left behind, which holds the generated ones too).

``tests/conftest.py`` runs it when the session ends and fails the run on any hit.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
#: ``token=[redacted]`` is what ``manage.py serve``'s access log writes instead: not a leak.
QUERY_TOKEN = re.compile(r"[?&;](?:access_)?token=(?!\[redacted\])[^&\s\"']+", re.IGNORECASE)

#: Secrets written into the tests (and the bench) by hand.
FIXED_SECRETS = (
    "Strong-secret-123",
    "Raw-secret-12345",
    "Real-secret-1234",
    "Ghost-secret-123",
    "Trunk-secret-xyz",
    "Bench-secret-",
    "seed-secret-0123456789",
    "Ami-secret-for-tests",
    'Prov;ider[x]#include "a=b"',  # tests.asterisk.PROVIDER_SECRET
    'Prov\\;ider[x]#include "a=b"',  # ... as its PJSIP file spells it
)
#: Shorter strings are not looked for: they would match ordinary words.
MIN_SECRET = 8
#: Files that are logs: by suffix, or by the folder they are in.
LOG_SUFFIXES = (".log", ".out", ".err")
LOG_FOLDERS = ("log", "logs")
#: Never more than this much of one file is read (a log is small; a dump is not a log).
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Hit:
    path: Path
    line: int
    what: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}: {self.excerpt}"


def log_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.suffix in LOG_SUFFIXES or path.parent.name in LOG_FOLDERS):
            yield path


def secrets_in(root: Path) -> set[str]:
    """The secrets the suite's own files show were in use (see the module docstring)."""
    found: set[str] = set()
    for path in root.rglob("*.conf"):
        if path.name.startswith("pjsip") or path.name == "manager.conf":
            key = "secret" if path.name == "manager.conf" else "password"
            for line in _lines(path):
                name, sep, value = line.partition("=")
                if sep and name.strip() == key:
                    found.add(value.strip())
    for path in root.rglob("*.sqlite3"):
        found |= _sqlite_secrets(path)
    return found


def _sqlite_secrets(path: Path) -> set[str]:
    found: set[str] = set()
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return found
    try:
        for table in ("extensions_extension", "trunks_trunk"):
            try:
                found |= {row[0] for row in connection.execute(f"SELECT secret FROM {table}") if row[0]}
            except sqlite3.Error:
                continue
    finally:
        connection.close()
    return found


def _lines(path: Path) -> Iterator[str]:
    with path.open("rb") as file:
        data = file.read(MAX_BYTES)
    yield from data.decode("utf-8", "replace").splitlines()


def _redact(text: str, secret: str) -> str:
    """The excerpt shown in the report, without repeating the secret in full."""
    return text.replace(secret, secret[:3] + "…")[:200]


def scan(root: Path, extra_secrets: Iterable[str] = ()) -> list[Hit]:
    """Every log line under ``root`` holding a token or one of the secrets."""
    secrets = {s for s in (*FIXED_SECRETS, *secrets_in(root), *extra_secrets) if len(s) >= MIN_SECRET}
    hits: list[Hit] = []
    for path in log_files(root):
        for number, line in enumerate(_lines(path), 1):
            if match := JWT.search(line):
                hits.append(Hit(path, number, "a JWT", _redact(line, match.group())))
            if match := QUERY_TOKEN.search(line):
                hits.append(Hit(path, number, "a token= query string", _redact(line, match.group())))
            for secret in secrets:
                if secret in line:
                    hits.append(Hit(path, number, "a secret", _redact(line, secret)))
    return hits


def report(hits: list[Hit], root: Path) -> str:
    if not hits:
        return f"logscan: no token and no secret in the logs under {root}"
    shown = "\n".join(f"  {hit}" for hit in hits[:50])
    more = f"\n  ... and {len(hits) - 50} more" if len(hits) > 50 else ""
    return f"logscan: {len(hits)} log lines hold a token or a secret (tests/faults/logscan.py):\n{shown}{more}"
