"""The traffic page's series (``pbx.traffic``, ``GET /api/pbx/traffic``, the ``traffic`` topic).

* The stores, in-process and on Redis: 360 samples kept, one per slot whoever appends, and
  what is read back from Redis checked.
* A Redis deployment (two servers, two poller workers, so two samplers): one point per
  interval, published once on the topic, served by another server process to a page opened
  later, with the gap left while no sampler ran; who may read it.
* Against a real Asterisk 22 and baresip phones (the link inside the embedded server): a call
  between two registered phones is "concurrent calls 1, registered 2", then 0 after hang-up;
  a call out through a trunk to a second Asterisk counts against that trunk's max_channels.
* In Chromium: the page draws the hour from REST, and a live ``traffic.sample`` extends it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pbx import traffic
from pbx.ami_protocol import Message
from pbx.calls import CallTracker
from tests.asterisk import PROVIDER_DIALPLAN, PROVIDER_SECRET, Asterisk, Phone, provider_account
from tests.chromium import chromium, close, open_page
from tests.pbx_helpers import Stream, get, pbx_stack, start_linked, wait_until
from tests.services import redis_url
from tests.stack import Server, Stack

INTERVAL = 0.5
AMI_VARIABLES = ("AMI_USERNAME", "AMI_SECRET", "AMI_HOST", "AMI_PORT")


def sample(t: float, **fields: Any) -> dict[str, Any]:
    return {"t": t, "events_per_s": 1.0, "pbx": "ok", "calls": 0, "calls_per_min": 0, "started": 0,
            "registered": 0, "trunks": {}, "trunks_omitted": 0, **fields}  # fmt: skip


# --- the stores ------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[traffic.LocalStore | traffic.RedisStore]:
    if request.param == "local":
        yield traffic.LocalStore()
        return
    redis_store = traffic.RedisStore(redis_url(), f"test-{uuid.uuid4().hex[:8]}:")
    try:
        yield redis_store
    finally:
        redis_store.clear()


def test_a_store_keeps_the_last_360_samples_one_per_slot(store) -> None:
    for slot in range(1, 401):
        assert store.append(sample(slot * 10.0), slot)
    kept = store.samples()
    assert len(kept) == traffic.POINTS == 360
    assert [s["t"] for s in kept] == [slot * 10.0 for slot in range(41, 401)]  # the oldest 40 dropped
    # A slot already written (or an older one) is refused: a second sampler adds no point.
    assert not store.append(sample(4000.0, calls=99), 400)
    assert not store.append(sample(3990.0), 399)
    assert store.samples()[-1]["calls"] == 0 and len(store.samples()) == 360


def test_two_samplers_racing_for_the_same_slots_write_one_point_each(store) -> None:
    wins: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for slot in range(1, 101):
            if store.append(sample(slot * 10.0), slot):
                with lock:
                    wins.append(slot)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == list(range(1, 101))  # each slot won exactly once
    assert [s["t"] for s in store.samples()] == [slot * 10.0 for slot in range(1, 101)]


def test_what_redis_holds_is_checked_before_it_is_served() -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    store = traffic.RedisStore(redis_url(), prefix)
    try:
        store._client.rpush(store.key, b"not json", json.dumps([1, 2]), json.dumps({"t": "yesterday"}))
        store.append(sample(20.0, calls=-3, registered="7", trunks={"acme": 2, "x" * 100: 1, "bad": "1"}), 2)
        store.append(sample(30.0, pbx="unconfigured", calls=5), 3)
        cleaned = [traffic.clean(s) for s in store.samples()]
        good = [s for s in cleaned if s is not None]
        assert [s["t"] for s in good] == [20.0, 30.0]
        assert good[0]["calls"] is None and good[0]["registered"] is None  # not counts: not served
        assert good[0]["trunks"] == {"acme": 2}
        assert good[1]["calls"] is None  # without the link, no PBX figure is served
    finally:
        store.clear()


def test_calls_in_progress_are_counted_per_trunk_from_the_call_state() -> None:
    """The per-trunk count of a sample comes from the active calls' ``trunk`` (pbx.calls)."""
    now = [1000.0]
    tracker = CallTracker(lambda: now[0], lambda name: name.isdigit(), lambda name: name in ("acme", "backup"))

    def channel(uid: str, linked: str, name: str, exten: str = "s") -> None:
        headers = [("Event", "Newchannel"), ("Channel", f"PJSIP/{name}-0000{uid}"), ("Uniqueid", uid),
                   ("Linkedid", linked), ("CallerIDNum", "101"), ("Exten", exten), ("ChannelState", "4")]  # fmt: skip
        tracker.on_newchannel(Message(headers))

    channel("1", "1", "101", "95551")
    channel("2", "1", "acme")  # out through acme
    channel("3", "3", "102", "95552")
    channel("4", "3", "acme")
    channel("5", "5", "backup")  # in from backup
    channel("6", "6", "103", "104")
    channel("7", "6", "104")  # internal
    counts, omitted = traffic.trunks_in_use(tracker.snapshot()["active"])
    assert counts == {"acme": 2, "backup": 1} and omitted == 0
    tracker.on_hangup(Message([("Event", "Hangup"), ("Uniqueid", "2"), ("Cause", "16")]))
    tracker.on_hangup(Message([("Event", "Hangup"), ("Uniqueid", "1"), ("Cause", "16")]))
    assert traffic.trunks_in_use(tracker.snapshot()["active"]) == ({"acme": 1, "backup": 1}, 0)
    many = [{"trunk": f"t{i:03d}"} for i in range(traffic.MAX_TRUNKS + 7)] + [{"trunk": "t999"}]
    counts, omitted = traffic.trunks_in_use(many)
    assert len(counts) == traffic.MAX_TRUNKS and omitted == 8  # bounded, and the rest counted


