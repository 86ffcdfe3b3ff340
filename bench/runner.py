"""One benchmark run: for each N and each server, every measurement of issue 5.

For one server and one N (``measure``): start the server (fresh process), warm it up, read
its RSS; connect N clients (connect rate, failures, handshake times, server CPU); read the
RSS again (memory per idle connection); make K paced REST writes (or, for the baseline, K
``PUBLISH``es) and time each event's first and last delivery; publish a burst back to back
and count deliveries, gaps, duplicates and server CPU per delivery; stop everything.

Latency clock: ``time.time()`` in the writer just before the request is sent (``t0``) and
in each client process when a frame is read; the same machine, so the clocks agree. The
next write waits until every client has every event of the previous one, so samples do not
queue behind each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from websockets.asyncio.client import connect

from bench import stats
from bench.pool import ClientPool, merge_checks, merge_events
from bench.publish import frame, status_frame
from bench.stack import (
    CLIENT_CORE,
    ROOT,
    SERVER_CORE,
    BaselineStack,
    ProductStack,
    Server,
    core_busy,
    cpu_seconds,
    pinned,
    request,
    rss_kib,
    wait_quiet,
)

log = logging.getLogger("bench")

#: One write cycle: the op and how many stream events it publishes (the event, then a
#: ``status_update`` when the counts moved: a rename moves none).
OPS: list[tuple[str, int]] = [("create", 2), ("update", 1), ("toggle", 2), ("delete", 2)]
OP_EVENT = {
    "create": "extension.created",
    "update": "extension.updated",
    "toggle": "extension.updated",
    "delete": "extension.deleted",
}
SETTLE_S = 3.0
#: Pause after every client has an event, before the next write (lets the server finish its writes).
GAP_S = 0.02


@dataclass
class Options:
    sizes: list[int]
    writes: int
    burst_events: int | None
    per_process: int
    concurrency: int
    stacks: list[str]
    redis_url: str
    quiet: float = 0.15
    quiet_wait: float = 30.0


def burst_size(n: int, options: Options) -> int:
    """Events in the burst: 1,000 up to N = 1,000, then about a million deliveries (≥ 200)."""
    if options.burst_events:
        return options.burst_events
    return max(200, min(1000, 1_000_000 // n))


class RestWriter:
    """A keep-alive HTTP connection that times each write."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float, float]:
        data = json.dumps(body) if body is not None else None
        t0 = time.time()
        self.conn.request(method, path, data, self.headers)
        response = self.conn.getresponse()
        raw = response.read()
        t1 = time.time()
        return response.status, json.loads(raw) if raw else None, t0, t1

    def close(self) -> None:
        self.conn.close()


def _ms(values: list[float]) -> dict[str, float]:
    return stats.summary([v * 1000 for v in values])


async def _warm_up(server: Server, token: str) -> None:
    """A few sockets and a read, so start-up costs (imports, the hub) are not counted per client."""
    for _ in range(3):
        async with connect(
            server.ws_url,
            subprotocols=["rayanpbx", f"bearer.{token}"],
            open_timeout=30,  # type: ignore[list-item]
            compression=None,
        ) as ws:
            await asyncio.wait_for(ws.recv(), 30)
    if server.name.startswith("ours"):
        status, _ = request(server.port, "GET", "/api/extensions?page_size=1", token=token)
        if status != 200:
            raise RuntimeError(f"warm-up read failed: {status}")


async def _connect(pool: ClientPool, server: Server, n: int) -> dict[str, Any]:
    cpu0 = cpu_seconds(server.pid)
    replies = await pool.call({"cmd": "connect"}, 120 + n / 20)
    cpu1 = cpu_seconds(server.pid)
    ok = sum(r["ok"] for r in replies)
    failures: dict[str, int] = {}
    for r in replies:
        for reason, count in r["failures"].items():
            failures[reason] = failures.get(reason, 0) + count
    seconds = max(r["t_end"] for r in replies) - min(r["t_start"] for r in replies)
    handshakes = [t for r in replies for t in r["handshake_s"]]
    return {
        "ok": ok,
        "failed": sum(r["failed"] for r in replies),
        "failures": failures,
        "seconds": seconds,
        "per_second": ok / seconds if seconds else 0,
        "handshake_ms": _ms(handshakes),
        "server_cpu_ms_per_connect": (cpu1 - cpu0) * 1000 / ok if ok else None,
    }


