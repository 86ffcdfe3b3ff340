"""Turns writes into audit entries: model signals, the PBX apply, console commands.

Extensions, trunks and users: ``pre_save`` reads the stored row (the "before"), ``post_save``
and ``post_delete`` write one ``AuditEntry`` with the changed fields, in the transaction of
the write itself (a rolled-back write leaves no entry). Secrets are never stored: a changed
SIP secret or password is recorded as ``"changed"``. A save that changes nothing recorded
(only timestamps, the version, or ``last_login``) writes no entry, bar a save of
``last_login`` alone, which is how Django and simplejwt record a sign-in: ``login``.

Console commands (``pbx.models.ConsoleCommand``) are mirrored: one ``console`` entry when the
command is recorded, given the outcome when it ends. An apply is recorded by the view that
requests it (``record_apply``).

After the transaction commits, each new entry is published on the ``audit`` topic (staff).
"""

from __future__ import annotations

import datetime
import decimal
import functools
import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save

from audit.context import Actor, current
from audit.models import AuditEntry

logger = logging.getLogger(__name__)

REDACTED = "changed"
#: Never compared nor stored, on any model.
IGNORED = {"id", "created_at", "updated_at", "version", "last_login", "date_joined"}
#: Stored only as "changed".
SECRETS = {"secret", "password"}
USER_FIELDS = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser", "password")
TOPIC = "audit"
EVENT = "audit.entry"


@functools.cache
def _tracked() -> dict[type[models.Model], tuple[str, tuple[str, ...]]]:
    """Each audited model: its object type and the fields compared."""
    from extensions.models import Extension
    from trunks.models import Trunk

    def fields(model: type[models.Model]) -> tuple[str, ...]:
        return tuple(f.attname for f in model._meta.concrete_fields if f.attname not in IGNORED)

    return {
        Extension: ("extension", fields(Extension)),
        Trunk: ("trunk", fields(Trunk)),
        get_user_model(): ("user", USER_FIELDS),
    }


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a field value."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return str(value)


def _values(instance: models.Model, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(instance, name) for name in names}


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """The changed fields, ``{"field": {"before": old, "after": new}}``; secrets as ``"changed"``.

    A create has no ``before`` (every set field is listed with its ``after``), a delete no
    ``after``.
    """
    names = list((after or before or {}).keys())
    changes: dict[str, Any] = {}
    for name in names:
        old = (before or {}).get(name)
        new = (after or {}).get(name)
        if before is not None and after is not None and old == new:
            continue
        if name in SECRETS:
            if after is not None and (before is not None or new):  # set on create, or changed
                changes[name] = REDACTED
            continue
        change: dict[str, Any] = {}
        if before is not None:
            change["before"] = _plain(old)
        if after is not None:
            change["after"] = _plain(new)
        changes[name] = change
    return changes


def _user_of(actor: Actor) -> tuple[Any, str]:
    user = actor.user
    if user is None or not getattr(user, "pk", None):
        return None, ""
    return user, user.get_username()


def record(
    action: str,
    object_type: str,
    object_id: Any = "",
    label: str = "",
    changes: dict[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    using: str | None = None,
) -> AuditEntry:
    """Write one entry now (in the current transaction) and publish it after commit."""
    actor = actor or current()
    user, username = _user_of(actor)
    entry = AuditEntry(
        user=user,
        username=username,
        address=actor.address,
        via=actor.via,
        action=action,
        object_type=object_type,
        object_id=str(object_id if object_id is not None else "")[:64],
        object_label=str(label)[:200],
        changes=changes or {},
    )
    entry.save(using=using)
    transaction.on_commit(lambda: publish(entry), using=using)
    return entry


def publish(entry: AuditEntry) -> None:
    """Send a committed entry to the ``audit`` topic's subscribers (staff)."""
    from audit.serializers import AuditEntrySerializer
    from live import topics

    try:
        topics.publish_now(TOPIC, EVENT, AuditEntrySerializer(entry).data)
    except Exception:
        # The entry is stored (GET /api/audit shows it); only the live copy is lost, and a
        # channel layer that is down must not turn the committed write into an error.
        logger.warning("audit: could not publish entry %s to the audit topic", entry.pk, exc_info=True)


def record_apply() -> AuditEntry:
    """An apply to the PBX was requested (``POST /api/pbx/apply``)."""
    return record(AuditEntry.Action.APPLY, "pbx", "", "PBX configuration")


# --- signal receivers ---------------------------------------------------------------------


def _before(sender: type[models.Model], instance: models.Model, raw: bool = False, using: str = "default", **_: Any):
    tracked = _tracked().get(sender)
    if tracked is None or raw:
        return
    instance._audit_before = None
    if instance.pk is not None and not instance._state.adding:
        row = sender._base_manager.using(using).filter(pk=instance.pk).values(*tracked[1]).first()
        instance._audit_before = row


def _saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool = False,
    using: str = "default",
    update_fields: Any = None,
    **_: Any,
) -> None:
    tracked = _tracked().get(sender)
    if tracked is None or raw:
        return
    object_type, names = tracked
    if object_type == "user" and not created and update_fields is not None and set(update_fields) == {"last_login"}:
        # Who signs in is that user, whatever the request knew before it.
        signed_in = Actor(via=current().via, user=instance, address=current().address)
        record(AuditEntry.Action.LOGIN, "user", instance.pk, str(instance), actor=signed_in, using=using)
        return
    before = None if created else getattr(instance, "_audit_before", None)
    changes = diff(before, _values(instance, names))
    if not created and not changes:
        return
    action = AuditEntry.Action.CREATE if created or before is None else AuditEntry.Action.UPDATE
    record(action, object_type, instance.pk, str(instance), changes, using=using)


def _deleted(sender: type[models.Model], instance: models.Model, using: str = "default", **_: Any) -> None:
    tracked = _tracked().get(sender)
    if tracked is None:
        return
    object_type, names = tracked
    record(
        AuditEntry.Action.DELETE,
        object_type,
        instance.pk,
        str(instance),
        diff(_values(instance, names), None),
        using=using,
    )


def _console(sender: type[models.Model], instance: Any, created: bool, using: str = "default", **_: Any) -> None:
    details = {"command": {"after": instance.command}, "outcome": {"after": instance.outcome}}
    if instance.confirmed:
        details["confirmed"] = {"after": True}
    if created:
        # The console's own record knows the user and address (it is written by pbx.console).
        via = current().via
        actor = Actor(via=via, user=instance.user, address=instance.address or current().address)
        record(AuditEntry.Action.CONSOLE, "console", instance.pk, instance.command, details, actor=actor, using=using)
        return
    # The command ended: its entry gets the outcome (the one update an entry ever has).
    AuditEntry.objects.using(using).filter(
        action=AuditEntry.Action.CONSOLE, object_type="console", object_id=str(instance.pk)
    ).update(changes=details)


def connect() -> None:
    """Connect the receivers (``AuditConfig.ready``)."""
    from pbx.models import ConsoleCommand

    for model in _tracked():
        uid = model._meta.label
        pre_save.connect(_before, sender=model, dispatch_uid=f"audit-before-{uid}")
        post_save.connect(_saved, sender=model, dispatch_uid=f"audit-saved-{uid}")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"audit-deleted-{uid}")
    post_save.connect(_console, sender=ConsoleCommand, dispatch_uid="audit-console")
