"""The console: Asterisk CLI commands run through AMI (``Action: Command``), checked and audited.

What a command goes through (``run``), in the REST view's own process:

1. **Validation** (:func:`validate`): one line of printable characters, at most
   ``MAX_COMMAND`` characters. CR and LF are refused outright: the command travels as an AMI
   header value, and a line break would let it add headers or whole actions of its own.
2. **The destructive list** (:data:`DESTRUCTIVE`, :func:`destructive`): a command whose words
   start with one of its entries needs a typed confirmation, the same command again
   (:func:`confirmed`). The words are found the way Asterisk's CLI finds them
   (:func:`asterisk_words`: quotes and backslashes are taken away, so ``"core" st\\op now`` is
   ``core stop now``), compared case-insensitively; Asterisk 22 accepts no abbreviations
   (``core sto now`` is "No such command"), so there are none to catch.
3. **A short AMI session of its own** (:func:`execute`): connect, ``Login`` with
   ``Events: off``, ``Command``, ``Logoff``. A long command never queues behind, or in front
   of, the PBX link's own actions, and any server process can run one. The frame format is
   :mod:`pbx.ami_protocol`'s (``encode_action``, ``parse_frame``); the framing loop here is
   small and separate from ``FrameParser`` for two reasons: output beyond
   ``PBX_CONSOLE_MAX_OUTPUT`` is *cut* (the user sees the first MiB and "output truncated")
   where ``FrameParser`` discards an oversized frame whole, and an ``Output:`` line keeps its
   leading spaces (CLI tables are indented) where ``parse_frame`` strips them from a value.
4. **The audit record** (:class:`pbx.models.ConsoleCommand`): written before the command is
   sent (``running``), completed after (``ok``, ``error`` with its text, ``refused``,
   ``timeout``), with its duration and output size; and a ``console.command`` message to the
   ``console`` topic, so other admins see who ran what (the output stays with the runner).

Asterisk answers ``Response: Success`` with ``Output:`` lines, or ``Response: Error``: with
``Message: Command output follows`` and the CLI's complaint as output (an unknown command),
``Permission denied`` (the AMI user lacks the ``command`` write class) or ``Command
blacklisted`` (``module load|unload``, refused over AMI by Asterisk itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings

from pbx.ami_protocol import TERMINATOR, encode_action, parse_frame

logger = logging.getLogger(__name__)

#: The longest command accepted, in characters.
MAX_COMMAND = 512
#: The longest error text kept in the audit record and shown.
MAX_ERROR = 500
#: Bytes a response frame may hold beyond the output cap (its other headers, the prefixes).
FRAME_SLACK = 64 * 1024
CONNECT_TIMEOUT = 5.0
READ_SIZE = 64 * 1024

DISABLED = "console disabled: see README"
UNCONFIGURED = (
    "The PBX link is not configured: set AMI_USERNAME and AMI_SECRET (and AMI_HOST, AMI_PORT). "
    "See README 'The Asterisk link'."
)
NO_COMMAND_CLASS = (
    "Asterisk refused the command: Permission denied. The AMI user {user!r} lacks the 'command' write class: "
    "add it to that user's 'write =' line in manager.conf (e.g. write = system,config,command), then run "
    "'manager reload'. See docs/console.md."
)
BLACKLISTED = (
    "Asterisk refuses this command over AMI (Command blacklisted: its built-in list holds module load and "
    "module unload); run it on the Asterisk CLI itself."
)

#: Commands that need a typed confirmation: the leading words (lower case) and what they do.
#: Matched on the command's words as Asterisk reads them, prefix-wise: ``core stop`` covers
#: ``core stop now``, ``core stop gracefully`` and ``core stop when convenient``.
DESTRUCTIVE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("core", "stop"), "stops Asterisk: every call is dropped and the PBX stays down"),
    (("core", "restart"), "restarts Asterisk: every call is dropped"),
    (("module", "unload"), "unloads a module (Asterisk also refuses it over AMI)"),
    (("module", "load"), "loads a module (Asterisk also refuses it over AMI)"),
    (("module", "refresh"), "unloads and reloads a module"),
    (("channel", "request", "hangup"), "hangs up calls in progress"),
    (("channel", "originate"), "places a call (it may cost money)"),
    (("pjsip", "send", "unregister"), "unregisters outbound registrations (trunks stop receiving calls)"),
    (("database", "deltree"), "deletes a whole family of Asterisk's database"),
    (("database", "del"), "deletes a key of Asterisk's database"),
    (("dialplan", "remove"), "removes dialplan (extensions, includes, contexts) from the running PBX"),
    (("dialplan", "save"), "overwrites extensions.conf with the running dialplan"),
    (("!",), "a shell escape"),
)

_running = threading.BoundedSemaphore(settings.PBX_CONSOLE_MAX_RUNNING)


class CommandInvalid(ValueError):
    """The command is not one printable line of at most MAX_COMMAND characters."""


@dataclass
class Result:
    """How one command ended: ``outcome`` is ``ok``, ``error`` or ``timeout``."""

    outcome: str
    output: str = ""
    error: str | None = None
    truncated: bool = False

    @property
    def output_bytes(self) -> int:
        return len(self.output.encode("utf-8"))


# --- the command's text ------------------------------------------------------------------


def validate(command: Any) -> str:
    """The command with its outer spaces removed; raises CommandInvalid for anything else."""
    if not isinstance(command, str):
        raise CommandInvalid("must be a string")
    if "\r" in command or "\n" in command:
        raise CommandInvalid("must be one line: CR and LF are not allowed")
    command = command.strip(" ")
    if not command:
        raise CommandInvalid("must not be empty")
    if len(command) > MAX_COMMAND:
        raise CommandInvalid(f"must be at most {MAX_COMMAND} characters (it has {len(command)})")
    if not command.isprintable():
        raise CommandInvalid("must hold printable characters only (no tabs or control characters)")
    return command


def asterisk_words(command: str) -> list[str]:
    """The words Asterisk's CLI parser (``parse_args`` in main/cli.c) makes of ``command``.

    Spaces and tabs separate words outside double quotes; a double quote toggles quoting and
    is dropped; a backslash makes the next character literal and is dropped. Seen against
    Asterisk 22.10.1: ``"core" show uptime``, ``co""re show uptime`` and ``core sh\\ow uptime``
    all run ``core show uptime``.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = quoted = escaped = False
    for char in command:
        if escaped:
            current.append(char)
            escaped = False
            in_word = True
        elif char == "\\":
            escaped = True
            in_word = True
        elif char == '"':
            quoted = not quoted
            in_word = True  # a quote opens a word, even an empty one
        elif char in " \t" and not quoted:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words


