"""Closing the sockets of a user or a session the moment their access ends, on every process.

Nothing in a socket re-checks its credentials once it is open, so the end of access is
pushed to it (and a change of rights, so its topics and its audiences are checked again:
``live.topics``, ``rayanpbx.audiences``; a change of staff status, of the user's own
permissions or groups, or of a group's permissions):
logging out (that session's sockets), a user deactivated, deleted or given a
new password (all of that user's sockets, session and token alike) closes them with 4003
within a second, wherever they are open. The session's own expiry closes its sockets with
4002 (a timer in the consumer, as for a token).

This is what Channels' channel layer is for: a targeted message to the few processes that
hold such a socket. Each server process's hub has one layer channel, and adds it to the
group ``rayanpbx.user.<pk>`` and ``rayanpbx.session.<digest>`` while it holds a socket of
that user or session (a refcount per group: one ``group_add`` per user per process, not one
per socket, and no channel per socket). The signals below ``group_send`` after the
transaction commits; the hub closes its matching sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

logger = logging.getLogger(__name__)

#: The message types the hub's control channel handles (``Hub._on_revoke``, ``Hub._on_rights``).
MESSAGE = "live.revoke"
RIGHTS_MESSAGE = "live.rights"
CLOSE_REVOKED = 4003  # live.auth.CLOSE_FORBIDDEN: log in again
#: Seconds a revocation may wait for the channel layer.
SEND_TIMEOUT = 2.0


def user_group(pk: Any) -> str:
    return f"rayanpbx.user.{pk}"


def session_group(session_key: str) -> str:
    # A digest, not the key: the session key is a credential and group names are stored
    # in Redis in the clear.
    return "rayanpbx.session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def revoke(group: str, reason: str) -> None:
    """Close every socket in ``group``, on every process, once the transaction commits."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            message = {"type": MESSAGE, "group": group, "code": CLOSE_REVOKED, "reason": reason}
            async_to_sync(_group_send)(layer, group, message)
        except Exception:  # the layer (Redis) unreachable: the change itself stands
            # Sessions and tokens are re-checked at every connect and renewal, so an open
            # socket is the only thing left behind; it is logged so an admin can act.
            logger.exception("Could not close the sockets of %s (%s)", group, reason)

    transaction.on_commit(send)


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    # The layer's Redis has no read timeout (its own blocking reads need none): bound this
    # send, so a logout or a deactivation never hangs on a Redis that stopped answering.
    await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT)


# --- the signals -------------------------------------------------------------------------------


def _on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        revoke(session_group(key), "logged out")


def _remember_access(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Before a user is saved: was it active, and with which password (to tell after)?"""
    if instance.pk is None or _only_last_login(kwargs):
        return
    before = (
        sender._base_manager.filter(pk=instance.pk).values("is_active", "password", "is_staff", "is_superuser").first()
    )
    instance._live_access_before = before


def _only_last_login(kwargs: dict[str, Any]) -> bool:
    # Every login saves last_login alone: no access changes there, and no extra query.
    fields = kwargs.get("update_fields")
    return bool(fields) and set(fields) <= {"last_login"}


def _on_user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    before = instance.__dict__.pop("_live_access_before", None)
    if created or before is None or _only_last_login(kwargs):
        return
    if before["is_active"] and not instance.is_active:
        revoke(user_group(instance.pk), "deactivated")
    elif before["password"] != instance.password:
        revoke(user_group(instance.pk), "password changed")
    elif (before["is_staff"], before["is_superuser"]) != (instance.is_staff, instance.is_superuser):
        rights_changed(instance.pk)


def rights_changed(pk: Any) -> None:
    """The user's sockets check their topics again (``live.topics``), once the change commits."""

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(_group_send)(layer, user_group(pk), {"type": RIGHTS_MESSAGE, "group": user_group(pk)})
        except Exception:  # the layer (Redis) unreachable: the change itself stands
            # A socket still holding a topic it lost is re-checked at its next subscribe or
            # reconnect; logged so an admin can act (close the user's sessions).
            logger.exception("Could not tell the sockets of user %s that their rights changed", pk)

    transaction.on_commit(send)


def _on_user_m2m(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
    """A user's permissions or groups changed (from either side of the relation)."""
    if action == "pre_clear" and reverse:  # the users are known only before they are cleared
        instance._live_rights_users = list(instance.user_set.values_list("pk", flat=True))
    if action not in ("post_add", "post_remove", "post_clear"):
        return
    if not reverse:
        rights_changed(instance.pk)
        return
    users = instance.__dict__.pop("_live_rights_users", None) if action == "post_clear" else pk_set
    for pk in users or ():
        rights_changed(pk)


def _on_group_permissions(sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any) -> None:
    """A group's permissions changed: every member's rights did."""
    if action == "pre_clear":  # the members are known only before the permissions are cleared
        groups = list(instance.group_set.values_list("pk", flat=True)) if reverse else [instance.pk]
        instance._live_rights_users = _members(groups)
        return
    if action == "post_clear":
        users = instance.__dict__.pop("_live_rights_users", [])
    elif action in ("post_add", "post_remove"):
        users = _members(list(pk_set or ()) if reverse else [instance.pk])
    else:
        return
    for pk in users:
        rights_changed(pk)


def _members(groups: list[Any]) -> list[Any]:
    return list(get_user_model().objects.filter(groups__in=groups).values_list("pk", flat=True).distinct())


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoke(user_group(instance.pk), "deleted")


def connect_signals() -> None:
    user_model = get_user_model()
    user_logged_out.connect(_on_logout, dispatch_uid="live.revocation.logout")
    pre_save.connect(_remember_access, sender=user_model, dispatch_uid="live.revocation.pre_save")
    post_save.connect(_on_user_saved, sender=user_model, dispatch_uid="live.revocation.post_save")
    post_delete.connect(_on_user_deleted, sender=user_model, dispatch_uid="live.revocation.post_delete")
    from django.contrib.auth.models import Group

    for through, name in ((user_model.user_permissions.through, "perms"), (user_model.groups.through, "groups")):
        m2m_changed.connect(_on_user_m2m, sender=through, dispatch_uid=f"live.revocation.m2m.{name}")
    m2m_changed.connect(
        _on_group_permissions, sender=Group.permissions.through, dispatch_uid="live.revocation.group_perms"
    )
