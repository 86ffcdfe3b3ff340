"""Live PBX state end to end: a real Asterisk 22 and baresip phones, RayanPBX's link, and
what every browser receives: registrations, calls, failed SIP logins, the counts, and the
REST snapshots that cannot race the stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.asterisk import Asterisk, Phone
from tests.pbx_helpers import Stream, get, is_apply, wait_until
from tests.stack import Stack

pytestmark = pytest.mark.services


def extension(site: Stack, stream: Stream, number: str, **fields: Any) -> dict[str, Any]:
    mark = stream.mark()
    body = {"extension_number": number, "name": f"Phone {number}", **fields}
    code, body = site.request(site.server, "POST", "/api/extensions", body, site.admin)
    assert code == 201, body
    stream.wait(lambda f: is_apply("applied")(f) or is_apply("failed")(f), after=mark)
    return body


def registration(number: str, state: str):
    return lambda f: (
        f["type"] == "extension.registration"
        and f["payload"]["extension_number"] == number
        and f["payload"]["state"] == state
    )


def test_a_phone_registering_and_leaving_is_seen_live_with_its_details(
    site: Stack, pbx: Asterisk, stream: Stream, tmp_path: Path
) -> None:
    created = extension(site, stream, "5101")
    mark = stream.mark()
    phone = Phone(tmp_path / "p", "5101", created["secret"], pbx)
    started = time.monotonic()
    phone.start()
    try:
        registered = stream.wait(registration("5101", "registered"), after=mark, timeout=5)
        assert time.monotonic() - started < 2.0
        # The details events lack (user agent, address) arrive within a second.
        detailed = stream.wait(
            lambda f: registration("5101", "registered")(f) and f["payload"]["contacts"][0]["user_agent"],
            after=mark, timeout=3,
        )  # fmt: skip
        contact = detailed["payload"]["contacts"][0]
        assert contact["ip"] == "127.0.0.1" and contact["port"] == phone.sip_port
        assert "baresip" in contact["user_agent"].lower()
        assert registered["payload"]["contacts"][0]["uri"].endswith(f"@127.0.0.1:{phone.sip_port}")
        counted = stream.wait(lambda f: f["type"] == "status_update" and f["payload"].get("registered", 0) >= 1,
                              after=mark)  # fmt: skip
        assert "active_calls" in counted["payload"]
        snapshot = get(site, "/api/pbx/registrations")
        assert snapshot["seq"] >= detailed["seq"]
        assert [r["state"] for r in snapshot["registrations"] if r["extension_number"] == "5101"] == ["registered"]
    finally:
        mark = stream.mark()
        phone.stop()
    stream.wait(registration("5101", "unregistered"), after=mark, timeout=5)
    assert all(f["type"] != "ContactStatus" for f in stream.frames)  # raw AMI never reaches a browser


def test_a_wrong_password_gives_one_aggregated_event(
    site: Stack, pbx: Asterisk, stream: Stream, tmp_path: Path
) -> None:
    extension(site, stream, "5201")
    mark = stream.mark()
    intruder = Phone(tmp_path / "bad", "5201", "Wrong-password-000", pbx)
    intruder.start()
    try:
        failure = stream.wait(lambda f: f["type"] == "security.sip_auth_failed", after=mark, timeout=15)
    finally:
        intruder.stop()
    payload = failure["payload"]
    assert payload["username"] == "5201" and payload["remote_ip"] == "127.0.0.1"
    assert payload["attempts"] >= 2  # baresip retries at once: many attempts, one event
    assert len(stream.of("security.sip_auth_failed", after=mark)) == 1
    assert any(a["username"] == "5201" for a in get(site, "/api/pbx/security")["auth_failures"])


def test_a_call_is_started_answered_and_ended_with_one_id(
    site: Stack, pbx: Asterisk, stream: Stream, tmp_path: Path
) -> None:
    a_ext, b_ext = extension(site, stream, "5301"), extension(site, stream, "5302")
    a = Phone(tmp_path / "a", "5301", a_ext["secret"], pbx)
    b = Phone(tmp_path / "b", "5302", b_ext["secret"], pbx, auto_answer=True)
    a.start()
    b.start()
    try:
        assert a.wait_registered(5) and b.wait_registered(5)
        mark = stream.mark()
        a.dial("5302")
        a.wait_event("CALL_ESTABLISHED", 10)
        started = stream.wait(lambda f: f["type"] == "call.started", after=mark)
        call_id = started["payload"]["id"]
        assert started["payload"]["from"] == "5301" and started["payload"]["to"] == "5302"
        assert started["payload"]["direction"] == "internal" and started["payload"]["trunk"] is None
        stream.wait(lambda f: f["type"] == "call.answered" and f["payload"]["id"] == call_id, after=mark)
        active = get(site, "/api/pbx/calls")["calls"]["active"]
        assert [c["id"] for c in active] == [call_id]  # a page opened mid-call shows it at once
        time.sleep(1.0)
        a.hangup()
        ended = stream.wait(lambda f: f["type"] == "call.ended" and f["payload"]["id"] == call_id, after=mark)
        assert ended["payload"]["cause"] == 16
        assert (
            0.5 <= ended["payload"]["duration_s"] < 15
            and 0.5 <= ended["payload"]["talk_s"] <= ended["payload"]["duration_s"]
        )
        assert len(stream.of("call.started", after=mark)) == 1
        calls = get(site, "/api/pbx/calls")["calls"]
        assert calls["active"] == [] and calls["ended"][0]["id"] == call_id
    finally:
        a.stop()
        b.stop()


AUDIENCE_PASSWORD = "audience-password-1234"


def audience_stream(site: Stack, username: str, *, calls: bool) -> Stream:
    """The live stream of a non-staff user (with ``pbx.view_calls`` when ``calls``)."""
    site.shell(
        "from django.contrib.auth import get_user_model\nfrom django.contrib.auth.models import Permission\n"
        f"user = get_user_model().objects.create_user({username!r}, password={AUDIENCE_PASSWORD!r})\n"
        + ("user.user_permissions.add(Permission.objects.get(content_type__app_label='pbx', codename='view_calls'))\n"
           if calls else "")
    )  # fmt: skip
    stream = Stream(site.server, site.login(site.server, username, AUDIENCE_PASSWORD))
    stream.wait(lambda f: f["type"] == "welcome")
    return stream


def test_a_read_only_user_gets_every_seq_but_no_call_or_failed_login(
    site: Stack, pbx: Asterisk, stream: Stream, tmp_path: Path
) -> None:
    """rayanpbx.audiences with a real call and a real wrong password: the staff stream has
    the details; a reader has ``restricted`` frames at the very same seqs; an operator
    (``pbx.view_calls``) has the calls but not the failed logins."""
    reader, operator = audience_stream(site, "reader", calls=False), audience_stream(site, "operator", calls=True)
    try:
        a_ext, b_ext = extension(site, stream, "5601"), extension(site, stream, "5602")
        a = Phone(tmp_path / "a", "5601", a_ext["secret"], pbx)
        b = Phone(tmp_path / "b", "5602", b_ext["secret"], pbx, auto_answer=True)
        intruder = Phone(tmp_path / "bad", "5602", "Wrong-password-000", pbx)
        a.start()
        b.start()
        try:
            assert a.wait_registered(5) and b.wait_registered(5)
            mark = stream.mark()
            a.dial("5602")
            a.wait_event("CALL_ESTABLISHED", 10)
            started = stream.wait(lambda f: f["type"] == "call.started", after=mark)
            a.hangup()
            ended = stream.wait(lambda f: f["type"] == "call.ended", after=mark)
            intruder.start()
            failure = stream.wait(lambda f: f["type"] == "security.sip_auth_failed", after=mark, timeout=15)
        finally:
            for phone in (a, b, intruder):
                phone.stop()
        last = max(ended["seq"], failure["seq"])
        for other in (reader, operator):
            other.wait(lambda f, last=last: f.get("seq", 0) >= last and f["type"] != "welcome")
        by_seq = {name: {f["seq"]: {k: v for k, v in f.items() if k != "_received"} for f in s.frames
                         if f["type"] != "welcome"} for name, s in
                  (("staff", stream), ("reader", reader), ("operator", operator))}  # fmt: skip
        window = [seq for seq in sorted(by_seq["staff"]) if started["seq"] <= seq <= last]
        for name in ("reader", "operator"):
            assert [seq for seq in sorted(by_seq[name]) if started["seq"] <= seq <= last] == window, name
        for seq in window:
            whole = by_seq["staff"][seq]
            if whole["type"].startswith("call."):
                assert by_seq["operator"][seq] == whole
                assert (by_seq["reader"][seq]["type"], by_seq["reader"][seq]["payload"]) == ("restricted", {})
            elif whole["type"].startswith("security."):
                for name in ("reader", "operator"):
                    assert (by_seq[name][seq]["type"], by_seq[name][seq]["payload"]) == ("restricted", {}), name
            elif whole["type"] != "pbx.apply":
                assert by_seq["reader"][seq] == by_seq["operator"][seq] == whole
        reader_token = site.login(site.server, "reader", AUDIENCE_PASSWORD)
        assert site.request(site.server, "GET", "/api/pbx/calls", token=reader_token)[0] == 403
        assert site.request(site.server, "GET", "/api/pbx/security", token=reader_token)[0] == 403
        operator_token = site.login(site.server, "operator", AUDIENCE_PASSWORD)
        code, calls = site.request(site.server, "GET", "/api/pbx/calls", token=operator_token)
        assert code == 200 and calls["calls"]["ended"][0]["id"] == started["payload"]["id"]
    finally:
        reader.close()
        operator.close()


@pytest.mark.parametrize("how", ["core restart now", "killed"])
def test_asterisk_restarted_during_a_call_leaves_no_ghost_and_registrations_come_back(
    site: Stack, pbx: Asterisk, stream: Stream, tmp_path: Path, how: str
) -> None:
    n = "55" if how == "killed" else "54"
    a_ext, b_ext = extension(site, stream, f"{n}01"), extension(site, stream, f"{n}02")
    a = Phone(tmp_path / "a", f"{n}01", a_ext["secret"], pbx)
    b = Phone(tmp_path / "b", f"{n}02", b_ext["secret"], pbx, auto_answer=True)
    a.start()
    b.start()
    try:
        assert a.wait_registered(5) and b.wait_registered(5)
        mark = stream.mark()
        a.dial(f"{n}02")
        a.wait_event("CALL_ESTABLISHED", 10)
        call_id = stream.wait(lambda f: f["type"] == "call.answered", after=mark)["payload"]["id"]
        mark = stream.mark()
        if how == "killed":  # no Hangup events at all: only the snapshot after the restart can tell
            pbx.process.kill()
            pbx.process.wait(10)
            pbx.process = None
            pbx.start()
        else:  # Asterisk hangs its channels up itself before it goes
            pbx.cli("core restart now")
        ended = stream.wait(
            lambda f: f["type"] == "call.ended" and f["payload"]["id"] == call_id, after=mark, timeout=20
        )
        if how == "killed":
            assert ended["payload"]["cause"] == "pbx restarted"
        stream.wait(lambda f: f["type"] == "pbx.link" and f["payload"]["state"] == "connected", after=mark, timeout=20)
        wait_until(lambda: get(site, "/api/pbx/calls")["calls"]["active"] == [], timeout=10, what="no ghost call")

        def states() -> dict[str, str]:
            return {r["extension_number"]: r["state"] for r in get(site, "/api/pbx/registrations")["registrations"]}

        if how == "killed":
            # A killed Asterisk lost its contacts: they are back when the phones register again
            # (here: restarted, rather than waiting a minute for their next REGISTER).
            for phone in (a, b):
                phone.stop()
                phone.start()
        wait_until(lambda: states().get(f"{n}01") == states().get(f"{n}02") == "registered",
                   timeout=10, what="both registered after the restart")  # fmt: skip
    finally:
        a.stop()
        b.stop()
