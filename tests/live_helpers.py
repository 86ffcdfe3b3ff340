"""Reading the live stream from tests: the frames the bus published after a position."""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync

from live.bus import get_bus


def position() -> int:
    return async_to_sync(get_bus().position)()


def frames_after(seq: int) -> list[dict[str, Any]]:
    """Every stream frame published after ``seq``, decoded, in order."""
    _, frames = async_to_sync(get_bus().history_after)(seq)
    assert frames is not None, "history does not reach back that far"
    return [json.loads(frame) for frame in frames]


def types_after(seq: int) -> list[str]:
    return [frame["type"] for frame in frames_after(seq)]
