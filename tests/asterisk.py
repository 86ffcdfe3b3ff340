"""Real Asterisk 22 instances and baresip SIP phones for tests, all on 127.0.0.1.

An ``Asterisk`` is one private instance: its own directories under a root, free ports for
SIP (UDP), AMI and RTP, a site configuration that includes the two files RayanPBX owns
(``etc_dir`` is what ``ASTERISK_CONFIG_DIR`` points at), started in the foreground and
stopped by its PID. A ``Phone`` is one baresip user agent driven over its ``ctrl_tcp``
netstring socket. See ``../shared/asterisk/README.md`` for how both were found to behave.

The pytest fixtures ``asterisk`` (one started instance per test module) and
``phone_factory`` (phones stopped after the test) are registered for the whole suite by
``pytest_plugins`` in ``tests/conftest.py``. Tests skip, naming what is missing, when
Asterisk or baresip is absent, and fail instead under ``REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import REQUIRE_SERVICES

ASTERISK_PREFIX = Path(os.environ.get("ASTERISK_PREFIX", "/opt/asterisk-22"))
BARESIP = os.environ.get("BARESIP", "baresip")
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
HOST = "127.0.0.1"

#: What a private instance loads: registration, calls, AMI, the dialplan RayanPBX writes
#: (Gosub, GROUP_COUNT, REGEX, IF) and an echo test.
MODULES = (
    "res_sorcery_config",
    "res_sorcery_memory",
    "res_sorcery_astdb",
    "res_pjproject",
    "res_pjsip",
    "res_pjsip_session",
    "res_pjsip_authenticator_digest",
    "res_pjsip_endpoint_identifier_user",
    "res_pjsip_endpoint_identifier_ip",
    "res_pjsip_registrar",
    "res_pjsip_outbound_registration",
    "res_pjsip_outbound_authenticator_digest",
    "res_pjsip_pubsub",
    "res_pjsip_outbound_publish",
    "res_pjsip_sdp_rtp",
    "res_pjsip_caller_id",
    "res_pjsip_nat",
    "res_pjsip_exten_state",
    "res_pjsip_pidf_body_generator",
    "res_pjsip_dialog_info_body_generator",
    "res_pjsip_mwi",
    "res_rtp_asterisk",
    "res_timing_timerfd",
    "chan_pjsip",
    "codec_ulaw",
    "codec_alaw",
    "codec_a_mu",
    "format_pcm",
    "pbx_config",
    "app_dial",
    "app_echo",
    "app_playback",
    "app_stack",
    "app_exec",
    "func_callerid",
    "func_groupcount",
    "func_strings",
    "func_logic",
    "res_musiconhold",
    "bridge_simple",
    "bridge_native_rtp",
    "res_manager_devicestate",
)


# --- availability ------------------------------------------------------------------------


def asterisk_available() -> str | None:
    """None if Asterisk can be started here, else what is missing."""
    binary = ASTERISK_PREFIX / "sbin" / "asterisk"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return f"{binary} not found; run ../shared/asterisk/build.sh"
    modules = ASTERISK_PREFIX / "lib" / "asterisk" / "modules"
    lacking = [m for m in MODULES if not (modules / f"{m}.so").is_file()]
    if lacking:
        return f"Asterisk modules missing in {modules}: {', '.join(lacking)}"
    return None


def baresip_available() -> str | None:
    """None if baresip phones can be started here, else what is missing."""
    if shutil.which(BARESIP) is None:
        return "baresip not found; apt-get install -y baresip-core"
    lacking = [
        m for m in ("g711", "aubridge", "account", "menu", "ctrl_tcp") if not (BARESIP_MODULES / f"{m}.so").is_file()
    ]
    if lacking:
        return f"baresip modules missing in {BARESIP_MODULES}: {', '.join(lacking)}"
    return None


def _require(problem: str | None) -> None:
    if problem is None:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{problem} (REQUIRE_SERVICES=1)")
    pytest.skip(problem)


def require_asterisk() -> None:
    """Skip the test (fail under REQUIRE_SERVICES=1) when Asterisk is not usable."""
    _require(asterisk_available())


def require_baresip() -> None:
    """Skip the test (fail under REQUIRE_SERVICES=1) when baresip is not usable."""
    _require(baresip_available())


# --- ports and processes -----------------------------------------------------------------

_ports_taken: set[int] = set()
_ports_lock = threading.Lock()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both TCP and UDP on 127.0.0.1, never handed out twice by this process."""
    with _ports_lock:
        while True:
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind((HOST, 0))
                port = sock.getsockname()[1]
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            try:
                with socket.socket(socket.AF_INET, other) as sock:
                    sock.bind((HOST, port))
            except OSError:
                continue
            if port not in _ports_taken:
                _ports_taken.add(port)
                return port


