"""The Asterisk Manager Interface wire format: frames in, frames out, no I/O.

An AMI connection starts with one banner line (``Asterisk Call Manager/11.0.0``); after it
everything is a *frame*: ``Name: value`` lines separated by CRLF and ended by an empty line
(CRLF CRLF). A frame is either a response (``Response:``) or an event (``Event:``).

What Asterisk 22 really sends (``shared/ami/README.md``) is looser than that: a value can
hold a bare LF (``Message: Unable to retrieve endpoint 999\\n``) or a TAB, a header can
repeat (``Output:`` lines), header order is not fixed, and nothing promises valid UTF-8.
:class:`FrameParser` accepts all of that, skips garbage and drops a frame larger than
``max_frame`` without losing its place in the stream; :func:`encode_action` refuses to
write a value that would smuggle in a header of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger("pbx.ami")

TERMINATOR = b"\r\n\r\n"
#: Header values never written to a log, whatever the action (compared lower-cased).
SENSITIVE_HEADERS = frozenset({"secret", "key", "password"})
MASK = "********"


class Message:
    """One AMI frame, a response or an event, with its headers in wire order.

    Header names are matched case-insensitively, since Asterisk itself spells the same
    field differently from one object to the next (``URI`` and ``Uri``). Lines of a frame
    that carry no ``Name:`` are kept apart in :attr:`extra_lines`.
    """

    __slots__ = ("_index", "extra_lines", "headers")

    def __init__(self, headers: list[tuple[str, str]], extra_lines: list[str] | None = None) -> None:
        self.headers = headers
        self.extra_lines = extra_lines or []
        self._index: dict[str, str] | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any case), or ``default``."""
        if self._index is None:
            index: dict[str, str] = {}
            for key, value in self.headers:
                index.setdefault(key.lower(), value)
            self._index = index
        return self._index.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (any case), in wire order."""
        wanted = name.lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    @property
    def event(self) -> str | None:
        return self.get("Event")

    @property
    def response(self) -> str | None:
        return self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def message(self) -> str | None:
        return self.get("Message")

    def as_dict(self) -> dict[str, str]:
        """Headers as a dict under their wire names; the first of repeated headers wins."""
        result: dict[str, str] = {}
        for key, value in self.headers:
            result.setdefault(key, value)
        return result

    def __repr__(self) -> str:
        kind = f"Event: {self.event}" if self.event is not None else f"Response: {self.response}"
        return f"<Message {kind} ActionID: {self.action_id} ({len(self.headers)} headers)>"


def parse_frame(frame: bytes | bytearray) -> Message:
    """Parse one frame (without its final CRLF CRLF) into a :class:`Message`."""
    headers: list[tuple[str, str]] = []
    extra: list[str] = []
    for line in frame.decode("utf-8", errors="replace").split("\r\n"):
        # A bare LF or CR at the end of a value is not part of it (PJSIPShowEndpoint 999).
        line = line.strip("\r\n")
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if colon and name and " " not in name:
            # Asterisk skips any spaces after the colon (astman_get_header) and so do we.
            headers.append((name, value.lstrip(" ")))
        else:
            extra.append(line)
    return Message(headers, extra)


class FrameParser:
    """Turns the bytes of one AMI connection into :class:`Message` objects.

    Feed it whatever ``read()`` returned, in any slicing; it returns the frames completed
    so far and keeps the rest. The first line is taken as the banner when it has no colon.
    A frame that grows past ``max_frame`` bytes is discarded with one warning, and parsing
    resumes after the next CRLF CRLF: one bad frame never costs the connection.
    """

    def __init__(self, max_frame: int = 4 * 1024 * 1024) -> None:
        self.max_frame = max_frame
        self.banner: str | None = None
        #: True until the first line has been seen (it may or may not have been a banner).
        self.awaiting_banner = True
        self.frames_discarded = 0
        self._buffer = bytearray()
        self._scan_from = 0  # where the next search for CRLF CRLF starts
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the end of their frame (never much more than max_frame)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        """Add received bytes; return the frames they completed, in order."""
        buffer = self._buffer
        buffer += data
        if self.awaiting_banner and not self._take_banner():
            return []
        messages: list[Message] = []
        start = 0
        while True:
            end = buffer.find(TERMINATOR, max(start, self._scan_from))
            if end < 0:
                break
            self._scan_from = 0
            if self._discarding:
                self._discarding = False  # that was the tail of an oversized frame
            elif end - start > self.max_frame:
                self._discard_warning(end - start)
            else:
                message = parse_frame(buffer[start:end])
                if message.headers:
                    messages.append(message)
                elif message.extra_lines:
                    logger.debug("AMI: skipped a frame without any header (%d bytes)", end - start)
            start = end + len(TERMINATOR)
        del buffer[:start]
        # A terminator may straddle two reads: look again at the last 3 bytes next time.
        self._scan_from = max(0, len(buffer) - len(TERMINATOR) + 1)
        if len(buffer) > self.max_frame:
            if not self._discarding:
                self._discard_warning(len(buffer))
                self._discarding = True
            del buffer[: self._scan_from]
            self._scan_from = 0
        return messages

    def _take_banner(self) -> bool:
        """Consume the banner line if it is complete; False while it is still incomplete."""
        buffer = self._buffer
        while True:
            newline = buffer.find(b"\n")
            if newline < 0:
                if len(buffer) <= self.max_frame:
                    return False
                # No line end in max_frame bytes: this is no banner; let frame parsing cope.
                self.awaiting_banner = False
                return True
            line = bytes(buffer[:newline]).decode("utf-8", errors="replace").strip()
            if not line:
                del buffer[: newline + 1]
                continue
            self.awaiting_banner = False
            if ":" not in line:
                self.banner = line
                del buffer[: newline + 1]
            return True

    def _discard_warning(self, size: int) -> None:
        self.frames_discarded += 1
        logger.warning(
            "AMI: discarded a frame of more than %d bytes (at least %d); reading on at the next frame",
            self.max_frame,
            size,
        )


def _check_header(name: str, value: str) -> None:
    if not name or ":" in name or any(c in name for c in "\r\n "):
        raise ValueError(f"invalid AMI header name {name!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"AMI header {name!r} must not contain a line break")


def encode_action(name: str, action_id: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The bytes of one action frame. Raises ValueError on a value that would break framing."""
    lines = [("Action", name), ("ActionID", action_id)]
    for key, value in (headers or {}).items():
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"{key!r} is set by the client, not by the caller")
        lines.append((key, str(value)))
    for key, value in lines:
        _check_header(key, value)
    return "".join(f"{key}: {value}\r\n" for key, value in lines).encode("utf-8") + b"\r\n"


def describe_action(name: str, action_id: str, headers: Mapping[str, str] | None = None) -> str:
    """A one-line, log-safe rendering of an action: secrets are masked."""
    parts = [f"Action: {name}", f"ActionID: {action_id}"]
    for key, value in (headers or {}).items():
        parts.append(f"{key}: {MASK if key.lower() in SENSITIVE_HEADERS else value}")
    return " | ".join(parts)
