"""A real deployment for end-to-end tests: database, optional Redis, daphne and workers.

Each ``Stack`` gets its own database (an SQLite file, or a fresh MariaDB database when
``DATABASE_URL`` points at MySQL/MariaDB), its own Redis key prefix, and processes started
with ``manage.py serve`` / ``manage.py runworker`` exactly as in production. Every process
it starts is stopped by PID in ``close()``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jwt

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-password-for-tests"
SECRET_KEY = "test-secret-key-" + "x" * 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


@dataclass
class Stack:
    tmp: Path
    redis_url: str | None = None
    poll_interval: float = 0.5
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    mysql_db: str | None = None

    def __post_init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(
            RAYANPBX_DATA_DIR=str(self.tmp),
            SECRET_KEY=SECRET_KEY,
            LIVE_POLL_INTERVAL=str(self.poll_interval),
            REDIS_KEY_PREFIX=f"test-{uuid.uuid4().hex[:8]}:",
            RAYANPBX_ADMIN_USER="admin",
            RAYANPBX_ADMIN_PASSWORD=ADMIN_PASSWORD,
            PYTHONUNBUFFERED="1",
        )
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith("mysql"):
            self.mysql_db = f"rayanpbx_e2e_{uuid.uuid4().hex[:8]}"
            self._mysql(f"CREATE DATABASE {self.mysql_db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", db=None)
            env["DATABASE_URL"] = urlparse(database_url)._replace(path=f"/{self.mysql_db}").geturl()
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.env)  # the test's own settings (e.g. AMI_*) win
        self.env = env
        self.manage("migrate", "--noinput")
        self.manage("ensure_admin")

    # --- processes ----------------------------------------------------------------------

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=check,
        )  # fmt: skip

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code).stdout

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.processes.append(process)
        return process

    def start_server(
        self, port: int | None = None, *, healthy: bool = True, probe: Callable[[Server], bool] | None = None
    ) -> Server:
        """Start ``manage.py serve``; wait until /health says healthy (or, with
        ``healthy=False``, until it answers at all; or until ``probe(server)`` is true, e.g.
        /health over HTTPS)."""
        port = port or free_port()
        log = self.tmp / f"server-{port}.log"
        process = self._spawn(["serve", "--port", str(port)], log)
        server = Server(port, process, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if probe is not None:
                    if probe(server):
                        return server
                elif self.request(server, "GET", "/health")[0] == 200 or not healthy:
                    return server
            except OSError:  # (ssl.SSLError is one)
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")

    def start_worker(self, *channels: str) -> subprocess.Popen:
        """``manage.py runworker`` on ``channels`` (default: the poller's)."""
        args = ["runworker", *(channels or ("rayanpbx-poller",))]
        return self._spawn(args, self.tmp / f"worker-{uuid.uuid4().hex[:6]}.log")

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def close(self) -> None:
        for process in self.processes:
            self.stop(process)
        if self.mysql_db:
            self._mysql(f"DROP DATABASE IF EXISTS {self.mysql_db}", db=None)

    # --- HTTP ---------------------------------------------------------------------------

    def request(
        self, server: Server, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(server.http + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def login(self, server: Server, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        status, body = self.request(server, "POST", "/api/auth/login", {"username": username, "password": password})
        assert status == 200, body
        return body["access"]

    def token(self, user_id: int, *, expires_in: float = 300, secret: str = SECRET_KEY) -> str:
        """An access token signed like simplejwt's (optionally expired or forged)."""
        now = int(time.time())
        claims = {
            "token_type": "access",
            "exp": now + int(expires_in),
            "iat": now,
            "jti": uuid.uuid4().hex,
            "user_id": str(user_id),
        }
        return jwt.encode(claims, secret, algorithm="HS256")

    # --- the database, behind Django's back ---------------------------------------------

    def sql(self, statement: str, params: tuple = ()) -> None:
        """Run one statement directly on the database, as another program would."""
        if self.mysql_db:
            self._mysql(statement.replace("?", "%s"), params, db=self.mysql_db)
            return
        import sqlite3

        with sqlite3.connect(self.tmp / "rayanpbx.sqlite3") as connection:
            connection.execute(statement, params)

    def _mysql(self, statement: str, params: tuple = (), *, db: str | None) -> None:
        import MySQLdb

        url = urlparse(os.environ["DATABASE_URL"])
        kwargs: dict[str, Any] = {
            "host": url.hostname or "127.0.0.1",
            "port": url.port or 3306,
            "user": url.username or "root",
        }
        if url.password:
            kwargs["password"] = url.password
        if db:
            kwargs["database"] = db
        connection = MySQLdb.connect(**kwargs)
        try:
            connection.cursor().execute(statement, params or None)
            connection.commit()
        finally:
            connection.close()