def _free_pair() -> int:
    """A port ``p`` with ``p`` and ``p + 1`` free for TCP and UDP (baresip's SIP/TLS listens on ``p + 1``)."""
    for _ in range(200):
        port = free_port(socket.SOCK_DGRAM)
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.bind((HOST, port + 1))
        except OSError:
            continue
        with _ports_lock:
            if port + 1 in _ports_taken:
                continue
            _ports_taken.add(port + 1)
        return port
    raise RuntimeError("no free pair of ports for a phone")


def _free_range(size: int) -> int:
    """The first port of ``size`` consecutive UDP ports that are free now."""
    for _ in range(200):
        base = free_port(socket.SOCK_DGRAM) & ~1
        if base + size > 65000:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.bind((HOST, port))
        except OSError:
            continue
        with _ports_lock:
            _ports_taken.update(range(base, base + size))
        return base
    raise RuntimeError("no free UDP port range for RTP")


def _stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """SIGTERM the process (by its PID), then SIGKILL it if it lingers."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)


# --- Asterisk ----------------------------------------------------------------------------


class Asterisk:
    """One private Asterisk instance under ``root``, with the site configuration a RayanPBX site has."""

    def __init__(self, root: Path, *, name: str = "pbx", extra_pjsip: str = "", extra_dialplan: str = "") -> None:
        self.name = name
        self.root = Path(root) / name
        self.etc_dir = self.root / "etc"
        self.log_dir = self.root / "log"
        self.log_file = self.log_dir / "messages"
        self.console_file = self.root / "console.log"
        # The control socket's path must fit in sun_path (108 bytes).
        self.run_dir = self.root / "run"
        if len(str(self.run_dir / "asterisk.ctl")) > 100:
            self.run_dir = Path(os.path.realpath(os.environ.get("TMPDIR", "/tmp"))) / f"ast-{os.getpid()}-{id(self):x}"
        self.sip_port = free_port(socket.SOCK_DGRAM)
        self.ami_port = free_port()
        self.rtp_start = _free_range(100)
        self.ami_user = "rayanpbx-test"
        self.ami_secret = f"ami-{os.urandom(8).hex()}"
        self.extra_pjsip = extra_pjsip
        self.extra_dialplan = extra_dialplan
        self.process: subprocess.Popen[bytes] | None = None
        self._write_site_config()

    def __repr__(self) -> str:
        return f"<Asterisk {self.name} sip={self.sip_port} ami={self.ami_port}>"

    @property
    def config_file(self) -> Path:
        return self.etc_dir / "asterisk.conf"

    def _write_site_config(self) -> None:
        for folder in (self.etc_dir, self.log_dir, self.run_dir, self.root / "lib", self.root / "spool"):
            folder.mkdir(parents=True, exist_ok=True)
        lib = ASTERISK_PREFIX / "lib" / "asterisk" / "modules"
        files = {
            "asterisk.conf": f"""\
[directories]
astetcdir => {self.etc_dir}
astmoddir => {lib}
astvarlibdir => {self.root / "lib"}
astdbdir => {self.root / "lib"}
astkeydir => {self.root / "lib"}
astdatadir => {ASTERISK_PREFIX / "var" / "lib" / "asterisk"}
astagidir => {self.root / "lib"}
astspooldir => {self.root / "spool"}
astrundir => {self.run_dir}
astlogdir => {self.log_dir}
astsbindir => {ASTERISK_PREFIX / "sbin"}

[options]
verbose = 3
nofork = yes
""",
            "modules.conf": "[modules]\nautoload = no\n" + "".join(f"load = {m}.so\n" for m in MODULES),
            "manager.conf": f"""\
[general]
enabled = yes
port = {self.ami_port}
bindaddr = {HOST}

[{self.ami_user}]
secret = {self.ami_secret}
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = all
write = all
""",
            "pjsip.conf": f"""\
; The site's own configuration: its transport, then what RayanPBX generates.
; Phones, trunks and other instances all share 127.0.0.1 here: identify by username first,
; so that a trunk's IP identify (host 127.0.0.1) does not capture the phones' requests.
[global]
type = global
endpoint_identifier_order = username,ip,anonymous

