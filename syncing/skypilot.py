"""Plain-HTTP client for the SkyPilot API server (SkyPilot 0.14.1, API version 62).

SkyDeck never imports the ``sky`` SDK: it is heavy, pins many dependencies and reads local state.
Instead this module speaks the server's asynchronous request protocol directly (see
``docs/skypilot-api.md``): every operation is a POST that returns a request id, which is polled
with ``/api/status`` and collected with ``/api/get``.

Every failure surfaces as a subclass of :class:`SkyPilotError` whose message is one line and never
contains cookies, tokens or passwords, so callers can show it to users and write it to logs.
"""

from __future__ import annotations

import codecs
import http.cookiejar
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import yaml
from requests.auth import AuthBase

logger = logging.getLogger(__name__)

#: Protocol versions this client speaks; sent on every request.
API_VERSION = 62
SKYPILOT_VERSION = "0.14.1"

DEFAULT_ENDPOINT = "http://127.0.0.1:46580"
DEFAULT_CONFIG_PATH = "~/.sky/config.yaml"
DEFAULT_COOKIE_PATH = "~/.sky/cookies.txt"

ENV_ENDPOINT = "SKYPILOT_API_SERVER_ENDPOINT"
ENV_CONFIG = "SKYPILOT_GLOBAL_CONFIG"
ENV_TOKEN = "SKYPILOT_SERVICE_ACCOUNT_TOKEN"  # noqa: S105 - an env var name, not a secret
ENV_COOKIE_FILE = "SKYPILOT_API_COOKIE_FILE"

REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
API_VERSION_HEADER = "X-SkyPilot-API-Version"
VERSION_HEADER = "X-SkyPilot-Version"

REQUEST_STATUSES = frozenset({"PENDING", "WAITING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"})
TERMINAL_REQUEST_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

#: What a finished ``/jobs/logs`` request's result (an exit code) means: SkyPilot's
#: ``JobExitCode``. Any other number is reported as it is.
LOG_SUCCEEDED = 0
LOG_FAILED = 100
LOG_NOT_FINISHED = 101
LOG_NOT_FOUND = 102
LOG_CANCELLED = 103

_LOGIN_HINT = "run `sky api login`"
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_UNAVAILABLE_CODES = frozenset({502, 503, 504})
_MAX_MESSAGE_CHARS = 500
_POLL_INITIAL = 0.1
_POLL_MAX = 2.0

_ENDPOINT_RE = re.compile(r"^https?://")
# OSC sequences first: their introducer "]" also falls in the two-byte escape range.
_ANSI_RE = re.compile(r"\x1b(?:\][^\x07\x1b]*(?:\x07|\x1b\\)|\[[0-?]*[ -/]*[@-~]|[@-Z\\-_])")
_PAYLOAD_RE = re.compile(r"<sky-payload(?:\s[^>]*)?>.*?</sky-payload>", re.DOTALL)
_USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")
_ERRNO_RE = re.compile(r"\[Errno -?\d+\][^'\")\]]*")


# --------------------------------------------------------------------------------------------
# Exceptions
# --------------------------------------------------------------------------------------------


class SkyPilotError(Exception):
    """Base class: anything that went wrong talking to the SkyPilot API server."""


class AuthenticationRequired(SkyPilotError):
    """The server (or its OAuth2 proxy) wants a login: the user must run ``sky api login``."""


class Forbidden(SkyPilotError):
    """Authenticated, but this user's role may not perform the operation (HTTP 403)."""


class VersionMismatch(SkyPilotError):
    """The server refuses this client's API version (or reports a mismatch on health)."""


class ServerUnavailable(SkyPilotError):
    """The server cannot be reached or is overloaded; worth trying again later."""


class MalformedResponse(SkyPilotError):
    """The server answered with something that does not follow the protocol."""


