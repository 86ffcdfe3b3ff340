"""``pbx.config`` against a real Asterisk 22: what it generates is what Asterisk loads.

Two private instances: ``asterisk`` (A, the RayanPBX site) and ``provider`` (B, a second
PBX that A's trunks register to). baresip phones register and call through the generated
dialplan. Values a user may type are written and read back from Asterisk as plain text; the
rows Asterisk rejects are reported here with the exact log lines (see docs/asterisk-config.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extensions.models import Extension
from pbx import config
from tests.asterisk import PROVIDER_SECRET, Asterisk, Phone, provider_account, require_asterisk, wait_until
from trunks.models import Trunk


def extension(pk: int, number: str, **fields: object) -> Extension:
    values = {"name": f"Phone {number}", "secret": f"Secret-{number}-abcdef", **fields}
    return Extension(pk=pk, extension_number=number, **values)


def trunk(pk: int, name: str, provider: Asterisk, **fields: object) -> Trunk:
    values = {"host": "127.0.0.1", "port": provider.sip_port, "username": f"{name}-acct", "secret": PROVIDER_SECRET}
    return Trunk(pk=pk, name=name, **{**values, **fields})


def apply(pbx: Asterisk, generated: config.Generated) -> list[str]:
    """Write the files and reload both modules, as the RayanPBX link does."""
    changed = config.write(generated, pbx.etc_dir)
    pbx.cli("module reload res_pjsip.so")
    pbx.cli("dialplan reload")
    return changed


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    """B: answers every call from A's trunks and keeps it up (Answer, then Echo)."""
    require_asterisk()
    instance = Asterisk(
        tmp_path_factory.mktemp("provider"),
        name="provider",
        extra_pjsip=provider_account("acme") + provider_account("backup"),
        extra_dialplan="[from-rayanpbx]\nexten => _X.,1,Answer()\n same => n,Echo()\n",
    )
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


PhoneFactory = Callable[..., Phone]


# --- registration and calls ----------------------------------------------------------------


def test_phone_registers_and_calls_another_through_the_dialplan(
    asterisk: Asterisk, phone_factory: PhoneFactory
) -> None:
    exts = [extension(1, "101"), extension(2, "102")]
    apply(asterisk, config.render(exts, [], transports={}))
    assert {"101", "102"} <= asterisk.endpoints()

    caller = phone_factory("101", exts[0].secret, asterisk)
    callee = phone_factory("102", exts[1].secret, asterisk, auto_answer=True)
    assert caller.wait_registered(5) and callee.wait_registered(5)

    caller.dial("102")
    caller.wait_event("CALL_ESTABLISHED", 10)
    callee.wait_event("CALL_ESTABLISHED", 5)
    channels = asterisk.channels()
    assert any(c.startswith("PJSIP/101-") for c in channels) and any(c.startswith("PJSIP/102-") for c in channels)
    caller.hangup()
    caller.wait_event("CALL_CLOSED", 5)


def test_wrong_secret_does_not_register(asterisk: Asterisk, phone_factory: PhoneFactory) -> None:
    apply(asterisk, config.render([extension(1, "101")], [], transports={}))
    phone = phone_factory("101", "Not-the-secret-at-all", asterisk)
    assert not phone.wait_registered(1.5)


def test_disabled_extension_is_gone_after_reload(asterisk: Asterisk) -> None:
    apply(asterisk, config.render([extension(1, "101"), extension(2, "102")], [], transports={}))
    assert {"101", "102"} <= asterisk.endpoints()
    apply(asterisk, config.render([extension(1, "101"), extension(2, "102", enabled=False)], [], transports={}))
    assert "102" not in asterisk.endpoints() and "101" in asterisk.endpoints()
    assert "'102' =>" not in asterisk.cli("dialplan show rayanpbx-extensions")


def test_a_dialled_number_cannot_inject_dialplan(asterisk: Asterisk, phone_factory: PhoneFactory) -> None:
    """``9123&PJSIP/102`` matches ``_9.``; without the REGEX check Dial() would also ring 102."""
    exts = [extension(1, "101"), extension(2, "102")]
    outbound = Trunk(pk=1, name="acme", host="127.0.0.1", port=9, username="", secret="x" * 16, prefix="9")
    apply(asterisk, config.render(exts, [outbound], transports={}))
    caller = phone_factory("101", exts[0].secret, asterisk)
    callee = phone_factory("102", exts[1].secret, asterisk, auto_answer=True)
    assert caller.wait_registered(5) and callee.wait_registered(5)
    mark = asterisk.log_mark()
    caller.dial("9123&PJSIP/102")
    caller.wait_event("CALL_CLOSED", 10)
    log = asterisk.log_when(mark, "Goto (rayanpbx-outcome,s,1)")
    assert "Goto (rayanpbx-outcome,s,1)" in log and "Dial(" not in log, log
    assert "CALL_INCOMING" not in callee.events()


