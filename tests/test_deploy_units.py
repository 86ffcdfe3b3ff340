"""The deployment guide's systemd units and helper files (docs/deploy/), checked with the
real tools: ``systemd-analyze verify`` (and its offline security review), and ``sh -n``.

The units name ``/opt/rayanpbx`` (the guide's install folder); here it is replaced by this
checkout, so that ``verify`` finds a real interpreter. Without ``systemd-analyze`` the unit
tests skip (also under REQUIRE_SERVICES: systemd is not one of the suite's services).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.stack import ROOT

DEPLOY = ROOT / "docs" / "deploy"
UNITS = ("rayanpbx-web@.service", "rayanpbx-poller.service", "rayanpbx-pbx.service", "rayanpbx.target")
SERVICES = ("rayanpbx-web@8001.service", "rayanpbx-poller.service", "rayanpbx-pbx.service")
MAX_EXPOSURE = 2.0  # systemd-analyze security: "OK" is below 4; these units score 1.3


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (systemd)")
    return tool


def _installed(tmp: Path) -> Path:
    """The units as the guide installs them, /opt/rayanpbx being this checkout; the web
    template also as its first instance."""
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/rayanpbx", str(ROOT))
        (tmp / name).write_text(text)
    shutil.copy(tmp / "rayanpbx-web@.service", tmp / "rayanpbx-web@8001.service")
    return tmp


def _verify(tool: str, directory: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool, "verify", *(f"./{name}" for name in names)], cwd=directory, capture_output=True, text=True, timeout=60
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    units = _installed(tmp_path)
    done = _verify(tool, units, *SERVICES, "rayanpbx.target")
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stdout + done.stderr
    # The check can fail: a misspelt value is reported.
    broken = units / "rayanpbx-poller.service"
    broken.write_text(broken.read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt"))
    done = _verify(tool, units, "rayanpbx-poller.service")
    assert "strickt" in done.stdout + done.stderr  # verify exits 0 on such warnings: hence the empty-output check


def test_units_are_hardened(tmp_path: Path) -> None:
    tool = _systemd_analyze()
    units = _installed(tmp_path)
    for name in SERVICES:
        done = subprocess.run(
            [tool, "security", "--offline=yes", f"./{name}"], cwd=units, capture_output=True, text=True, timeout=60
        )
        if "--offline" in done.stderr and done.returncode != 0:
            pytest.skip(f"this systemd-analyze has no offline security review: {done.stderr.strip()}")
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
        assert match, done.stdout + done.stderr
        assert float(match.group(1)) <= MAX_EXPOSURE, done.stdout
    for name in SERVICES:
        text = (units / name).read_text()
        for line in ("User=rayanpbx", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
            assert line in text.splitlines(), f"{name}: {line}"
        writable = next(line for line in text.splitlines() if line.startswith("ReadWritePaths="))
        # Only the PBX link writes Asterisk's folder; everyone writes the data folder.
        assert writable.split("=", 1)[1].split() == (
            ["/var/lib/rayanpbx", "/etc/asterisk"] if name == "rayanpbx-pbx.service" else ["/var/lib/rayanpbx"]
        )


def test_the_target_starts_what_the_guide_says() -> None:
    text = (DEPLOY / "rayanpbx.target").read_text()
    wants = next(line for line in text.splitlines() if line.startswith("Wants=")).split("=", 1)[1].split()
    assert wants == ["rayanpbx-web@8001.service", "rayanpbx-web@8002.service", *SERVICES[1:]]
    guide = (DEPLOY / "README.md").read_text()
    for name in (*UNITS, "nginx.conf", "manager.conf", "rayanpbx.env.example", "rayanpbx-manage"):
        assert name in guide, f"docs/deploy/README.md does not mention {name}"


def test_the_manage_wrapper_and_the_env_example_parse(tmp_path: Path) -> None:
    done = subprocess.run(["sh", "-n", str(DEPLOY / "rayanpbx-manage")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    # The example env file is what both systemd and the wrapper's `sh` read: plain KEY=value lines.
    names = []
    for line in (DEPLOY / "rayanpbx.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), line
            names.append(line.split("=", 1)[0])
    documented = "".join(path.read_text() for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))))
    unknown = [name for name in names if f"`{name}`" not in documented]
    assert not unknown, f"not in the README's or docs/'s settings tables: {unknown}"
    # sh reads it as systemd does: every value arrives unchanged.
    script = f"set -a; . {DEPLOY / 'rayanpbx.env.example'}; set +a; env"
    env = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, env={}).stdout
    assert "TRUSTED_PROXIES=127.0.0.1" in env.splitlines() and "SECURE=1" in env.splitlines()


# --- the guide's AMI user against a real Asterisk ----------------------------------------------

#: What the PBX link sends (pbx/link.py, pbx/apply.py, pbx/feed.py): each must succeed.
LINK_ACTIONS = (
    ("CoreSettings", {}),
    ("CoreStatus", {}),
    ("CoreShowChannels", {}),
    ("PJSIPShowEndpoints", {}),
    ("PJSIPShowContacts", {}),
    ("PJSIPShowRegistrationsOutbound", {}),
    ("Reload", {"Module": "res_pjsip.so"}),
    ("Reload", {"Module": "pbx_config.so"}),
)

PHONE = """
[5301]
type = endpoint
context = site-tests
disallow = all
allow = ulaw
auth = 5301-auth
aors = 5301

