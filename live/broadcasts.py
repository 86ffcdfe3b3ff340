"""Declarations of which models are broadcast, and how.

A domain app registers its model once (see ``extensions/broadcasts.py``); this module
connects the signals that feed the outbox. Adding a third broadcast model is one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_save


@dataclass(frozen=True)
class Broadcast:
    """How one model appears on the live stream."""

    model: type[models.Model]
    #: Event type prefix: ``extension`` gives ``extension.created`` and so on.
    topic: str
    #: Payload fields of ``created``/``updated`` events (never a secret).
    fields: tuple[str, ...]
    #: Payload fields of ``deleted`` events.
    deleted_fields: tuple[str, ...]
    #: Key of this model's enabled count in ``status_update``.
    count_as: str
    #: Fields left out of the change fingerprint the poller compares (secrets, timestamps).
    private_fields: tuple[str, ...] = ("secret",)

    def payload(self, instance: models.Model) -> dict[str, Any]:
        return {name: getattr(instance, name) for name in self.fields}

    def deleted_payload(self, instance: models.Model) -> dict[str, Any]:
        return {name: getattr(instance, name) for name in self.deleted_fields}

    def fingerprint(self, instance: models.Model) -> dict[str, Any]:
        """Every public column: what the poller compares to notice an outside change."""
        skip = set(self.private_fields) | {"created_at", "updated_at"}
        return {
            f.attname: f.value_to_string(instance) for f in self.model._meta.concrete_fields if f.attname not in skip
        }


_registry: dict[type[models.Model], Broadcast] = {}


def register(model: type[models.Model], **options: Any) -> Broadcast:
    """Broadcast ``model``'s creations, updates and deletions. See ``Broadcast``."""
    declaration = Broadcast(model=model, **options)
    forbidden = set(declaration.private_fields) & (set(declaration.fields) | set(declaration.deleted_fields))
    if forbidden:
        raise ValueError(f"{model.__name__}: private fields {sorted(forbidden)} cannot be in a payload.")
    _registry[model] = declaration
    post_save.connect(_on_save, sender=model, dispatch_uid=f"live-save-{model._meta.label}")
    post_delete.connect(_on_delete, sender=model, dispatch_uid=f"live-delete-{model._meta.label}")
    return declaration


def declaration_for(model: type[models.Model]) -> Broadcast | None:
    return _registry.get(model)


def all_declarations() -> list[Broadcast]:
    return list(_registry.values())


def _on_save(sender: type[models.Model], instance: models.Model, created: bool, using: str, **kwargs: Any) -> None:
    from live import outbox

    outbox.record(_registry[sender], instance, "created" if created else "updated", using=using)


def _on_delete(sender: type[models.Model], instance: models.Model, using: str, **kwargs: Any) -> None:
    from live import outbox

    outbox.record(_registry[sender], instance, "deleted", using=using)