class RequestFailed(SkyPilotError):
    """The server ran the request and it failed (or answered with an HTTP error).

    ``error_type`` is the server-side exception class (e.g. ``ClusterNotUpError``) or
    ``"HTTP <code>"``; ``server_message`` is its message with ANSI colours removed.
    """

    def __init__(
        self,
        error_type: str,
        server_message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.error_type = error_type
        self.server_message = server_message
        self.status_code = status_code
        self.request_id = request_id
        super().__init__(f"{error_type}: {_one_line(server_message)}")


# --------------------------------------------------------------------------------------------
# Text helpers
# --------------------------------------------------------------------------------------------


def strip_ansi(s: str) -> str:
    """Remove ANSI escape codes: SkyPilot colours its messages and logs for terminals."""
    return _ANSI_RE.sub("", s) if "\x1b" in s else s


def clean_log_line(s: str) -> str:
    """Make one raw log line displayable.

    Drops ``<sky-payload>`` segments (machine-readable control messages such as rich spinner
    updates), ANSI codes and trailing whitespace; for carriage-return progress bars only the last
    state is kept, which is what a terminal would show.
    """
    text = _PAYLOAD_RE.sub("", strip_ansi(s)).rstrip("\r\n")
    if "\r" in text:
        parts = [part for part in text.split("\r") if part.strip()]
        text = parts[-1] if parts else ""
    return text.rstrip()


def redact_endpoint(url: str) -> str:
    """Return ``url`` without any ``user:pass@`` part, for messages and logs."""
    redacted = _USERINFO_RE.sub(r"\g<scheme>", url)
    if "://" not in redacted:
        # Malformed values without a scheme ("user:pass@host") still must not leak.
        head, sep, rest = redacted.partition("/")
        if "@" in head:
            redacted = head.rpartition("@")[2] + sep + rest
    return redacted


def _one_line(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace so exception messages stay on one line and bounded in size."""
    flat = " ".join(strip_ansi(str(text)).split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return flat


def interrupt_stream(response: requests.Response) -> bool:
    """Wake a thread blocked reading ``response`` (from any thread); False if it cannot be.

    Closing a socket does not interrupt a ``recv`` running in another thread; shutting its
    reading side down does: the reader sees the end of the stream and closes the connection,
    which tells the server to stop. Responses without a live socket (already released, or a
    test double) cannot be interrupted.
    """
    raw = getattr(response, "raw", None)
    shutdown = getattr(raw, "shutdown", None)
    if shutdown is None:
        return False
    try:
        shutdown()
    except (OSError, ValueError, RuntimeError):
        return False
    return True


# --------------------------------------------------------------------------------------------
# Configuration: endpoint and credentials
# --------------------------------------------------------------------------------------------


def _config_path() -> str:
    return os.path.expanduser(os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH)


def _load_api_server_config() -> dict[str, Any]:
    """Return the ``api_server`` section of SkyPilot's config ({} when there is none).

    A file that exists but cannot be parsed is an error rather than being ignored: silently
    falling back to the default endpoint would talk to the wrong server. YAML parser messages
    quote file content (possibly a token), so only the line number is reported.
    """
    path = _config_path()
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise SkyPilotError(
            f"cannot read SkyPilot config {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SkyPilotError(f"SkyPilot config {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SkyPilotError(f"SkyPilot config {path} must be a YAML mapping")
    section = data.get("api_server")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise SkyPilotError(f"SkyPilot config {path}: `api_server` must be a mapping")
    return section


def resolve_endpoint(override: str | None = None) -> str:
    """Find the API server URL the same way the ``sky`` CLI does, so both talk to one server.

    Order: ``override``, env ``SKYPILOT_API_SERVER_ENDPOINT``, ``api_server.endpoint`` in the
    SkyPilot config, then the local default. Blank values count as unset. The result keeps any
    ``user:pass@`` (the client turns it into basic auth) but loses a trailing ``/``.
    """
    value: Any = override if override and override.strip() else None
    source = "endpoint setting"
    if value is None and (os.environ.get(ENV_ENDPOINT) or "").strip():
        value, source = os.environ[ENV_ENDPOINT], f"${ENV_ENDPOINT}"
    if value is None:
        configured = _load_api_server_config().get("endpoint")
        if configured is not None:
            source = f"api_server.endpoint in {_config_path()}"
            if not isinstance(configured, str):
                raise SkyPilotError(f"{source} must be a string URL")
            value = configured if configured.strip() else None
    if value is None:
        return DEFAULT_ENDPOINT
    endpoint = value.strip().rstrip("/")
    if not _ENDPOINT_RE.match(endpoint):
        raise SkyPilotError(
            f"invalid SkyPilot API server endpoint {redact_endpoint(endpoint)!r} from {source}: "
            "it must start with http:// or https://"
        )
    try:
        parts = urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        parts = None
    if parts is None or not parts.hostname:
        raise SkyPilotError(
            f"invalid SkyPilot API server endpoint {redact_endpoint(endpoint)!r} from {source}: "
            "it has no valid host"
        )
    return endpoint


def _split_basic_auth(endpoint: str) -> tuple[str, tuple[str, str] | None]:
    """Separate ``user:pass@`` from the URL so it travels as an auth header, not in URLs."""
    parts = urlsplit(endpoint)
    if "@" not in parts.netloc:
        return endpoint, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    base = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return base, (unquote(user), unquote(password))


def _service_account_token() -> str | None:
    token = (os.environ.get(ENV_TOKEN) or "").strip()
    if token:
        return token
    configured = _load_api_server_config().get("service_account_token")
    if configured is None:
        return None
    if not isinstance(configured, str):
        raise SkyPilotError(
            f"api_server.service_account_token in {_config_path()} must be a string"
        )
    return configured.strip() or None


def _load_cookie_jar() -> http.cookiejar.MozillaCookieJar | None:
    """Load the OAuth2-proxy cookies written by ``sky api login`` (None when there are none).

    ``LoadError`` messages quote the offending line, i.e. a cookie value, so they are not
    passed on.
    """
    path = os.path.expanduser(os.environ.get(ENV_COOKIE_FILE) or DEFAULT_COOKIE_PATH)
    if not os.path.exists(path):
        return None
    jar = http.cookiejar.MozillaCookieJar(path)
    try:
        jar.load(ignore_discard=True)
    except http.cookiejar.LoadError:
        raise SkyPilotError(
            f"SkyPilot cookie file {path} is not a valid Netscape cookie file; "
            f"delete it and {_LOGIN_HINT}"
        ) from None
    except OSError as exc:
        raise SkyPilotError(
            f"cannot read SkyPilot cookie file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise SkyPilotError(
            f"SkyPilot cookie file {path} is corrupt; delete it and {_LOGIN_HINT}"
        ) from None
    return jar


class _BearerAuth(AuthBase):
    """Bearer auth as an ``auth`` object, so requests' .netrc lookup cannot override it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    def __repr__(self) -> str:
        return "<_BearerAuth ***>"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class QueuePage:
    """One page of the managed-jobs queue; totals are None when the server omits them."""

    jobs: list[dict[str, Any]]
    total: int | None
    total_no_filter: int | None


def _optional_int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse(f"SkyPilot jobs queue returned a non-integer {what}")
    return value


def _is_cluster_not_up(exc: RequestFailed) -> bool:
    return exc.error_type.rsplit(".", 1)[-1] == "ClusterNotUpError"


def _extract_job_id(result: Any) -> int:
    """Accept ``{"job_id": [id], ...}``, ``{"job_id": id}`` or a bare int."""
    value = result.get("job_id") if isinstance(result, dict) else result
    if isinstance(value, list) and len(value) >= 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedResponse("SkyPilot jobs launch returned no job id")
    return value


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def pause(seconds: float) -> None:
    """How the client waits between retries and polls (tests patch ``syncing.skypilot.pause``)."""
    time.sleep(seconds)


def _pause(seconds: float) -> None:
    pause(seconds)  # late-bound, so a patched ``pause`` is seen by clients made before


@cache
def skydeck_version() -> str:
    """The installed SkyDeck's version ("" when not installed; syncing.nodes reports it too)."""
    try:
        return metadata.version("skydeck")
    except metadata.PackageNotFoundError:
        return ""


def user_agent(node: str = "") -> str:
    """``skydeck/<version> (node <id>)``: which SkyDeck, and which node of it, is asking."""
    agent = f"skydeck/{skydeck_version() or 'unknown'}"
    return f"{agent} (node {node})" if node else agent


class SkyPilotClient:
    """Talks to one SkyPilot API server; safe to reuse for many calls (keeps a session)."""

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        timeout: float = 10.0,
        request_timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        node: str = "",
    ) -> None:
        """Resolve endpoint and credentials now, so configuration errors surface early.

        ``timeout`` bounds connecting and each HTTP read; ``request_timeout`` bounds how long
        we wait for the server to finish an asynchronous request. ``sleep``/``clock`` exist so
        tests do not wait for real; without ``sleep`` the client waits with :func:`pause`, looked
        up at each wait (the one seam a test patches for clients it does not build itself).
        ``node`` (SKYDECK_NODE_ID) goes into the User-Agent, so the API server's request log
        says which SkyDeck node sent each request.
        """
        self.timeout = float(timeout)
        self.request_timeout = float(request_timeout)
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        self._sleep = sleep or _pause
        self._clock = clock
        self.user_agent = user_agent(node)

        full_endpoint = resolve_endpoint(endpoint)
        self.base_url, basic_auth = _split_basic_auth(full_endpoint)
        #: The endpoint without credentials: the only form used in messages and logs.
        self.endpoint = redact_endpoint(self.base_url)
        self._secrets: list[str] = []

        self._session = session if session is not None else requests.Session()
        token = _service_account_token()
        self._auth: AuthBase | tuple[str, str] | None
        if token:
            # Service accounts authenticate by token only: send no cookies, and refuse to
            # collect any the server sets.
            self._auth = _BearerAuth(token)
            self._secrets.append(token)
            self._session.cookies.clear()
            self._session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        else:
            self._auth = basic_auth
            jar = _load_cookie_jar()
            if jar is not None:
                self._session.cookies.update(jar)
                self._secrets.extend(c.value for c in jar if c.value)
        if basic_auth is not None and basic_auth[1]:
            self._secrets.append(basic_auth[1])
        self._secrets = [s for s in self._secrets if len(s) >= 4]

    @classmethod
    def from_settings(cls) -> SkyPilotClient:
        """Build a client from Django settings (imported lazily so this module needs no Django)."""
        from django.conf import settings

        endpoint = getattr(settings, "SKYDECK_SKYPILOT_ENDPOINT", None)
        return cls(
            endpoint or None,
            timeout=settings.SKYDECK_SKYPILOT_TIMEOUT,
            request_timeout=settings.SKYDECK_SKYPILOT_REQUEST_TIMEOUT,
            node=settings.SKYDECK_NODE_ID,
        )

    def __repr__(self) -> str:
        return f"<SkyPilotClient {self.endpoint}>"

    # ---- public operations ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Check the server and our credentials/version; the ``user`` object is dropped.

        The ``user`` object can hold a password hash with basic auth, so it must never be
        stored or displayed.
        """
        response = self._send("GET", "/api/health", idempotent=True)
        data = self._json(response, "GET /api/health")
        if not isinstance(data, dict):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a non-object health answer"
            )
        data.pop("user", None)
        status = data.get("status")
        if status == "needs_auth":
            raise AuthenticationRequired(self._auth_message())
        if status == "version_mismatch":
            detail = data.get("message") or data.get("version") or "incompatible versions"
            raise VersionMismatch(self._version_message(str(detail)))
        return data

    def queue(
        self,
        *,
        all_users: bool = True,
        skip_finished: bool = False,
        fields: Iterable[str] | None = None,
        page: int | None = None,
        limit: int | None = None,
        submitted_after: float | None = None,
        job_ids: Iterable[int] | None = None,
        statuses: Iterable[str] | None = None,
    ) -> QueuePage:
        """Fetch managed jobs via ``/jobs/queue/v2`` (the old endpoint leaves most fields null).

        With no jobs controller yet the server fails with ``ClusterNotUpError``; that means
        "no jobs", so an empty page is returned instead of an error.
        """
        if limit is not None and limit < 1:
            raise ValueError("limit must be >= 1")
        if page is not None and limit is None:
            raise ValueError("page needs limit")
        body: dict[str, Any] = {
            "all_users": all_users,
            "skip_finished": skip_finished,
            "refresh": False,
        }
        optional: dict[str, Any] = {
            "fields": list(fields) if fields is not None else None,
            "page": page,
            "limit": limit,
            "submitted_after": submitted_after,
            "job_ids": list(job_ids) if job_ids is not None else None,
            "statuses": list(statuses) if statuses is not None else None,
        }
        body.update({key: value for key, value in optional.items() if value is not None})

        request_id = self._submit("/jobs/queue/v2", body, idempotent=True)
        try:
            result = self._wait(request_id)
        except RequestFailed as exc:
            if _is_cluster_not_up(exc):
                logger.info("SkyPilot jobs controller is not up: treating the queue as empty")
                return QueuePage(jobs=[], total=0, total_no_filter=0)
            raise
        if not isinstance(result, dict) or not isinstance(result.get("jobs"), list):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a jobs queue without a jobs list"
            )
        jobs = result["jobs"]
        if not all(isinstance(job, dict) for job in jobs):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a non-object job record"
            )
        return QueuePage(
            jobs=jobs,
            total=_optional_int(result.get("total"), "total"),
            total_no_filter=_optional_int(result.get("total_no_filter"), "total_no_filter"),
        )

    def launch(self, task_yaml: str, *, env_vars: dict[str, str] | None = None) -> int:
        """Launch a managed job and return its id. Never retried: a retry could launch twice.

        The job name comes from the YAML's ``name:``; the body's ``name`` must still be present.
        """
        if not isinstance(task_yaml, str) or not task_yaml.strip():
            raise ValueError("task_yaml must be a non-empty YAML string")
        body: dict[str, Any] = {"task": task_yaml, "name": None}
        if env_vars is not None:
            body["env_vars"] = dict(env_vars)
        request_id = self._submit("/jobs/launch", body, idempotent=False)
        job_id = _extract_job_id(self._wait(request_id))
        logger.info("launched SkyPilot managed job %s (request %s)", job_id, request_id)
        return job_id

    def cancel(self, job_ids: list[int]) -> None:
        """Cancel managed jobs by id and wait until the server has processed it (not retried)."""
        ids = list(job_ids)
        if not ids or any(isinstance(i, bool) or not isinstance(i, int) for i in ids):
            raise ValueError("job_ids must be a non-empty list of integers")
        request_id = self._submit("/jobs/cancel", {"job_ids": ids}, idempotent=False)
        self._wait(request_id)
        logger.info("cancelled SkyPilot managed jobs %s (request %s)", ids, request_id)

    def stream_logs(
        self,
        job_id: int,
        *,
        tail: int | None = None,
        follow: bool = False,
        on_open: Callable[[requests.Response], None] | None = None,
    ) -> Iterator[str]:
        """Yield a managed job's log lines, cleaned for display.

        Lazy: the request is sent on the first ``next()``. Closing the generator closes the
        connection, which is how the server learns to stop following. With ``follow`` there is
        no read timeout, since a job may be quiet for a long time. ``on_open`` receives the
        streaming response once the server answered: a reader blocked in another thread can only
        be woken by shutting that response's socket down (see :func:`interrupt_stream`).
        """
        body = {"job_id": job_id, "follow": follow, "tail": tail, "controller": False}
        read_timeout = None if follow else max(self.timeout, self.request_timeout)
        response = self._send(
            "POST",
            "/jobs/logs",
            json_body=body,
            idempotent=True,
            stream=True,
            timeout=(self.timeout, read_timeout),
        )
        try:
            self._stream_opened(response, follow=follow)
            if on_open is not None:
                on_open(response)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            pending = ""
            try:
                for chunk in response.iter_content(chunk_size=None):
                    if not chunk:
                        continue
                    pending += decoder.decode(chunk)
                    *lines, pending = pending.split("\n")
                    for raw in lines:
                        line = self._clean_streamed(raw)
                        if line is not None:
                            yield line
                pending += decoder.decode(b"", final=True)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise self._unavailable(exc) from None
            except requests.RequestException as exc:
                raise ServerUnavailable(
                    f"log stream from SkyPilot API server at {self.endpoint} broke off "
                    f"({type(exc).__name__})"
                ) from None
            if pending:
                line = self._clean_streamed(pending)
                if line is not None:
                    yield line
        finally:
            response.close()

    def _stream_opened(self, response: requests.Response, *, follow: bool) -> None:
        """A hook for subclasses, called once a log stream's server has answered."""

    def log_exit_code(self, request_id: str) -> int:
        """The exit code of a finished ``/jobs/logs`` request (``LOG_*``): how the job ended,
        or that SkyPilot had no such job. ``request_id`` is the stream's request-id header."""
        value = self._wait(request_id)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a log result that is not an "
                f"exit code ({type(value).__name__})"
            )
        return value

    # ---- asynchronous request protocol ------------------------------------------------------

    def _submit(self, path: str, body: dict[str, Any], *, idempotent: bool) -> str:
        """POST an operation and return its request id (read only from a 200 answer)."""
        response = self._send("POST", path, json_body=body, idempotent=idempotent)
        try:
            request_id = (response.headers.get(REQUEST_ID_HEADER) or "").strip()
        finally:
            response.close()
        if not request_id:
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} accepted POST {path} "
                f"but sent no {REQUEST_ID_HEADER} header"
            )
        logger.debug("SkyPilot POST %s -> request %s", path, request_id)
        return request_id

    def _wait(self, request_id: str) -> Any:
        """Poll until the request finishes, then return its decoded result.

        ``/api/get`` blocks without a server-side limit, so we poll ``/api/status`` first and
        only fetch the result once the request is terminal, bounded by ``request_timeout``.
        """
        deadline = self._clock() + self.request_timeout
        delay = _POLL_INITIAL
        while True:
            status = self._request_status(request_id)
            if status in TERMINAL_REQUEST_STATUSES:
                break
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ServerUnavailable(
                    f"SkyPilot request {request_id} is still {status} after "
                    f"{self.request_timeout:g}s at {self.endpoint}; it may still complete"
                )
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, _POLL_MAX)
        if status == "CANCELLED":
            raise self._cancelled(request_id)
        return self._get_result(request_id)

    def _request_status(self, request_id: str) -> str:
        response = self._send(
            "GET",
            "/api/status",
            params={"request_ids": request_id, "all_status": "true"},
            idempotent=True,
        )
        data = self._json(response, "GET /api/status")
        entries = [data] if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a non-list request status"
            )
        records = [entry for entry in entries if isinstance(entry, dict)]
        match = [r for r in records if r.get("request_id") == request_id]
        if not match:
            # Tolerate id prefixes / omitted ids when the answer is unambiguous.
            match = [
                r
                for r in records
                if isinstance(r.get("request_id"), str)
                and (
                    request_id.startswith(r["request_id"]) or r["request_id"].startswith(request_id)
                )
            ] or (records if len(records) == 1 and "request_id" not in records[0] else [])
        if len(match) != 1 or not isinstance(match[0].get("status"), str):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned no status for request "
                f"{request_id}"
            )
        status = match[0]["status"].rsplit(".", 1)[-1].upper()
        if status not in REQUEST_STATUSES:
            logger.debug("unknown SkyPilot request status %r; still waiting", status)
        return status

    def _get_result(self, request_id: str) -> Any:
        response = self._send(
            "GET", "/api/get", params={"request_id": request_id}, idempotent=True, ok=(200, 500)
        )
        if response.status_code == 500:
            try:
                data = response.json()
            except ValueError:
                data = None
            payload = data.get("detail") if isinstance(data, dict) else None
            if isinstance(payload, dict):
                raise self._failure(payload, request_id)
            detail = payload if isinstance(payload, str) else "internal server error"
            raise RequestFailed(
                "HTTP 500", self._scrub(detail), status_code=500, request_id=request_id
            )

        data = self._json(response, "GET /api/get")
        if not isinstance(data, dict):
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned a non-object request result"
            )
        status = str(data.get("status") or "").rsplit(".", 1)[-1].upper()
        if status == "FAILED":
            raise self._failure(data, request_id)
        if status == "CANCELLED":
            raise self._cancelled(request_id)
        value = data.get("return_value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise MalformedResponse(
                    f"SkyPilot request {request_id} returned a return_value that is not JSON"
                ) from None
        # Tolerate a server that already decoded the value (or returned none).
        return value

    def _failure(self, payload: dict[str, Any], request_id: str) -> RequestFailed:
        """Turn a FAILED request payload into RequestFailed; the pickled ``object`` is ignored."""
        error: Any = payload.get("error")
        if isinstance(error, str):
            try:
                error = json.loads(error)
            except ValueError:
                error = {"type": "UnknownError", "message": error}
        if isinstance(error, dict):
            error_type = str(error.get("type") or "UnknownError")
            message = str(error.get("message") or "")
        else:
            error_type = "UnknownError"
            message = str(payload.get("status_msg") or "request failed without error details")
        return RequestFailed(
            error_type,
            self._scrub(strip_ansi(message).strip()),
            status_code=500,
            request_id=request_id,
        )

    @staticmethod
    def _cancelled(request_id: str) -> RequestFailed:
        return RequestFailed(
            "RequestCancelled",
            f"SkyPilot request {request_id} was cancelled",
            request_id=request_id,
        )

    # ---- HTTP plumbing ----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        idempotent: bool,
        stream: bool = False,
        timeout: tuple[float, float | None] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> requests.Response:
        """Send one request, map errors, and retry ServerUnavailable for idempotent calls only."""
        attempts = 1 + (self.retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return self._send_once(
                    method,
                    path,
                    params=params,
                    json_body=json_body,
                    stream=stream,
                    timeout=timeout or (self.timeout, self.timeout),
                    ok=ok,
                )
            except ServerUnavailable as exc:
                if attempt + 1 >= attempts:
                    raise
                delay = self.backoff * (2**attempt)
                logger.warning(
                    "%s; retrying %s %s in %.1fs (%d/%d)",
                    exc,
                    method,
                    path,
                    delay,
                    attempt + 1,
                    attempts - 1,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_once(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None,
        json_body: Any,
        stream: bool,
        timeout: tuple[float, float | None],
        ok: tuple[int, ...],
    ) -> requests.Response:
        headers = {
            API_VERSION_HEADER: str(API_VERSION),
            VERSION_HEADER: SKYPILOT_VERSION,
            "Accept": "application/json",
            "User-Agent": self.user_agent,
        }
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            kwargs["json"] = json_body
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                headers=headers,
                auth=self._auth,
                timeout=timeout,
                allow_redirects=False,
                stream=stream,
                **kwargs,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise self._unavailable(exc) from None
        except requests.RequestException as exc:
            raise SkyPilotError(
                f"{method} {path} to SkyPilot API server at {self.endpoint} failed: "
                f"{type(exc).__name__}"
            ) from None
        logger.debug("SkyPilot %s %s -> HTTP %s", method, path, response.status_code)
        if response.status_code in ok:
            return response
        try:
            raise self._http_error(response, method, path)
        finally:
            response.close()

    def _http_error(self, response: requests.Response, method: str, path: str) -> SkyPilotError:
        """Map a non-OK HTTP answer to the exception hierarchy."""
        code = response.status_code
        if code in _REDIRECT_CODES:
            # Almost always the OAuth2 proxy sending us to /oauth2/start; any redirect means
            # we are not talking to the API itself.
            return AuthenticationRequired(self._auth_message())
        if code == 401:
            detail = self._detail(response)
            short = f" ({detail})" if detail and len(detail) <= 120 else ""
            return AuthenticationRequired(self._auth_message(short))
        if code == 403:
            detail = self._detail(response) or "Forbidden"
            return Forbidden(
                f"SkyPilot API server at {self.endpoint} refused {method} {path}: {detail} "
                "(your role may not do this)"
            )
        if code in _UNAVAILABLE_CODES:
            return ServerUnavailable(
                f"SkyPilot API server at {self.endpoint} is unavailable (HTTP {code})"
            )
        body = self._json_or_none(response)
        if code == 400 and isinstance(body, dict) and body.get("error") == "version_mismatch":
            return VersionMismatch(self._version_message(str(body.get("message") or "")))
        if 400 <= code < 600:
            return RequestFailed(f"HTTP {code}", self._detail(response, body), status_code=code)
        return MalformedResponse(
            f"SkyPilot API server at {self.endpoint} answered {method} {path} "
            f"with unexpected HTTP {code}"
        )

    def _detail(self, response: requests.Response, body: Any = None) -> str:
        """A short, secret-free description of an error body."""
        if body is None:
            body = self._json_or_none(response)
        detail: Any
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("message") or body.get("error") or ""
        elif body is not None:
            detail = body
        else:
            text = (response.text or "").strip()
            # HTML error pages (proxies) are noise: use the status reason instead.
            detail = (response.reason or "") if text.startswith("<") else text
        if not isinstance(detail, str):
            detail = json.dumps(detail, default=str)
        return _one_line(self._scrub(detail))

    @staticmethod
    def _json_or_none(response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    def _json(self, response: requests.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(
                f"SkyPilot API server at {self.endpoint} returned invalid JSON for {what}"
            ) from None
        except requests.RequestException as exc:
            raise ServerUnavailable(
                f"SkyPilot API server at {self.endpoint} broke off the answer to {what} "
                f"({type(exc).__name__})"
            ) from None

    def _unavailable(self, exc: requests.RequestException) -> ServerUnavailable:
        """Describe a transport failure without echoing URLs, proxies or headers."""
        if isinstance(exc, requests.Timeout):
            reason = "timed out"
        else:
            match = _ERRNO_RE.search(str(exc))
            reason = match.group(0).strip() if match else "connection failed"
        return ServerUnavailable(
            f"cannot reach SkyPilot API server at {self.endpoint}: {self._scrub(reason)}"
        )

    def _auth_message(self, extra: str = "") -> str:
        return (
            f"authentication needed for SkyPilot API server at {self.endpoint}{extra}: "
            f"{_LOGIN_HINT}"
        )

    def _version_message(self, detail: str) -> str:
        detail = _one_line(self._scrub(detail)) or "incompatible versions"
        return (
            f"SkyPilot API server at {self.endpoint} is incompatible with this client "
            f"(SkyPilot {SKYPILOT_VERSION}, API {API_VERSION}): {detail}"
        )

    def _scrub(self, text: str) -> str:
        """Remove anything that looks like or is one of our secrets from server-provided text."""
        text = _USERINFO_RE.sub(r"\g<scheme>", text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @staticmethod
    def _clean_streamed(raw: str) -> str | None:
        """Clean a streamed line; None for lines that only carried a control payload."""
        line = clean_log_line(raw)
        if not line.strip() and ("<sky-payload" in raw or "\r" in raw.rstrip("\r\n")):
            return None
        return line
