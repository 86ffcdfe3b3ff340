"""``/metrics`` (rayanpbx/metrics.py): access, the exposition, and the series fed by real work.

Real servers (``tests/stack.py``): two daphne processes on Redis sharing one
``PROMETHEUS_MULTIPROC_DIR`` (a write on one is counted in the other's ``/metrics``), the
embedded default without that variable (one process, its own registry) behind an address
list that excludes 127.0.0.1 (403, or the token), and the PBX link against a real Asterisk.
In-process tests cover the functions the live layer calls and the dead-process cleanup
with real child processes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from rayanpbx import metrics
from tests.pbx_helpers import wait_until
from tests.services import redis_url
from tests.stack import ROOT, Server, Stack

TOKEN = "metrics-token-for-tests-0123456789"


def scrape(server: Server, token: str | None = None) -> tuple[int, str, dict[str, str]]:
    """``GET /metrics``: status, body text, headers."""
    request = urllib.request.Request(server.http + "/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition (which must parse), keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def open_socket(server: Server, token: str):
    ws = connect(server.ws, subprotocols=["rayanpbx", f"bearer.{token}"], open_timeout=10).__enter__()
    assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    return ws


# --- two server processes, one multiprocess directory --------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server, Server]]:
    tmp = tmp_path_factory.mktemp("metrics")
    directory = tmp / "prometheus"
    directory.mkdir()
    stack = Stack(tmp, redis_url=redis_url(), env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        yield stack, stack.start_server(), stack.start_server()
    finally:
        stack.close()


@pytest.mark.services
def test_metrics_from_localhost_parse_and_count_a_write_on_another_process(deployment) -> None:
    stack, a, b = deployment
    code, text, headers = scrape(b)
    assert code == 200, text
    assert headers["Content-Type"].startswith("text/plain")
    before = value(text, "rayanpbx_live_events_published_total", type="extension.created") or 0.0
    token = stack.login(a)
    code, body = stack.request(a, "POST", "/api/extensions", {"extension_number": "7301", "name": "Counted"}, token)
    assert code == 201, body
    # Scraped from the *other* process: the two processes' files are merged.
    text = scrape(b)[1]
    assert value(text, "rayanpbx_live_events_published_total", type="extension.created") == before + 1
    assert (value(text, "rayanpbx_live_events_published_total", type="status_update") or 0) >= 1
    assert value(text, "rayanpbx_http_request_duration_seconds_count", view="extension-list", method="POST",
                 status="2xx") == 1  # fmt: skip
    assert (value(text, "rayanpbx_http_request_duration_seconds_count", view="auth-login", method="POST",
                  status="2xx") or 0) >= 1  # fmt: skip
    # Never the raw path: a 404 on a made-up URL is "unresolved", whatever the URL.
    for n in range(3):
        assert stack.request(a, "GET", f"/api/no-such-thing-{n}")[0] == 404
    text = scrape(b)[1]
    assert value(text, "rayanpbx_http_request_duration_seconds_count", view="unresolved", method="GET",
                 status="4xx") == 3  # fmt: skip
    assert "no-such-thing" not in text


@pytest.mark.services
def test_sockets_and_deliveries_of_two_processes_sum_and_a_killed_process_leaves_the_sum(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    stack = Stack(tmp_path, redis_url=redis_url(), env={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    sockets = []
    try:
        a, b = stack.start_server(), stack.start_server()
        token = stack.login(a)
        sockets = [open_socket(a, token), open_socket(a, token), open_socket(b, token)]
        wait_until(lambda: value(scrape(a)[1], "rayanpbx_live_sockets") == 3, what="3 sockets in the gauge")
        # One write, fanned out by each process's hub to its sockets: delivered once per socket.
        delivered = value(scrape(a)[1], "rayanpbx_live_events_delivered_total", type="extension.created") or 0
        fanouts = value(scrape(a)[1], "rayanpbx_live_fanout_seconds_count") or 0
        assert stack.request(a, "POST", "/api/extensions", {"extension_number": "7303", "name": "y"}, token)[0] == 201
        for ws in sockets:
            while json.loads(ws.recv(timeout=10))["type"] != "extension.created":
                pass
        text = wait_until(
            lambda: (
                (t := scrape(a)[1])
                and value(t, "rayanpbx_live_events_delivered_total", type="extension.created") == delivered + 3
                and t
            ),
            what="3 deliveries counted",
        )
        assert value(text, "rayanpbx_live_fanout_seconds_count") >= fanouts + 2  # a batch per process at least
        os.killpg(b.process.pid, 9)  # no exit hook runs: the next scrape finds its PID gone
        b.process.wait(10)
        wait_until(lambda: value(scrape(a)[1], "rayanpbx_live_sockets") == 2, what="b's socket gone")
    finally:
        for ws in sockets:
            ws.close()
        stack.close()


# --- the embedded default, from an address outside METRICS_ALLOWED -------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Server]]:
    # 10.0.0.0/8 never matches the test's 127.0.0.1: only the token lets it in.
    stack = Stack(tmp_path_factory.mktemp("guarded"), env={"METRICS_ALLOWED": "10.0.0.0/8", "METRICS_TOKEN": TOKEN})
    assert "PROMETHEUS_MULTIPROC_DIR" not in stack.env
    try:
        yield stack, stack.start_server()
    finally:
        stack.close()


def test_outside_metrics_allowed_403_unless_the_token_is_sent(guarded) -> None:
    stack, server = guarded
    code, text, _ = scrape(server)
    assert code == 403
    assert json.loads(text)["error"] == "permission_denied" and "METRICS_ALLOWED" in json.loads(text)["detail"]
    code, text, headers = scrape(server, token="wrong-token-of-some-length")
    assert code == 401 and json.loads(text)["error"] == "not_authenticated"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    code, text, _ = scrape(server, token=TOKEN)
    assert code == 200
    # One process, its own registry: the write below is counted in the same process.
    token = stack.login(server)
    assert stack.request(server, "POST", "/api/extensions", {"extension_number": "7302", "name": "x"}, token)[0] == 201
    text = scrape(server, token=TOKEN)[1]
    assert value(text, "rayanpbx_live_events_published_total", type="extension.created") == 1
    assert value(text, "rayanpbx_http_request_duration_seconds_count", view="metrics", method="GET", status="4xx") == 2
    assert "process_cpu_seconds_total" in text  # the default collectors of a lone process


# --- in-process: the functions the live layer calls, the view's access rules ---------------


def _get(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_live_layer_functions_feed_their_series() -> None:
    sockets = _get("rayanpbx_live_sockets")
    metrics.socket_opened()
    metrics.socket_opened()
    metrics.socket_closed()
    assert _get("rayanpbx_live_sockets") == sockets + 1
    metrics.socket_closed()

    delivered = _get("rayanpbx_live_events_delivered_total", type="extension.updated")
    status = _get("rayanpbx_live_events_delivered_total", type="status_update")
    fanouts = _get("rayanpbx_live_fanout_seconds_count")
    frames = [
        (11, '{"seq":11,"type":"extension.updated","payload":{"type":"x"},"timestamp":"t"}'),
        (12, '{"seq":12,"type":"extension.updated","payload":{},"timestamp":"t"}'),
        (13, '{"seq":13,"type":"status_update","payload":{},"timestamp":"t"}'),
    ]
    metrics.fanout_frames(frames, 500, 0.003)
    assert _get("rayanpbx_live_events_delivered_total", type="extension.updated") == delivered + 1000
    assert _get("rayanpbx_live_events_delivered_total", type="status_update") == status + 500
    assert _get("rayanpbx_live_fanout_seconds_count") == fanouts + 1
    metrics.fanout("pbx.link", 7, 0.001)
    assert _get("rayanpbx_live_fanout_seconds_count") == fanouts + 2

    slow = _get("rayanpbx_live_slow_closes_total")
    metrics.slow_close()
    assert _get("rayanpbx_live_slow_closes_total") == slow + 1
    metrics.refused("per_user")
    assert _get("rayanpbx_live_refused_total", reason="per_user") >= 1
    # A reason that is not a plain name never becomes a label value.
    other = _get("rayanpbx_live_refused_total", reason="other")
    metrics.refused("/ws?token=secret")
    assert _get("rayanpbx_live_refused_total", reason="other") == other + 1

    metrics.ami_state("connecting")
    metrics.ami_state("connected")
    assert [_get("rayanpbx_ami_link_state", state=s) for s in metrics.AMI_STATES] == [0, 1, 0]
    metrics.ami_state(None)
    assert [_get("rayanpbx_ami_link_state", state=s) for s in metrics.AMI_STATES] == [0, 0, 0]


def test_frame_type_reads_the_type_without_parsing() -> None:
    assert metrics.frame_type('{"seq":5,"type":"trunk.deleted","payload":{}}') == "trunk.deleted"
    assert metrics.frame_type('{"seq":5,"payload":{}}') == "other"


def test_label_values_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", 0)
    before = _get("rayanpbx_live_refused_total", reason="other")
    metrics.refused("never_seen_before")
    assert _get("rayanpbx_live_refused_total", reason="never_seen_before") == 0
    assert _get("rayanpbx_live_refused_total", reason="other") == before + 1


@pytest.mark.django_db
def test_view_access_rules(client) -> None:
    # The test client's REMOTE_ADDR is 127.0.0.1, inside the default METRICS_ALLOWED.
    answer = client.get("/metrics")
    assert answer.status_code == 200
    samples(answer.content.decode())
    with override_settings(METRICS_ALLOWED=(), METRICS_TOKEN=""):
        answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 401  # no token is accepted at all
        assert client.get("/metrics").status_code == 403
    with override_settings(METRICS_TOKEN=TOKEN):
        # IPv4-mapped IPv6 is the IPv4 address.
        assert client.get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 403
        answer = client.get("/metrics", REMOTE_ADDR="192.0.2.7", headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200
    answer = client.post("/metrics")
    assert answer.status_code == 405 and answer.json()["error"] == "method_not_allowed"


def test_settings_refuse_bad_metrics_values(tmp_path: Path) -> None:
    def start(**env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "DATABASE_URL")}
        environ.update(RAYANPBX_DATA_DIR=str(tmp_path), **env)
        code = "import django; django.setup()"
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)

    assert start().returncode == 0
    assert "METRICS_TOKEN" in start(METRICS_TOKEN="short").stderr
    assert "METRICS_ALLOWED" in start(METRICS_ALLOWED="localhost").stderr
    assert "PROMETHEUS_MULTIPROC_DIR" in start(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "missing")).stderr


# --- dead processes' gauges (real child processes) -------------------------------------------

CHILD = """
import os, sys
from rayanpbx import metrics
metrics.socket_opened()
metrics.published(["extension.created"])
print(os.getpid(), flush=True)
if sys.argv[1] == "kill":
    os._exit(0)  # like SIGKILL: no exit hook