# --- what a user types is plain text to Asterisk ------------------------------------------

#: Accepted by the validators and written with ``;`` escaped: each must reach Asterisk as typed.
HOSTILE_NAMES = [
    "Acme; [evil] #include /etc/passwd a=b",
    "[x]",
    "#include /etc/passwd",
    "a=b; type=endpoint",
    "Reza Rayan \u2014 \u062f\u0641\u062a\u0631 \u0645\u06cc\u200c\u0632",  # Persian, with a zero-width non-joiner
]
HOSTILE_SECRETS = ["pass;word[x]=#include-1", 'quote"d;;--;semi', "back\\slash;\\;end-1", "=>[general]#exec x"]


def test_hostile_values_are_read_back_as_plain_text(asterisk: Asterisk) -> None:
    exts = []
    for index, name in enumerate(HOSTILE_NAMES):
        exts.append(
            extension(10 + index, f"20{index}", name=name, secret=HOSTILE_SECRETS[index % len(HOSTILE_SECRETS)])
        )
    exts.append(extension(30, "300", caller_id='"Sales; [x] #include y" <+49301>'))
    exts.append(extension(31, "301", caller_id="Support=desk [2]"))
    for ext in exts:
        ext.full_clean(validate_unique=False, validate_constraints=False)  # the API would accept each of them

    generated = config.render(exts, [], transports={})
    apply(asterisk, generated)

    assert {e.extension_number for e in exts} <= asterisk.endpoints()
    # No section came out of a value: the only objects are the ones generated (plus the site's).
    assert asterisk.endpoints() == set(generated.endpoints)
    auths = set(re.findall(r"^\s*Auth:\s+([^/\s]+)/", asterisk.cli("pjsip show auths"), re.MULTILINE))
    assert auths == set(generated.endpoints)

    for ext in exts[: len(HOSTILE_NAMES)]:
        shown = asterisk.cli(f"pjsip show endpoint {ext.extension_number}")
        assert f'callerid                           : "{ext.name}" <{ext.extension_number}>' in shown, shown
        auth = asterisk.cli(f"pjsip show auth {ext.extension_number}")
        assert f"password                 : {ext.secret}\n" in auth, auth
    assert '"Sales; [x] #include y" <+49301>' in asterisk.cli("pjsip show endpoint 300")
    assert '"Support=desk [2]" <301>' in asterisk.cli("pjsip show endpoint 301")
    assert "#include" not in asterisk.cli("dialplan show rayanpbx-extensions")


# --- trunks to a second Asterisk -----------------------------------------------------------


def test_trunk_registers_to_the_provider_and_carries_an_outbound_call(
    asterisk: Asterisk, provider: Asterisk, phone_factory: PhoneFactory
) -> None:
    exts = [extension(1, "101")]
    acme = trunk(1, "acme", provider, prefix="9", strip_digits=1)
    apply(asterisk, config.render(exts, [acme], transports={}))

    # The secret holds ; [ ] # " = : both Asterisks read it back exactly, or this fails.
    assert wait_until(lambda: asterisk.registrations().get("acme") == "Registered", 10), asterisk.registrations()
    assert wait_until(lambda: provider.contacts().get("acme-acct"), 5)

    phone = phone_factory("101", exts[0].secret, asterisk)
    assert phone.wait_registered(5)
    mark = provider.log_mark()
    phone.dial("95551234")
    phone.wait_event("CALL_ESTABLISHED", 10)
    assert any(c.startswith("PJSIP/acme-acct-") for c in provider.channels()), provider.channels()
    stripped = "Executing [5551234@from-rayanpbx:1] Answer"  # the 9 was stripped
    assert stripped in provider.log_when(mark, stripped)
    phone.hangup()
    phone.wait_event("CALL_CLOSED", 5)


def test_a_full_trunk_fails_over_to_the_next_by_priority(
    asterisk: Asterisk, provider: Asterisk, phone_factory: PhoneFactory
) -> None:
    exts = [extension(1, "101"), extension(2, "102")]
    trunks = [
        trunk(1, "acme", provider, prefix="9", strip_digits=1, priority=1, max_channels=1),
        trunk(2, "backup", provider, prefix="9", strip_digits=1, priority=2),
    ]
    apply(asterisk, config.render(exts, trunks, transports={}))
    first = phone_factory("101", exts[0].secret, asterisk)
    second = phone_factory("102", exts[1].secret, asterisk)
    assert first.wait_registered(5) and second.wait_registered(5)

    first.dial("9111")
    first.wait_event("CALL_ESTABLISHED", 10)
    second.dial("9222")
    second.wait_event("CALL_ESTABLISHED", 10)
    channels = provider.channels()
    # acme allows one call: the second went to backup (priority 2).
    assert sum(c.startswith("PJSIP/acme-acct-") for c in channels) == 1, channels
    assert sum(c.startswith("PJSIP/backup-acct-") for c in channels) == 1, channels
    for phone in (first, second):
        phone.hangup()
        phone.wait_event("CALL_CLOSED", 5)