[5301-auth]
type = auth
auth_type = userpass
username = 5301
password = Right-secret-5301

[5301]
type = aor
max_contacts = 1
"""


class _Ami:
    """A plain AMI session (login, actions, and the events it is sent)."""

    def __init__(self, port: int, username: str, secret: str) -> None:
        import socket

        from tests.asterisk import HOST

        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.reader = self.sock.makefile("rb")
        self.reader.readline()  # banner
        self.events: list[dict[str, str]] = []
        self.count = 0
        login = self.action("Login", {"Username": username, "Secret": secret})
        assert login.get("Response") == "Success", login

    def action(self, name: str, fields: dict[str, str]) -> dict[str, str]:
        from tests.asterisk import _read_ami_message

        self.count += 1
        action_id = f"a{self.count}"
        lines = [f"Action: {name}", f"ActionID: {action_id}", *(f"{k}: {v}" for k, v in fields.items())]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            message = _read_ami_message(self.reader)
            if message.get("ActionID") == action_id and "Response" in message:
                return message
            if "Event" in message:
                self.events.append(message)

    def wait_event(self, names: set[str], timeout: float) -> dict[str, str] | None:
        import time

        from tests.asterisk import _read_ami_message

        deadline = time.monotonic() + timeout
        found = next((e for e in self.events if e.get("Event") in names), None)
        while found is None and time.monotonic() < deadline:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = _read_ami_message(self.reader)
            except TimeoutError:  # nothing more within the time: the caller says what is missing
                break
            if message.get("Event") in names:
                found = message
        return found

    def close(self) -> None:
        self.sock.close()


def test_the_guides_ami_user_can_do_what_the_link_needs_and_no_more(tmp_path: Path) -> None:
    """docs/deploy/manager.conf's [rayanpbx] user, as is: every action of the link succeeds,
    failed SIP logins reach it (read = security), and the console's Command is refused."""
    from tests.asterisk import Asterisk, Phone, require_asterisk, require_baresip

    require_asterisk()
    require_baresip()
    pbx = Asterisk(tmp_path, extra_pjsip=PHONE)
    secret = "Guide-ami-secret-0123"
    guide = (DEPLOY / "manager.conf").read_text()
    assert "[rayanpbx]" in guide and "change-me-ami-secret" in guide
    manager = pbx.etc_dir / "manager.conf"
    manager.write_text(manager.read_text() + "\n" + guide.replace("change-me-ami-secret", secret))
    pbx.start()
    phone = None
    try:
        ami = _Ami(pbx.ami_port, "rayanpbx", secret)
        try:
            for name, fields in LINK_ACTIONS:
                response = ami.action(name, fields)
                # An empty list is an Error ("No Contacts found") but not a refusal.
                allowed = response.get("Response") == "Success" or response.get("Message", "").startswith("No ")
                assert allowed and "Permission denied" not in response.get("Message", ""), (name, fields, response)
            refused = ami.action("Command", {"Command": "core show version"})
            assert refused.get("Response") == "Error" and "Permission denied" in refused.get("Message", ""), refused
            # A phone with a wrong password: the failed login reaches this user (security class).
            phone = Phone(tmp_path, "5301", "Wrong-secret-5301", pbx)
            phone.start()
            failure = ami.wait_event({"InvalidPassword", "ChallengeResponseFailed"}, timeout=15)
            assert failure is not None, "no failed-login event reached the guide's AMI user"
        finally:
            ami.close()
    finally:
        if phone:
            phone.stop()
        pbx.stop()