[transport-udp]
type = transport
protocol = udp
bind = {HOST}:{self.sip_port}

{self.extra_pjsip}

#include pjsip_rayanpbx.conf
""",
            "extensions.conf": f"""\
[general]
static = yes
writeprotect = yes

[globals]

[site-tests]
exten => 600,1,Answer()
 same => n,Echo()

{self.extra_dialplan}

#include extensions_rayanpbx.conf
""",
            "logger.conf": "[general]\n[logfiles]\nmessages => notice,warning,error,verbose\n",
            "rtp.conf": f"[general]\nrtpstart = {self.rtp_start}\nrtpend = {self.rtp_start + 99}\n",
        }
        # Present but empty, so the log holds only what matters (not "Unable to load config file").
        for quiet in ("cdr.conf", "cel.conf", "features.conf", "acl.conf", "udptl.conf", "pjproject.conf", "ccss.conf"):
            files.setdefault(quiet, "")
        for file_name, text in files.items():
            (self.etc_dir / file_name).write_text(text)
        for owned in ("pjsip_rayanpbx.conf", "extensions_rayanpbx.conf"):
            path = self.etc_dir / owned
            if not path.exists():
                path.write_text("")

    # --- lifecycle ---

    def start(self, timeout: float = 10) -> None:
        """Start in the foreground and return once AMI greets with its banner."""
        if self.running:
            return
        console = self.console_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [str(ASTERISK_PREFIX / "sbin" / "asterisk"), "-C", str(self.config_file), "-f", "-n"],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        if not wait_until(self._ami_banner, timeout, 0.05):
            output = self.console_file.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{self!r} did not answer on AMI within {timeout} s:\n{output}")
        # AMI listens before every module has loaded; the CLI answers once startup is complete.
        wait_until(lambda: "fully booted" in self._try_cli("core waitfullybooted"), timeout, 0.1)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _ami_banner(self) -> bool:
        if not self.running:
            raise RuntimeError(f"{self!r} exited: {self.console_file.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection((HOST, self.ami_port), timeout=0.5) as sock:
                return sock.recv(100).startswith(b"Asterisk Call Manager")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the instance by its PID; safe when already stopped."""
        _stop_process(self.process, timeout=10)
        self.process = None

    # --- reading the running instance ---

    def _try_cli(self, command: str) -> str:
        try:
            return self.cli(command)
        except (RuntimeError, subprocess.TimeoutExpired):
            return ""

    def cli(self, command: str, timeout: float = 30) -> str:
        """Run one CLI command through the control socket and return its output."""
        result = subprocess.run(
            [str(ASTERISK_PREFIX / "sbin" / "asterisk"), "-C", str(self.config_file), "-rx", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def ami(self, action: str, *, timeout: float = 10.0, **fields: str) -> list[dict[str, str]]:
        """Log in to AMI, send one action, and return its response and events until the action completes."""
        lines = [f"Action: {action}", "ActionID: t1", *(f"{k}: {v}" for k, v in fields.items())]
        with socket.create_connection((HOST, self.ami_port), timeout=timeout) as sock:
            reader = sock.makefile("rb")
            reader.readline()  # banner
            sock.sendall(f"Action: Login\r\nUsername: {self.ami_user}\r\nSecret: {self.ami_secret}\r\n\r\n".encode())
            login = _read_ami_message(reader)
            if login.get("Response") != "Success":
                raise RuntimeError(f"AMI login refused: {login}")
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            messages = []
            while True:
                message = _read_ami_message(reader)
                if message.get("ActionID") != "t1":
                    continue
                messages.append(message)
                if "Response" in message and message.get("EventList") != "start":
                    break
                if message.get("EventList") == "Complete":
                    break
            return messages

    def endpoints(self) -> set[str]:
        """The PJSIP endpoint ids Asterisk has loaded."""
        output = self.cli("pjsip show endpoints")
        names = re.findall(r"^\s*Endpoint:\s+([^/\s]+)", output, re.MULTILINE)
        return {name for name in names if not name.startswith("<")}

    def contacts(self) -> dict[str, list[str]]:
        """AOR -> the contact URIs registered (or configured) for it now."""
        output = self.cli("pjsip show contacts")
        found: dict[str, list[str]] = {}
        for aor, uri in re.findall(r"^\s*Contact:\s+([^/\s]+)/(\S+)", output, re.MULTILINE):
            if aor.startswith("<"):
                continue
            found.setdefault(aor, []).append(uri)
        return found

    def registrations(self) -> dict[str, str]:
        """Outbound registration id -> its status (``Registered``, ``Rejected``, ...)."""
        output = self.cli("pjsip show registrations")
        return {
            reg: status
            for reg, status in re.findall(r"^\s*(\S+?)/\S+\s+\S+\s+(\w+)", output, re.MULTILINE)
            if not reg.startswith("<")
        }

    def channels(self) -> list[str]:
        """Names of the channels up now."""
        output = self.cli("core show channels concise")
        return [line.split("!", 1)[0] for line in output.splitlines() if "!" in line]

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def log_mark(self) -> int:
        """The current end of the log, to read only what follows with ``log_since``."""
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_since(self, mark: int) -> str:
        if not self.log_file.exists():
            return ""
        with self.log_file.open("rb") as log:
            log.seek(mark)
            return log.read().decode(errors="replace")

    def log_when(self, mark: int, text: str, timeout: float = 5.0) -> str:
        """The log since ``mark`` once it holds ``text`` (or at ``timeout``, for the caller's assert).

        Asterisk's logger writes from its own thread, so a line can land after the SIP
        event a phone already reported (seen under load in CI: the call was up, the
        ``Executing`` line not yet in the file).
        """
        deadline = time.monotonic() + timeout
        while text not in (log := self.log_since(mark)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return log


def _read_ami_message(reader: Any) -> dict[str, str]:
    message: dict[str, str] = {}
    while True:
        line = reader.readline()
        if not line:
            raise RuntimeError("AMI connection closed")
        line = line.decode(errors="replace").rstrip("\r\n")
        if not line:
            if message:
                return message
            continue
        key, _, value = line.partition(":")
        message.setdefault(key.strip(), value.strip())


# --- baresip -----------------------------------------------------------------------------


class Phone:
    """One baresip user agent registered (or trying to register) to an Asterisk."""

    def __init__(self, root: Path, user: str, secret: str, asterisk: Asterisk, *, auto_answer: bool = False) -> None:
        if ";" in secret or "\n" in secret:
            # baresip's account parameters end at ';' (and there is no quoting): it cannot hold such a secret.
            raise ValueError("baresip cannot use a secret containing ';' or a line break")
        self.user = user
        self.secret = secret
        self.asterisk = asterisk
        self.dir = Path(root) / f"phone-{user}-{os.urandom(3).hex()}"
        self._pick_ports()
        self.auto_answer = auto_answer
        self.process: subprocess.Popen[bytes] | None = None
        self.output_file = self.dir / "baresip.log"
        self._sock: socket.socket | None = None
        self._events: list[dict[str, Any]] = []
        self._responses: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._tokens = 0

    def __repr__(self) -> str:
        return f"<Phone {self.user}@{self.asterisk.name}>"

    def _pick_ports(self) -> None:
        self.sip_port = _free_pair()
        self.ctrl_port = free_port()
        self.rtp_start = _free_range(20)

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config").write_text(
            f"""\
sip_listen {HOST}:{self.sip_port}
net_interface {HOST}
rtp_ports {self.rtp_start}-{self.rtp_start + 19}
audio_player aubridge,nil
audio_source aubridge,nil
audio_alert aubridge,nil
module_path {BARESIP_MODULES}
module g711.so
module aubridge.so
module_app menu.so
module_app ctrl_tcp.so
module_app account.so
ctrl_tcp_listen {HOST}:{self.ctrl_port}
"""
        )
        answer = ";answermode=auto" if self.auto_answer else ""
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{HOST}:{self.asterisk.sip_port}>;auth_pass={self.secret};regint=60{answer}\n"
        )
        (self.dir / "contacts").write_text("")

    def start(self, timeout: float = 5) -> None:
        """Start baresip and connect to its control socket (registration then runs on its own).

        The ports were free when they were picked, but any process's outgoing connection may
        take one of them before baresip binds it (seen in CI): then baresip exits with
        "Address already in use" and it is started again on fresh ports, at most three times.
        """
        for attempt in range(3):
            try:
                self._start_once(timeout)
                return
            except RuntimeError as error:
                if "Address already in use" not in str(error) or attempt == 2:
                    raise
                self._pick_ports()

    def _start_once(self, timeout: float) -> None:
        self._write_config()
        output = self.output_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [BARESIP, "-4", "-f", str(self.dir)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            output.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.create_connection((HOST, self.ctrl_port), timeout=1)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.output_file.read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"{self!r}: ctrl_tcp did not come up:\n{log}") from None
                time.sleep(0.02)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-{self.user}", daemon=True)
        self._reader.start()

    def stop(self) -> None:
        """SIGTERM (baresip unregisters cleanly), by PID; safe when already stopped."""
        _stop_process(self.process)
        self.process = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    # --- control socket ---

    def _read_loop(self) -> None:
        buffer = b""
        sock = self._sock
        while sock is not None:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buffer += chunk
            while True:
                length, colon, rest = buffer.partition(b":")
                if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                    break
                size = int(length)
                payload, buffer = rest[:size], rest[size + 1 :]
                try:
                    message = json.loads(payload)
                except ValueError:
                    continue
                with self._cond:
                    (self._events if message.get("event") else self._responses).append(message)
                    self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5) -> dict[str, Any]:
        """Send one ctrl_tcp command and return baresip's response."""
        if self._sock is None:
            raise RuntimeError(f"{self!r} is not running")
        self._tokens += 1
        token = f"t{self._tokens}"
        payload = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(b"%d:%s," % (len(payload), payload))
        with self._cond:
            found = self._cond.wait_for(lambda: self._take(self._responses, lambda m: m.get("token") == token), timeout)
        if not found:
            raise TimeoutError(f"{self!r}: no response to {command!r} within {timeout} s")
        return found

    @staticmethod
    def _take(messages: list[dict[str, Any]], match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for index, message in enumerate(messages):
            if match(message):
                return messages.pop(index)
        return None

    def dial(self, number: str) -> None:
        self.command("dial", number)

    def hangup(self) -> None:
        self.command("hangup")

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next unseen event of this type (``CALL_ESTABLISHED``, ``REGISTER_OK``, ...)."""
        with self._cond:
            found = self._cond.wait_for(lambda: self._take(self._events, lambda m: m.get("type") == kind), timeout)
        if not found:
            raise TimeoutError(
                f"{self!r}: no {kind} within {timeout} s; events: {[e.get('type') for e in self._events]}"
            )
        return found

    def events(self) -> list[str]:
        """Types of the events received and not yet taken by ``wait_event``."""
        with self._cond:
            return [str(e.get("type")) for e in self._events]

    def wait_registered(self, timeout: float) -> bool:
        """Whether Asterisk lists this phone's contact within ``timeout`` seconds.

        baresip registers as soon as it starts, often before the control socket is
        connected, so its ``REGISTER_OK`` event may never be seen here: ask Asterisk.
        """
        # baresip registers a contact like sip:101-0x55d0c3@127.0.0.1:PORT: match its address.
        wanted = f"@{HOST}:{self.sip_port}"

        def listed() -> bool:
            return any(wanted in uri for uri in self.asterisk.contacts().get(self.user, []))

        return bool(wait_until(listed, timeout, 0.1))


# --- a second PBX that trunks register to ----------------------------------------------

PROVIDER_SECRET = 'Prov;ider[x]#include "a=b"'  # a trunk secret with everything a config file could trip on
#: The provider's dialplan for calls arriving from RayanPBX's trunks: answer and echo.
PROVIDER_DIALPLAN = "[from-rayanpbx]\nexten => _X.,1,Answer()\n same => n,Echo()\n"


def provider_account(name: str) -> str:
    """What the provider (B) defines for one of A's trunks: an endpoint that may register and call in."""
    secret = PROVIDER_SECRET.replace(";", "\\;")
    return f"""
[{name}-acct]
type = endpoint
context = from-rayanpbx
allow = !all,ulaw,alaw
auth = {name}-acct
aors = {name}-acct

[{name}-acct]
type = auth
auth_type = userpass
username = {name}-acct
password = {secret}

[{name}-acct]
type = aor
max_contacts = 1
remove_existing = yes
"""


# --- pytest fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    """One started private Asterisk for the test module, stopped after it."""
    require_asterisk()
    instance = Asterisk(tmp_path_factory.mktemp("asterisk"))
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def phone_factory(tmp_path: Path) -> Iterator[Callable[..., Phone]]:
    """``phone_factory(user, secret, asterisk, auto_answer=False)``: a started phone, stopped after the test."""
    require_baresip()
    phones: list[Phone] = []

    def make(user: str, secret: str, asterisk: Asterisk, *, auto_answer: bool = False) -> Phone:
        phone = Phone(tmp_path, user, secret, asterisk, auto_answer=auto_answer)
        phones.append(phone)
        phone.start()
        return phone

    try:
        yield make
    finally:
        for phone in phones:
            phone.stop()
