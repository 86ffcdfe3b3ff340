"""Follow a log file the way ``tail -F`` does, for the logs page (``live.logs``).

``Follower.read()`` returns the complete lines written since the last call. It survives
what happens to log files:

* **rotation** (the file renamed, a new one created at the path: ``logger rotate``,
  logrotate's default): the old file, still open, is read to its end first, then the new
  file from its start;
* **deletion and re-creation**: while the path is missing the open file is still read
  (a writer may still be writing it); once a file is at the path again it is followed from
  its start;
* **truncation** (logrotate's ``copytruncate``, ``> messages``): a size below the position
  read means the file was cut; it is read again from its start.

A file is recognised by its device and inode. Nothing read is trusted: bytes are decoded as
UTF-8 with replacement, a line longer than ``max_line`` bytes is cut (the rest of that line
is dropped, and counted in ``cut``), and one call reads at most ``max_read`` bytes, so a
burst is taken in bounded steps. The follower does no I/O of its own between calls and
never blocks on anything but the file system; run it in a thread from async code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

#: Bytes one read() takes at most (the rest waits for the next call).
MAX_READ = 4 * 1024 * 1024


@dataclass
class Follower:
    path: str
    #: Start at the end of the file found at the first open (a tail), or at its start.
    from_end: bool = True
    max_line: int = 8192
    max_read: int = MAX_READ
    #: Why the file cannot be read now (None while it can).
    error: str | None = None
    #: Lines cut at max_line bytes since the start.
    cut: int = 0
    #: Times the file was found rotated, re-created or truncated.
    switches: int = 0
    _file: object | None = field(default=None, repr=False)
    _identity: tuple[int, int] | None = None
    _position: int = 0
    _partial: bytes = b""
    _dropping: bool = False  # inside a line already cut: drop bytes until its newline
    _opened_once: bool = False

    @property
    def readable(self) -> bool:
        return self._file is not None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # type: ignore[attr-defined]
        self._file = None

    def read(self) -> list[str]:
        """The complete lines written since the last call (at most ``max_read`` bytes' worth)."""
        if not self.path:
            self.error = "no file configured"
            return []
        if self._file is None and not self._open(first=not self._opened_once):
            return []
        lines = self._read_chunk()
        if self._file is None or self._more_waiting():
            return lines  # a bounded step: the rest comes at the next call
        # At the end of the open file: has it been replaced or cut meanwhile?
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return lines  # deleted: keep the open file (its writer may still write it)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
            return lines
        if (stat.st_dev, stat.st_ino) != self._identity:
            # Rotated or re-created: what the old file still holds, then the new one.
            lines += self._read_all()
            lines += self._flush_partial()
            self.close()
            self.switches += 1
            if self._open(first=False):
                lines += self._read_chunk()
            return lines
        try:
            size = os.fstat(self._file.fileno()).st_size  # type: ignore[attr-defined]
        except OSError:
            size = stat.st_size
        if size < self._position:
            # Truncated in place: read it again from the start.
            lines += self._flush_partial()
            self._file.seek(0)  # type: ignore[attr-defined]
            self._position = 0
            self.switches += 1
            lines += self._read_chunk()
        return lines

    # --- internals -------------------------------------------------------------------------

    def _open(self, *, first: bool) -> bool:
        # Only a file that was there at the first look is taken from its end: one that
        # appears later is new, and read from its start.
        first, self._opened_once = first and not self._opened_once, True
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 (kept open across calls, closed in close())
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
            return False
        stat = os.fstat(handle.fileno())
        self._file, self._identity = handle, (stat.st_dev, stat.st_ino)
        self._position, self._partial, self._dropping = 0, b"", False
        if first and self.from_end:
            self._position = handle.seek(0, os.SEEK_END)
        self.error = None
        return True

    def _more_waiting(self) -> bool:
        try:
            return os.fstat(self._file.fileno()).st_size > self._position  # type: ignore[attr-defined]
        except OSError:
            return False

    def _read_chunk(self) -> list[str]:
        try:
            data = self._file.read(self.max_read)  # type: ignore[attr-defined]
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
            self.close()
            return []
        if not data:
            return []
        self._position += len(data)
        return self._split(data)

    def _read_all(self) -> list[str]:
        lines: list[str] = []
        while chunk := self._read_chunk():
            lines += chunk
        return lines

    def _split(self, data: bytes) -> list[str]:
        pieces = data.split(b"\n")
        tail = pieces.pop()  # after the last newline: an incomplete line (or b"")
        out: list[str] = []
        for index, piece in enumerate(pieces):
            if index == 0:
                if self._dropping:
                    self._dropping = False
                    continue
                piece = self._partial + piece
                self._partial = b""
            out.append(self._decode(piece))
        if pieces:
            self._partial = b""
        if self._dropping:
            return out
        self._partial += tail
        if len(self._partial) > self.max_line:
            out.append(self._decode(self._partial))
            self._partial, self._dropping = b"", True
        return out

    def _decode(self, raw: bytes) -> str:
        if len(raw) > self.max_line:
            raw = raw[: self.max_line]
            self.cut += 1
        return raw.rstrip(b"\r").decode("utf-8", errors="replace")

    def _flush_partial(self) -> list[str]:
        partial, self._partial, self._dropping = self._partial, b"", False
        return [self._decode(partial)] if partial else []
