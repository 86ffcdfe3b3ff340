"""Prometheus metrics: the ``rayanpbx_*`` series, the functions that feed them, and ``/metrics``.

Every process of a deployment (each ``manage.py serve``, each ``runworker``) counts what it
does itself. To serve one consistent ``/metrics`` from whichever server process is scraped,
set ``PROMETHEUS_MULTIPROC_DIR`` to one directory per deployment (per host), emptied before
the processes start: prometheus-client's multiprocess mode then keeps every process's values
in memory-mapped files there, and ``/metrics`` merges them (``MultiProcessCollector``):
counters and histograms are summed over every process that ever ran since the directory was
emptied, the open-sockets gauge is summed over the live processes (``livesum``) and the AMI
link state is the live processes' maximum (``livemax``: the one link holder's values win).
A process leaving removes its live gauges (``mark_process_dead`` at exit); one killed
without that is found at the next scrape (its PID no longer exists) and removed then.

Without ``PROMETHEUS_MULTIPROC_DIR`` (the embedded default: one process) ``/metrics`` serves
this process's own registry. The metrics, their labels and the settings: ``docs/metrics.md``.

Access (``metrics_view``): a client address inside ``METRICS_ALLOWED`` (the one
``rayanpbx.proxies`` decided, i.e. ``REMOTE_ADDR``), or ``Authorization: Bearer
<METRICS_TOKEN>``; otherwise 403 (or 401 when a token could have been sent), in the shared
error shape. Every label value is bounded: view names come from the URL map (never the raw
path), methods and status classes from short fixed lists, event types from the code that
publishes them, refusal reasons from a pattern and a cap.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import hmac
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

logger = logging.getLogger(__name__)

#: The multiprocess directory, when this deployment has one (read once: prometheus-client
#: decides its storage at import from the same variable).
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None

#: AMI link states (``pbx.ami.AmiClient.state``); each has its 0/1 series.
AMI_STATES = ("connecting", "connected", "disconnected")
#: HTTP methods kept as they are; anything else is counted as ``other``.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Distinct refusal reasons and event types kept as labels; beyond: ``other``.
MAX_LABEL_VALUES = 64
_LABEL = re.compile(r"[a-z][a-z0-9_.]{0,47}")

SOCKETS = Gauge(
    "rayanpbx_live_sockets",
    "Open WebSocket connections (/ws), summed over the live server processes.",
    multiprocess_mode="livesum",
)
PUBLISHED = Counter(
    "rayanpbx_live_events_published",
    "Stream events numbered and published by the bus (live.publisher), by event type.",
    ["type"],
)
DELIVERED = Counter(
    "rayanpbx_live_events_delivered",
    "Stream events handed to sockets by the hubs' fan-out (one per event per receiving socket), by event type.",
    ["type"],
)
FANOUT = Histogram(
    "rayanpbx_live_fanout_seconds",
    "Time one hub took to write one batch of frames to all its sockets.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SLOW_CLOSES = Counter(
    "rayanpbx_live_slow_closes",
    "Sockets closed with 4009 (too slow: more than LIVE_MAX_SOCKET_BUFFER waiting).",
)
REFUSED = Counter("rayanpbx_live_refused", "WebSocket connections refused, by reason.", ["reason"])
AMI_LINK = Gauge(
    "rayanpbx_ami_link_state",
    "The PBX link's AMI connection: 1 for its current state, 0 for the others (only where the link runs).",
    ["state"],
    multiprocess_mode="livemax",
)
AMI_EVENTS = Counter("rayanpbx_ami_events", "AMI events received from Asterisk.")
APPLY_SECONDS = Histogram(
    "rayanpbx_pbx_apply_seconds",
    "Duration of one apply (generate, write, reload, verify), whatever its outcome.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
APPLY_FAILURES = Counter(
    "rayanpbx_pbx_apply_failures",
    "Applies that failed, by reason: link_lost, refused, write, rejected (Asterisk rejected objects).",
    ["reason"],
)
HTTP_SECONDS = Histogram(
    "rayanpbx_http_request_duration_seconds",
    "HTTP request latency by resolved view name (URL name, or 'unresolved'), method and status class.",
    ["view", "method", "status"],
)

_lock = threading.Lock()
_children: dict[tuple[Any, str], Any] = {}


def _child(metric: Any, value: str) -> Any:
    """``metric.labels(value)``, cached; a value that is no plain name, or one past the cap,
    is counted as ``other`` (label values are kept in memory forever)."""
    key = (metric, value)
    child = _children.get(key)
    if child is None:
        with _lock:
            child = _children.get(key)
            if child is None:
                known = sum(1 for m, _ in _children if m is metric)
                if not _LABEL.fullmatch(value) or known >= MAX_LABEL_VALUES:
                    value = "other"
                    key = (metric, value)
                    child = _children.get(key)
                if child is None:
                    child = _children[key] = metric.labels(value)
    return child


# --- the live layer (called by live/publisher.py, live/hub.py, live/consumers.py) -----------


def socket_opened() -> None:
    """A socket joined this process's hub."""
    SOCKETS.inc()


def socket_closed() -> None:
    """A socket left this process's hub (call once per socket that was opened)."""
    SOCKETS.dec()


def set_sockets(count: int) -> None:
    """This process's open sockets are ``count`` (an alternative to opened/closed)."""
    SOCKETS.set(count)


def published(types: Iterable[str]) -> None:
    """These events were numbered and published (one type per event)."""
    counts: dict[str, int] = {}
    for type_ in types:  # a bulk change is thousands of one type: one increment per type
        counts[type_] = counts.get(type_, 0) + 1
    for type_, n in counts.items():
        _child(PUBLISHED, type_).inc(n)


