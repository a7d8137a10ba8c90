"""SkyDeck settings: every knob is an environment variable (documented in README.md).

Bad values stop start-up with a message that names the variable (see ``skydeck_site.env``).
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from skydeck_site.env import envbool, envchoice, envfloat, envint, envlist, envstr
from skydeck_site.filemodes import private_database, private_dir, tighten

BASE_DIR = Path(__file__).resolve().parent.parent

# Where SkyDeck keeps its own state (database, generated secret key, backups).
SKYDECK_HOME = Path(envstr("SKYDECK_HOME", "~/.skydeck")).expanduser()


def _ensure_home() -> Path:
    try:
        private_dir(SKYDECK_HOME)
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot create SKYDECK_HOME {SKYDECK_HOME}: {exc}") from exc
    return SKYDECK_HOME


def _secret_key() -> str:
    """SKYDECK_SECRET_KEY, else a key generated once and kept (mode 600) in SKYDECK_HOME."""
    key = envstr("SKYDECK_SECRET_KEY")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured(
                "SKYDECK_SECRET_KEY is too short: use at least 32 characters"
            )
        return key
    path = _ensure_home() / "secret_key"
    if path.exists():
        tighten(path)
        key = path.read_text().strip()
        if len(key) < 32:
            raise ImproperlyConfigured(
                f"{path} holds no usable key: delete it to generate a new one"
            )
        return key
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


SECRET_KEY = _secret_key()
DEBUG = envbool("SKYDECK_DEBUG", False)
ALLOWED_HOSTS = envlist("SKYDECK_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = envlist("SKYDECK_CSRF_TRUSTED_ORIGINS", [])
SESSION_COOKIE_SECURE = envbool("SKYDECK_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Behind https (a reverse proxy in front of `skydeck serve`): redirect plain http, send HSTS, and
# trust the proxy's X-Forwarded-Proto header. Off by default, since the default is plain http on
# localhost; `manage.py check --deploy` names what is still off.
SECURE_SSL_REDIRECT = envbool("SKYDECK_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = envint("SKYDECK_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SKYDECK_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("SKYDECK_HSTS_PRELOAD", False)
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if envbool("SKYDECK_BEHIND_HTTPS_PROXY", False) else None
)
# /api/health answers plain http even with the redirect on, for load balancers and curl.
SECURE_REDIRECT_EXEMPT = [r"^api/health$"]
# Content-Security-Policy on every response (skydeck_site.middleware): scripts and styles only
# from SkyDeck's own static files (no inline code, no eval: htmx runs with allowEval off), no
# framing, forms post only here. Pages that break it are a bug (tests/test_browser_csp.py).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

INSTALLED_APPS = [
    "skydeck_site.admin.SkyDeckAdminConfig",  # django.contrib.admin with the backup page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_filters",
    "axes",  # login lockout (see "Login throttling" below)
    # before django_q: its `qcluster` command (syncing/management/commands) takes the
    # scheduler lease, so one worker per database runs the schedules
    "syncing",
    "django_q",
    "experiments",
    "backups",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # compresses what the middleware below and the views answer (whitenoise has its own .gz)
    "skydeck_site.middleware.CompressionMiddleware",
    "skydeck_site.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # while `skydeck restore` runs: 503 "restoring" (static files are served above)
    "backups.middleware.RestoringMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # a write that hits a full disk: 503 naming it (JSON for the API), not an HTML 500
    "skydeck_site.middleware.StorageFullMiddleware",
    # last, as django-axes requires: turns a locked-out login into its 429 page
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "skydeck_site.urls"
WSGI_APPLICATION = "skydeck_site.wsgi.application"

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
                "experiments.context_processors.roles",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# SQLite is the embedded default; DATABASE_URL=postgres://... switches to PostgreSQL.
SQLITE_BUSY_TIMEOUT_MS = envint("SKYDECK_SQLITE_BUSY_TIMEOUT_MS", 20000, minimum=0)


def sqlite_database(path: Path) -> dict:
    """SQLite tuned for a web process and a worker writing at once."""
    return {
        "ENGINE": "skydeck_site.sqlite3",  # Django's, creating the file 0600 (filemodes)
        "NAME": str(path),
        # Reused per thread like PostgreSQL's: a new SQLite connection parses the schema, runs
        # the pragmas below and starts with an empty page cache, on every request otherwise.
        # A restore copies into the live file (backups.backup), so open connections stay valid.
        "CONN_MAX_AGE": envint("SKYDECK_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            # BEGIN IMMEDIATE takes the write lock up front, so a read-then-write transaction
            # waits on busy_timeout instead of failing with "database is locked" on upgrade.
            "transaction_mode": "IMMEDIATE",
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            "init_command": (
                "PRAGMA journal_mode=WAL;"
                "PRAGMA synchronous=NORMAL;"
                f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS};"
                "PRAGMA foreign_keys=ON;"
                "PRAGMA cache_size=-32768;"
                "PRAGMA mmap_size=134217728;"
            ),
        },
    }


def postgres_database(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {parts.scheme!r} is not supported: use postgres://user@host:5432/db"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(
            "DATABASE_URL names no database: use postgres://user@host:5432/db"
        )
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured("DATABASE_URL has an invalid port") from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "CONN_MAX_AGE": envint("SKYDECK_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
    }


_database_url = envstr("DATABASE_URL")
if _database_url and envstr("SKYDECK_DB_PATH"):
    raise ImproperlyConfigured(
        "both DATABASE_URL and SKYDECK_DB_PATH (or --db-path) are set: choose one database"
    )
if _database_url:
    DATABASES = {"default": postgres_database(_database_url)}
else:
    _db_path = envstr("SKYDECK_DB_PATH")
    if _db_path:
        DB_PATH = Path(_db_path).expanduser().resolve()
        try:
            private_dir(DB_PATH.parent)
        except OSError as exc:
            raise ImproperlyConfigured(f"cannot create the directory for {DB_PATH}: {exc}") from exc
    else:
        DB_PATH = _ensure_home() / "skydeck.db"
    # An existing database of ours that others can read is tightened now; a missing one is
    # created 0600 when Django first connects (skydeck_site.sqlite3), not by merely loading settings.
    if DB_PATH.exists():
        try:
            private_database(DB_PATH)
        except OSError as exc:
            raise ImproperlyConfigured(f"cannot restrict the mode of {DB_PATH}: {exc}") from exc
    DATABASES = {"default": sqlite_database(DB_PATH)}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# --- Login throttling (django-axes) ---------------------------------------------------------
# Failed logins (/accounts/login/ and /admin/login/ alike) are counted in the database (the
# tables axes_accessattempt / axes_accesslog; every web process sees the same counts). After
# SKYDECK_LOGIN_FAILURE_LIMIT failures (with no success, and no pause of the cool-off, between them)
# that user name is refused from that address, right password or not, until
# SKYDECK_LOGIN_COOLOFF_MINUTES have passed since the last attempt (each one restarts it): 429 with
# templates/registration/locked_out.html. A refused attempt never reaches the password hasher,
# so a guessing loop costs no CPU. A successful login clears the count. An admin clears a lock
# with `skydeck axes_reset_username NAME` (or `axes_reset` for all, `axes_reset_ip ADDRESS`).
# The first backend only checks the lockout; the second checks the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("SKYDECK_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=envint("SKYDECK_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# Per user name AND address: locking by user name alone would let anyone lock a colleague out
# (five wrong passwords from anywhere), and by address alone would lock out everyone behind one
# NAT or proxy. An attacker's own address gets locked for each name it tries.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False  # no start-up banner on every command; failures and lockouts are still logged
# The client address (django-ipware): REMOTE_ADDR, the peer gunicorn sees, unless
# SKYDECK_BEHIND_HTTPS_PROXY says a reverse proxy is in front. Then REMOTE_ADDR is the proxy and
# the client is the right-most X-Forwarded-For entry: the one our proxy appended (left-most "client,
# proxy count 0" in ipware's terms; IPWARE_STRICT off so that entries a client forged before it
# are skipped rather than making the header fall back to the proxy's own address). Never trust
# X-Forwarded-For without the proxy: any client could send a new address with every attempt.
_BEHIND_PROXY = SECURE_PROXY_SSL_HEADER is not None
if _BEHIND_PROXY:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    AXES_IPWARE_PROXY_ORDER = "left-most"
    AXES_IPWARE_PROXY_COUNT = 0
    IPWARE_STRICT = False
else:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("SKYDECK_STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- REST API (experiments/api/) ------------------------------------------------


def throttle_rate(name: str, default: str) -> str:
    """A DRF rate such as ``60/min``: a count, then ``/`` and s, min, hour or day."""
    rate = envstr(name, default)
    if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", rate):
        raise ImproperlyConfigured(
            f"{name}={rate!r} is not a rate: use e.g. 60/min (per s, min, hour or day)"
        )
    return rate


REST_FRAMEWORK = {
    # Token first: an anonymous request then gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "experiments.api.permissions.WriteUnlessReadOnly",
    ],
    "DEFAULT_PAGINATION_CLASS": "experiments.api.common.Pagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_METADATA_CLASS": None,  # OPTIONS answers 405 instead of describing serializers
    "EXCEPTION_HANDLER": "experiments.api.common.exception_handler",
    # Requests per client: anonymous ones by address, logged-in ones (token or session) by user.
    # Over the rate: 429 with Retry-After. Counted in the local-memory cache, so per web process
    # (`skydeck serve --workers N` allows up to N times the rate). The user rate sits far above
    # real use and bench/load.py (20 clients on one token, ~2,400/min). DRF checks throttles after
    # authentication and permissions, so today (every view but /api/health, a plain Django view,
    # needs a login) anonymous callers get 401 first; the anonymous rate guards any view opened up.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": throttle_rate("SKYDECK_API_THROTTLE_ANON", "60/min"),
        "user": throttle_rate("SKYDECK_API_THROTTLE_USER", "10000/min"),
    },
    # The client address for the anonymous rate: REMOTE_ADDR, or behind the proxy the right-most
    # X-Forwarded-For entry (as for login throttling above).
    "NUM_PROXIES": 1 if _BEHIND_PROXY else 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SkyDeck API",
    "DESCRIPTION": (
        "Experiments, groups, SkyPilot jobs and S3 checkpoints. Authenticate with the header "
        "`Authorization: Token <key>` (`skydeck tokens create USERNAME`) or the web session. "
        "Members of the `read-only` group may only read. Writes to experiments and groups "
        "accept a precondition (`If-Match: <updated_at>` or an `updated_at` body field) and "
        "answer 409 when the object changed since."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/",
    "ENUM_NAME_OVERRIDES": {
        "DesiredStateEnum": "experiments.models.DesiredState",
        "JobStatusEnum": "experiments.models.JobStatus",
        "CurrentStateEnum": "experiments.models.CURRENT_STATE_CHOICES",
        "OperationEnum": "experiments.models.Operation",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "experiments.api.system.postprocess_schema",
    ],
}
# Swagger UI's assets come from the drf-spectacular-sidecar package when it is installed (no
# CDN); without it /api/docs/ shows a plain list of the endpoints.
try:
    import drf_spectacular_sidecar  # noqa: F401
except ImportError:
    pass
else:
    INSTALLED_APPS = [*INSTALLED_APPS, "drf_spectacular_sidecar"]
    SPECTACULAR_SETTINGS.update(
        SWAGGER_UI_DIST="SIDECAR", SWAGGER_UI_FAVICON_HREF="SIDECAR", REDOC_DIST="SIDECAR"
    )
# --- end REST API ---------------------------------------------------------------------------


# --- This node (several SkyDeck nodes may share one PostgreSQL): recorded on leases, launches
# and the operation log, and shown per node in the health report. Default: the host name.
def _node_id() -> str:
    import socket

    value = envstr("SKYDECK_NODE_ID") or socket.gethostname() or "skydeck"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise ImproperlyConfigured(
            f"SKYDECK_NODE_ID {value!r} is not valid: up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


SKYDECK_NODE_ID = _node_id()
# A node whose worker has not been heard from for this long shows as gone (amber), in seconds.
SKYDECK_NODE_GONE_SECONDS = envint("SKYDECK_NODE_GONE_SECONDS", 60, minimum=15)

# --- Links shown in the UI (empty = not shown). Placeholders: {name}, {job_id}, {epoch} --------
SKYDECK_LINK_WANDB = envstr("SKYDECK_LINK_WANDB", "")
SKYDECK_LINK_SKYPILOT_JOB = envstr("SKYDECK_LINK_SKYPILOT_JOB", "")
SKYDECK_LINK_LOGS = envstr("SKYDECK_LINK_LOGS", "")
SKYDECK_LINK_CHECKPOINT_VIEWER = envstr("SKYDECK_LINK_CHECKPOINT_VIEWER", "")

# --- Fork from a checkpoint: the flag that receives the checkpoint's URI (empty = the form asks) --
SKYDECK_FORK_FLAG = envstr("SKYDECK_FORK_FLAG", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("SKYDECK_LOG_LEVEL", "INFO").upper()},
    # django-q2 says at INFO every task it runs and every schedule it queues (~8 lines per 30 s
    # in the serve terminal); warnings and deaths of its processes still show.
    "loggers": {
        "django-q": {"level": envstr("SKYDECK_WORKER_LOG_LEVEL", "WARNING").upper()},
    },
}

# --- SkyPilot -------------------------------------------------------------------------------
# None: resolve like SkyPilot's own client (SKYPILOT_API_SERVER_ENDPOINT, ~/.sky/config.yaml, local).
SKYDECK_SKYPILOT_ENDPOINT = envstr("SKYDECK_SKYPILOT_ENDPOINT")
SKYDECK_SKYPILOT_TIMEOUT = envfloat("SKYDECK_SKYPILOT_TIMEOUT", 10.0, minimum=0.1)
SKYDECK_SKYPILOT_REQUEST_TIMEOUT = envfloat("SKYDECK_SKYPILOT_REQUEST_TIMEOUT", 120.0, minimum=1)

# --- Job logs -------------------------------------------------------------------------------
# Log reads at once (tails and follows: the page's stream, the API, plain text), per web process
# (`skydeck serve` runs 8 threads per process, so the rest of the app always keeps threads); more
# answer 503 with Retry-After. `skydeck logs` is a command and not capped.
SKYDECK_LOG_STREAMS_MAX = envint("SKYDECK_LOG_STREAMS_MAX", 4, minimum=1, maximum=64)
# A web log read's SkyPilot calls (no retries): seconds to connect, and seconds to wait for an
# answer, for more of a tail, or for how the log ended. A followed log, once SkyPilot answered,
# waits as long as the job is quiet.
SKYDECK_LOG_CONNECT_TIMEOUT = envfloat("SKYDECK_LOG_CONNECT_TIMEOUT", 3.0, minimum=0.1)
SKYDECK_LOG_READ_TIMEOUT = envfloat("SKYDECK_LOG_READ_TIMEOUT", 10.0, minimum=0.5)

# --- S3 -------------------------------------------------------------------------------------
SKYDECK_S3_BUCKET = envstr("SKYDECK_S3_BUCKET", "softmax-public")
SKYDECK_S3_POLICY_PREFIX = envstr("SKYDECK_S3_POLICY_PREFIX", "policies").strip("/")
SKYDECK_S3_REPLAY_PREFIX = envstr("SKYDECK_S3_REPLAY_PREFIX", "replays").strip("/")
SKYDECK_S3_ENDPOINT_URL = envstr("SKYDECK_S3_ENDPOINT_URL")
SKYDECK_S3_REGION = envstr("SKYDECK_S3_REGION")

# --- Background work --------------------------------------------------------------------------


def sync_interval(name: str, default: int) -> int:
    """Seconds: 10, 12, 15, 20 or 30, or a whole number of minutes (django-q2 schedules)."""
    seconds = envint(name, default, minimum=10, maximum=86400)
    if seconds % 60 and 60 % seconds:
        raise ImproperlyConfigured(
            f"{name}={seconds} cannot be scheduled: use 10, 12, 15, 20 or 30 seconds, "
            "or a whole number of minutes (60, 120, ...)"
        )
    return seconds


SKYDECK_SYNC_SKYPILOT_INTERVAL = sync_interval("SKYDECK_SYNC_SKYPILOT_INTERVAL", 30)
SKYDECK_SYNC_S3_INTERVAL = sync_interval("SKYDECK_SYNC_S3_INTERVAL", 60)

# --- Backups ---------------------------------------------------------------------------------
# Scheduled snapshots of the SQLite database (experiments/backup.py): off while the directory is
# empty; `skydeck backup PATH` and `skydeck restore PATH` work regardless. PostgreSQL: pg_dump.
_backup_dir = envstr("SKYDECK_BACKUP_DIR", "")
SKYDECK_BACKUP_DIR = Path(_backup_dir).expanduser().resolve() if _backup_dir else None
if SKYDECK_BACKUP_DIR is not None and _database_url:
    raise ImproperlyConfigured(
        "SKYDECK_BACKUP_DIR schedules SQLite snapshots, but DATABASE_URL selects PostgreSQL: "
        "unset SKYDECK_BACKUP_DIR and back PostgreSQL up with pg_dump"
    )
SKYDECK_BACKUP_KEEP = envint("SKYDECK_BACKUP_KEEP", 7, minimum=1)
SKYDECK_BACKUP_INTERVAL = sync_interval("SKYDECK_BACKUP_INTERVAL", 86400)

# --- Reconciler (desired state -> SkyPilot) ---------------------------------------------------
# on: launch and cancel; dry-run: only log the plan; off: do nothing.
SKYDECK_RECONCILE = envchoice("SKYDECK_RECONCILE", "on", ["on", "off", "dry-run"])
SKYDECK_RECONCILE_MAX_LAUNCHES = envint("SKYDECK_RECONCILE_MAX_LAUNCHES", 10, minimum=1)
SKYDECK_BACKOFF_INITIAL = envint("SKYDECK_BACKOFF_INITIAL", 60, minimum=1)
SKYDECK_BACKOFF_MAX = envint("SKYDECK_BACKOFF_MAX", 3600, minimum=1)
SKYDECK_MAX_CONSECUTIVE_FAILURES = envint("SKYDECK_MAX_CONSECUTIVE_FAILURES", 5, minimum=1)
SKYDECK_LAUNCH_GRACE = envint("SKYDECK_LAUNCH_GRACE", 900, minimum=60)
# How each way a run ends in failure is treated (README "How desired state works"):
#   park     - a configuration error a retry cannot fix: park at once with SkyPilot's reason;
#   capacity - no resources right now: the longer capacity backoff, never counted towards parking;
#   retry    - back off exponentially; SKYDECK_MAX_CONSECUTIVE_FAILURES in a row park it.
# LAUNCH_FAILED is a launch request the server refused; LAUNCH_LOST one whose job never appeared.
# Override single entries with e.g. SKYDECK_FAILURE_CLASSES="FAILED_SETUP=park,FAILED=capacity".
FAILURE_CLASS_CHOICES = ("park", "capacity", "retry")
DEFAULT_FAILURE_CLASSES = {
    "FAILED_PRECHECKS": "park",
    "FAILED_NO_RESOURCE": "capacity",
    "FAILED_SETUP": "retry",
    "FAILED": "retry",
    "FAILED_CONTROLLER": "retry",
    "LAUNCH_FAILED": "retry",
    "LAUNCH_LOST": "retry",
}


def _failure_classes() -> dict[str, str]:
    classes = dict(DEFAULT_FAILURE_CLASSES)
    for entry in envlist("SKYDECK_FAILURE_CLASSES", []):
        status, _, kind = entry.partition("=")
        status, kind = status.strip().upper(), kind.strip().lower()
        if status not in DEFAULT_FAILURE_CLASSES or kind not in FAILURE_CLASS_CHOICES:
            raise ImproperlyConfigured(
                f"SKYDECK_FAILURE_CLASSES: {entry!r} must be STATUS=CLASS with STATUS one of "
                f"{', '.join(DEFAULT_FAILURE_CLASSES)} and CLASS one of "
                f"{', '.join(FAILURE_CLASS_CHOICES)}"
            )
        classes[status] = kind
    return classes


SKYDECK_FAILURE_CLASSES = _failure_classes()
SKYDECK_CAPACITY_BACKOFF_INITIAL = envint("SKYDECK_CAPACITY_BACKOFF_INITIAL", 600, minimum=1)
SKYDECK_CAPACITY_BACKOFF_MAX = envint("SKYDECK_CAPACITY_BACKOFF_MAX", 3600, minimum=1)
# A pass acts only on a job listing at most this old (seconds; plus the last sync's duration,
# so a slow SkyPilot server delays the reconciler instead of starving it).
SKYDECK_RECONCILE_MAX_LISTING_AGE = envint(
    "SKYDECK_RECONCILE_MAX_LISTING_AGE",
    max(60, 3 * SKYDECK_SYNC_SKYPILOT_INTERVAL),
    minimum=10,
)
# Used when an experiment asks for GPUs but names no accelerator; empty means "refuse to launch".
SKYDECK_DEFAULT_ACCELERATOR = envstr("SKYDECK_DEFAULT_ACCELERATOR", "")
# A YAML file with the rest of every task (setup, workdir {url, ref}, image_id, use_spot, ...).
SKYDECK_TASK_TEMPLATE = envstr("SKYDECK_TASK_TEMPLATE")
# Who launches, as the SkyPilot API server records it on servers without auth.
SKYDECK_LAUNCH_USER = envstr("SKYDECK_LAUNCH_USER", "skydeck")

# --- progress from logs, stalled runs, failed jobs' log tails (README "Progress and stalled runs")
# The sampler reads SKYDECK_SAMPLE_LINES last log lines of at most SKYDECK_SAMPLE_MAX_JOBS running
# jobs of desired-RUNNING experiments every SKYDECK_SAMPLE_INTERVAL seconds; each job keeps at most
# SKYDECK_SAMPLES_PER_JOB samples (older ones thinned).
SKYDECK_SAMPLE_INTERVAL = sync_interval("SKYDECK_SAMPLE_INTERVAL", 300)
SKYDECK_SAMPLE_LINES = envint("SKYDECK_SAMPLE_LINES", 200, minimum=10, maximum=5000)
SKYDECK_SAMPLE_MAX_JOBS = envint("SKYDECK_SAMPLE_MAX_JOBS", 20, minimum=1, maximum=1000)
SKYDECK_SAMPLES_PER_JOB = envint("SKYDECK_SAMPLES_PER_JOB", 500, minimum=10, maximum=100000)
# A running job is stalled after this many minutes without log progress or, for an experiment
# that has written checkpoints, without a new one (a group's stall_minutes overrides it; 0: off).
SKYDECK_STALL_MINUTES = envint("SKYDECK_STALL_MINUTES", 60, minimum=0)
# A job that recovered (spot preemption, node failure) more than this many times is flagged.
SKYDECK_MAX_RECOVERIES = envint("SKYDECK_MAX_RECOVERIES", 3, minimum=0)
# A failed job's last log lines, read once after it ended: how many lines and at most how many
# characters are kept, and how many jobs a pass reads (newest first).
SKYDECK_FAILURE_LOG_LINES = envint("SKYDECK_FAILURE_LOG_LINES", 100, minimum=10, maximum=2000)
SKYDECK_FAILURE_LOG_MAX_CHARS = envint("SKYDECK_FAILURE_LOG_MAX_CHARS", 16000, minimum=1000)
SKYDECK_FAILURE_LOG_BATCH = envint("SKYDECK_FAILURE_LOG_BATCH", 10, minimum=1, maximum=500)
# The page header's health pills reuse one process's health report this many seconds (0: ask on
# every page; /api/health always asks).
SKYDECK_HEALTH_CACHE_SECONDS = envfloat("SKYDECK_HEALTH_CACHE_SECONDS", 2.0, minimum=0)

# --- notifications (README "Notifications"): webhook POSTs give up after SKYDECK_NOTIFY_TIMEOUT
# seconds and are tried SKYDECK_NOTIFY_MAX_ATTEMPTS times (1, 2, 4 ... minutes apart); repeats of
# an event with the same key within SKYDECK_NOTIFY_COLLAPSE_MINUTES add to one message; a sync is
# "failing" once it has had no success for SKYDECK_NOTIFY_SYNC_FAILING_MINUTES.
SKYDECK_NOTIFY_TIMEOUT = envfloat("SKYDECK_NOTIFY_TIMEOUT", 5.0, minimum=0.1)
SKYDECK_NOTIFY_MAX_ATTEMPTS = envint("SKYDECK_NOTIFY_MAX_ATTEMPTS", 5, minimum=1, maximum=20)
SKYDECK_NOTIFY_COLLAPSE_MINUTES = envint("SKYDECK_NOTIFY_COLLAPSE_MINUTES", 60, minimum=0)
SKYDECK_NOTIFY_SYNC_FAILING_MINUTES = envint("SKYDECK_NOTIFY_SYNC_FAILING_MINUTES", 15, minimum=1)

Q_CLUSTER = {
    "name": "skydeck",
    "orm": "default",  # the ORM broker: the queue lives in SkyDeck's own database
    "workers": envint("SKYDECK_WORKERS", 2, minimum=1, maximum=16),
    "timeout": envint("SKYDECK_TASK_TIMEOUT", 300, minimum=10),
    # retry must exceed timeout, or a slow task is handed out twice while still running
    "retry": envint("SKYDECK_TASK_TIMEOUT", 300, minimum=10) + 60,
    "max_attempts": 1,
    "catch_up": False,
    "save_limit": 500,
    "ack_failures": True,
    "poll": 1,
    "label": "Task queue",
}
