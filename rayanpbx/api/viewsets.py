"""The base viewset of every PBX object: CRUD plus ``POST {id}/toggle``, with edit conflicts.

Edit conflicts (optimistic locking): a versioned object (``extensions.models.Versioned``) is
sent with a strong ``ETag`` (``"<id>-<version>"``) by ``GET``, ``PUT``, ``PATCH`` and toggle.
A ``PUT``, ``PATCH``, ``DELETE`` or toggle carrying ``If-Match`` is done only if one of its
tags is the object's current one (or ``*``); otherwise it answers **412**
``precondition_failed`` with the current object under ``current`` (and its ETag), so the
client can show what changed. The check and the write happen under one row lock, so two
writers sending the same tag cannot both succeed. Without ``If-Match`` writes work as before.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

PRECONDITION_FAILED = "precondition_failed"


def etag(instance: models.Model) -> str | None:
    """The strong entity tag of a versioned object (``None`` for an unversioned one)."""
    version = getattr(instance, "version", None)
    if not isinstance(version, int):
        return None
    return f'"{instance.pk}-{version}"'


def if_match_tags(header: str) -> list[str]:
    """The entity tags of an ``If-Match`` value, as sent (weak ones keep their ``W/``)."""
    return [part.strip() for part in header.split(",") if part.strip()]


def precondition_holds(header: str | None, instance: models.Model) -> bool:
    """Whether a write carrying ``If-Match: header`` may go ahead (RFC 9110 strong comparison).

    No header: yes. ``*``: yes (the object exists). Otherwise one of the listed tags must be
    the current strong ETag; a weak tag (``W/"..."``) or garbage never matches.
    """
    if header is None:
        return True
    tags = if_match_tags(header)
    if "*" in tags:
        return True
    current = etag(instance)
    return current is not None and current in tags


class PbxObjectViewSet(viewsets.ModelViewSet):
    """List, retrieve, create, update (PUT/PATCH), delete, and toggle ``enabled``."""

    _locked: models.Model | None = None

    def get_object(self) -> Any:
        # Inside a write the row is read once, locked, and checked against If-Match
        # (``_write``); DRF's own update/destroy then get that same instance.
        if self._locked is not None:
            return self._locked
        return super().get_object()

    def _lock(self) -> models.Model:
        self.queryset = self.get_queryset().select_for_update()
        self._locked = super().get_object()
        return self._locked

    def _stale(self, request: Request, instance: models.Model) -> Response | None:
        """The 412 for a write whose ``If-Match`` is not the current version, else ``None``."""
        if precondition_holds(request.headers.get("If-Match"), instance):
            return None
        current = etag(instance)
        body = {
            "error": PRECONDITION_FAILED,
            "detail": "Someone else changed this object since you loaded it "
            f"(its ETag is now {current}). `current` holds its present values.",
            "current": self.get_serializer(instance).data,
        }
        response = Response(body, status=412)
        if current:
            response["ETag"] = current
        return response

    def _tagged(self, response: Response, instance: models.Model) -> Response:
        tag = etag(instance)
        if tag and response.status_code < 300:
            response["ETag"] = tag
        return response

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().retrieve(request, *args, **kwargs)
        return self._tagged(response, self.get_object())

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            instance = self._lock()
            stale = self._stale(request, instance)
            if stale is not None:
                return stale
            response = super().update(request, *args, **kwargs)
        return self._tagged(response, instance)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        with transaction.atomic():
            instance = self._lock()
            stale = self._stale(request, instance)
            if stale is not None:
                return stale
            return super().destroy(request, *args, **kwargs)

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def toggle(self, request: Request, pk: str | None = None) -> Response:
        """Flip ``enabled`` and return the object."""
        with transaction.atomic():
            # One read, locking the row: concurrent toggles flip it in turn.
            instance = self._lock()
            stale = self._stale(request, instance)
            if stale is not None:
                return stale
            instance.enabled = not instance.enabled
            instance.save(update_fields=["enabled", "updated_at"])
        return self._tagged(Response(self.get_serializer(instance).data), instance)
