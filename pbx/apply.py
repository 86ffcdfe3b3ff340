"""One apply: write the two files, reload PJSIP and the dialplan, verify what Asterisk loaded.

Asterisk does not fail a reload for a section it rejects: it logs an ERROR and keeps the old
object (or none). So an apply is judged by verification, never by the reload's answer:

* ``PJSIPShowEndpoints`` must list every endpoint RayanPBX generated (else: that object
  failed), and none that RayanPBX removed or disabled (else: drift);
* the Asterisk log, when ``ASTERISK_LOG_FILE`` is readable, names sections that Asterisk
  rejected while keeping an older copy: each is reported as its extension or trunk, with
  the reason Asterisk gave;
* endpoints RayanPBX never generated belong to the site: reported, never touched.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from pbx import config
from pbx.ami import AmiClient, AmiConnectionLost, AmiError, AmiTimeout
from rayanpbx import metrics

logger = logging.getLogger(__name__)

#: The most of Asterisk's log read after one reload (a log flooded by other messages is cut).
LOG_READ_LIMIT = 1024 * 1024
#: Asterisk's logger thread writes a moment after the reload answered: how long to wait for it
#: at most, and the pause that counts as "it stopped growing".
LOG_SETTLE = 0.15
LOG_QUIET = 0.01


@dataclass
class ApplyResult:
    event: dict[str, Any]
    drift: dict[str, list[str]] | None = None
    site_endpoints: list[str] = field(default_factory=list)
    retry: bool = False
    reloaded: bool = False
    #: Milliseconds per step (generate, write, reload, verify, log), for the log and the bench.
    phases: dict[str, int] = field(default_factory=dict)


class Applier:
    """Applies the database to Asterisk over an AMI client; remembers what it owns there."""

    def __init__(self, ami: AmiClient, *, owned: dict[str, str] | None = None, next_id: int = 1) -> None:
        self.ami = ami
        #: Endpoint id -> label of every endpoint RayanPBX has put into Asterisk.
        self.owned: dict[str, str] = dict(owned or {})
        self.next_id = next_id
        #: File name -> the text Asterisk loaded in this AMI session.
        self._loaded: dict[str, str] = {}

    def pending_event(self, pending: int) -> dict[str, Any]:
        return {"id": self.next_id, "state": "pending", "pending_changes": pending, "duration_ms": None, "errors": []}

    async def apply(
        self, pending: int, *, on_start: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    ) -> ApplyResult:
        apply_id, self.next_id = self.next_id, self.next_id + 1
        started = time.perf_counter()
        event = {"id": apply_id, "state": "applying", "pending_changes": pending, "duration_ms": None, "errors": []}
        if on_start:
            await on_start(dict(event))
        result = ApplyResult(event=event)
        failure = "rejected"  # errors found by verification, unless an exception says otherwise
        try:
            await self._apply(result)
        except (AmiConnectionLost, AmiTimeout) as exc:
            result.retry, failure = True, "link_lost"
            event["errors"] = [{"object": "configuration", "message": f"Asterisk link lost during the apply: {exc}"}]
        except AmiError as exc:
            failure = "refused"
            event["errors"] = [{"object": "configuration", "message": f"Asterisk refused: {exc}"}]
        except OSError as exc:
            failure = "write"
            event["errors"] = [{"object": "configuration", "message": f"Cannot write the configuration: {exc}"}]
        event["state"] = "failed" if event["errors"] else "applied"
        event["duration_ms"] = round((time.perf_counter() - started) * 1000)
        metrics.applied(time.perf_counter() - started, failure if event["errors"] else None)
        if event["errors"]:
            logger.warning("PBX apply %d failed: %s", apply_id, event["errors"])
        else:
            logger.info("PBX apply %d applied in %d ms %s", apply_id, event["duration_ms"], result.phases)
        return result

    def connected(self) -> None:
        """A new AMI session: Asterisk may have restarted, so reload everything next time."""
        self._loaded.clear()

    async def _apply(self, result: ApplyResult) -> None:
        phases = _Phases()
        generated = await database_sync_to_async(config.generate)()
        phases.done("generate")
        config_dir = Path(settings.ASTERISK_CONFIG_DIR)
        await asyncio.to_thread(config.write, generated, config_dir)
        phases.done("write")
        log = _LogTail(settings.ASTERISK_LOG_FILE)
        # A file Asterisk already loaded in this AMI session, unchanged since, needs no reload.
        for file_name, module in ((config.PJSIP_FILE, "res_pjsip.so"), (config.DIALPLAN_FILE, "pbx_config.so")):
            if self._loaded.get(file_name) != generated.files[file_name]:
                self._loaded.pop(file_name, None)
                await self.ami.action("Reload", {"Module": module}, timeout=settings.PBX_RELOAD_TIMEOUT)
                self._loaded[file_name] = generated.files[file_name]
                result.reloaded = True
        phases.done("reload")
        keep = asyncio.to_thread(config.keep_applied, generated, Path(settings.DATA_DIR) / "pbx" / "applied")
        listed, _ = await asyncio.gather(
            self.ami.action_list("PJSIPShowEndpoints", timeout=settings.PBX_RELOAD_TIMEOUT), keep
        )
        loaded = {m.get("ObjectName") or "" for m in listed}
        phases.done("verify")
        rejected = await log.rejections(generated, settle=any(e not in loaded for e in generated.endpoints))
        phases.done("log")
        result.phases = phases.ms
        errors: dict[str, str] = {}
        for endpoint, owner in generated.endpoints.items():
            if endpoint not in loaded:
                errors[owner.label] = rejected.get(owner.label) or "Asterisk did not load it (see the Asterisk log)."
        for label, reason in rejected.items():
            errors.setdefault(label, reason)
        for owner, reason in generated.skipped:  # unsafe values that bypassed validation (raw SQL)
            errors[owner.label] = f"Not written: {reason}"
        lingering = sorted(e for e in self.owned if e not in generated.endpoints and e in loaded)
        result.event["errors"] = [{"object": label, "message": message} for label, message in sorted(errors.items())]
        if errors:
            # Asterisk kept something else than the files say: reload them next time, even
            # unchanged, so the same errors are found (and cleared) again.
            self._loaded.clear()
        result.drift = {
            "in_db_only": sorted(
                {owner.label for e, owner in generated.endpoints.items() if e not in loaded}
                | {owner.label for owner, _ in generated.skipped}
            ),
            "in_asterisk_only": [self.owned[e] for e in lingering],
        }
        result.site_endpoints = sorted(loaded - set(generated.endpoints) - set(self.owned))
        # Still ours to remove: what lingers stays owned until Asterisk lets go of it.
        self.owned = {e: self.owned[e] for e in lingering} | {e: o.label for e, o in generated.endpoints.items()}


class _Phases:
    def __init__(self) -> None:
        self.ms: dict[str, int] = {}
        self._last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.ms[name] = round((now - self._last) * 1000)
        self._last = now


class _LogTail:
    """What Asterisk appended to its log since the apply started (when the log is readable)."""

    # Asterisk 22 (config_options.c, res_sorcery_config.c), as seen on a real instance:
    #   ERROR[..] config_options.c: Error parsing max_contacts=abc at line 12 of .../pjsip_rayanpbx.conf
    #   ERROR[..] res_sorcery_config.c: Could not create an object of type 'aor' with id '101' from
    #   configuration file 'pjsip.conf'
    _AT_LINE = re.compile(r"Error parsing (?P<what>\S+?=.*?) at line (?P<line>\d+) of (?P<file>\S+)")
    _OBJECT = re.compile(r"Could not create an object of type '(?P<type>[^']+)' with id '(?P<id>[^']+)'")

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.offset = self._size()
        self.budget = LOG_READ_LIMIT

    def _size(self) -> int:
        try:
            return self.path.stat().st_size if self.path else 0
        except OSError:
            return 0

    def _read(self) -> list[str]:
        """Complete lines appended since the last read (a half-written last line waits)."""
        if not self.path or self.budget <= 0:
            return []
        try:
            with self.path.open("rb") as handle:
                size = handle.seek(0, 2)
                if size < self.offset:  # rotated or truncated meanwhile: read it from the start
                    self.offset = 0
                handle.seek(self.offset)
                data = handle.read(self.budget)
        except OSError:
            return []  # unreadable log: verification still reports missing objects
        data = data[: data.rfind(b"\n") + 1]
        self.offset += len(data)
        self.budget -= len(data)
        return data.decode("utf-8", "replace").splitlines()

    async def rejections(self, generated: config.Generated, *, settle: bool) -> dict[str, str]:
        if not self.path:
            return {}
        # Asterisk's logger thread writes a moment after the reload answered: read until the
        # log stops growing (longer when an object is missing: its reason is worth the wait).
        lines = await asyncio.to_thread(self._read)
        deadline = time.monotonic() + (LOG_SETTLE if settle else LOG_SETTLE / 3)
        while time.monotonic() < deadline:
            size = self._size()
            await asyncio.sleep(LOG_QUIET)
            if self._size() == size and not settle:
                break
            lines += await asyncio.to_thread(self._read)
        found: dict[str, str] = {}
        for line in lines:
            if "ERROR" not in line:
                continue
            owner = None
            match = self._AT_LINE.search(line)
            if match and Path(match["file"]).name in generated.files:
                owner = generated.owner_at(Path(match["file"]).name, int(match["line"]))
                reason = f"Asterisk rejected {match['what']}"
            else:
                # This line names the top-level file (pjsip.conf), not the included one: the
                # section id says whose it is (a site's own rejected section maps to no owner).
                match = self._OBJECT.search(line)
                if match:
                    owner = generated.owner_of_section(match["id"])
                    reason = f"Asterisk rejected its {match['type']} section"
            if owner is not None:
                found.setdefault(owner.label, reason)
            # other errors (the site's own sections, unrelated modules) are not ours to report
        return found
