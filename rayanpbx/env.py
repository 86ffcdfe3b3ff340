"""Typed readers for environment variables.

Every setting that comes from the environment goes through one of these helpers, so
a malformed value fails at start-up with ``ImproperlyConfigured`` naming the variable,
instead of surfacing as a stack trace at the first request.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str | None = None, *, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the variable as a string, or ``default`` when it is unset or empty."""
    value = _raw(name, environ)
    return value if value else default


def env_bool(name: str, default: bool = False, *, environ: Mapping[str, str] | None = None) -> bool:
    """Parse ``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}.")


def env_int(
    name: str,
    default: int,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Parse an integer, checking the optional inclusive bounds."""
    value = _raw(name, environ)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from None
    if (min_value is not None and number < min_value) or (max_value is not None and number > max_value):
        raise ImproperlyConfigured(f"{name} must be between {min_value} and {max_value}, got {number}.")
    return number


def env_float(name: str, default: float, *, min_value: float = 0.0, environ: Mapping[str, str] | None = None) -> float:
    """Parse a number (seconds, usually) no smaller than ``min_value``."""
    value = _raw(name, environ)
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}.") from None
    if number < min_value:
        raise ImproperlyConfigured(f"{name} must be at least {min_value}, got {number}.")
    return number


def env_list(name: str, default: list[str], *, environ: Mapping[str, str] | None = None) -> list[str]:
    """Parse a comma-separated list, dropping blanks."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]
