"""The base viewset of every PBX object: CRUD plus ``POST {id}/toggle``."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response


class PbxObjectViewSet(viewsets.ModelViewSet):
    """List, retrieve, create, update (PUT/PATCH), delete, and toggle ``enabled``."""

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def toggle(self, request: Request, pk: str | None = None) -> Response:
        """Flip ``enabled`` and return the object."""
        with transaction.atomic():
            # One read, locking the row: concurrent toggles flip it in turn.
            self.queryset = self.get_queryset().select_for_update()
            instance = self.get_object()
            instance.enabled = not instance.enabled
            instance.save(update_fields=["enabled", "updated_at"])
        return Response(self.get_serializer(instance).data)
