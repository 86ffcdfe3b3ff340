"""Settings helpers fail fast, naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from rayanpbx.env import env_bool, env_float, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent


def test_helpers_parse_values() -> None:
    env = {"A": " yes ", "N": "42", "F": "0.5", "L": "a, b,,c", "S": ""}
    assert env_bool("A", environ=env) is True
    assert env_bool("MISSING", True, environ=env) is True
    assert env_int("N", 1, min_value=1, max_value=100, environ=env) == 42
    assert env_float("F", 1.0, environ=env) == 0.5
    assert env_list("L", [], environ=env) == ["a", "b", "c"]
    assert env_str("S", "default", environ=env) == "default"


@pytest.mark.parametrize(
    "call",
    [
        lambda: env_bool("PORTLY", environ={"PORTLY": "maybe"}),
        lambda: env_int("PORTLY", 1, environ={"PORTLY": "eighty"}),
        lambda: env_int("PORTLY", 1, max_value=65535, environ={"PORTLY": "70000"}),
        lambda: env_float("PORTLY", 1.0, min_value=0.1, environ={"PORTLY": "0"}),
    ],
)
def test_bad_values_name_the_variable(call) -> None:
    with pytest.raises(ImproperlyConfigured, match="PORTLY"):
        call()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "http"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("REDIS_URL", "http://localhost"),
        ("DEBUG", "perhaps"),
        ("LIVE_MAX_SOCKET_BUFFER", "lots"),
        ("LIVE_MAX_SOCKET_BUFFER", "1000"),
        ("LIVE_CLOSE_TIMEOUT", "0"),
    ],
)
def test_settings_refuse_bad_environment(tmp_path: Path, variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "RAYANPBX_DATA_DIR": str(tmp_path), variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and variable in result.stderr


def test_secret_key_generated_once_into_data_dir(tmp_path: Path) -> None:
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    env = {"PATH": "/usr/bin:/bin", "RAYANPBX_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "rayanpbx.settings"}
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    first, second = run(), run()
    assert len(first) >= 50 and first == second
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().strip() == first and oct(key_file.stat().st_mode & 0o777) == "0o600"
