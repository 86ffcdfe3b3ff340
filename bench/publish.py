"""Publish a burst of events back to back, and say when it started and ended.

* ``--mode bus``: through the product's own bus (``live.bus.get_bus().publish``), one call
  (one atomic Lua script in Redis) per event, exactly as a committed change is published.
  Run with the stack's environment (``REDIS_URL``, ``REDIS_KEY_PREFIX``, ...).
* ``--mode raw``: ``PUBLISH`` of ready-made frames of the same shape and size to the
  baseline relay's channel, numbered from ``--start-seq``.

It prepares everything first (Django set-up, connections), prints ``ready``, waits for a
line on stdin, publishes, then prints one JSON line: ``{"t_start", "t_end", "count"}``
(``time.time()``). The bench starts its CPU window between the two.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from live.events import body, number


def event_payload(i: int) -> dict[str, Any]:
    """A payload shaped and sized like a real ``extension.updated`` event."""
    return {"id": 100000 + i, "extension_number": str(50000 + i), "name": f"Burst event {i}", "enabled": True}


def frame(seq: int, i: int, type_: str = "extension.updated") -> str:
    return number(body(type_, event_payload(i)), seq)


def status_frame(seq: int) -> str:
    """A ``status_update`` frame shaped like the product's."""
    payload = {"extensions": 1000, "extensions_total": 1001, "trunks": 0, "trunks_total": 0}
    return number(body("status_update", payload), seq)


def prepare_bus(count: int) -> Callable[[], None]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rayanpbx.settings")
    import django

    django.setup()
    from live.bus import Publication, get_bus

    bus = get_bus()
    pubs = [Publication("extension.updated", event_payload(i), f"bench:{i}", "") for i in range(count)]
    bus.ping()

    def run() -> None:
        for pub in pubs:
            if not bus.publish([pub]):
                raise RuntimeError("the bus did not publish")

    return run


def prepare_raw(url: str, channel: str, start_seq: int, count: int) -> Callable[[], None]:
    import redis

    client = redis.Redis.from_url(url)
    frames = [frame(start_seq + i, i) for i in range(count)]
    client.ping()

    def run() -> None:
        for text in frames:
            client.publish(channel, text)

    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Publish a burst of events.")
    parser.add_argument("--mode", choices=["bus", "raw"], required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--redis", help="raw mode: Redis URL")
    parser.add_argument("--channel", help="raw mode: channel")
    parser.add_argument("--start-seq", type=int, default=1, help="raw mode: seq of the first frame")
    args = parser.parse_args(argv)
    if args.mode == "bus":
        run = prepare_bus(args.count)
    else:
        run = prepare_raw(args.redis, args.channel, args.start_seq, args.count)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    t_start = time.time()
    run()
    t_end = time.time()
    sys.stdout.write(json.dumps({"t_start": t_start, "t_end": t_end, "count": args.count}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
