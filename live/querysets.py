"""A QuerySet whose bulk writes still broadcast.

``update()``, ``bulk_create()`` and ``bulk_update()`` skip model signals; on a broadcast
model they would change rows silently. This QuerySet records the changed rows in the outbox
just as a ``save()`` would. (``delete()`` already sends signals per row.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction


class LiveQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        from live import broadcasts, outbox

        declaration = broadcasts.declaration_for(self.model)
        if declaration is None:
            return super().update(**kwargs)
        with transaction.atomic(using=self.db):  # one transaction: one batch of events
            pks = list(self.values_list("pk", flat=True))
            count = super().update(**kwargs)
            for instance in self.model._base_manager.using(self.db).filter(pk__in=pks):
                outbox.record(declaration, instance, "updated", using=self.db)
        return count

    def bulk_create(self, objs: Iterable[models.Model], *args: Any, **kwargs: Any) -> list[models.Model]:
        from live import broadcasts, outbox

        with transaction.atomic(using=self.db):
            created = super().bulk_create(objs, *args, **kwargs)
            declaration = broadcasts.declaration_for(self.model)
            if declaration is not None:
                for instance in created:
                    # Backends that cannot return new keys leave pk unset: the poller catches those.
                    if instance.pk is not None:
                        outbox.record(declaration, instance, "created", using=self.db)
        return created

    def bulk_update(self, objs: Iterable[models.Model], fields: Any, *args: Any, **kwargs: Any) -> int:
        from live import broadcasts, outbox

        objs = list(objs)
        with transaction.atomic(using=self.db):
            count = super().bulk_update(objs, fields, *args, **kwargs)
            declaration = broadcasts.declaration_for(self.model)
            if declaration is not None:
                for instance in objs:
                    outbox.record(declaration, instance, "updated", using=self.db)
        return count