# --- a Redis deployment -----------------------------------------------------------------------


def unlinked_stack(tmp: Path, **env: str) -> Stack:
    stack = Stack(tmp, redis_url=redis_url(), env={"TRAFFIC_INTERVAL": str(INTERVAL), **env})
    for name in AMI_VARIABLES:  # whatever the shell running the tests has set
        stack.env.pop(name, None)
    return stack


def series(stack: Stack, server: Server, token: str, query: str = "") -> dict[str, Any]:
    code, body = stack.request(server, "GET", f"/api/pbx/traffic{query}", token=token)
    assert code == 200, body
    return body


def subscribe(stream: Stream, *topics: str) -> None:
    stream._ws.send(json.dumps({"type": "subscribe", "topics": list(topics)}))
    stream.wait(lambda f: f["type"] == "subscribed")


def test_one_point_per_interval_shared_by_every_process_with_gaps_kept(tmp_path: Path) -> None:
    stack = unlinked_stack(tmp_path)
    try:
        first, second = stack.start_server(), stack.start_server()
        token = stack.login(first)
        stream = Stream(first, token)
        stream.wait(lambda f: f["type"] == "welcome")
        subscribe(stream, "traffic")
        workers = [stack.start_worker(), stack.start_worker()]  # two samplers, as with a standby
        mark = stream.mark()
        wait_until(lambda: len(series(stack, second, token)["samples"]) >= 8, timeout=20, what="8 samples")
        for i in range(3):  # events on the stream: the next samples see them
            code, _ = stack.request(
                first, "POST", "/api/extensions", {"extension_number": f"70{i}", "name": f"Phone {i}"}, token
            )
            assert code == 201, _
        wait_until(lambda: any((s["events_per_s"] or 0) > 0 for s in series(stack, second, token)["samples"]),
                   timeout=10, what="a sample with events")  # fmt: skip
        body = series(stack, second, token)
        samples = body["samples"]
        assert body["interval_s"] == INTERVAL and body["points"] == 360
        assert body["pbx"] == {"state": "unconfigured", "message": "PBX link not configured"}
        times = [s["t"] for s in samples]
        assert times == sorted(set(times)), "one point per slot, oldest first"
        assert all(abs(t / INTERVAL - round(t / INTERVAL)) < 1e-6 for t in times)  # on the grid
        steps = [b - a for a, b in itertools.pairwise(times)]
        assert max(steps) <= 6 * INTERVAL  # two samplers running: no long hole either (a loaded CI aside)
        assert all(s["pbx"] == "unconfigured" and s["calls"] is None and s["registered"] is None for s in samples)
        assert all(s["events_per_s"] is not None for s in samples[1:])  # the stream's rate works without PBX
        # The topic: one frame per point, whichever sampler's append won.
        frames = [f for f in stream.of("traffic.sample", after=mark)]
        assert len(frames) >= 5
        published = [f["payload"]["sample"]["t"] for f in frames]
        assert len(published) == len(set(published))
        assert {t for t in published if t <= times[-1]} <= set(times)  # what was published was stored
        assert frames[0]["topic"] == "traffic" and "seq" not in frames[0]
        stream.close()

        # Every sampler stopped: no points. A page opened later, on a third process, still
        # gets the past hour at once.
        for worker in workers:
            stack.stop(worker)
        before = series(stack, second, token)["samples"]
        time.sleep(6 * INTERVAL)
        later = stack.start_server()
        after = series(stack, later, token)["samples"]
        assert after == before and len(after) >= 8
        stack.start_worker()
        wait_until(lambda: series(stack, later, token)["samples"][-1]["t"] > after[-1]["t"], timeout=15,
                   what="sampling again")  # fmt: skip
        resumed = series(stack, later, token, f"?since={after[-1]['t']}")["samples"]
        assert resumed and all(s["t"] > after[-1]["t"] for s in resumed)
        assert resumed[0]["t"] - after[-1]["t"] >= 5 * INTERVAL  # the gap is left as a gap
    finally:
        stack.close()


