"""``manage.py pbx_includes [--add]``: check that the site's Asterisk files load RayanPBX's two files.

RayanPBX writes only ``pjsip_rayanpbx.conf`` and ``extensions_rayanpbx.conf`` in
``ASTERISK_CONFIG_DIR``; the site's ``pjsip.conf`` and ``extensions.conf`` must
``#include`` them. Without ``--add`` this only checks, and exits with status 1 naming each
file and the line it lacks. With ``--add`` it appends each missing line (under a comment)
and creates the owned files, empty, when they do not exist yet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pbx.config import FILE_MODE, INCLUDES


def includes(site_file: Path, owned: str) -> bool:
    """Whether ``site_file`` has an ``#include`` (or ``#tryinclude``) line for ``owned``."""
    pattern = re.compile(rf'^\s*#(?:try)?include\s+"?(?:\S*/)?{re.escape(owned)}"?\s*(?:;.*)?$')
    try:
        text = site_file.read_text(errors="replace")
    except FileNotFoundError:
        return False
    return any(pattern.match(line) for line in text.splitlines())


class Command(BaseCommand):
    help = "Check (or, with --add, add) the #include lines that load RayanPBX's files into Asterisk."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--add", action="store_true", help="Append the missing #include lines.")
        parser.add_argument("--dir", type=Path, help="The Asterisk configuration folder (default ASTERISK_CONFIG_DIR).")

    def handle(self, *args: Any, **options: Any) -> None:
        config_dir = Path(options["dir"] or settings.ASTERISK_CONFIG_DIR)
        if not config_dir.is_dir():
            raise CommandError(f"{config_dir} is not a folder (set ASTERISK_CONFIG_DIR).", returncode=1)
        missing = []
        for site_name, line in INCLUDES.items():
            site_file = config_dir / site_name
            owned = line.split()[-1]
            if includes(site_file, owned):
                self.stdout.write(f"{site_file}: includes {owned}")
            elif options["add"]:
                self._append(site_file, line)
                self.stdout.write(self.style.SUCCESS(f"{site_file}: added '{line}'"))
            else:
                missing.append(f"{site_file} lacks the line '{line}': add it at the end (or run pbx_includes --add)")
        if options["add"]:
            for owned in (line.split()[-1] for line in INCLUDES.values()):
                path = config_dir / owned
                if not path.exists():
                    path.touch(mode=FILE_MODE)
                    os.chmod(path, FILE_MODE)
                    self.stdout.write(self.style.SUCCESS(f"{path}: created (empty until the first apply)"))
        if missing:
            raise CommandError("\n".join(missing), returncode=1)

    @staticmethod
    def _append(site_file: Path, line: str) -> None:
        existing = site_file.read_bytes() if site_file.exists() else b""
        separator = b"" if not existing or existing.endswith(b"\n") else b"\n"
        block = f"\n; RayanPBX: extensions and trunks managed in RayanPBX (regenerated on every change).\n{line}\n"
        with site_file.open("ab") as handle:
            handle.write(separator + block.encode())
        if not existing:
            os.chmod(site_file, FILE_MODE)
