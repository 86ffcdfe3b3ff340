"""Django settings for RayanPBX, read from the environment.

Nothing set gives the *embedded default*: SQLite in ``RAYANPBX_DATA_DIR``, an in-process
channel layer and event bus, DEBUG off, and a SECRET_KEY generated on first run into the
data directory. Production sets ``DATABASE_URL`` (MariaDB/MySQL), ``REDIS_URL`` and friends;
every variable is listed in the README. Malformed values fail at start-up, naming the variable.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from rayanpbx.env import env_bool, env_float, env_int, env_list, env_str
from rayanpbx.log_format import FORMATS as LOG_FORMATS
from rayanpbx.log_format import logging_settings
from rayanpbx.private_files import private_dir, private_file, private_sqlite
from rayanpbx.proxies import parse_trusted_proxies

BASE_DIR = Path(__file__).resolve().parent.parent
#: Holds the SQLite database (SIP secrets) and the secret key: 0700, its secret files 0600,
#: existing ones tightened at start-up (rayanpbx/private_files.py).
DATA_DIR = private_dir(Path(env_str("RAYANPBX_DATA_DIR", str(BASE_DIR / "data"))).resolve())


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once into the data directory."""
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        private_file(path).write_text(secrets.token_urlsafe(50))
    return private_file(path).read_text().strip()


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": private_sqlite(DATA_DIR / "rayanpbx.sqlite3"),
            "CONN_MAX_AGE": env_int("DATABASE_CONN_MAX_AGE", 60, min_value=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # WAL: readers (the poller, pages) never wait for a writer, and a commit does
                # not wait for fsync (safe across application crashes; a power cut may lose
                # the last commits). IMMEDIATE: writers queue instead of failing "locked".
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    try:
        config = dj_database_url.parse(
            url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, min_value=0), conn_health_checks=True
        )
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3" and config["NAME"] not in ("", ":memory:"):
        private_sqlite(Path(config["NAME"]))  # SIP secrets, wherever the file is
    if config["ENGINE"] == "django.db.backends.mysql":
        config["OPTIONS"] = {"charset": "utf8mb4", "init_command": "SET sql_mode='STRICT_TRANS_TABLES'"}
        config["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    return config


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Where `manage.py serve` listens.
HOST = env_str("HOST", "127.0.0.1")
PORT = env_int("PORT", 8000, min_value=1, max_value=65535)
# --- TLS ---
#: `manage.py serve` serves HTTPS and WSS itself from these PEM files (both or neither; the
#: files are read and checked when serve starts, docs/deploy/README.md). Behind nginx, leave
#: them unset: nginx terminates TLS.
TLS_CERT_FILE = env_str("TLS_CERT_FILE", "") or None
TLS_KEY_FILE = env_str("TLS_KEY_FILE", "") or None
if bool(TLS_CERT_FILE) != bool(TLS_KEY_FILE):
    raise ImproperlyConfigured(
        "TLS_CERT_FILE and TLS_KEY_FILE: set both (the certificate and its private key) or neither, "
        f"got only {'TLS_CERT_FILE' if TLS_CERT_FILE else 'TLS_KEY_FILE'}."
    )
# --- end TLS ---

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # `live` before `channels`: its runworker command also starts the poller.
    "live",
    "channels",
    "rayanpbx",
    "extensions",
    "trunks",
    "pbx",
    "audit",
]

MIDDLEWARE = [
    # First: the latency of the whole request, by view (rayanpbx/metrics.py).
    "rayanpbx.metrics.MetricsMiddleware",
    # The request id of log lines and X-Request-ID (rayanpbx/request_id.py), before any line is logged.
    "rayanpbx.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Content-Security-Policy on every response; the API docs' own (rayanpbx/security.py).
    "rayanpbx.security.ContentSecurityPolicyMiddleware",
    # A view failing because the database is away answers 503, not 500 (rayanpbx.unavailable).
    "rayanpbx.unavailable.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any view reads the database: the stream position its page is valid at.
    "live.middleware.StreamPositionMiddleware",
    "audit.context.AuditContextMiddleware",  # who and through what, for the audit log
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "rayanpbx.urls"
ASGI_APPLICATION = "rayanpbx.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "pbx.context_processors.pbx",
                "live.middleware.stream_position",
            ],
        },
    },
]

DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The list indexes on expressions (numbers as numbers, names without case) cannot exist on
# MySQL/MariaDB; there a plain (name, id) index serves instead (rayanpbx/listing.py).
SILENCED_SYSTEM_CHECKS = ["models.W043"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing root
# Serve straight from the app's static folders: no collectstatic step for `make run`.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
# --- security headers ---
#: The one HTTPS switch (docs/security.md): set SECURE=1 when browsers reach RayanPBX over TLS,
#: whether nginx terminates it (nginx then in TRUSTED_PROXIES, sending X-Forwarded-Proto) or
#: `serve` does (TLS_CERT_FILE set: on unless SECURE=0). It turns on secure cookies, the
#: redirect to https and HSTS. Off by default: `make run` serves plain http.
SECURE = env_bool("SECURE", bool(env_str("TLS_CERT_FILE")))
#: SECURE_COOKIES: the older switch, cookies only (kept working; SECURE implies it).
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", SECURE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = SECURE
#: Answered over http too: health probes and Prometheus may talk to a daphne process directly.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
#: Sent on https responses only. A year once SECURE is on; includeSubDomains unless turned off.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if SECURE else 0, min_value=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
#: `preload` asks browsers' built-in lists to force https for the whole domain, which cannot be
#: quickly undone: the domain owner's decision (SECURE_HSTS_PRELOAD=1), so check --deploy's
#: reminder about it (security.W021) is silenced while it is off.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
#: django-csp 4 (rayanpbx/security.py): nothing inline anywhere; the API docs add a nonce.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'"],
        "connect-src": ["'self'"],  # the page's WebSocket too (ws/wss to the same host)
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# --- end security headers ---
#: Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IPs and CIDRs,
#: comma-separated; empty: nobody's). See rayanpbx/proxies.py. SECURE_PROXY_SSL_HEADER stays
#: unset on purpose: Django would believe it from any client.
TRUSTED_PROXIES = parse_trusted_proxies(env_str("TRUSTED_PROXIES"))

# --- metrics ---
#: ``/metrics`` (rayanpbx/metrics.py, docs/metrics.md): readable from these client addresses
#: (IPs and CIDRs, comma-separated; the address rayanpbx.proxies decided), or by anyone sending
#: ``Authorization: Bearer <METRICS_TOKEN>`` (at least 16 characters; empty: no token accepted).
#: ``none``: no address (the token only).
_metrics_allowed = env_str("METRICS_ALLOWED", "127.0.0.1,::1") or ""
METRICS_ALLOWED = (
    () if _metrics_allowed.strip().lower() == "none" else parse_trusted_proxies(_metrics_allowed, "METRICS_ALLOWED")
)
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters long (or empty: no token).")
#: prometheus-client's multiprocess mode, read by it from the environment itself: one directory
#: per deployment and host, emptied before its processes start. Unset: each process its own.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if "PROMETHEUS_MULTIPROC_DIR" in os.environ and not Path(PROMETHEUS_MULTIPROC_DIR or "/nonexistent").is_dir():
    raise ImproperlyConfigured(
        f"PROMETHEUS_MULTIPROC_DIR must be an existing directory (or unset), got {PROMETHEUS_MULTIPROC_DIR!r}."
    )
# --- end metrics ---

# --- Redis: channel layer, cache and the live event bus --------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://.")

#: Prefix of every Redis key and channel (several deployments can share one Redis).
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "rayanpbx:")

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "prefix": REDIS_KEY_PREFIX + "layer:",
                # A larger pool: redis-py's default 100 raises instead of waiting, which
                # failed handshakes in connect storms. No read timeout: redis-py 8's 5 s
                # default equals the layer's own blocking read and closed idle sockets (1011).
                "hosts": [{"address": REDIS_URL, "max_connections": 1000, "socket_timeout": None}],
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX + "cache",
            # A Redis that stops answering costs a request 2 s, not forever.
            "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Live events (see live/ and README "Live events") ----------------------------------