def normalized(command: str) -> str:
    """The command as compared: Asterisk's words, lower case, one space apart."""
    return " ".join(asterisk_words(command)).lower()


def destructive(command: str) -> str | None:
    """Why ``command`` needs a confirmation (an entry of DESTRUCTIVE), or None.

    Checked on Asterisk's words and, to err on the safe side, on the words left when quotes
    and backslashes are simply deleted (``core "stop now"`` is no command for Asterisk, but
    it reads as one).
    """
    readings = (
        normalized(command).split(" "),
        re.sub(r'["\\]', "", command).lower().split(),
    )
    for words in readings:
        for prefix, reason in DESTRUCTIVE:
            if tuple(words[: len(prefix)]) == prefix:
                return reason
    return None


def confirmed(command: str, confirm: Any) -> bool:
    """Whether ``confirm`` repeats ``command`` (same words, any case and spacing)."""
    return isinstance(confirm, str) and bool(confirm.strip()) and normalized(confirm) == normalized(command)


# --- one AMI session ---------------------------------------------------------------------


class _Broken(Exception):
    """The AMI peer did something no Asterisk does (no banner, closed before answering)."""


class _Session:
    """Frames of one AMI connection: ``parse_frame`` for headers, raw bytes for the output."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limit: int) -> None:
        self.reader = reader
        self.writer = writer
        self.limit = limit
        self.buffer = bytearray()

    async def banner(self) -> str:
        while b"\n" not in self.buffer:
            if len(self.buffer) > 1024 or not await self._read():
                raise _Broken("it sent no AMI banner: is this Asterisk's AMI port?")
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode("utf-8", errors="replace").strip()

    async def _read(self) -> bool:
        data = await self.reader.read(READ_SIZE)
        self.buffer += data
        return bool(data)

    async def frame_for(self, action_id: str) -> tuple[bytes, bool]:
        """The raw frame answering ``action_id``, and whether it was cut at ``limit`` bytes.

        Other frames (events, though ``Events: off`` asks for none) are skipped. A frame
        longer than ``limit`` is returned cut, and the connection is not read further.
        """
        while True:
            end = self.buffer.find(TERMINATOR)
            if end >= 0:
                frame = bytes(self.buffer[:end])
                del self.buffer[: end + len(TERMINATOR)]
                if parse_frame(frame).action_id == action_id:
                    return frame, False
                continue
            if len(self.buffer) > self.limit:
                frame = bytes(self.buffer[: self.limit])
                if parse_frame(frame[:4096]).action_id == action_id:
                    return frame, True
                raise _Broken("it sent an oversized frame that is not the command's answer")
            if not await self._read():
                raise _Broken("it closed the connection before answering")

    def send(self, name: str, action_id: str, headers: dict[str, str]) -> None:
        self.writer.write(encode_action(name, action_id, headers))


def output_of(frame: bytes, truncated: bool) -> list[str]:
    """The ``Output:`` lines of a Command response, exactly as Asterisk wrote them."""
    lines = frame.decode("utf-8", errors="replace").split("\r\n")
    if truncated and lines:
        lines.pop()  # the cut, incomplete last line
    output = []
    for line in lines:
        if line.startswith("Output: "):
            output.append(line[len("Output: ") :])
        elif line == "Output:":
            output.append("")
    return output


def _cut(text: str, limit: int) -> tuple[str, bool]:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", errors="ignore"), True


def _first_line(lines: list[str]) -> str:
    return next((line.strip() for line in lines if line.strip()), "")


def interpret(frame: bytes, truncated: bool, *, username: str, max_output: int) -> Result:
    """A Command response frame as a :class:`Result`."""
    message = parse_frame(frame[:4096] if truncated else frame)
    lines = output_of(frame, truncated)
    if not lines and message.extra_lines:
        # Asterisk before 14 answered "Response: Follows" with the output as bare lines.
        lines = [line for line in message.extra_lines if line.strip() != "--END COMMAND--"]
    output, cut = _cut("\n".join(lines), max_output)
    truncated = truncated or cut
    if (message.response or "").lower() == "success" or (message.response or "").lower() == "follows":
        return Result("ok", output, None, truncated)
    text = (message.message or "").strip()
    if text.lower() == "permission denied":
        error = NO_COMMAND_CLASS.format(user=username)
    elif text.lower() == "command blacklisted":
        error = BLACKLISTED
    elif text.lower() == "command output follows" or not text:
        error = _first_line(lines) or "Asterisk reported an error without a reason"
    else:
        error = text
    return Result("error", output, error[:MAX_ERROR], truncated)


async def execute(
    command: str,
    *,
    host: str,
    port: int,
    username: str,
    secret: str,
    timeout: float,
    max_output: int,
) -> Result:
    """Run ``command`` in an AMI session of its own; never raises for what Asterisk does."""
    where = f"{host}:{port}"
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                async with asyncio.timeout(min(CONNECT_TIMEOUT, timeout)):
                    reader, writer = await asyncio.open_connection(host, port)
            except TimeoutError:
                return Result("error", error=f"cannot connect to AMI at {where}: no answer")
            session = _Session(reader, writer, max_output + FRAME_SLACK)
            await session.banner()
            session.send("Login", "console-login", {"Username": username, "Secret": secret, "Events": "off"})
            login = parse_frame((await session.frame_for("console-login"))[0])
            if (login.response or "").lower() != "success":
                reason = (login.message or "no reason given").strip()
                return Result("error", error=f"AMI login refused for user {username!r}: {reason}"[:MAX_ERROR])
            session.send("Command", "console-command", {"Command": command})
            await writer.drain()
            frame, truncated = await session.frame_for("console-command")
            result = interpret(frame, truncated, username=username, max_output=max_output)
            if not truncated:
                with contextlib.suppress(OSError):
                    session.send("Logoff", "console-logoff", {})
            return result
    except TimeoutError:
        return Result("timeout", error=f"no answer within {timeout:g} s (Asterisk may still be running the command)")
    except _Broken as exc:
        return Result("error", error=f"AMI at {where} failed: {exc}"[:MAX_ERROR])
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Result("error", error=f"cannot connect to AMI at {where}: {reason}"[:MAX_ERROR])
    finally:
        if writer is not None:
            writer.close()
            # The session is over either way; a peer that already went is no error here.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()


# --- the whole run: checks, the session, the record, the broadcast -----------------------


class Refused(Exception):
    """A destructive command without its confirmation: ``reason`` says what it would do."""

    def __init__(self, command: str, reason: str, mismatch: bool) -> None:
        self.command = command
        self.reason = reason
        self.mismatch = mismatch
        what = "The confirmation does not match the command" if mismatch else "This command needs a confirmation"
        super().__init__(
            f"{what}: {command!r} {reason}. To run it, send the same command again in 'confirm' "
            "(on the page: type it again)."
        )


class Busy(Exception):
    """PBX_CONSOLE_MAX_RUNNING commands are already running in this process."""


def enabled() -> bool:
    return bool(settings.PBX_CONSOLE)


def configured() -> bool:
    return bool(settings.AMI_USERNAME)


def announce(username: str, command: str, outcome: str) -> None:
    """Tell every console subscriber that ``username`` ran ``command`` (output stays private)."""
    from live import topics

    try:
        topics.publish_now("console", "console.command", {"user": username, "command": command, "outcome": outcome})
    except Exception:
        # The command ran and is recorded; the broadcast to other admins is secondary, and a
        # channel layer that is down must not turn the runner's answer into an error.
        logger.warning("console: could not publish console.command to the console topic", exc_info=True)


def run(user: Any, command: str, confirm: Any = None, *, address: str | None = None) -> dict[str, Any]:
    """Check, run, record and announce one command for ``user``; the REST answer's body.

    ``command`` has passed :func:`validate`. Raises :class:`Refused` (recorded, announced) for
    a destructive command without its confirmation and :class:`Busy` when too many run.
    """
    from pbx.models import ConsoleCommand

    reason = destructive(command)
    is_confirmed = reason is not None and confirmed(command, confirm)
    record = ConsoleCommand(
        user=user, username=user.get_username(), command=command, confirmed=is_confirmed, address=address
    )
    if reason is not None and not is_confirmed:
        refused = Refused(command, reason, mismatch=bool(isinstance(confirm, str) and confirm.strip()))
        record.outcome = ConsoleCommand.REFUSED
        record.error = str(refused)[:MAX_ERROR]
        record.save()
        announce(record.username, command, record.outcome)
        raise refused
    if not _running.acquire(blocking=False):
        raise Busy(f"{settings.PBX_CONSOLE_MAX_RUNNING} console commands are already running here; try again shortly")
    try:
        record.outcome = ConsoleCommand.RUNNING
        record.save()
        started = time.monotonic()
        try:
            result = async_to_sync(execute)(
                command,
                host=settings.AMI_HOST,
                port=settings.AMI_PORT,
                username=settings.AMI_USERNAME,
                secret=settings.AMI_SECRET,
                timeout=settings.PBX_CONSOLE_TIMEOUT,
                max_output=settings.PBX_CONSOLE_MAX_OUTPUT,
            )
        except Exception:
            # A bug of ours: the record says so instead of staying "running"; the error goes on.
            record.outcome, record.error = ConsoleCommand.ERROR, "internal error (see the server log)"
            record.save(update_fields=["outcome", "error"])
            raise
        duration_ms = round((time.monotonic() - started) * 1000)
    finally:
        _running.release()
    record.outcome = result.outcome
    record.error = (result.error or "")[:MAX_ERROR]
    record.duration_ms = duration_ms
    record.output_bytes = result.output_bytes
    record.truncated = result.truncated
    record.save(update_fields=["outcome", "error", "duration_ms", "output_bytes", "truncated"])
    announce(record.username, command, result.outcome)
    return {
        "id": record.pk,
        "command": command,
        "output": result.output,
        "outcome": result.outcome,
        "error": result.error,
        "duration_ms": duration_ms,
        "truncated": result.truncated,
        "output_bytes": result.output_bytes,
    }


def history(user: Any, limit: int = 100) -> list[dict[str, Any]]:
    """``user``'s last ``limit`` commands, newest first."""
    from pbx.models import ConsoleCommand

    rows = ConsoleCommand.objects.filter(user=user).order_by("-id")[:limit]
    return [
        {"id": row.pk, "command": row.command, "outcome": row.outcome, "at": row.started_at.isoformat()} for row in rows
    ]
