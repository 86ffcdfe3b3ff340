"""The one publisher: turns committed changes into numbered stream events.

Model changes are published unconditionally and record the object's fingerprint in the
bus's state table; the poller publishes only where the database and that table disagree,
so an object changed through Django is never announced twice, even by two pollers.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Q

from live import broadcasts
from live.bus import Publication, get_bus
from live.events import STATUS_UPDATE

if TYPE_CHECKING:
    from live.outbox import Change

STATUS_KEY = "status"


def now_version() -> int:
    """A version stamp in microseconds: later reads of the database get larger stamps."""
    return time.time_ns() // 1000


def state_value(version: int, fingerprint: dict[str, Any], deleted_payload: dict[str, Any]) -> str:
    """``version|digest|deleted-payload``: what the bus remembers of one published object."""
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    return f"{version}|{digest}|{json.dumps(deleted_payload, default=str)}"


def state_key(topic: str, pk: Any) -> str:
    return f"{topic}:{pk}"


def change_publication(change: Change, *, mode: str = "always", expect: str = "") -> Publication:
    topic = change.declaration.topic
    if change.op == "deleted":
        return Publication(
            f"{topic}.deleted", change.deleted_payload, state_key(topic, change.pk), "", mode=mode, expect=expect
        )
    state = state_value(now_version(), change.fingerprint or {}, change.deleted_payload)
    return Publication(f"{topic}.{change.op}", change.payload, state_key(topic, change.pk), state, mode=mode)


#: Other apps' counts in ``status_update`` (the PBX link's ``registered`` and ``active_calls``):
#: functions returning ``{name: int}``, registered with ``register_counts``.
_count_providers: list[Callable[[], dict[str, int]]] = []


def register_counts(provider: Callable[[], dict[str, int]]) -> None:
    """Add ``provider``'s counts to every ``status_update`` (it must be cheap and never raise)."""
    _count_providers.append(provider)


def current_counts() -> dict[str, int]:
    """Enabled and total rows of every broadcast model, plus registered counts: the
    ``status_update`` payload."""
    counts: dict[str, int] = {}
    for provider in _count_providers:
        counts.update(provider())
    for declaration in broadcasts.all_declarations():
        row = declaration.model._base_manager.aggregate(enabled=Count("pk", filter=Q(enabled=True)), total=Count("pk"))
        counts[declaration.count_as] = row["enabled"]
        counts[f"{declaration.count_as}_total"] = row["total"]
    return counts


def status_publication() -> Publication:
    counts = current_counts()
    state = f"{now_version()}|{json.dumps(counts, sort_keys=True)}|{{}}"
    return Publication(STATUS_UPDATE, counts, STATUS_KEY, state, mode="changed")


def publish_changes(changes: list[Change]) -> None:
    """Publish one committed transaction's net changes, then the counts if they moved.

    Two publications: the changes leave before the counts are read, so clients do not
    wait for the count queries to see what changed."""
    bus = get_bus()
    bus.publish([change_publication(change) for change in changes])
    bus.publish([status_publication()])


def publish_event(type_: str, payload: dict[str, Any]) -> list[int]:
    """Publish one stream event that is not a model change (``pbx.link``, ``pbx.apply``...).

    Sync (the bus is); call it from async code through ``sync_to_async``."""
    return publish_events([(type_, payload)])


def publish_events(events: list[tuple[str, dict[str, Any]]]) -> list[int]:
    """Publish several such events in order, in one bus call; return their seqs."""
    return get_bus().publish([Publication(t, p, f"event:{t}", "", mode="always") for t, p in events])