def test_a_configured_link_that_is_not_running_gives_disconnected_samples(tmp_path: Path) -> None:
    """AMI configured, but no ``runworker rayanpbx-pbx``: the PBX fields are missing, not zero."""
    from tests.stack import free_port

    ami = {"AMI_USERNAME": "x", "AMI_SECRET": "y", "AMI_HOST": "127.0.0.1", "AMI_PORT": str(free_port())}
    stack = Stack(tmp_path, redis_url=redis_url(), env={"TRAFFIC_INTERVAL": str(INTERVAL), **ami})
    try:
        server = stack.start_server()
        token = stack.login(server)
        stack.start_worker()  # the poller's channel: the sampler, and no PBX link
        wait_until(lambda: len(series(stack, server, token)["samples"]) >= 3, timeout=15, what="3 samples")
        body = series(stack, server, token)
        assert body["pbx"] == {"state": "disconnected", "message": "PBX link not connected"}
        assert all(s["pbx"] == "disconnected" and s["calls"] is None and s["trunks"] is None for s in body["samples"])
        assert all(s["events_per_s"] is not None for s in body["samples"][1:])
    finally:
        stack.close()


@pytest.mark.services
def test_the_series_goes_on_through_a_database_outage(tmp_path: Path) -> None:
    """A sample needs no database: MariaDB away (through a proxy that refuses and breaks
    connections) costs the trunks' limits a refresh, not a point, and leaves no traceback."""
    pytest.importorskip("MySQLdb")
    from tests.faults.db_outage import OutageProxy
    from tests.faults.test_database import mariadb, run_sql

    host, port, user, password = mariadb()
    name = f"rayanpbx_traffic_{uuid.uuid4().hex[:8]}"
    run_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    proxy = OutageProxy(port, host)
    credentials = user + (f":{password}" if password else "")
    stack = None
    try:
        url = f"mysql://{credentials}@127.0.0.1:{proxy.port}/{name}"
        stack = Stack(tmp_path, env={"DATABASE_URL": url, "TRAFFIC_INTERVAL": str(INTERVAL)})
        for variable in AMI_VARIABLES:
            stack.env.pop(variable, None)
        server = stack.start_server()
        token = stack.login(server)
        wait_until(lambda: len(series(stack, server, token)["samples"]) >= 3, timeout=15, what="3 samples")
        proxy.stop()
        away = time.time()
        time.sleep(8 * INTERVAL)
        proxy.start()
        back = time.time()
        wait_until(lambda: stack.request(server, "GET", "/health")[0] == 200, timeout=5, what="healthy again")
        during = [s for s in series(stack, server, token)["samples"] if away + INTERVAL < s["t"] < back - INTERVAL]
        assert len(during) >= 4, during  # sampled all along
        log = server.log.read_text()
        assert "Traceback" not in log
        # One line when it started, one when it ended: not one per sample.
        assert log.count("Traffic sampler: reading the trunks failed") == 1, log[-3000:]
        wait_until(lambda: "Traffic sampler recovered" in server.log.read_text(), timeout=5, what="recovered")
        assert server.log.read_text().count("Traffic sampler recovered") == 1
    finally:
        if stack is not None:
            stack.close()
        proxy.close()
        run_sql(f"DROP DATABASE IF EXISTS {name}")