LIVE_HISTORY_SIZE = env_int("LIVE_HISTORY_SIZE", 1000, min_value=10)
LIVE_POLL_INTERVAL = env_float("LIVE_POLL_INTERVAL", 5.0, min_value=0.1)
LIVE_WORKER_CHANNEL = "rayanpbx-poller"
LIVE_WS_ALLOWED_ORIGINS = env_list("WS_ALLOWED_ORIGINS", [])
LIVE_MAX_CLIENT_FRAME = 64 * 1024
#: Bytes that may wait for one slow socket before it is closed with 4009 ("too slow").
LIVE_MAX_SOCKET_BUFFER = env_int("LIVE_MAX_SOCKET_BUFFER", 1024 * 1024, min_value=64 * 1024)
#: Seconds a socket closed by the server has to read what was queued and the close frame.
LIVE_CLOSE_TIMEOUT = env_float("LIVE_CLOSE_TIMEOUT", 5.0, min_value=0.5)
#: Connection limits (live.limits; 0 turns one off): connects per second per client address
#: (with a burst), sockets per user over the deployment, sockets per server process.
LIVE_CONNECT_RATE = env_float("LIVE_CONNECT_RATE", 10.0, min_value=0.0)
LIVE_CONNECT_BURST = env_int("LIVE_CONNECT_BURST", 20, min_value=1)
LIVE_MAX_SOCKETS_PER_USER = env_int("LIVE_MAX_SOCKETS_PER_USER", 20, min_value=0)
LIVE_MAX_SOCKETS = env_int("LIVE_MAX_SOCKETS", 20000, min_value=0)

# --- The Asterisk link (see pbx/ and README "The Asterisk link") ----------------------
#: The link is on when AMI_USERNAME is set; without it RayanPBX manages data only.
AMI_HOST = env_str("AMI_HOST", "127.0.0.1")
AMI_PORT = env_int("AMI_PORT", 5038, min_value=1, max_value=65535)
AMI_USERNAME = env_str("AMI_USERNAME", "")
AMI_SECRET = env_str("AMI_SECRET", "")
if AMI_USERNAME and not AMI_SECRET:
    raise ImproperlyConfigured("AMI_SECRET must be set when AMI_USERNAME is (the AMI user's secret in manager.conf).")
#: Where the two files RayanPBX owns are written (pjsip_rayanpbx.conf, extensions_rayanpbx.conf).
ASTERISK_CONFIG_DIR = Path(env_str("ASTERISK_CONFIG_DIR", "/etc/asterisk"))
#: Asterisk's log file, when readable: apply reports the reason Asterisk gave for a rejected section.
ASTERISK_LOG_FILE = env_str("ASTERISK_LOG_FILE", "")
# --- logs page ---
#: The logs page's live tail (live/logs.py, docs/logs.md): at most LOGS_BATCH_LINES lines per
#: ``logs.lines`` message, one message per LOGS_BATCH_INTERVAL seconds; the rest is counted
#: as skipped. Lines longer than LOGS_MAX_LINE characters are cut. RayanPBX's own records
#: from LOGS_RECORD_LEVEL up are shown beside Asterisk's.
LOGS_BATCH_LINES = env_int("LOGS_BATCH_LINES", 200, min_value=10, max_value=1000)
LOGS_BATCH_INTERVAL = env_float("LOGS_BATCH_INTERVAL", 0.2, min_value=0.05)
if LOGS_BATCH_INTERVAL > 5:
    raise ImproperlyConfigured(f"LOGS_BATCH_INTERVAL must be at most 5 seconds, got {LOGS_BATCH_INTERVAL}.")
LOGS_MAX_LINE = env_int("LOGS_MAX_LINE", 2000, min_value=200, max_value=16384)
LOGS_RECORD_LEVEL = (env_str("LOGS_RECORD_LEVEL", "INFO") or "INFO").upper()
if LOGS_RECORD_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(
        f"LOGS_RECORD_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOGS_RECORD_LEVEL!r}."
    )
#: Transports RayanPBX declares itself, e.g. "udp=0.0.0.0:5060,tcp=0.0.0.0:5060". Empty: the
#: site's pjsip.conf owns its transports and endpoints name none.
PBX_TRANSPORTS: dict[str, str] = {}
for _item in env_list("PBX_TRANSPORTS", []):
    _proto, _, _bind = _item.partition("=")
    if _proto not in ("udp", "tcp", "tls", "ws", "wss") or not re.fullmatch(r"[0-9A-Za-z.:\[\]-]+:[0-9]{1,5}", _bind):
        raise ImproperlyConfigured(
            f"PBX_TRANSPORTS: {_item!r} is not PROTOCOL=ADDRESS:PORT (protocol udp, tcp, tls, ws or wss)."
        )
    PBX_TRANSPORTS[_proto] = _bind
