"""What the database itself keeps for the live layer, by triggers (``live.changelog``),
whoever makes a change (Django, raw SQL, another program):

* ``ChangeLog``: one row per inserted, updated or deleted row of a broadcast table. The
  poller reads it after its position, so its cost follows the changes, not the table sizes.
* ``RowCount``: each broadcast table's row count and enabled count, kept exact by the
  triggers, so ``status_update`` reads two numbers instead of counting the table.
"""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Now


class ChangeLog(models.Model):
    id = models.BigAutoField(primary_key=True)
    table_name = models.CharField(max_length=64)
    row_id = models.BigIntegerField()
    created_at = models.DateTimeField(db_default=Now(), db_index=True)

    class Meta:
        db_table = "live_changelog"

    def __str__(self) -> str:
        return f"{self.table_name}#{self.row_id}"


class RowCount(models.Model):
    table_name = models.CharField(max_length=64, primary_key=True)
    total = models.BigIntegerField(default=0)
    enabled = models.BigIntegerField(default=0)

    class Meta:
        db_table = "live_rowcount"

    def __str__(self) -> str:
        return f"{self.table_name}: {self.enabled}/{self.total}"
