"""Background-task supervision: a failing task is restarted with backoff, logged once per
failure streak, and named by /health (503) while it is down."""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.test import Client

from rayanpbx import background


def test_backoff_doubles_from_half_a_second_to_a_cap_with_jitter() -> None:
    low = [background.backoff(n, rand=lambda: 0.0) for n in range(1, 10)]
    high = [background.backoff(n, rand=lambda: 1.0) for n in range(1, 10)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert low == [h / 2 for h in high]


async def test_a_failing_task_is_restarted_logged_once_and_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(background, "backoff", lambda attempt, rand=None: 0.01)
    runs = 0
    recovered = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise ConnectionError(f"boom {runs}")
        recovered.set()
        await asyncio.Event().wait()

    task = background.Task("flaky", "chan", flaky)
    caplog.set_level(logging.INFO, logger="rayanpbx.background")
    runner = asyncio.ensure_future(background.supervise(task))
    await asyncio.wait_for(recovered.wait(), 5)
    assert runs == 4 and task.state == "running" and task.restarts == 3
    assert task.error == "ConnectionError: boom 3"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "a failure streak is logged once with its traceback"
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert task.state == "stopped"


async def test_a_task_that_returns_is_restarted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "backoff", lambda attempt, rand=None: 0.01)
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    runner = asyncio.ensure_future(background.supervise(background.Task("quits", "chan", quits)))
    await asyncio.sleep(0.2)
    runner.cancel()
    assert runs > 3


@pytest.mark.django_db
def test_health_is_503_naming_a_task_that_is_restarting(monkeypatch: pytest.MonkeyPatch) -> None:
    task = background.Task("pbx-link", "rayanpbx-pbx", lambda: None, state="restarting", error="OSError: x")
    monkeypatch.setattr(background, "_tasks", {"pbx-link": task})
    response = Client().get("/health")
    assert response.status_code == 503
    body = response.json()
    assert "pbx-link" in body["reason"] and body["tasks"]["pbx-link"]["error"] == "OSError: x"
    task.state = "running"
    assert Client().get("/health").status_code == 200