async def _wait_all(pool: ClientPool, count: int, timeout: float) -> bool:
    replies = await pool.call({"cmd": "wait", "count": count, "timeout": timeout}, timeout + 60)
    return all(r["done"] for r in replies)


def _latency_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "first_ms": _ms([r["first"] - r["t0"] for r in rows]),
            "last_ms": _ms([r["last"] - r["t0"] for r in rows]),
            "first_after_response_ms": _ms([r["first"] - r["t1"] for r in rows]),
            "last_after_response_ms": _ms([r["last"] - r["t1"] for r in rows]),
            "request_ms": _ms([r["t1"] - r["t0"] for r in rows]),
        }

    out = pick(samples)
    ops = sorted({s["op"] for s in samples})
    if len(ops) > 1:
        out["per_op"] = {op: pick([s for s in samples if s["op"] == op]) for op in ops}
    return out


async def _latency_product(
    server: Server, token: str, pool: ClientPool, n_open: int, writes: int, numbers: Iterator[int]
) -> dict[str, Any]:
    await pool.call({"cmd": "reset"}, 30)
    writer = RestWriter(server.port, token)
    done: list[dict[str, Any]] = []
    expected = 0
    late = 0
    timeout = 10 + n_open / 500
    ext_id: int | None = None
    number = 0
    try:
        for k in range(writes):
            op, events = OPS[k % len(OPS)]
            if op == "create":
                number = next(numbers)
                body = {"extension_number": str(70000 + number), "name": f"Bench {number}"}
                status, reply, t0, t1 = writer.call("POST", "/api/extensions", body)
                want = 201
                if status == want:
                    ext_id = reply["id"]
            elif op == "update":
                want = 200
                status, reply, t0, t1 = writer.call("PATCH", f"/api/extensions/{ext_id}", {"name": f"Bench {number} b"})
            elif op == "toggle":
                want = 200
                status, reply, t0, t1 = writer.call("POST", f"/api/extensions/{ext_id}/toggle")
            else:
                want = 204
                status, reply, t0, t1 = writer.call("DELETE", f"/api/extensions/{ext_id}")
            if status != want:
                raise RuntimeError(f"REST {op} answered {status}: {reply}")
            done.append({"op": op, "t0": t0, "t1": t1})
            expected += events
            if not await _wait_all(pool, expected, timeout):
                late += 1
            await asyncio.sleep(GAP_S)
    finally:
        writer.close()
    events_by_seq = merge_events(await pool.call({"cmd": "report"}, 120))
    primary = [(seq, e) for seq, e in sorted(events_by_seq.items()) if e["type"].startswith("extension.")]
    samples, mismatched = [], 0
    for write, (_, event) in zip(done, primary, strict=False):
        if event["type"] != OP_EVENT[write["op"]]:
            mismatched += 1
        samples.append({**write, "first": event["first"], "last": event["last"], "count": event["count"]})
    result = _latency_summary(samples)
    result.update(
        clock="t0 = just before the HTTP request is sent; first/last = receive time in the clients",
        writes=len(done),
        events_total=len(events_by_seq),
        events_expected=expected,
        mismatched=mismatched,
        not_reaching_all=sum(1 for s in samples if s["count"] < n_open),
        waits_timed_out=late,
    )
    return result


async def _latency_baseline(
    stack: BaselineStack, pool: ClientPool, n_open: int, writes: int, seqs: Iterator[int]
) -> dict[str, Any]:
    await pool.call({"cmd": "reset"}, 30)
    client = redis.Redis.from_url(stack.redis_url)
    client.ping()
    done: list[dict[str, Any]] = []
    late = 0
    timeout = 10 + n_open / 500
    expected = 0
    for k in range(writes):
        # The same frames as the product's write k: the event, then a status_update when the
        # product would send one, in one round trip (as the product's Lua script publishes them).
        op, events = OPS[k % len(OPS)]
        seq = next(seqs)
        pipe = client.pipeline(transaction=False)
        pipe.publish(stack.channel, frame(seq, k, OP_EVENT[op]))
        if events == 2:
            pipe.publish(stack.channel, status_frame(next(seqs)))
        t0 = time.time()
        pipe.execute()
        t1 = time.time()
        done.append({"op": op, "seq": seq, "t0": t0, "t1": t1})
        expected += events
        if not await _wait_all(pool, expected, timeout):
            late += 1
        await asyncio.sleep(GAP_S)
    client.close()
    events_by_seq = merge_events(await pool.call({"cmd": "report"}, 120))
    samples = []
    for write in done:
        event = events_by_seq.get(write["seq"])
        if event is not None:
            samples.append({**write, "first": event["first"], "last": event["last"], "count": event["count"]})
    result = _latency_summary(samples)
    result.update(
        clock="t0 = just before the PUBLISH round trip; first/last = receive time in the clients",
        writes=len(done),
        events_total=len(events_by_seq),
        events_expected=expected,
        mismatched=0,
        not_reaching_all=sum(1 for s in samples if s["count"] < n_open) + writes - len(samples),
        waits_timed_out=late,
    )
    return result


