"""The baseline: a bare Redis pub/sub → WebSocket relay with no Django at all.

It stands for the seed's Go relay (and for the "bare websockets relay" a prototype measured
before this project at 9-14 µs of server CPU per delivery): one subscription to a Redis channel, every message
written to every socket with the ``websockets`` library's ``broadcast()``. The token check
is trivial (a ``bearer.`` subprotocol must be offered); it answers ``rayanpbx`` and sends
a ``welcome`` frame carrying the last ``seq`` it relayed, so the bench's clients treat it
exactly like the product.

    python -m bench.baseline_relay --port 8765 --redis redis://127.0.0.1:6379/0 --channel bench:x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import redis.asyncio
from websockets.asyncio.server import ServerConnection, broadcast, serve

CONNECTIONS: set[ServerConnection] = set()
STATE = {"last_seq": 0}


def _welcome(seq: int) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    payload = {"message": "Connected to the baseline relay", "user": {"id": 1, "username": "admin", "is_staff": True}}
    body = json.dumps({"type": "welcome", "payload": payload, "timestamp": stamp}, separators=(",", ":"))
    return f'{{"seq":{seq},{body[1:]}'


async def handler(ws: ServerConnection) -> None:
    offered = ws.request.headers.get("Sec-WebSocket-Protocol", "") if ws.request else ""
    if "bearer." not in offered:
        await ws.close(4001)
        return
    CONNECTIONS.add(ws)
    try:
        await ws.send(_welcome(STATE["last_seq"]))
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


async def relay(url: str, channel: str) -> None:
    client = redis.asyncio.Redis.from_url(url, socket_timeout=None)
    async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(channel)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            frame = message["data"].decode()
            STATE["last_seq"] = int(frame[7 : frame.index(",", 7)])
            broadcast(CONNECTIONS, frame)


async def main_async(args: argparse.Namespace) -> None:
    options: dict[str, Any] = {"subprotocols": ["rayanpbx"], "compression": None, "max_size": 64 * 1024}
    async with serve(handler, "127.0.0.1", args.port, backlog=args.backlog, **options):
        print("ready", flush=True)
        await relay(args.redis, args.channel)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A bare Redis pub/sub to WebSocket relay (no Django).")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--channel", required=True)
    parser.add_argument("--backlog", type=int, default=100)
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
