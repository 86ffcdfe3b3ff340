"""The poller's cost at scale (issue 11, points 3 and 4): CPU per poll at 1,000 / 10,000 /
100,000 extensions, with nothing changed and with k rows changed behind Django's back, and
the cost of the counts every write's ``status_update`` carries.

Each size runs in a fresh deployment (SQLite in a temporary data directory, the embedded
bus), in a ``manage.py shell`` of its own so the figures are that process's CPU time
(``time.process_time``) around ``live.poller.ChangeFollower.poll``. Beside it, the full
comparison the poller did before it followed the change log (``live.poller.poll_once``,
still what a poller runs once when it starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIZES = (1_000, 10_000, 100_000)
TARGET_IDLE_MS = 10.0

_SCRIPT = """
import json, time
from django.db import connection
from extensions.models import Extension
from live import poller
N = {rows}
for start in range(0, N, 5000):
    Extension.objects.bulk_create([Extension(extension_number=str(1000000 + i), name=f"Bench {{i}}",
        secret="Strong-secret-123") for i in range(start, min(N, start + 5000))])
follower = poller.ChangeFollower()
def cpu(fn):
    t = time.process_time(); fn(); return (time.process_time() - t) * 1000
first = cpu(follower.poll)
idle = sorted(cpu(follower.poll) for _ in range(30))
changed = {{}}
for k in (1, 100, 1000):
    with connection.cursor() as c:
        c.execute("UPDATE extensions_extension SET name = %s WHERE id <= %s", [f"changed {{k}}", k])
    changed[k] = cpu(follower.poll)
full = cpu(poller.poll_once)
from django.db.models import Count, Q
from live.publisher import current_counts
counts = sorted(cpu(current_counts) for _ in range(21))
def scan():
    Extension.objects.aggregate(enabled=Count("pk", filter=Q(enabled=True)), total=Count("pk"))
scans = sorted(cpu(scan) for _ in range(21))
print("RESULT " + json.dumps({{"rows": N, "first_ms": first, "idle_p50_ms": idle[15], "idle_max_ms": idle[-1],
    "changed_ms": changed, "full_poll_ms": full, "counts_ms": counts[10], "count_scan_ms": scans[10]}}))
"""


def _one(rows: int) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="bench-poller-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(RAYANPBX_DATA_DIR=str(data), SECRET_KEY="bench-" + "x" * 50)
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    out = subprocess.run(
        [*manage, "shell", "-c", _SCRIPT.format(rows=rows)], cwd=ROOT, env=env, check=True, timeout=900,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def measure(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    return {"sizes": [_one(rows) for rows in sizes]}


def markdown(result: dict[str, Any] | None) -> list[str]:
    """The "Database poller" section of docs/benchmarks.md."""
    lines = ["## Database poller", ""]
    if not result:
        return [*lines, 'Not measured in this run (`make bench BENCH_ARGS="--sections poller"`).', ""]
    lines += [
        "CPU of one poll (`time.process_time`, ms) in a `manage.py shell` on SQLite, the embedded bus",
        '(`bench/poller.py`, `make bench BENCH_ARGS="--sections poller"`). The poller follows the change log',
        "the database's triggers write; *full* is the comparison of every row it did before (and does once",
        "at start). Changed rows are updated by raw SQL, behind Django's back.",
        "",
        "| extensions | idle poll p50 | idle max | 1 changed | 100 changed | 1,000 changed | first poll (full) "
        "| full poll | counts for `status_update` | counting the table instead |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in result["sizes"]:
        changed = {int(k): v for k, v in size["changed_ms"].items()}
        lines.append(
            f"| {size['rows']:,} | {size['idle_p50_ms']:.2f} | {size['idle_max_ms']:.2f} | {changed[1]:.1f} | "
            f"{changed[100]:.1f} | {changed[1000]:.1f} | {size['first_ms']:,.0f} | {size['full_poll_ms']:,.0f} | "
            f"{size.get('counts_ms', float('nan')):.2f} | {size.get('count_scan_ms', float('nan')):.1f} |"
        )
    largest = max(result["sizes"], key=lambda s: s["rows"])
    met = largest["idle_p50_ms"] < TARGET_IDLE_MS
    lines += [
        "",
        f"Target: an idle poll at {largest['rows']:,} rows under {TARGET_IDLE_MS:.0f} ms of CPU, reading nothing "
        f"per row from Redis: **{'met' if met else 'not met'}** ({largest['idle_p50_ms']:.2f} ms; one indexed "
        "query on the change log, no Redis read). With k rows changed the poll reads those k rows and their k bus "
        "keys. The `status_update` counts every write publishes are read from `live_rowcount`, which the triggers "
        "keep exact (one indexed read), instead of counting the table.",
        "",
    ]
    return lines