async def _publisher(args: list[str], env: dict[str, str] | None) -> asyncio.subprocess.Process:
    """Start ``bench.publish`` and wait until it is ready to publish (see its docstring)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.publish",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE,
        preexec_fn=pinned(CLIENT_CORE),
    )
    assert process.stdout is not None
    ready = await asyncio.wait_for(process.stdout.readline(), 120)
    if ready.strip() != b"ready":
        process.kill()
        await process.wait()
        raise RuntimeError(f"bench.publish did not start: {ready!r}")
    return process


async def _burst(
    stack: ProductStack | BaselineStack,
    server: Server,
    pool: ClientPool,
    n_open: int,
    count: int,
    seqs: Iterator[int] | None,
) -> dict[str, Any]:
    await pool.call({"cmd": "reset"}, 30)
    publisher = None
    if isinstance(stack, BaselineStack):
        assert seqs is not None
        start = next(seqs)
        for _ in range(count - 1):
            next(seqs)
        method = f"{count} PUBLISHes back to back to the relay's channel (bench.publish --mode raw)"
        args = [
            "--mode",
            "raw",
            "--count",
            str(count),
            "--redis",
            stack.redis_url,
            "--channel",
            stack.channel,
            "--start-seq",
            str(start),
        ]
        publisher = await _publisher(args, None)
    elif stack.redis_url:
        method = f"{count} bus publications back to back (bench.publish --mode bus: the product's Lua publish)"
        publisher = await _publisher(["--mode", "bus", "--count", str(count)], stack.env)
    else:
        method = (
            f"{count} rows renamed in one raw SQL UPDATE; the embedded poller publishes them "
            f"at its next poll (LIVE_POLL_INTERVAL)"
        )
    cpu0, busy0 = cpu_seconds(server.pid), core_busy()
    t_trigger = time.time()
    if publisher is None:
        assert isinstance(stack, ProductStack)
        stack.rename_seed_rows(count, f"{n_open}-{int(t_trigger)}")
    else:
        assert publisher.stdin is not None
        publisher.stdin.write(b"go\n")
        await publisher.stdin.drain()
    timeout = min(900.0, 60 + count * n_open / 2000)
    completed = await _wait_all(pool, count, timeout)
    cpu1, busy1 = cpu_seconds(server.pid), core_busy()
    elapsed = time.time() - t_trigger
    published: dict[str, Any] = {}
    if publisher is not None:
        out, _ = await asyncio.wait_for(publisher.communicate(), 120)
        published = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    reports = await pool.call({"cmd": "report"}, 120)
    events_by_seq = merge_events(reports)
    checks = merge_checks(reports)
    first = min((e["first"] for e in events_by_seq.values()), default=0.0)
    last = max((e["last"] for e in events_by_seq.values()), default=0.0)
    # Publication start: the publisher's clock; for the poller (embedded), the first frame's
    # own timestamp (set when the poller published it, to the millisecond).
    stamps = [e["published"] for e in events_by_seq.values() if e["published"]]
    start = published.get("t_start") or (min(stamps) if stamps else first)
    seconds = last - start
    expected = count * n_open
    deliveries = checks["deliveries"]
    return {
        "method": method,
        "events": count,
        "events_seen": len(events_by_seq),
        "expected_deliveries": expected,
        "deliveries": deliveries,
        "missing": expected - deliveries,
        "gaps": checks["missing"],
        "dups": checks["dups"],
        "resyncs": checks["resyncs"],
        "clients_resynced": checks["clients_resynced"],
        "closed_during": checks["closed_codes"],
        "events_not_reaching_all": sum(1 for e in events_by_seq.values() if e["count"] < n_open),
        "completed": completed,
        "seconds": seconds,
        "per_second": deliveries / seconds if seconds > 0 else None,
        "first_delivery_after_s": first - start,
        "publish_seconds": (published["t_end"] - published["t_start"]) if published else None,
        "trigger_to_last_s": last - t_trigger if last else None,
        "server_cpu_s": cpu1 - cpu0,
        "server_core_busy_percent": (busy1[SERVER_CORE] - busy0[SERVER_CORE]) * 100 / elapsed,
        "server_core_other_percent": max(0.0, busy1[SERVER_CORE] - busy0[SERVER_CORE] - (cpu1 - cpu0)) * 100 / elapsed,
        "server_cpu_us_per_delivery": (cpu1 - cpu0) * 1e6 / deliveries if deliveries else None,
        "mean_frame_bytes": checks["mean_frame_bytes"],
    }


async def measure(
    stack: ProductStack | BaselineStack, n: int, options: Options, numbers: Iterator[int]
) -> dict[str, Any]:
    """Every measurement for one server and one N."""
    result: dict[str, Any] = {"stack": stack.name, "n": n}
    result["machine_busy_pct"] = wait_quiet(options.quiet, options.quiet_wait) * 100
    result["loadavg_before"] = os.getloadavg()
    server = stack.start()
    started, busy0, server_cpu0 = time.time(), core_busy(), cpu_seconds(server.pid)
    pool = ClientPool()
    try:
        token = stack.login(server)
        await _warm_up(server, token)
        await asyncio.sleep(1.0)
        rss0 = rss_kib(server.pid)
        await pool.start(server.ws_url, token, n, options.per_process, options.concurrency)
        result["client_processes"] = len(pool.processes)
        log.info("%s N=%d: connecting (%d client processes)", stack.name, n, len(pool.processes))
        result["connect"] = await _connect(pool, server, n)
        n_open = result["connect"]["ok"]
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(SETTLE_S)
        result["idle_cpu_percent"] = (cpu_seconds(server.pid) - cpu0) * 100 / (time.monotonic() - t0)
        rss1 = rss_kib(server.pid)
        result["memory"] = {
            "rss_before_kib": rss0,
            "rss_after_kib": rss1,
            "per_connection_kib": (rss1 - rss0) / n_open if n_open else None,
        }
        log.info(
            "%s N=%d: %d connected (%.0f/s), %.1f KiB/conn; latency phase",
            stack.name,
            n,
            n_open,
            result["connect"]["per_second"],
            result["memory"]["per_connection_kib"] or 0,
        )
        seqs = itertools.count(1)  # the baseline relay's numbering (it starts at 0 after each start)
        if isinstance(stack, BaselineStack):
            result["latency"] = await _latency_baseline(stack, pool, n_open, options.writes, seqs)
        else:
            result["latency"] = await _latency_product(server, token, pool, n_open, options.writes, numbers)
        bursting = burst_size(n, options)
        log.info("%s N=%d: burst of %d events", stack.name, n, bursting)
        result["burst"] = await _burst(stack, server, pool, n_open, bursting, seqs)
        result["rss_end_kib"] = rss_kib(server.pid)
        busy1 = core_busy()
        result["server_core_other_percent"] = (
            max(0.0, busy1[SERVER_CORE] - busy0[SERVER_CORE] - (cpu_seconds(server.pid) - server_cpu0))
            * 100
            / (time.time() - started)
        )
    except Exception as exc:
        log.exception("%s N=%d failed", stack.name, n)
        result["error"] = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(OSError):
            result["server_log_tail"] = server.log.read_text()[-3000:]
    finally:
        await pool.close()
        server.stop()
    return result


def make_stacks(options: Options, seed_rows: int) -> list[ProductStack | BaselineStack]:
    stacks: list[ProductStack | BaselineStack] = []
    for name in options.stacks:
        if name == "baseline":
            stacks.append(BaselineStack(options.redis_url))
        elif name == "redis":
            stacks.append(ProductStack("ours-redis", options.redis_url, seed_rows=seed_rows))
        elif name == "embedded":
            stacks.append(ProductStack("ours-embedded", None, seed_rows=seed_rows))
        else:
            raise ValueError(f"unknown stack {name!r}")
    return stacks
