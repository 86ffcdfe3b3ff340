"""Reaching real services from tests: skip when absent, fail when ``REQUIRE_SERVICES=1``."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES", "") in ("1", "true", "yes")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def missing(service: str, detail: str) -> None:
    """Skip (or fail, under REQUIRE_SERVICES=1) a test whose service cannot be reached."""
    message = f"{service} is not reachable: {detail}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (REQUIRE_SERVICES=1)")
    pytest.skip(message)


def tcp_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_url() -> str:
    """The Redis to test against: REDIS_URL, else the standard local port."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    parsed = urlparse(url)
    if not tcp_reachable(parsed.hostname or "127.0.0.1", parsed.port or 6379):
        missing("Redis", f"nothing listens at {parsed.hostname}:{parsed.port or 6379} (set REDIS_URL)")
    return url