def fanout(type_: str, receivers: int, seconds: float | None = None) -> None:
    """One event of ``type_`` was written to ``receivers`` sockets (one call per fan-out, not
    per socket); ``seconds``, when given, is observed in the fan-out histogram."""
    if receivers:
        _child(DELIVERED, type_).inc(receivers)
    if seconds is not None:
        FANOUT.observe(seconds)


def fanout_frames(frames: list[tuple[int, str]], receivers: int, seconds: float) -> None:
    """One hub fan-out of consecutive numbered frames (``live.hub.Hub._fan_out``'s ``frames``)
    to ``receivers`` sockets in ``seconds``: each frame's type counted ``receivers`` times,
    the batch's time observed once. Types are read from the frame text without parsing it."""
    if receivers:
        counts: dict[str, int] = {}
        for _, frame in frames:
            type_ = frame_type(frame)
            counts[type_] = counts.get(type_, 0) + 1
        for type_, n in counts.items():
            _child(DELIVERED, type_).inc(n * receivers)
    FANOUT.observe(seconds)


def frame_type(frame: str) -> str:
    """The ``type`` of a numbered frame (``{"seq":N,"type":"...",...}``, ``live.events``)."""
    start = frame.find(',"type":"', 7)
    if start < 0:
        return "other"
    start += 9
    end = frame.find('"', start)
    return frame[start:end] if end > start else "other"


def slow_close() -> None:
    """A socket was closed with 4009 (too slow)."""
    SLOW_CLOSES.inc()


def refused(reason: str) -> None:
    """A connection was refused; ``reason`` a short fixed name (e.g. ``per_user``, ``rate``)."""
    _child(REFUSED, reason).inc()


# --- the PBX link (pbx/ami.py, pbx/link.py, pbx/apply.py) ----------------------------------


def ami_state(state: str | None) -> None:
    """The link's AMI state is ``state`` (``None``: the link stopped running here)."""
    for name in AMI_STATES:
        AMI_LINK.labels(name).set(1 if name == state else 0)


def ami_event() -> None:
    """One AMI event was received."""
    AMI_EVENTS.inc()


def applied(seconds: float, failure: str | None) -> None:
    """An apply took ``seconds``; ``failure`` is its failure reason, or ``None``."""
    APPLY_SECONDS.observe(seconds)
    if failure is not None:
        _child(APPLY_FAILURES, failure).inc()


# --- HTTP ----------------------------------------------------------------------------------


class MetricsMiddleware:
    """Observes each request's latency, labelled by the resolved view name (the URL name, or
    the view's dotted path; ``unresolved`` when no URL matched: static files, 404s), the
    method and the status class (``2xx``...). Never the raw path: unbounded label values
    would grow this process's memory and the multiprocess files without end."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or "unnamed") if match is not None else "unresolved"
        method = request.method if request.method in HTTP_METHODS else "other"
        status = f"{response.status_code // 100}xx" if 100 <= response.status_code < 600 else "other"
        HTTP_SECONDS.labels(view, method, status).observe(time.perf_counter() - started)
        return response


# --- /metrics ------------------------------------------------------------------------------


def _error(status: int, code: str, detail: str) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in settings.METRICS_ALLOWED)


def _token_given(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def check_access(request: HttpRequest) -> JsonResponse | None:
    """``None`` when the request may read the metrics, else the error response: 403 from an
    address outside ``METRICS_ALLOWED`` without credentials, 401 for a wrong bearer token (or
    any, when no ``METRICS_TOKEN`` is configured)."""
    if _address_allowed(request.META.get("REMOTE_ADDR", "")):
        return None
    given = _token_given(request)
    if given is None:
        return _error(403, "permission_denied", "Metrics are readable only from METRICS_ALLOWED or with METRICS_TOKEN.")
    token = settings.METRICS_TOKEN
    if token and hmac.compare_digest(given.encode(), token.encode()):
        return None
    return _error(401, "not_authenticated", "The bearer token is not METRICS_TOKEN.")


def remove_dead_processes(directory: str | None = None) -> list[int]:
    """Remove the live gauges of processes that no longer exist (killed without running their
    exit hook); returns their PIDs. PIDs are this host's: one directory per host."""
    directory = directory or MULTIPROC_DIR
    if not directory:
        return []
    pids: set[int] = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        with contextlib.suppress(ValueError):
            pids.add(int(path.rsplit("_", 1)[1][:-3]))
    dead = []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
        except PermissionError:  # it exists (another user's): alive
            continue
    for pid in dead:
        _multiprocess.mark_process_dead(pid, directory)
    return dead


def exposition() -> bytes:
    """The text exposition: every process's metrics (multiprocess mode) or this one's."""
    if MULTIPROC_DIR:
        remove_dead_processes()
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, MULTIPROC_DIR)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: the Prometheus text exposition, for allowed addresses or the token."""
    if request.method not in ("GET", "HEAD"):
        return _error(405, "method_not_allowed", f'Method "{request.method}" not allowed.')
    refused_ = check_access(request)
    if refused_ is not None:
        return refused_
    try:
        body = exposition()
    except OSError as exc:  # the directory unreadable (removed, full disk): say so, not a 500
        logger.warning("Metrics unavailable: %s", exc)
        return _error(503, "metrics_unavailable", f"Cannot read PROMETHEUS_MULTIPROC_DIR: {exc.strerror or exc}")
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def _at_exit() -> None:
    # This process's live gauges (open sockets, link state) must stop counting once it is
    # gone; counters and histograms stay (they are totals).
    with contextlib.suppress(OSError):  # the directory already removed: nothing to clean
        _multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR)


if MULTIPROC_DIR:
    atexit.register(_at_exit)
