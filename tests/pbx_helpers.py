"""Helpers for the PBX link's end-to-end tests: a deployment wired to a private Asterisk,
and a live-stream reader that records every frame in a thread.

Also a pytest plugin (``tests/conftest.py``): the module-scoped fixtures ``pbx`` (a private
Asterisk 22), ``site`` (the embedded default linked to it) and ``stream`` (a socket reading
it), for the modules that do not define their own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.asterisk import Asterisk, require_asterisk, require_baresip
from tests.stack import Server, Stack

TIMEOUT = 10.0


def pbx_env(asterisk: Asterisk, **extra: str) -> dict[str, str]:
    """The five settings a site sets to link RayanPBX to its Asterisk (plus the log file)."""
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(asterisk.ami_port),
        "AMI_USERNAME": asterisk.ami_user,
        "AMI_SECRET": asterisk.ami_secret,
        "ASTERISK_CONFIG_DIR": str(asterisk.etc_dir),
        "ASTERISK_LOG_FILE": str(asterisk.log_file),
        **extra,
    }


def pbx_stack(tmp: Path, asterisk: Asterisk, *, redis_url: str | None = None, **extra: str) -> Stack:
    return Stack(tmp, redis_url=redis_url, env=pbx_env(asterisk, **extra))


class Stream:
    """Every frame of one WebSocket, read in a background thread."""

    def __init__(self, server: Server, token: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        # Entered by hand: the reader thread owns it until close().
        self._ws = connect(server.ws, subprotocols=["rayanpbx", f"bearer.{token}"], open_timeout=TIMEOUT).__enter__()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self._ws:
                frame = json.loads(raw)
                frame["_received"] = time.time()  # for the apply benchmark
                with self._lock:
                    self.frames.append(frame)
                    self._lock.notify_all()
        except Exception:  # the socket closed: the test that needs more frames fails on its wait
            return

    def mark(self) -> int:
        with self._lock:
            return len(self.frames)

    def wait(self, predicate: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = TIMEOUT) -> dict:
        """The first frame (from index ``after``) that matches; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for frame in self.frames[after:]:
                    if predicate(frame):
                        return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(f["type"], f.get("payload", {}).get("state")) for f in self.frames[after:]]
                    raise AssertionError(f"no matching frame within {timeout} s; saw {seen}")
                self._lock.wait(remaining)

    def of(self, type_: str, *, after: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [frame for frame in self.frames[after:] if frame["type"] == type_]

    def close(self) -> None:
        self._ws.close()
        self._thread.join(5)


def is_apply(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "pbx.apply" and frame["payload"]["state"] == state


def is_link(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame["type"] == "pbx.link" and frame["payload"]["state"] == state


def wait_until(check: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s (last: {value!r})")
        time.sleep(0.05)


def get(stack: Stack, path: str) -> Any:
    """``GET path`` on the stack's server with a fresh token; the body, which must be a 200."""
    code, body = stack.request(stack.server, "GET", path, token=stack.login(stack.server))
    assert code == 200, body
    return body


def start_linked(stack: Stack) -> Stack:
    """Start the stack's server, log the admin in (``stack.admin``), wait for the link."""
    stack.server = stack.start_server()
    stack.admin = stack.login(stack.server)
    wait_until(lambda: get(stack, "/api/pbx")["link"]["state"] == "connected", what="link connected")
    return stack


def open_stream(stack: Stack) -> Stream:
    """The admin's live stream on the stack's server, past its ``welcome``."""
    stream = Stream(stack.server, stack.admin)
    stream.wait(lambda f: f["type"] == "welcome")
    return stream


# --- fixtures (a plugin: tests/conftest.py) ------------------------------------------------


def private_asterisk(tmp_path_factory: pytest.TempPathFactory, **options: Any) -> Iterator[Asterisk]:
    """A private Asterisk 22 for one module (skipped without Asterisk or baresip; failed
    instead under ``REQUIRE_SERVICES=1``), stopped afterwards."""
    require_asterisk()
    require_baresip()
    asterisk = Asterisk(tmp_path_factory.mktemp("asterisk"), **options)
    asterisk.start()
    try:
        yield asterisk
    finally:
        asterisk.stop()


@pytest.fixture(scope="module")
def pbx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    yield from private_asterisk(tmp_path_factory)


@pytest.fixture(scope="module")
def site(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default (SQLite, in-process bus) with the link inside the server."""
    stack = start_linked(pbx_stack(tmp_path_factory.mktemp("site"), pbx))
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def stream(site: Stack) -> Iterator[Stream]:
    reader = open_stream(site)
    try:
        yield reader
    finally:
        reader.close()
