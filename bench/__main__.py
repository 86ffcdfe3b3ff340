"""``make bench`` / ``python -m bench``: fan-out benchmark of RayanPBX against a bare relay,
the PBX apply figure against a private Asterisk (``bench.apply``), and the AMI flood against a
scripted Asterisk (``bench.ami_flood``).

Starts every server itself (RayanPBX with Redis, RayanPBX embedded, and the baseline relay
of ``bench.baseline_relay``), pinned to core 0, with load clients pinned to core 1; runs
``bench.runner.measure`` for each N; writes ``docs/benchmarks.md``, ``docs/benchmarks.json``
and ``docs/benchmarks.png``. ``--quick`` is the few-minute development run.

    make bench                                  # N = 100, 1,000, 5,000, 10,000
    make bench BENCH_ARGS="--quick"             # N = 100, 1,000, few events
    make bench BENCH_ARGS="--sections apply"    # only the PBX apply figure (needs Asterisk 22)
    make bench BENCH_ARGS="--sections ami"      # only the AMI flood (2,000 events/s, 30 s, 1,000 clients)
    make bench BENCH_ARGS="--sections poller"   # only the database poller at 1,000 / 10,000 / 100,000 rows
    make bench BENCH_ARGS="--sections scale"    # only the extensions page and list API at 1,000-100,000 rows
    make bench BENCH_ARGS="--sections apply-scale"  # one change applied among 100,000 extensions
    python -m bench --sizes 100,1000 --stacks redis,baseline --out /tmp/bench
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.runner import Options, make_stacks, measure
from bench.stack import CLIENT_CORE, ROOT, ProductStack, raise_nofile

log = logging.getLogger("bench")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100, 1,000; 8 writes; bursts of 200 events")
    parser.add_argument("--sizes", help="comma-separated client counts (default 100,1000,5000,10000)")
    parser.add_argument("--writes", type=int, help="REST writes (or baseline publishes) per run (default 40)")
    parser.add_argument("--burst", type=int, help="events per burst (default: by N, see bench.runner.burst_size)")
    parser.add_argument("--stacks", default="baseline,redis,embedded", help="which servers, in order")
    parser.add_argument("--per-process", type=int, default=4000, help="sockets per client process (≤ 4,000)")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight, over all processes")
    parser.add_argument("--quiet", type=float, default=0.15, help="wait for the machine to be below this busy fraction")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="...but at most this many seconds per run")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for benchmarks.md/.json/.png")
    parser.add_argument("--report-only", action="store_true", help="re-render .md and .png from the .json in --out")
    parser.add_argument(
        "--sections",
        default="fanout,apply,ami,poller,scale,apply-scale",
        help="fanout (the live layer), apply (the PBX link against a private Asterisk), ami (the PBX link "
        "flooded by a scripted Asterisk), poller (the database poller at 1,000-100,000 rows) and/or scale (the "
        "extensions page in Chromium and the list API at 1,000-100,000 rows), apply-scale (one change applied "
        "among 100,000 extensions); a section "
        "not run keeps its figures from the .json in --out",
    )
    parser.add_argument("--ami-rate", type=float, default=2000.0, help="ami: AMI events per second")
    parser.add_argument("--ami-seconds", type=float, default=30.0, help="ami: how long the flood lasts")
    parser.add_argument("--ami-clients", type=int, default=1000, help="ami: WebSocket clients connected")
    args = parser.parse_args(argv)
    if args.sizes is None:
        args.sizes = "100,1000" if args.quick else "100,1000,5000,10000"
    if args.writes is None:
        args.writes = 8 if args.quick else 40
    if args.burst is None and args.quick:
        args.burst = 200
    return args


async def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    options = Options(
        sizes=[int(s) for s in args.sizes.split(",")],
        writes=args.writes,
        burst_events=args.burst,
        per_process=min(args.per_process, 4000),
        concurrency=args.concurrency,
        stacks=[s.strip() for s in args.stacks.split(",") if s.strip()],
        redis_url=args.redis,
        quiet=args.quiet,
        quiet_wait=args.quiet_wait,
    )
    started = time.time()
    results: dict[str, Any] = {
        "command": "make bench" + (f' BENCH_ARGS="{shlex.join(argv)}"' if argv else ""),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "product": report.product_version(),
        "machine": report.machine(args.redis),
        "options": {**options.__dict__, "redis_url": options.redis_url},
        "pinning": {"server_core": 0, "client_core": CLIENT_CORE, "nofile": raise_nofile()},
        "queries": {},
        "runs": [],
    }
    seed_rows = max(1000, args.burst or 0)
    stacks = make_stacks(options, seed_rows)
    numbers = itertools.count(1)
    out = Path(args.out)
    try:
        for stack in stacks:
            log.info("setting up %s", stack.name)
            stack.setup()
            if isinstance(stack, ProductStack):
                results["queries"][stack.name] = stack.count_queries()
        for n in options.sizes:
            for stack in stacks:
                results["runs"].append(await measure(stack, n, options, numbers))
                report.write_json(results, out / "benchmarks.json")
    finally:
        for stack in stacks:
            stack.cleanup()
    results["duration_s"] = time.time() - started
    return results


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse(argv)
    out = Path(args.out)
    if args.report_only:
        results = json.loads((out / "benchmarks.json").read_text())
        report.write_plot(results, out / "benchmarks.png")
        report.write_markdown(results, out / "benchmarks.md")
        print(json.dumps(report.headline(results), indent=2))
        return
    try:
        os.sched_setaffinity(0, {CLIENT_CORE})
    except OSError as exc:
        log.warning("could not pin the bench to core %d: %s", CLIENT_CORE, exc)
    sections = {s.strip() for s in args.sections.split(",")}
    previous = out / "benchmarks.json"
    results = asyncio.run(run(args, argv)) if "fanout" in sections else json.loads(previous.read_text())
    if "apply" in sections:
        from bench import apply

        results["apply"] = apply.measure(args.redis)
    if "apply-scale" in sections:
        from bench import apply

        results["apply_scale"] = apply.measure_scale(args.redis)
    if "poller" in sections:
        from bench import poller

        results["poller"] = poller.measure()
    if "scale" in sections:
        from bench import scale

        results["scale"] = scale.measure(args.redis)
    if "ami" in sections:
        from bench import ami_flood

        started = time.time()
        results["ami"] = ami_flood.measure(
            args.redis, rate=args.ami_rate, seconds=args.ami_seconds, clients=args.ami_clients
        )
        results["ami"].update(
            command="make bench" + (f' BENCH_ARGS="{shlex.join(argv)}"' if argv else ""),
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            duration_s=round(time.time() - started, 1),
            product=report.product_version(),
        )
    report.write_json(results, out / "benchmarks.json")
    report.write_plot(results, out / "benchmarks.png")
    report.write_markdown(results, out / "benchmarks.md")
    log.info("done: %s", out / "benchmarks.md")
    print(json.dumps(report.headline(results), indent=2))


if __name__ == "__main__":
    main()