def test_signed_in_users_may_read_the_series_anonymous_may_not(tmp_path: Path) -> None:
    stack = unlinked_stack(tmp_path)
    try:
        server = stack.start_server()
        stack.shell(
            "from django.contrib.auth import get_user_model\n"
            "get_user_model().objects.create_user('traffic-reader', password='reader-password-1234')\n"
        )
        reader = stack.login(server, "traffic-reader", "reader-password-1234")
        code, body = stack.request(server, "GET", "/api/pbx/traffic", token=reader)
        assert code == 200 and body["samples"] == [] and body["trunks"] == {}
        code, body = stack.request(server, "GET", "/api/pbx/traffic")
        assert code == 401 and body["error"] == "not_authenticated"
        for bad in ("abc", "-1", "nan", "inf"):
            code, body = stack.request(server, "GET", f"/api/pbx/traffic?since={bad}", token=reader)
            assert code == 400 and body["error"] == "invalid" and "since" in body["fields"], (bad, body)
        code, _ = stack.request(server, "POST", "/api/pbx/traffic", {}, token=reader)
        assert code == 405
        # The page itself: signed in only.
        import urllib.request

        with urllib.request.urlopen(f"{server.http}/traffic/", timeout=10) as response:
            assert "/login/" in response.url
    finally:
        stack.close()


# --- against a real Asterisk ------------------------------------------------------------------


