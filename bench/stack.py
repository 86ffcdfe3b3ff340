"""The servers under test, started and stopped by the bench itself.

* ``ProductStack``: RayanPBX as deployed, ``manage.py serve`` (daphne) on its own temporary
  data directory (SQLite), migrated, with an admin account; with Redis (``REDIS_URL`` and a
  unique ``REDIS_KEY_PREFIX``) or the embedded default (no Redis).
* ``BaselineStack``: ``bench.baseline_relay``, a bare Redis → ``websockets`` relay.

Every server runs pinned to ``SERVER_CORE`` with its open-files limit raised to the hard
limit; every process started here is stopped by its own PID. ``/proc`` readings (RSS, CPU
time) are here too.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_CORE = 0
CLIENT_CORE = 1


def raise_nofile() -> int:
    """Raise this process's open-files soft limit to the hard limit; return it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pinned(core: int) -> Callable[[], None]:
    """A ``preexec_fn``: pin the child to ``core`` and raise its open-files limit."""

    def setup() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {core})
        raise_nofile()

    return setup


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/PID/stat`` fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_busy() -> dict[int, float]:
    """Busy CPU seconds of each core since boot (``/proc/stat``: all but idle and iowait)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            jiffies = [int(v) for v in values[:8]]
            out[int(name[3:])] = (sum(jiffies) - jiffies[3] - jiffies[4]) / tick
    return out


def wait_quiet(threshold: float, limit: float) -> float:
    """Wait (at most ``limit`` s) until the machine is below ``threshold`` (busy fraction of
    all cores, sampled over 1 s) while the bench itself is idle; return the last sample."""
    deadline = time.monotonic() + limit
    while True:
        before, t0 = core_busy(), time.monotonic()
        time.sleep(1.0)
        after, elapsed = core_busy(), time.monotonic() - t0
        busy = sum(after[c] - before[c] for c in after) / (elapsed * len(after))
        if busy <= threshold or time.monotonic() >= deadline:
            return busy
        time.sleep(2.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


@dataclass
class Server:
    """One running server process."""

    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pinned(SERVER_CORE),
        )


@dataclass
class ProductStack:
    """RayanPBX with Redis (``redis_url``) or embedded (``redis_url`` is None)."""

    name: str
    redis_url: str | None
    seed_rows: int = 0
    database_url: str | None = None  # default: SQLite in ``tmp``
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayanpbx-bench-")))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    prefix: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}:")
    env: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "redis" if self.redis_url else "embedded"

    def setup(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update(
            RAYANPBX_DATA_DIR=str(self.tmp),
            SECRET_KEY=secrets.token_urlsafe(48),
            REDIS_KEY_PREFIX=self.prefix,
            RAYANPBX_ADMIN_USER="admin",
            RAYANPBX_ADMIN_PASSWORD=self.password,
            JWT_ACCESS_MINUTES="120",  # outlives the longest phase: no 4002 closes mid-run
            # Thousands of sockets of one user from one address, at hundreds per second: the
            # connect rate off, the per-user limit on (its check is part of a connect's cost)
            # but out of reach (live.limits).
            LIVE_CONNECT_RATE="0",
            LIVE_MAX_SOCKETS_PER_USER="1000000",
            PYTHONUNBUFFERED="1",
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        self.env = env
        self.manage("migrate", "--noinput")
        self.manage("ensure_admin")
        if self.seed_rows:
            self.manage("shell", "-c", _SEED.format(count=self.seed_rows))

    def manage(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def count_queries(self) -> dict[str, Any]:
        """Database queries of one REST write of each kind (see ``bench.queries``)."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.queries"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if done.returncode:
            raise RuntimeError(f"bench.queries failed: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def start(self) -> Server:
        port = free_port()
        log = self.tmp / f"server-{port}.log"
        process = _spawn([sys.executable, "manage.py", "serve", "--port", str(port)], self.env, log)
        server = Server(f"ours-{self.mode}", port, process, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if request(port, "GET", "/health")[0] == 200:
                    return server
            time.sleep(0.1)
        server.stop()
        raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")

    def login(self, server: Server) -> str:
        status, body = request(server.port, "POST", "/api/auth/login", {"username": "admin", "password": self.password})
        if status != 200:
            raise RuntimeError(f"login failed: {status} {body}")
        return body["access"]

    def rename_seed_rows(self, count: int, tag: str) -> None:
        """Change ``count`` seeded rows behind Django's back (raw SQL): the poller announces them."""
        with contextlib.closing(sqlite3.connect(self.tmp / "rayanpbx.sqlite3", timeout=30)) as db, db:
            db.execute(
                "UPDATE extensions_extension SET name = ? || id WHERE id IN (SELECT id FROM extensions_extension "
                "WHERE name LIKE 'Seed%' OR name LIKE 'Burst%' ORDER BY id LIMIT ?)",
                (f"Burst {tag} ", count),
            )

    def cleanup(self) -> None:
        if self.redis_url:
            delete_prefix(self.redis_url, self.prefix)
        shutil.rmtree(self.tmp, ignore_errors=True)


_SEED = """
from extensions.models import Extension
rows = [Extension(extension_number=str(50000 + i), name=f"Seed {{i}}", secret="seed-secret-0123456789")
        for i in range({count})]
Extension.objects.bulk_create(rows, batch_size=5000)
"""


@dataclass
class BaselineStack:
    """The bare relay (``bench.baseline_relay``) on its own Redis channel."""

    redis_url: str
    name: str = "baseline"
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rayanpbx-bench-baseline-")))
    channel: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}:baseline")

    def setup(self) -> None:
        """Nothing to prepare: no database, no accounts."""

    def start(self) -> Server:
        port = free_port()
        log = self.tmp / f"relay-{port}.log"
        args = [
            sys.executable,
            "-m",
            "bench.baseline_relay",
            "--port",
            str(port),
            "--redis",
            self.redis_url,
            "--channel",
            self.channel,
        ]
        process = _spawn(args, {**os.environ, "PYTHONUNBUFFERED": "1"}, log)
        server = Server("baseline", port, process, log)
        try:
            wait_for_port(port, process, log)
        except RuntimeError:
            server.stop()
            raise
        return server

    def login(self, server: Server) -> str:
        return "baseline-token"  # the relay only checks that a bearer subprotocol is offered

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every Redis key under ``prefix`` (the bench's own, unique prefix)."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def request(port: int, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One HTTP request to 127.0.0.1:``port``; the decoded JSON body (or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        conn.close()
