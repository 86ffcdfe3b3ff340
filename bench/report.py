"""The bench's outputs: raw JSON, the latency plot, and ``docs/benchmarks.md``.

The Markdown is generated from the JSON of the run (machine, command, a table per N with
ours against the baseline and their ratio, the targets of issue 5 with the measured
figures); the hand-written analysis in ``bench/analysis.md`` is appended as is.
"""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.stack import ROOT

PACKAGES = [
    "Django",
    "channels",
    "channels-redis",
    "daphne",
    "Twisted",
    "autobahn",
    "djangorestframework",
    "djangorestframework-simplejwt",
    "redis",
    "websockets",
    "matplotlib",
]
STACKS = [("baseline", "baseline relay"), ("ours-redis", "ours (Redis)"), ("ours-embedded", "ours (embedded)")]
ANALYSIS = ROOT / "bench" / "analysis.md"


def machine(redis_url: str) -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import redis

        versions["Redis server"] = redis.Redis.from_url(redis_url).info("server")["redis_version"]
    except Exception:
        versions["Redis server"] = None
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
    }


def product_version() -> str:
    """The commit measured, and whether the product's code differs from it (``+dirty``)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "live", "rayanpbx", "extensions", "trunks", "pbx")
    return commit + ("+dirty" if dirty else "")


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    tmp.replace(path)


def _run(results: dict[str, Any], stack: str, n: int) -> dict[str, Any] | None:
    return next((r for r in results["runs"] if r["stack"] == stack and r["n"] == n), None)


def _get(run: dict[str, Any] | None, *path: str) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _sizes(results: dict[str, Any]) -> list[int]:
    return sorted({r["n"] for r in results["runs"]})


def write_plot(results: dict[str, Any], path: Path) -> None:
    """Last-client latency (p50 solid, p99 dashed) against N, for each server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    colours = {"baseline": "tab:gray", "ours-redis": "tab:blue", "ours-embedded": "tab:orange"}
    for stack, label in STACKS:
        points = [(r["n"], _get(r, "latency", "last_ms")) for r in results["runs"] if r["stack"] == stack]
        points = [(n, s) for n, s in sorted(points) if s and not math.isnan(s["p50"])]
        if not points:
            continue
        xs = [n for n, _ in points]
        ax.plot(xs, [s["p50"] for _, s in points], "o-", color=colours[stack], label=f"{label} p50")
        ax.plot(xs, [s["p99"] for _, s in points], "s--", color=colours[stack], label=f"{label} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("connected clients N")
    ax.set_ylabel("last client receives the event (ms)")
    ax.set_title("Write → last-client delivery latency (server on 1 core, clients on 1 core)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# --- Markdown ---------------------------------------------------------------------------


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and abs(value) < 0.5 * 10**-digits:
        value = 0.0  # no "-0.0"
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 100):
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(ours: Any, base: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    if math.isnan(ours) or math.isnan(base):
        return "-"
    return f"{ours / base:.2f}x"


# Rows of the per-N table: label, path into a run, digits.
ROWS: list[tuple[str, tuple[str, ...], int]] = [
    ("connected", ("connect", "ok"), 0),
    ("connect failures", ("connect", "failed"), 0),
    ("connect rate (clients/s)", ("connect", "per_second"), 0),
    ("handshake p50 (ms)", ("connect", "handshake_ms", "p50"), 1),
    ("handshake p99 (ms)", ("connect", "handshake_ms", "p99"), 1),
    ("server CPU per connect (ms)", ("connect", "server_cpu_ms_per_connect"), 2),
    ("server RSS per idle connection (KiB)", ("memory", "per_connection_kib"), 1),
    ("server CPU while idle (%)", ("idle_cpu_percent",), 1),
    ("write request time p50 (ms)", ("latency", "request_ms", "p50"), 2),
    ("write request time p99 (ms)", ("latency", "request_ms", "p99"), 2),
    ("first client p50 (ms)", ("latency", "first_ms", "p50"), 1),
    ("first client p99 (ms)", ("latency", "first_ms", "p99"), 1),
    ("last client p50 (ms)", ("latency", "last_ms", "p50"), 1),
    ("last client p99 (ms)", ("latency", "last_ms", "p99"), 1),
    ("last client max (ms)", ("latency", "last_ms", "max"), 1),
    ("burst events", ("burst", "events"), 0),
    ("burst deliveries/s", ("burst", "per_second"), 0),
    ("burst: publication to last delivery (s)", ("burst", "seconds"), 2),
    ("burst: publication to first delivery (s)", ("burst", "first_delivery_after_s"), 2),
    ("burst missing deliveries", ("burst", "missing"), 0),
    ("burst duplicates", ("burst", "dups"), 0),
    ("burst resyncs", ("burst", "resyncs"), 0),
    ("server CPU per delivery (µs)", ("burst", "server_cpu_us_per_delivery"), 1),
    ("frame size (bytes)", ("burst", "mean_frame_bytes"), 0),
    ("machine busy before the run (% of all cores)", ("machine_busy_pct",), 0),
    ("other processes on the server core, whole run (%)", ("server_core_other_percent",), 1),
    ("other processes on the server core, burst (%)", ("burst", "server_core_other_percent"), 1),
]


#: Rows describing the machine, not the servers: no ratio.
NO_RATIO = {label for label, path, _ in ROWS if "other" in path[-1] or path[-1] == "machine_busy_pct"}


def _table(results: dict[str, Any], n: int) -> list[str]:
    base = _run(results, "baseline", n)
    ours = [(stack, label, _run(results, stack, n)) for stack, label in STACKS[1:]]
    header = "| metric | baseline relay |"
    rule = "|---|---:|"
    for _, label, _ in ours:
        header += f" {label} | ratio |"
        rule += "---:|---:|"
    lines = [header, rule]
    for label, path, digits in ROWS:
        b = _get(base, *path)
        line = f"| {label} | {_num(b, digits)} |"
        for _, _, run in ours:
            value = _get(run, *path)
            ratio = "" if label in NO_RATIO else _ratio(value, b)
            line += f" {_num(value, digits)} | {ratio} |"
        lines.append(line)
    errors = [f"* **{r['stack']}**: {r['error']}" for r in [base] + [o[2] for o in ours] if r and r.get("error")]
    return lines + (["", *errors] if errors else [])


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issue 5, each with the measured figures and whether it holds."""
    out = []
    for stack, label in STACKS[1:]:
        runs = [r for r in results["runs"] if r["stack"] == stack]
        if not runs:
            continue
        big = _run(results, stack, 10000)
        if big:
            failed = _get(big, "connect", "failed")
            ok = _get(big, "connect", "ok")
            out.append(
                {
                    "target": "10,000 concurrent authenticated clients, no connect failures",
                    "stack": label,
                    "holds": ok == 10000 and failed == 0,
                    "figure": f"{_num(ok, 0)} connected, {_num(failed, 0)} failed",
                }
            )
        for n in (5000, 10000):
            run, base = _run(results, stack, n), _run(results, "baseline", n)
            if run and base:
                ours_p99, base_p99 = _get(run, "latency", "last_ms", "p99"), _get(base, "latency", "last_ms", "p99")
                holds = bool(ours_p99 and base_p99 and ours_p99 <= 1.5 * base_p99)
                out.append(
                    {
                        "target": f"last-client p99 ≤ 1.5x the bare relay's at N={n:,}",
                        "stack": label,
                        "holds": holds,
                        "figure": f"{_num(ours_p99)} ms vs {_num(base_p99)} ms ({_ratio(ours_p99, base_p99)})",
                    }
                )
        mem = [(r["n"], _get(r, "memory", "per_connection_kib")) for r in runs if r["n"] >= 1000]
        mem = [(n, v) for n, v in mem if v is not None]
        if mem:
            out.append(
                {
                    "target": "≤ 30 KiB server RSS per idle connection",
                    "stack": label,
                    "holds": all(v <= 30 for _, v in mem),
                    "figure": ", ".join(f"{v:.1f} KiB at N={n:,}" for n, v in mem),
                }
            )
        firsts = [(r["n"], _get(r, "latency", "first_ms", "p50")) for r in runs]
        firsts = [(n, v) for n, v in firsts if v is not None]
        if firsts:
            out.append(
                {
                    "target": "REST write → first client p50 ≤ 10 ms",
                    "stack": label,
                    "holds": all(v <= 10 for _, v in firsts),
                    "figure": ", ".join(f"{v:.1f} ms at N={n:,}" for n, v in firsts),
                }
            )
        bursts = [(r["n"], r.get("burst")) for r in runs if r.get("burst")]
        if bursts:
            lost = [(n, b["missing"], b["dups"], b["resyncs"]) for n, b in bursts]
            out.append(
                {
                    "target": "no dropped events in the burst",
                    "stack": label,
                    "holds": all(m == 0 and d == 0 for _, m, d, _ in lost),
                    "figure": "; ".join(f"N={n:,}: {m} missing, {d} duplicate, {r} resync" for n, m, d, r in lost),
                }
            )
    return out


def headline(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "duration_s": round(results.get("duration_s", 0)),
        "targets": [
            f"{'MET' if t['holds'] else 'NOT MET'}: {t['target']} [{t['stack']}]: {t['figure']}"
            for t in targets(results)
        ],
        "errors": [f"{r['stack']} N={r['n']}: {r['error']}" for r in results["runs"] if r.get("error")],
    }


def _queries(results: dict[str, Any]) -> list[str]:
    lines = ["| write | " + " | ".join(results["queries"]) + " |", "|---|" + "---:|" * len(results["queries"])]
    ops = ["create", "update", "toggle", "delete"]
    for op in ops:
        cells = [str(_get(q, op, "queries")) for q in results["queries"].values()]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(results: dict[str, Any], path: Path) -> None:
    m = results["machine"]
    opts = results["options"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    sizes = _sizes(results)
    lines = [
        "# Benchmarks: live-event fan-out",
        "",
        "Generated by `make bench` (`bench/`); raw figures in [benchmarks.json](benchmarks.json), plot in",
        "[benchmarks.png](benchmarks.png). Re-running overwrites this page; the analysis at the end is",
        "`bench/analysis.md`.",
        "",
        "## Run",
        "",
        f"* command: `{results['command']}` (started {results['started']}, took "
        f"{results.get('duration_s', 0) / 60:.1f} min)",
        f"* product: commit `{results.get('product', 'unknown')}` (a `+dirty` suffix would mark uncommitted changes)",
        f"* machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}",
        f"* versions: {versions}",
        f"* servers pinned to core {results['pinning']['server_core']}; every load-client process, the REST "
        f"writer and the burst publisher pinned to core {results['pinning']['client_core']}; Redis (a system "
        "service, not started by the bench) is not pinned. Open-files limit raised to the hard limit "
        f"({results['pinning']['nofile']:,}) in every process; at most {opts['per_process']:,} sockets per "
        f"client process, {opts['concurrency']} handshakes in flight.",
        f"* per server and N: a fresh server process; {opts['writes']} REST writes (create, update, toggle, "
        "delete in turn; each publishes its event, and a `status_update` after every write but the rename); "
        "the baseline gets the same frames, same-sized, one round trip of `PUBLISH`es per write; one burst.",
        "",
        "## What is measured",
        "",
        "* **ours (Redis)**: `manage.py serve` (daphne) with `REDIS_URL` and a unique `REDIS_KEY_PREFIX`;",
        "  **ours (embedded)**: the same without Redis (in-process bus and poller); both on SQLite in a",
        "  temporary data directory, migrated, with an admin account. **baseline relay**:",
        "  `bench/baseline_relay.py`, Redis pub/sub → `websockets.broadcast()`, no Django (standing for the",
        "  seed's Go relay; in a prototype measured on the same kind of 2-core machine before this project,",
        "  such a bare relay cost 9-14 µs of server CPU per delivery, the floor the Go relay was compared to).",
        '* Clients: the `websockets` library, token as subprotocols `["rayanpbx", "bearer.<access>"]` from one',
        "  REST login, no compression, no client pings; connected = the `welcome` frame arrived.",
        "* **Latency**: `t0` is `time.time()` in the writer just before the HTTP request is sent (so it",
        "  includes request handling, the commit and the publish); *first/last client* is the earliest/latest",
        "  receive time of that write's `extension.*` event over all N clients. The event is published",
        "  before the HTTP response leaves, so a latency counted from the response would be partly negative;",
        "  the request time itself is reported separately. The baseline's `t0` is just before its `PUBLISH`",
        "  round trip. The next write waits until every client has every event of the previous one.",
        "* **Burst**: events published back to back (ours (Redis): the product's bus publish, one Lua",
        "  call per event, from a helper process; embedded: one raw SQL `UPDATE` of that many rows, announced",
        "  by the embedded poller, the only way to put events into an in-process bus from outside; baseline:",
        "  `PUBLISH` per event). Every client must see every `seq` once, in order: *missing* counts",
        "  deliveries not made (gaps and shortfalls), *duplicates* repeats; a `resync` frame counts as told.",
        "  Deliveries/s = deliveries ÷ (last delivery - start of publication); the start is the",
        "  publisher's clock, or for the embedded poller the first burst frame's own `timestamp`.",
        "* **Memory**: server `VmRSS` after N idle sockets minus before them (after a warm-up), ÷ N.",
        "  **CPU**: server `utime+stime` (`/proc/PID/stat`) over the burst ÷ deliveries; over the connect",
        "  phase ÷ connects. Redis's own CPU is not included (for either).",
        "* Ratios are ours ÷ baseline: for times, memory and CPU below 1 is better; for rates above 1.",
        "",
        "## Targets",
        "",
        "| target | server | figure | holds |",
        "|---|---|---|---|",
    ]
    for t in targets(results):
        lines.append(f"| {t['target']} | {t['stack']} | {t['figure']} | {'yes' if t['holds'] else '**no**'} |")
    lines += [
        "",
        "Causes of the misses, and changes measured to fix them: see [Analysis](#analysis) at the end.",
        "",
        "![last-client latency against N](benchmarks.png)",
        "",
    ]
    for n in sizes:
        procs = {r["stack"]: r.get("client_processes") for r in results["runs"] if r["n"] == n}
        lines += [f"## N = {n:,}", "", f"Client processes: {max((p or 0) for p in procs.values())}.", ""]
        lines += _table(results, n)
        lines.append("")
    if results.get("queries"):
        lines += [
            "## Database queries per REST write",
            "",
            "Counted in-process with `CaptureQueriesContext` around one request through Django's test client",
            "with a JWT (authentication, the write, and the counts read for `status_update` after commit;",
            "the statements are in the JSON).",
            "",
        ]
        lines += _queries(results)
        lines.append("")
    from bench import apply

    lines += apply.markdown(results.get("apply"))
    lines += apply.markdown_scale(results.get("apply_scale"))
    from bench import ami_flood

    lines += ami_flood.markdown(results.get("ami"))
    from bench import poller

    lines += poller.markdown(results.get("poller"))
    from bench import scale

    lines += scale.markdown(results.get("scale"))
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().rstrip(), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
