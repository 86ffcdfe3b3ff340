"""The per-transaction outbox: changes are queued inside a transaction and leave on commit.

Each recorded change registers a small hook with ``transaction.on_commit``. Django drops
the hooks of a rolled-back transaction or savepoint, so a hook that runs proves its change
committed. The outbox keeps only a weak reference to each hook: when the last hook still
alive runs, every committed change of the transaction is merged per object (five saves
give one ``updated``; created then deleted gives nothing) and handed to the publisher in
one batch, followed by a ``status_update`` when the counts moved.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction

from live.broadcasts import Broadcast


@dataclass
class Change:
    declaration: Broadcast
    pk: Any
    op: str  # "created" | "updated" | "deleted"
    payload: dict[str, Any]
    fingerprint: dict[str, Any] | None
    deleted_payload: dict[str, Any]


class _CommitHook:
    """Called by Django on commit; weak-referenceable so the batch can see it was dropped."""

    __slots__ = ("__weakref__", "batch", "change", "index")

    def __init__(self, batch: _Batch, change: Change, index: int) -> None:
        self.batch = batch
        self.change = change
        self.index = index  # its place in batch.hooks

    def __call__(self) -> None:
        self.batch.committed(self)


class _Batch:
    """The changes recorded on one database connection (so: one thread, one alias)."""

    def __init__(self) -> None:
        self.hooks: list[weakref.ref[_CommitHook]] = []
        self.committed_changes: list[Change] = []

    def add(self, change: Change, using: str) -> None:
        if self.hooks and self.hooks[-1]() is None:
            # A rollback dropped hooks: forget them (only then, so a bulk write stays linear).
            self.hooks = [ref for ref in self.hooks if ref() is not None]
            for index, ref in enumerate(self.hooks):
                ref().index = index
        hook = _CommitHook(self, change, len(self.hooks))
        self.hooks.append(weakref.ref(hook))
        transaction.on_commit(hook, using=using)

    def committed(self, hook: _CommitHook) -> None:
        self.committed_changes.append(hook.change)
        hooks = self.hooks
        # Hooks run in order: normally the very next one is alive and this stops at once.
        if any(hooks[i]() is not None for i in range(hook.index + 1, len(hooks))):
            return  # a later hook of this transaction will run: let it flush
        changes, self.committed_changes, self.hooks = self.committed_changes, [], []
        flush(changes)


_local = threading.local()


def _batch(using: str) -> _Batch:
    batches = _local.__dict__.setdefault("batches", {})
    return batches.setdefault(using, _Batch())


def record(declaration: Broadcast, instance: models.Model, op: str, *, using: str) -> None:
    """Queue one change of a broadcast model; it is published once its transaction commits."""
    change = Change(
        declaration=declaration,
        pk=instance.pk,
        op=op,
        payload=declaration.payload(instance),
        fingerprint=None if op == "deleted" else declaration.fingerprint(instance),
        deleted_payload=declaration.deleted_payload(instance),
    )
    _batch(using).add(change, using)


def merge(changes: list[Change]) -> list[Change]:
    """One change per object, in order of first appearance, with the net operation."""
    merged: dict[tuple[str, Any], Change] = {}
    for change in changes:
        key = (change.declaration.topic, change.pk)
        previous = merged.get(key)
        if previous is None:
            merged[key] = change
            continue
        if previous.op == "created" and change.op == "deleted":
            del merged[key]  # never existed as far as anyone outside the transaction knows
        elif previous.op == "created":
            change.op = "created"
            merged[key] = change
        elif previous.op == "deleted" and change.op == "created":
            change.op = "updated"  # same key deleted and re-created: net effect is an update
            merged[key] = change
        else:
            merged[key] = change
    return list(merged.values())


def flush(changes: list[Change]) -> None:
    from live import publisher

    net = merge(changes)
    if net:
        publisher.publish_changes(net)
