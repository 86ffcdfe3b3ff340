"""The Redis bus's small guarantees: one hash slot for its keys, a socket count without a
key scan, and "recovered" said only when publishing and subscribing both work again."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from redis.crc import key_slot

from live.bus import CLIENTS_TTL, RedisBus, _FailureLog
from tests.services import redis_url

pytestmark = pytest.mark.services


@pytest.fixture
def bus() -> RedisBus:
    bus = RedisBus(redis_url(), 100, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    yield bus
    bus._sync.delete(bus.seq_key, bus.history_key, bus.state_key, bus.clients_key)


def hash_tag(key: str) -> str:
    return key[key.index("{") + 1 : key.index("}")]


def test_every_key_of_the_bus_shares_one_hash_tag(bus: RedisBus) -> None:
    keys = [bus.seq_key, bus.history_key, bus.state_key, bus.clients_key, bus.channel]
    assert len({hash_tag(key) for key in keys}) == 1
    # The slot Redis Cluster computes (CRC16 of the tag), as redis-py's cluster client does.
    assert len({key_slot(key.encode()) for key in keys}) == 1


async def test_the_socket_count_reads_one_hash_and_drops_processes_gone_quiet(bus: RedisBus) -> None:
    await bus.report_clients(3)
    bus._sync.hset(bus.clients_key, "gone-host:1:abc", f"7|{time.time() - CLIENTS_TTL - 1:.3f}")
    bus._sync.hset(bus.clients_key, "other-host:2:def", f"4|{time.time():.3f}")
    assert bus.client_count() == 7
    assert b"gone-host:1:abc" not in bus._sync.hkeys(bus.clients_key)


def test_recovered_is_logged_only_when_both_paths_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="live.bus")
    log = _FailureLog()
    log.failed("publish", ConnectionError("down"))
    log.failed("subscribe", ConnectionError("down"))
    log.ok("publish")
    assert "recovered" not in caplog.text
    log.ok("subscribe")
    assert caplog.text.count("recovered") == 1
    assert caplog.text.count("unavailable") == 1
