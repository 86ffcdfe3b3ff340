"""A load-client process: many authenticated WebSocket clients on one asyncio loop.

Run by the bench as ``python -m bench.clients --url ws://... --token T --count N``, pinned
to the client core. It is driven through stdin/stdout, one JSON object per line:

* ``{"cmd": "connect"}``: open the ``count`` sockets, ``--concurrency`` handshakes at a
  time; a socket counts as connected when its ``welcome`` frame has arrived. Replies with
  successes, failures (by reason), handshake times and the wall-clock window.
* ``{"cmd": "reset"}``: start a new recording (per-event receive times, per-client counts);
  with ``"all_times": true`` it also keeps every delivery's receive time, for ``latency``.
* ``{"cmd": "wait", "count": E, "timeout": T}``: reply once every open client has received
  ``E`` stream frames since the reset, or when ``T`` seconds have passed.
* ``{"cmd": "report"}``: per event ``seq``: first and last receive time (``time.time()``)
  over this process's clients, how many clients got it, its type and its ``timestamp``
  (publication time, millisecond precision; decoded once per event); per-client ordering
  checks (gaps, duplicates, ``resync`` frames, unexpected closes).
* ``{"cmd": "latency", "sent": {seq: t}, "bucket_ms": b}``: after an ``all_times`` reset,
  a histogram of ``receive time - t`` over every delivery of those events to every client
  of this process (``{bucket index: count}``, buckets of ``b`` ms), which the bench merges.
* ``{"cmd": "exit"}``: leave at once (the kernel closes the sockets).

Frames are not JSON-decoded per client: ``seq`` and ``type`` are sliced from the fixed
frame prefix ``{"seq":N,"type":"..."`` (see ``live.events.number``), so the client stays
as cheap as possible for both the product and the baseline relay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from array import array
from datetime import datetime
from typing import Any, get_args

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from live.events import StreamType

PREFIX = '{"seq":'
STREAM_TYPES = frozenset(get_args(StreamType))  # live.events needs no Django set-up


def published_at(frame: str) -> float:
    """The frame's ``timestamp`` (set when it was published) as Unix time; 0 if it has none."""
    start = frame.find('"timestamp":"')
    if start < 0:
        return 0.0
    start += 13
    try:
        return datetime.fromisoformat(frame[start : frame.index('"', start)]).timestamp()
    except ValueError:
        return 0.0


def parse_head(frame: str) -> tuple[int, str]:
    """``(seq, type)`` of a server frame, read from its fixed prefix without decoding it."""
    if not frame.startswith(PREFIX):
        return -1, ""
    comma = frame.index(",", 7)
    start = comma + 9  # past ,"type":"
    return int(frame[7:comma]), frame[start : frame.index('"', start)]


class Client:
    """One socket's ordering state."""

    __slots__ = ("closed", "count", "dups", "last_seq", "missing", "resyncs", "ws")

    def __init__(self, ws: ClientConnection, welcome_seq: int) -> None:
        self.ws = ws
        self.last_seq = welcome_seq
        self.count = 0
        self.missing = 0
        self.dups = 0
        self.resyncs = 0
        self.closed: int | None = None


class Recorder:
    """Per-event receive times and per-client checks for one process."""

    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.open = 0
        self.events: dict[int, list[Any]] = {}
        self.target = 0
        self.reached = 0
        self.reached_event = asyncio.Event()
        self.frame_bytes = 0
        self.frames = 0
        self.times: dict[int, array] | None = None

    def reset(self, all_times: bool = False) -> None:
        self.events = {}
        self.times = {} if all_times else None
        self.frame_bytes = self.frames = 0
        for client in self.clients:
            client.count = client.missing = client.dups = client.resyncs = 0

    def add(self, client: Client) -> None:
        self.clients.append(client)
        self.open += 1

    def open_clients(self) -> list[Client]:
        return [c for c in self.clients if c.closed is None]

    def set_target(self, target: int) -> None:
        self.target = target
        self.reached = sum(1 for c in self.open_clients() if c.count >= target)
        self.reached_event = asyncio.Event()
        if self.reached >= self.open:
            self.reached_event.set()

    def frame(self, client: Client, frame: str, now: float) -> None:
        seq, type_ = parse_head(frame)
        if type_ == "resync":
            client.resyncs += 1
            client.last_seq = seq
            return
        if type_ not in STREAM_TYPES:
            return
        if seq <= client.last_seq:
            client.dups += 1
            return
        if seq > client.last_seq + 1:
            client.missing += seq - client.last_seq - 1
        client.last_seq = seq
        client.count += 1
        entry = self.events.get(seq)
        if entry is None:
            self.events[seq] = [now, now, 1, type_, published_at(frame)]
            self.frame_bytes += len(frame)
            self.frames += 1
        else:
            entry[1] = now
            entry[2] += 1
        if self.times is not None:
            times = self.times.get(seq)
            if times is None:
                times = self.times[seq] = array("d")
            times.append(now)
        if client.count == self.target:
            self.reached += 1
            if self.reached >= self.open:
                self.reached_event.set()

    def closed(self, client: Client, code: int | None) -> None:
        client.closed = code if code is not None else -1
        self.open -= 1
        if client.count >= self.target:
            self.reached -= 1
        # A closed client can no longer reach the target: do not wait for it.
        if self.reached >= self.open:
            self.reached_event.set()

    def latency(self, sent: dict[int, float], bucket_ms: float) -> dict[str, Any]:
        """Histogram of receive time - ``sent[seq]`` over every recorded delivery of those events."""
        histogram: dict[int, int] = {}
        deliveries = 0
        for seq, t_sent in sent.items():
            for received in (self.times or {}).get(seq, ()):
                bucket = math.floor((received - t_sent) * 1000 / bucket_ms)
                histogram[bucket] = histogram.get(bucket, 0) + 1
                deliveries += 1
        return {"histogram": histogram, "deliveries": deliveries, "bucket_ms": bucket_ms}

    def report(self) -> dict[str, Any]:
        open_clients = self.open_clients()
        counts = [c.count for c in self.clients]
        return {
            "events": {str(seq): entry for seq, entry in self.events.items()},
            "clients": len(self.clients),
            "open": len(open_clients),
            "closed_codes": _tally(str(c.closed) for c in self.clients if c.closed is not None),
            "missing": sum(c.missing for c in self.clients),
            "dups": sum(c.dups for c in self.clients),
            "resyncs": sum(c.resyncs for c in self.clients),
            "clients_resynced": sum(1 for c in self.clients if c.resyncs),
            "min_count": min(counts, default=0),
            "max_count": max(counts, default=0),
            "deliveries": sum(counts),
            "mean_frame_bytes": self.frame_bytes / self.frames if self.frames else 0,
        }