PBX_WORKER_CHANNEL = "rayanpbx-pbx"
#: Quiet time after the last change before an apply starts, and the longest a burst may delay it.
PBX_APPLY_DEBOUNCE = env_float("PBX_APPLY_DEBOUNCE", 0.3, min_value=0.0)
PBX_APPLY_MAX_DELAY = env_float("PBX_APPLY_MAX_DELAY", 5.0, min_value=0.1)
#: The console page and ``console`` topic (Asterisk CLI commands through AMI): off unless
#: set, and then for superusers only (see README "The console").
PBX_CONSOLE = env_bool("PBX_CONSOLE", False)
# --- console ---
#: One console command (connect, login, the command, its whole output) may take this long;
#: past it the page says "timed out" (Asterisk may still be running it).
PBX_CONSOLE_TIMEOUT = env_float("PBX_CONSOLE_TIMEOUT", 30.0, min_value=1.0)
#: A command's output is cut at this many bytes (the page says "output truncated").
PBX_CONSOLE_MAX_OUTPUT = env_int("PBX_CONSOLE_MAX_OUTPUT", 1024 * 1024, min_value=1024, max_value=16 * 1024 * 1024)
#: Console commands running at once in one server process; one more is refused (429).
PBX_CONSOLE_MAX_RUNNING = env_int("PBX_CONSOLE_MAX_RUNNING", 4, min_value=1, max_value=64)
# --- end console ---
#: How long one step of an apply may take: a reload of res_pjsip, the endpoint list read
#: back. Asterisk 22's reload is quadratic in the endpoints: 11 s for 20,000, about 5 min
#: for 100,000 (docs/benchmarks.md, "PBX apply at scale").
PBX_RELOAD_TIMEOUT = env_float("PBX_RELOAD_TIMEOUT", 600.0, min_value=1.0)
# --- traffic ---
#: Seconds between two samples of the traffic page's series (pbx/traffic.py, docs/traffic.md);
#: 360 samples are kept (an hour at 10 s). Tests set 0.5.
TRAFFIC_INTERVAL = env_float("TRAFFIC_INTERVAL", 10.0, min_value=0.1)
if TRAFFIC_INTERVAL > 3600:
    raise ImproperlyConfigured(f"TRAFFIC_INTERVAL must be at most 3600 seconds, got {TRAFFIC_INTERVAL}.")
# --- end traffic ---

# --- REST API ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rayanpbx.api.permissions.IsStaffOrReadOnly"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_FILTER_BACKENDS": [
        "rayanpbx.api.filters.PbxFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rayanpbx.api.pagination.Pagination",
    "DEFAULT_SCHEMA_CLASS": "rayanpbx.api.schema.PbxAutoSchema",
    "EXCEPTION_HANDLER": "rayanpbx.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_int("JWT_ACCESS_MINUTES", 15, min_value=1)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 7, min_value=1)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    # A password change revokes every token issued before it (API and /ws alike).
    "CHECK_REVOKE_TOKEN": True,
}

# Failed logins allowed per client address and username before 429, and the window.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, min_value=1)
LOGIN_FAILURE_WINDOW = env_int("LOGIN_FAILURE_WINDOW", 300, min_value=1)

SPECTACULAR_SETTINGS = {
    "TITLE": "RayanPBX API",
    "DESCRIPTION": "Manage Asterisk SIP extensions and trunks. Authenticate with `POST /api/auth/login`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- log format ---
#: LOG_FORMAT: `plain` (the default) or `json`: one JSON object per line with the request id
#: (rayanpbx/log_format.py, docs/security.md "Logs"). LOG_LEVEL: the root logger's level.
LOG_FORMAT = (env_str("LOG_FORMAT", "plain") or "plain").lower()
if LOG_FORMAT not in LOG_FORMATS:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}.")
LOGGING = logging_settings(LOG_FORMAT, env_str("LOG_LEVEL", "INFO") or "INFO")
# --- end log format ---
