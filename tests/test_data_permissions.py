"""The data directory is 0700 and the SQLite database (SIP secrets) and secret key 0600,
in a new checkout and, tightened at start-up, in an existing one (rayanpbx/private_files.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Opens the embedded database and writes to it, so SQLite creates its -wal and -shm files.
WRITE = (
    "import django; django.setup(); from django.db import connection; "
    "cursor = connection.cursor(); cursor.execute('CREATE TABLE IF NOT EXISTS probe (x)'); "
    "cursor.execute('INSERT INTO probe VALUES (1)'); print(cursor.execute('SELECT count(*) FROM probe').fetchone()[0])"
)


def _start(data_dir: Path) -> str:
    """Start Django on ``data_dir`` under a permissive umask (022), as a shell usually has."""
    env = {"PATH": "/usr/bin:/bin", "RAYANPBX_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "rayanpbx.settings"}
    return subprocess.run(
        [sys.executable, "-c", WRITE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        preexec_fn=lambda: os.umask(0o022),
    ).stdout.strip()  # fmt: skip


def _mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    data = tmp_path / "new" / "data"
    assert _start(data) == "1"
    assert _mode(data) == "0o700"
    database = data / "rayanpbx.sqlite3"
    assert _mode(database) == "0o600" and _mode(data / "secret_key") == "0o600"
    companions = [data / "rayanpbx.sqlite3-wal", data / "rayanpbx.sqlite3-shm"]
    assert all(_mode(path) == "0o600" for path in companions if path.exists())


def test_an_existing_checkout_is_tightened_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    database = data / "rayanpbx.sqlite3"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE probe (x)")
        connection.execute("INSERT INTO probe VALUES (1)")
    (data / "secret_key").write_text("k" * 50)
    leftover = data / "rayanpbx.sqlite3-shm"
    leftover.touch()
    for path in (database, data / "secret_key", leftover):
        os.chmod(path, 0o644)
    assert _start(data) == "2"  # the old row is still there
    assert _mode(data) == "0o700"
    assert _mode(database) == "0o600" and _mode(data / "secret_key") == "0o600" and _mode(leftover) == "0o600"
