"""The two formats of RayanPBX's log (``LOG_FORMAT``): ``plain`` (the default) and ``json``.

``plain`` is one human line per record: ``2026-12-02 06:40:00,123 WARNING django.request:
Not Found: /x``. ``json`` is one JSON object per line, for a log shipper (journald, Loki,
Elasticsearch), from :class:`JsonFormatter`::

    {"time": "2026-12-02T06:40:00.123Z", "level": "WARNING", "logger": "django.request",
     "message": "Not Found: /x", "request_id": "3f0c...", "process": 4242}

plus ``"exc_info"`` (the whole traceback, as one string) when the record has an exception
and ``"stack_info"`` when it has a stack. ``request_id`` is the id of the HTTP request the
line was logged for (``rayanpbx.request_id``; ``null`` outside a request: background tasks,
WebSocket consumers, start-up). Newlines inside a message stay inside its JSON string, so a
record is always exactly one line. Only the handler's stream gets this format; the logs
page's own records (``live.logs``) are unchanged.

:func:`logging_settings` builds ``settings.LOGGING`` for either format.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The id of the HTTP request being handled in this context (set by
#: ``rayanpbx.request_id.RequestIdMiddleware``), or None outside one. It lives here, beside
#: the filter that reads it, so that settings can import this module (stdlib only).
current_request_id: ContextVar[str | None] = ContextVar("rayanpbx_request_id", default=None)

FORMATS = ("plain", "json")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Gives every record ``request_id``: the current request's id, or None outside one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get()
        return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string or argument: log what there is rather than nothing
        return f"{record.msg!r} % {record.args!r}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module's docstring for the fields)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
            "request_id": getattr(record, "request_id", None),
            "process": record.process,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc_info"] = record.exc_text
        if record.stack_info:
            document["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


def logging_settings(log_format: str, level: str) -> dict[str, Any]:
    """``settings.LOGGING``: the root logger at ``level`` to stderr in ``log_format``."""
    formatters = {
        "plain": {"format": PLAIN},
        "json": {"()": "rayanpbx.log_format.JsonFormatter"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "rayanpbx.log_format.RequestIdFilter"}},
        "formatters": formatters,
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "filters": ["request_id"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "INFO"}},
    }