def _tally(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


async def _read(recorder: Recorder, client: Client) -> None:
    try:
        async for frame in client.ws:
            recorder.frame(client, frame, time.time())  # type: ignore[arg-type]
    except ConnectionClosed:
        pass
    finally:
        recorder.closed(client, client.ws.close_code)


async def _open_one(args: argparse.Namespace, recorder: Recorder, tasks: set[asyncio.Task[None]]) -> float:
    """Open one socket and wait for ``welcome``; return the handshake time in seconds."""
    started = time.monotonic()
    ws = await connect(
        args.url,
        subprotocols=["rayanpbx", f"bearer.{args.token}"],  # type: ignore[list-item]
        compression=None,
        open_timeout=args.timeout,
        ping_interval=None,
        close_timeout=1,
        max_size=2**20,
    )
    try:
        first = await asyncio.wait_for(ws.recv(), args.timeout)
    except (TimeoutError, ConnectionClosed):
        with contextlib.suppress(Exception):
            await ws.close()
        code = ws.close_code
        raise ConnectionError(f"closed before welcome ({code})") from None
    seq, type_ = parse_head(first)  # type: ignore[arg-type]
    if type_ != "welcome":
        await ws.close()
        raise ConnectionError(f"first frame was {type_ or 'not a frame'}")
    client = Client(ws, seq)
    recorder.add(client)
    task = asyncio.create_task(_read(recorder, client))
    tasks.add(task)
    return time.monotonic() - started


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionError) and str(exc):
        return str(exc)
    return type(exc).__name__


async def connect_all(args: argparse.Namespace, recorder: Recorder, tasks: set[asyncio.Task[None]]) -> dict[str, Any]:
    limit = asyncio.Semaphore(args.concurrency)
    times: list[float] = []
    failures: dict[str, int] = {}

    async def one() -> None:
        async with limit:
            try:
                times.append(await _open_one(args, recorder, tasks))
            except Exception as exc:
                failures[_reason(exc)] = failures.get(_reason(exc), 0) + 1

    t_start = time.time()
    await asyncio.gather(*(one() for _ in range(args.count)))
    t_end = time.time()
    return {
        "ok": len(times),
        "failed": sum(failures.values()),
        "failures": failures,
        "handshake_s": times,
        "t_start": t_start,
        "t_end": t_end,
    }


async def wait(recorder: Recorder, count: int, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    recorder.set_target(count)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(recorder.reached_event.wait(), timeout)
    open_clients = recorder.open_clients()
    return {
        "done": all(c.count >= count for c in open_clients),
        "behind": sum(1 for c in open_clients if c.count < count),
        "waited_s": time.monotonic() - started,
    }


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    recorder = Recorder()
    tasks: set[asyncio.Task[None]] = set()

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        cmd = command["cmd"]
        if cmd == "connect":
            reply(await connect_all(args, recorder, tasks))
        elif cmd == "reset":
            recorder.reset(bool(command.get("all_times")))
            reply({"ok": True, "open": len(recorder.open_clients())})
        elif cmd == "wait":
            reply(await wait(recorder, int(command["count"]), float(command["timeout"])))
        elif cmd == "report":
            reply(recorder.report())
        elif cmd == "latency":
            sent = {int(seq): float(t) for seq, t in command["sent"].items()}
            reply(recorder.latency(sent, float(command.get("bucket_ms", 0.1))))
        elif cmd == "exit":
            break
        else:
            reply({"error": f"unknown command {cmd}"})
    sys.stdout.flush()
    os._exit(0)  # no closing handshakes: the kernel closes every socket at once


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for one handshake and its welcome")
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
