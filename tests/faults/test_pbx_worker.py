"""The PBX link's worker killed: every open page is told, once, without a reload.

Two server processes and ``runworker rayanpbx-pbx`` on Redis, the AMI user pointing at a
port nothing listens on (the link runs, retrying, and writes its heartbeat). The worker is
killed with SIGKILL, so it cannot say goodbye: the servers' watchdogs notice the heartbeat
go stale and one ``pbx.link disconnected`` reaches the browsers of both.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from pbx.status import STALE_AFTER
from pbx.watchdog import NOT_RUNNING
from tests.pbx_helpers import Stream, get, wait_until
from tests.services import redis_url
from tests.stack import Stack, free_port

pytestmark = pytest.mark.services


def test_a_killed_link_worker_is_announced_once_to_every_server_s_clients(tmp_path: Path) -> None:
    (tmp_path / "asterisk").mkdir()
    env = {"AMI_USERNAME": "rayanpbx", "AMI_SECRET": "Ami-secret-for-tests", "AMI_HOST": "127.0.0.1",
           "AMI_PORT": str(free_port()), "ASTERISK_CONFIG_DIR": str(tmp_path / "asterisk")}  # fmt: skip
    stack = Stack(tmp_path / "site", redis_url=redis_url(), env=env)
    try:
        a, b = stack.start_server(), stack.start_server()
        stack.server = a
        worker = stack.start_worker("rayanpbx-pbx")

        def link_running() -> bool:
            link = get(stack, "/api/pbx")["link"]
            return link["error"] != NOT_RUNNING and link["since"] is not None

        wait_until(link_running, timeout=20, what="the link's first status")
        token = stack.login(a)
        streams = [Stream(a, token), Stream(b, token)]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        for stream in streams:
            frame = stream.wait(
                lambda f: f["type"] == "pbx.link" and f["payload"]["error"] == NOT_RUNNING, timeout=STALE_AFTER + 15
            )
            assert frame["payload"]["state"] == "disconnected"
        announced = {f["seq"] for s in streams for f in s.of("pbx.link") if f["payload"]["error"] == NOT_RUNNING}
        assert len(announced) == 1, "two servers, one announcement"
        for stream in streams:
            stream.close()
    finally:
        stack.close()