"""


def test_a_process_gone_leaves_the_sockets_sum_but_its_counters_stay(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "rayanpbx.settings"}

    def child(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    clean, killed = child("exit"), child("kill")
    assert not list(tmp_path.glob(f"gauge_livesum_{clean}.db"))  # its exit hook removed it
    assert list(tmp_path.glob(f"gauge_livesum_{killed}.db"))
    # Read as /metrics does, in a process of that deployment.
    read = "from rayanpbx import metrics; import sys; sys.stdout.write(metrics.exposition().decode())"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", read], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - started < 30
    assert not list(tmp_path.glob(f"gauge_livesum_{killed}.db"))
    assert value(out.stdout, "rayanpbx_live_sockets") == 0
    assert value(out.stdout, "rayanpbx_live_events_published_total", type="extension.created") == 2


# --- the PBX link against a real Asterisk (fixtures of tests/pbx_helpers.py) ---------------


def test_ami_link_state_and_apply_against_asterisk(site) -> None:
    def scraped() -> str:
        code, text, _ = scrape(site.server)
        assert code == 200, text
        return text

    def applied() -> str | None:
        text = scraped()
        return text if (value(text, "rayanpbx_pbx_apply_seconds_count") or 0) >= 1 else None

    text = wait_until(applied, what="an apply counted")
    assert value(text, "rayanpbx_ami_link_state", state="connected") == 1
    assert value(text, "rayanpbx_ami_link_state", state="disconnected") == 0
    assert value(text, "rayanpbx_ami_link_state", state="connecting") == 0
    assert (value(text, "rayanpbx_ami_events_total") or 0) >= 1  # FullyBooted at least
    assert (value(text, "rayanpbx_pbx_apply_failures_total", reason="rejected") or 0) == 0


def test_grafana_dashboard_queries_only_series_that_exist() -> None:
    dashboard = json.loads((ROOT / "docs" / "deploy" / "grafana-rayanpbx.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    names = {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in ("", "_total", "_bucket", "_sum", "_count")
        if family.name.startswith("rayanpbx_")
    }
    used = {name for expr in exprs for name in re.findall(r"rayanpbx_[a-z_]+", expr)}
    assert used and used <= names, used - names
    documented = (ROOT / "docs" / "metrics.md").read_text()
    for family in REGISTRY.collect():
        if family.name.startswith("rayanpbx_"):
            suffix = "_total" if family.type == "counter" else ""
            assert f"`{family.name}{suffix}`" in documented, family.name


def test_link_state_from_the_pbx_worker_in_a_server_s_metrics(pbx, tmp_path: Path) -> None:
    """Production's shape: the link in ``runworker rayanpbx-pbx``, scraped from a server process."""
    from tests.pbx_helpers import pbx_stack

    directory = tmp_path / "prometheus"
    directory.mkdir()
    stack = pbx_stack(tmp_path, pbx, redis_url=redis_url(), PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        server = stack.start_server()
        worker = stack.start_worker("rayanpbx-pbx")
        wait_until(
            lambda: value(scrape(server)[1], "rayanpbx_ami_link_state", state="connected") == 1,
            timeout=30,
            what="the worker's link connected, seen from the server",
        )
        stack.stop(worker)  # SIGTERM: its exit hook (or the next scrape) removes its live gauges
        wait_until(
            lambda: value(scrape(server)[1], "rayanpbx_ami_link_state", state="connected") is None,
            what="the stopped worker's link state gone",
        )
    finally:
        stack.close()
