"""Django settings for RayanPBX, read from the environment.

Nothing set gives the *embedded default*: SQLite in ``RAYANPBX_DATA_DIR``, an in-process
channel layer and event bus, DEBUG off, and a SECRET_KEY generated on first run into the
data directory. Production sets ``DATABASE_URL`` (MariaDB/MySQL), ``REDIS_URL`` and friends;
every variable is listed in the README. Malformed values fail at start-up, naming the variable.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from rayanpbx.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("RAYANPBX_DATA_DIR", str(BASE_DIR / "data"))).resolve()


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once into the data directory."""
    key = env_str("SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters long.")
        return key
    path = DATA_DIR / "secret_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(50))
    return path.read_text().strip()


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "rayanpbx.sqlite3",
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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Before any view reads the database: the stream position its page is valid at.
    "live.middleware.StreamPositionMiddleware",
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
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

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
                # PERF_NOTES traps 1 and 2: a larger pool, and no read timeout under the
                # layer's own blocking reads.
                "hosts": [{"address": REDIS_URL, "max_connections": 1000, "socket_timeout": None}],
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_KEY_PREFIX + "cache",
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
