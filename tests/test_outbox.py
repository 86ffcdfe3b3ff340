"""Events leave on commit, once per object per transaction, never for a rollback."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction

from extensions.models import Extension
from live import bus as bus_module
from live.bus import RedisBus, get_bus
from live.publisher import status_publication
from tests.live_helpers import frames_after, position, types_after
from trunks.models import Trunk

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def counts_in_sync() -> None:
    """The bus remembers the last counts it published; align them with this test's empty tables."""
    get_bus().publish([status_publication()])


def make_extension(number: str = "201", **fields) -> Extension:
    return Extension.objects.create(
        extension_number=number, name=f"Phone {number}", secret="S3cret-long-enough", **fields
    )


def test_create_publishes_created_then_status() -> None:
    start = position()
    ext = make_extension()
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.created", "status_update"]
    assert frames[0]["payload"] == {"id": ext.pk, "extension_number": "201", "name": "Phone 201", "enabled": True}
    assert frames[1]["payload"]["extensions"] == 1 and frames[1]["payload"]["extensions_total"] == 1
    assert frames[1]["seq"] == frames[0]["seq"] + 1
    assert frames[0]["timestamp"].endswith("Z")


def test_five_saves_in_a_transaction_give_one_update() -> None:
    ext = make_extension()
    start = position()
    with transaction.atomic():
        for n in range(5):
            ext.name = f"Renamed {n}"
            ext.save()
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.updated"]  # counts unchanged: no status
    assert frames[0]["payload"]["name"] == "Renamed 4"


def test_created_then_deleted_in_one_transaction_publishes_nothing() -> None:
    start = position()
    with transaction.atomic():
        make_extension("301").delete()
    assert types_after(start) == []


def test_rolled_back_transaction_publishes_nothing() -> None:
    start = position()
    with pytest.raises(RuntimeError), transaction.atomic():
        make_extension("401")
        raise RuntimeError("roll back")
    assert types_after(start) == []
    assert not Extension.objects.exists()


def test_rolled_back_savepoint_drops_only_its_changes() -> None:
    start = position()
    with transaction.atomic():
        kept = make_extension("501")
        with pytest.raises(RuntimeError), transaction.atomic():
            make_extension("502")
            raise RuntimeError("roll back the savepoint")
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.created", "status_update"]
    assert frames[0]["payload"]["id"] == kept.pk


def test_change_in_rolled_back_savepoint_after_commit_hook_keeps_earlier_change() -> None:
    ext = make_extension("601")
    start = position()
    with transaction.atomic():
        ext.name = "kept"
        ext.save()
        with pytest.raises(RuntimeError), transaction.atomic():
            ext.name = "lost"
            ext.save()
            raise RuntimeError("roll back the savepoint")
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.updated"]
    assert frames[0]["payload"]["name"] == "kept"


def test_toggle_publishes_update_and_status() -> None:
    ext = make_extension()
    start = position()
    ext.enabled = False
    ext.save()
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.updated", "status_update"]
    assert frames[1]["payload"]["extensions"] == 0


def test_queryset_update_and_bulk_writes_still_broadcast() -> None:
    a, b = make_extension("701"), make_extension("702")
    start = position()
    Extension.objects.filter(pk__in=[a.pk, b.pk]).update(enabled=False)
    frames = frames_after(start)
    assert sorted(f["payload"]["id"] for f in frames if f["type"] == "extension.updated") == [a.pk, b.pk]
    assert all(f["payload"]["enabled"] is False for f in frames if f["type"] == "extension.updated")
    assert frames[-1]["type"] == "status_update" and frames[-1]["payload"]["extensions"] == 0

    start = position()
    created = Extension.objects.bulk_create(
        [Extension(extension_number=n, name=n, secret="S3cret-long-enough") for n in ("801", "802")]
    )
    assert sorted(f["payload"]["id"] for f in frames_after(start) if f["type"] == "extension.created") == sorted(
        e.pk for e in created
    )

    start = position()
    for e in created:
        e.name = "bulk-renamed"
    Extension.objects.bulk_update(created, ["name"])
    renamed = [f["payload"]["name"] for f in frames_after(start) if f["type"] == "extension.updated"]
    assert renamed == ["bulk-renamed", "bulk-renamed"]


def test_deleted_payload_and_trunk_events() -> None:
    trunk = Trunk.objects.create(name="carrier", host="sip.example.net", secret="S3cret-long-enough")
    pk = trunk.pk
    start = position()
    trunk.delete()
    frames = frames_after(start)
    assert frames[0] == {**frames[0], "type": "trunk.deleted", "payload": {"id": pk, "name": "carrier"}}
    assert frames[1]["type"] == "status_update" and frames[1]["payload"]["trunks_total"] == 0


def test_no_frame_contains_a_secret() -> None:
    start = position()
    ext = make_extension(secret_marker := "901")
    ext.secret = "Another-Secret-Value-99"
    ext.save()
    Trunk.objects.create(name="t1", host="10.0.0.1", username="u", secret="Trunk-Secret-Value-42")
    dumped = str(frames_after(start))
    assert secret_marker in dumped  # the frames are there...
    for secret in ("S3cret-long-enough", "Another-Secret-Value-99", "Trunk-Secret-Value-42", "secret"):
        assert secret not in dumped  # ...without any secret


def test_unreachable_bus_fails_soft_and_logs_once(monkeypatch, caplog) -> None:
    monkeypatch.setattr(bus_module, "_bus", RedisBus("redis://127.0.0.1:1/0", 100))
    caplog.set_level(logging.ERROR, logger="live.bus")
    for n in range(3):
        make_extension(f"95{n}")  # the write itself succeeds
    assert Extension.objects.count() == 3
    errors = [r for r in caplog.records if r.name == "live.bus"]
    assert len(errors) == 1 and "unavailable" in errors[0].getMessage()


def test_changes_after_a_rolled_back_savepoint_still_publish_once() -> None:
    start = position()
    with transaction.atomic():
        first = make_extension("511")
        with pytest.raises(RuntimeError), transaction.atomic():
            make_extension("512")
            raise RuntimeError("roll back the savepoint")
        last = make_extension("513")  # added after Django dropped the savepoint's hooks
    frames = frames_after(start)
    assert [f["type"] for f in frames] == ["extension.created", "extension.created", "status_update"]
    assert [f["payload"]["id"] for f in frames[:2]] == [first.pk, last.pk]
    assert frames[2]["payload"]["extensions_total"] == 2
