"""Owner-only files and folders for what holds secrets.

The data directory holds the SQLite database (every SIP secret), the generated
``SECRET_KEY`` and the last applied Asterisk configuration: it is kept at mode 0700 and
those files at 0600, whatever the umask. Settings call these at every start-up, so a
checkout made before they existed (a 0755 ``data/``, a 0644 database) is tightened the
next time any ``manage.py`` command runs. A path this user does not own and cannot chmod
is left as it is, with a warning: start-up does not fail over it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

#: Files SQLite keeps beside a database (they hold its pages too).
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except PermissionError as exc:
        warnings.warn(f"Cannot restrict {path} to mode {mode:o}: {exc}", stacklevel=3)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and any missing parents) and make it 0700; return it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        _chmod(path, 0o700)
    return path


def private_file(path: Path, *, create: bool = True) -> Path:
    """Make ``path`` 0600, creating it empty first when missing (with ``create``, and when
    its folder exists); return it.

    Created here rather than by whoever writes it first: SQLite gives its ``-wal``/``-shm``
    files the database file's mode, and ``open()`` would use the umask's (0644, usually).
    """
    if create and not path.exists() and path.parent.is_dir():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    if path.exists() and path.stat().st_mode & 0o777 != 0o600:
        _chmod(path, 0o600)
    return path


def private_sqlite(path: Path) -> Path:
    """:func:`private_file` for a SQLite database and its companion files; return ``path``."""
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        private_file(path.with_name(path.name + suffix), create=False)
    return path
