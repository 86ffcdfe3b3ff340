"""``status_update`` counts come from ``live_rowcount``, kept exact by the database's
triggers whoever writes (Django, raw SQL), so a write never counts the table."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from extensions.models import Extension
from live.models import RowCount
from live.publisher import current_counts, recount

pytestmark = pytest.mark.django_db(transaction=True)


def raw(sql: str, *params: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def exact() -> dict[str, int]:
    return {"extensions": Extension.objects.filter(enabled=True).count(), "extensions_total": Extension.objects.count()}


def extension_counts() -> dict[str, int]:
    counts = current_counts()
    return {"extensions": counts["extensions"], "extensions_total": counts["extensions_total"]}


def test_counts_follow_django_and_raw_sql_writes_without_counting_the_table() -> None:
    recount()
    Extension.objects.bulk_create(
        [Extension(extension_number=str(50 + i), name=f"Desk {i}", secret="Strong-secret-123") for i in range(30)]
    )
    Extension.objects.filter(extension_number__in=["50", "51", "52"]).update(enabled=False)
    raw("UPDATE extensions_extension SET enabled = 1 WHERE extension_number = '50'")
    raw("UPDATE extensions_extension SET name = 'no count change' WHERE extension_number = '51'")
    raw("DELETE FROM extensions_extension WHERE extension_number IN ('52', '53')")
    Extension.objects.get(extension_number="54").delete()
    with CaptureQueriesContext(connection) as queries:
        counts = extension_counts()
    assert counts == exact() == {"extensions": 26, "extensions_total": 27}
    assert len(queries) == 1 and "COUNT(" not in queries[0]["sql"]


def test_a_lost_count_row_is_counted_again_and_recount_mends_drift() -> None:
    Extension.objects.create(extension_number="70", name="Desk", secret="Strong-secret-123")
    RowCount.objects.all().delete()  # as a TRUNCATE of live_rowcount would
    assert extension_counts() == exact()
    RowCount.objects.filter(table_name="extensions_extension").update(total=999, enabled=-5)  # drift
    recount()
    assert extension_counts() == exact()