# --- what Asterisk rejects, and how it says so ---------------------------------------------


def test_rejected_sections_are_logged_with_a_line_or_an_id_that_maps_to_the_row(asterisk: Asterisk) -> None:
    # Valid for RayanPBX but not for this Asterisk: a raw qualify_frequency above its maximum
    # (86400), and a trunk host that does not resolve (the identify cannot be built).
    exts = [extension(1, "101"), extension(7, "107", qualify_frequency=100000)]
    unresolvable = Trunk(pk=3, name="nowhere", host="pbx.invalid", username="", secret="x" * 16)
    generated = config.render(exts, [unresolvable], transports={})
    mark = asterisk.log_mark()
    apply(asterisk, generated)
    log = asterisk.log_since(mark)

    parse_error = re.search(r"ERROR\[\d+\] config_options\.c: Error parsing (\S+) at line (\d+) of (\S+)", log)
    assert parse_error, log
    assert parse_error[1] == "qualify_frequency=100000"
    assert Path(parse_error[3]) == asterisk.etc_dir / config.PJSIP_FILE  # the included file, by full path
    assert generated.owner_at(config.PJSIP_FILE, int(parse_error[2])) == generated.endpoints["107"]

    # The object error names the TOP-LEVEL file (pjsip.conf), not the included one.
    objects = re.findall(
        r"ERROR\[\d+\] res_sorcery_config\.c: Could not create an object of type '(\w+)' with id '([^']+)'"
        r" from configuration file '([^']+)'",
        log,
    )
    assert sorted(objects) == [("aor", "107", "pjsip.conf"), ("identify", "nowhere", "pjsip.conf")], log
    assert generated.owner_of_section("107").label == "extension 107"
    assert generated.owner_of_section("nowhere").label == "trunk nowhere"
    assert "Identify 'nowhere' failed when adding resolution results of 'pbx.invalid'" in log
    # The endpoint itself still loads: only the log tells that its AOR (or identify) is missing.
    assert {"101", "107", "nowhere"} <= asterisk.endpoints()
    assert "107" not in asterisk.cli("pjsip show aors")


# --- reloads -----------------------------------------------------------------------------


def test_reloads_notice_included_files_and_ami_reloads_the_dialplan(asterisk: Asterisk) -> None:
    apply(asterisk, config.render([extension(1, "101")], [], transports={}))
    generated = config.render([extension(1, "101"), extension(2, "102")], [], transports={})
    assert config.write(generated, asterisk.etc_dir) == [config.DIALPLAN_FILE, config.PJSIP_FILE]

    # res_pjsip: a changed #included file is noticed by a reload of the module.
    assert "102" not in asterisk.endpoints()
    assert asterisk.ami("Reload", Module="res_pjsip.so")[0]["Message"] == "Module Reloaded"
    assert "102" in asterisk.endpoints()
    # pbx_config: Action Reload with Module pbx_config.so reloads the dialplan.
    assert "'102' =>" not in asterisk.cli("dialplan show rayanpbx-extensions")
    assert asterisk.ami("Reload", Module="pbx_config.so")[0]["Response"] == "Success"
    assert "'102' =>" in asterisk.cli("dialplan show rayanpbx-extensions")
    # Unchanged: nothing is rewritten, so Asterisk keeps the mtime it has loaded.
    assert config.write(generated, asterisk.etc_dir) == []


def test_reload_of_1000_extensions(asterisk: Asterisk, record_property: Callable[[str, object], None]) -> None:
    exts = [extension(n, str(10000 + n)) for n in range(1, 1001)]
    generated = config.render(exts, [], transports={})
    config.write(generated, asterisk.etc_dir)
    started = time.perf_counter()
    asterisk.cli("module reload res_pjsip.so")
    reloaded = time.perf_counter() - started
    assert wait_until(lambda: len(asterisk.endpoints() & set(generated.endpoints)) == 1000, 30)
    listed = time.perf_counter() - started
    record_property("reload_1000_s", round(reloaded, 3))
    record_property("listed_1000_s", round(listed, 3))
    print(f"1,000 extensions: reload returned after {reloaded:.3f} s, all listed after {listed:.3f} s")
    assert listed < 10