@pytest.fixture(scope="module")
def linked(pbx: Asterisk, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The embedded default linked to the private Asterisk, sampling every 0.5 s."""
    stack = start_linked(pbx_stack(tmp_path_factory.mktemp("traffic"), pbx, TRAFFIC_INTERVAL=str(INTERVAL)))
    try:
        yield stack
    finally:
        stack.close()


def api(stack: Stack, method: str, path: str, body: Any = None) -> Any:
    code, answer = stack.request(stack.server, method, path, body, stack.admin)
    assert code in (200, 201), answer
    return answer


def extension_with_apply(stack: Stack, number: str) -> dict[str, Any]:
    created = api(stack, "POST", "/api/extensions", {"extension_number": number, "name": f"Phone {number}"})
    wait_until(lambda: get(stack, "/api/pbx")["pending_changes"] == 0
               and (get(stack, "/api/pbx")["apply"] or {}).get("state") == "applied", what="applied")  # fmt: skip
    return created


def next_sample(stack: Stack, after: float, check, what: str, timeout: float = 10) -> dict[str, Any]:
    """The first sample taken after ``after`` (epoch s) that passes ``check``."""

    def found() -> dict[str, Any] | None:
        return next((s for s in get(stack, "/api/pbx/traffic")["samples"] if s["t"] > after and check(s)), None)

    return wait_until(found, timeout=timeout, what=what)


@pytest.mark.services
def test_a_call_between_two_phones_shows_in_the_next_samples_and_ends(
    linked: Stack, pbx: Asterisk, tmp_path: Path
) -> None:
    a_ext, b_ext = extension_with_apply(linked, "7101"), extension_with_apply(linked, "7102")
    a = Phone(tmp_path / "a", "7101", a_ext["secret"], pbx)
    b = Phone(tmp_path / "b", "7102", b_ext["secret"], pbx, auto_answer=True)
    a.start()
    b.start()
    try:
        assert a.wait_registered(5) and b.wait_registered(5)
        before = time.time()
        idle = next_sample(linked, before, lambda s: s["registered"] == 2, "registered 2")
        assert idle["pbx"] == "ok" and idle["calls"] == 0
        dialled = time.time()
        a.dial("7102")
        a.wait_event("CALL_ESTABLISHED", 10)
        up = next_sample(linked, dialled, lambda s: s["calls"] == 1, "concurrent calls 1")
        assert up["registered"] == 2 and up["trunks"] == {}
        counted = next_sample(linked, dialled, lambda s: (s["calls_per_min"] or 0) >= 1, "a call started")
        assert counted["calls_per_min"] == 1  # one call, counted once however many legs it has
        hung_up = time.time()
        a.hangup()
        down = next_sample(linked, hung_up, lambda s: s["calls"] == 0, "no call after the hang-up")
        assert down["registered"] == 2 and down["calls_per_min"] == 1  # still within the minute
    finally:
        a.stop()
        b.stop()
    gone = time.time()
    next_sample(linked, gone, lambda s: s["registered"] == 0, "unregistered")


@pytest.mark.services
def test_a_call_out_through_a_trunk_counts_against_its_max_channels(
    linked: Stack, pbx: Asterisk, tmp_path: Path
) -> None:
    provider = Asterisk(tmp_path / "provider", name="provider", extra_pjsip=provider_account("carrier"),
                        extra_dialplan=PROVIDER_DIALPLAN)  # fmt: skip
    provider.start()
    try:
        trunk = {"name": "carrier", "host": "127.0.0.1", "port": provider.sip_port, "username": "carrier-acct",
                 "secret": PROVIDER_SECRET, "prefix": "9", "strip_digits": 1, "max_channels": 2}  # fmt: skip
        api(linked, "POST", "/api/trunks", trunk)
        wait_until(lambda: pbx.registrations().get("carrier") == "Registered", what="trunk registered")
        assert get(linked, "/api/pbx/traffic")["trunks"]["carrier"] == {"max_channels": 2, "enabled": True}
        caller = extension_with_apply(linked, "7901")
        phone = Phone(tmp_path / "p7901", "7901", caller["secret"], pbx)
        phone.start()
        try:
            assert phone.wait_registered(5)
            dialled = time.time()
            phone.dial("95551234")
            phone.wait_event("CALL_ESTABLISHED", 10)
            busy = next_sample(linked, dialled, lambda s: (s["trunks"] or {}).get("carrier") == 1, "carrier in use")
            assert busy["calls"] == 1
            hung_up = time.time()
            phone.hangup()
            idle = next_sample(linked, hung_up, lambda s: s["calls"] == 0, "the trunk call ended")
            assert idle["trunks"] == {}
        finally:
            phone.stop()
    finally:
        provider.stop()


# --- in Chromium ------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.browser
def test_the_page_draws_the_hour_from_rest_and_extends_it_live(tmp_path: Path) -> None:
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import expect

    stack = Stack(tmp_path, env={"TRAFFIC_INTERVAL": "1"})
    for name in AMI_VARIABLES:
        stack.env.pop(name, None)
    try:
        server = stack.start_server()
        token = stack.login(server)
        wait_until(lambda: len(series(stack, server, token)["samples"]) >= 6, timeout=15, what="6 samples")
        with chromium() as browser:
            page = open_page(browser, server, "/traffic/")
            root = page.locator("#traffic")
            expect(root).to_have_attribute("data-loaded", "true", timeout=5000)
            page.wait_for_function("Number(document.querySelector('[data-chart=events_per_s]')?.dataset.points) >= 4")
            drawn, live_before, path = page.evaluate(
                "() => { const c = document.querySelector('[data-chart=events_per_s]');"
                " return [Number(c.dataset.points), Number(document.getElementById('traffic').dataset.live || 0),"
                " c.querySelector('.chart-line').getAttribute('d')]; }"
            )
            assert drawn >= 4 and path.startswith("M")  # the past, from REST
            assert drawn - live_before >= 4  # ...not from the live samples
            # Without a link the PBX charts say so; events per second still draw.
            expect(page.locator("#traffic-pbx")).to_contain_text("PBX link not configured")
            expect(page.locator('[data-chart="calls"] .chart-note')).to_have_text("PBX link not configured")
            expect(page.locator('[data-chart="calls"] .chart-now')).to_have_text("—")
            # A live sample arrives on the traffic topic and extends the chart, no reload.
            page.wait_for_function(
                f"Number(document.getElementById('traffic').dataset.live || 0) > {live_before}"
                f" && Number(document.querySelector('[data-chart=events_per_s]').dataset.points) > {drawn}",
                timeout=5000,
            )
            assert page.locator('[data-chart="events_per_s"] .chart-line').get_attribute("d") != path
            # A text alternative for each chart: a summary and a table of its points.
            label = page.locator('[data-chart="events_per_s"] .chart-summary').text_content()
            assert "now" in label and "samples" in label
            page.locator('[data-chart="events_per_s"] details summary').click()
            page.wait_for_function(  # the table is filled when opened (the toggle event)
                f"document.querySelectorAll('[data-chart=events_per_s] tbody tr').length >= {drawn}", timeout=5000
            )
            assert page.locator('[data-chart="events_per_s"] .chart-grid text').count() == 3  # y axis values
            page.screenshot(path=tmp_path / "traffic.png", full_page=True)
            light = page.evaluate("getComputedStyle(document.querySelector('.chart-line')).stroke")
            close(page)
            # Dark mode: the same chart in the dark theme's colours (the stylesheet's variables).
            dark = open_page(browser, server, "/traffic/", dark=True)
            dark.wait_for_function("Number(document.querySelector('[data-chart=events_per_s]')?.dataset.points) > 0")
            assert (
                dark.evaluate("getComputedStyle(document.querySelector('.chart-line')).stroke") == "rgb(79, 140, 255)"
            )
            assert light == "rgb(37, 99, 235)"
            dark.screenshot(path=tmp_path / "traffic-dark.png", full_page=True)
            close(dark)
        # The sampler runs inside the embedded server, supervised: /health lists it.
        code, health = stack.request(server, "GET", "/health")
        assert code == 200 and health["tasks"]["traffic-sampler"]["state"] == "running"
    finally:
        stack.close()


@pytest.mark.services
@pytest.mark.browser
def test_a_page_that_reconnects_reads_the_samples_it_missed(tmp_path: Path) -> None:
    """The server process of a page is restarted: the samples taken meanwhile (by the
    worker, into Redis) come from REST when the page is subscribed again; no reload."""
    pytest.importorskip("playwright.sync_api")
    stack = unlinked_stack(tmp_path)
    try:
        server = stack.start_server()
        token = stack.login(server)
        stack.start_worker()
        wait_until(lambda: len(series(stack, server, token)["samples"]) >= 3, timeout=15, what="3 samples")
        count = "Number(document.querySelector('[data-chart=events_per_s]')?.dataset.points || 0)"
        with chromium() as browser:
            page = open_page(browser, server, "/traffic/")
            page.wait_for_function(f"{count} >= 3")
            stack.stop(server.process)
            time.sleep(8 * INTERVAL)  # samples the page cannot hear of
            stack.start_server(server.port)
            page.locator("#live-status[data-state=connected]").wait_for(timeout=15000)
            stored = [s["t"] for s in series(stack, server, token)["samples"]]
            assert stored[-1] - stored[0] > 8 * INTERVAL
            page.locator('[data-chart="events_per_s"] details summary').click()  # its rows carry their t
            shown = "[...document.querySelectorAll('[data-chart=events_per_s] tbody tr')].map(r => Number(r.dataset.t))"
            every = f"(() => {{ const shown = new Set({shown}); return {stored}.every(t => shown.has(t)); }})()"
            page.wait_for_function(every, timeout=10000)
            close(page)
    finally:
        stack.close()
