"""The load clients: several ``bench.clients`` processes, pinned to the client core.

A process holds at most ``per_process`` sockets (the open-files hard limit is per
process); commands go to every process at once and their replies are merged here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
from typing import Any

from bench.stack import CLIENT_CORE, ROOT, pinned


def split(total: int, per_process: int) -> list[int]:
    """``total`` sockets over as few processes as hold ``per_process`` each, evenly."""
    processes = max(1, math.ceil(total / per_process))
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


class ClientPool:
    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self, url: str, token: str, total: int, per_process: int, concurrency: int) -> None:
        counts = split(total, per_process)
        each = max(1, concurrency // len(counts))
        for count in counts:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.clients",
                "--url",
                url,
                "--token",
                token,
                "--count",
                str(count),
                "--concurrency",
                str(each),
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                preexec_fn=pinned(CLIENT_CORE),
                limit=2**26,
            )
            self.processes.append(process)

    async def _call(
        self, process: asyncio.subprocess.Process, command: dict[str, Any], timeout: float
    ) -> dict[str, Any]:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write((json.dumps(command) + "\n").encode())
        await process.stdin.drain()
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"client process {process.pid} exited ({process.returncode})")
        return json.loads(line)

    async def call(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """Send ``command`` to every process; their replies, in process order."""
        return list(await asyncio.gather(*(self._call(p, command, timeout) for p in self.processes)))

    async def close(self) -> None:
        """Ask every process to exit; kill (by PID) any that does not within 10 s."""
        for process in self.processes:
            with contextlib.suppress(Exception):
                assert process.stdin is not None
                process.stdin.write(b'{"cmd": "exit"}\n')
                await process.stdin.drain()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.processes = []


def merge_events(reports: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per event ``seq``: first and last receive time over every process, clients reached, type,
    publication time (the frame's ``timestamp``)."""
    merged: dict[int, dict[str, Any]] = {}
    for report in reports:
        for key, (first, last, count, type_, published) in report["events"].items():
            seq = int(key)
            entry = merged.get(seq)
            if entry is None:
                merged[seq] = {"first": first, "last": last, "count": count, "type": type_, "published": published}
            else:
                entry["first"] = min(entry["first"], first)
                entry["last"] = max(entry["last"], last)
                entry["count"] += count
    return merged


def merge_checks(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-client ordering checks summed over every process."""
    closed: dict[str, int] = {}
    for report in reports:
        for code, count in report["closed_codes"].items():
            closed[code] = closed.get(code, 0) + count
    frames = [r["mean_frame_bytes"] for r in reports if r["mean_frame_bytes"]]
    return {
        "clients": sum(r["clients"] for r in reports),
        "open": sum(r["open"] for r in reports),
        "closed_codes": closed,
        "missing": sum(r["missing"] for r in reports),
        "dups": sum(r["dups"] for r in reports),
        "resyncs": sum(r["resyncs"] for r in reports),
        "clients_resynced": sum(r["clients_resynced"] for r in reports),
        "min_count": min((r["min_count"] for r in reports), default=0),
        "max_count": max((r["max_count"] for r in reports), default=0),
        "deliveries": sum(r["deliveries"] for r in reports),
        "mean_frame_bytes": sum(frames) / len(frames) if frames else 0,
    }


def merge_histograms(replies: list[dict[str, Any]]) -> dict[int, int]:
    """The ``latency`` histograms of every process, summed (bucket index -> deliveries)."""
    merged: dict[int, int] = {}
    for reply in replies:
        for bucket, count in reply["histogram"].items():
            merged[int(bucket)] = merged.get(int(bucket), 0) + count
    return merged


def histogram_summary(histogram: dict[int, int], bucket_ms: float) -> dict[str, float]:
    """p50, p99, max and the count of a merged histogram, in ms (each bucket read at its upper edge)."""
    total = sum(histogram.values())
    if not total:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "n": 0}
    out: dict[str, float] = {"n": total}
    ordered = sorted(histogram.items())
    for name, p in (("p50", 0.50), ("p99", 0.99)):
        rank, seen = p * total, 0
        for bucket, count in ordered:
            seen += count
            if seen >= rank:
                out[name] = (bucket + 1) * bucket_ms
                break
    out["max"] = (ordered[-1][0] + 1) * bucket_ms
    return out
