"""Job logs: a SkyPilot managed job's log for the UI, the API and ``manage.py logs``.

SkyPilot streams ``POST /jobs/logs`` as plain text and stops following when the connection is
closed. The web views must notice a closed browser tab, but a WSGI thread only learns that the
client went away when it writes. So :class:`LogStream` reads upstream in a background thread
into a queue and its consumer wakes up at least every ``keepalive`` seconds (the SSE view then
writes a keep-alive comment). Closing the stream shuts the upstream socket down, which both
wakes the reader and tells SkyPilot to stop.

Every log read of a web request (a tail or a follow; the page's stream, the API, plain text)
takes one of a per-process number of slots (``SKYDECK_LOG_STREAMS_MAX``): each holds a web
server thread while SkyPilot answers, and open log tabs must never starve the rest of the app.
Beyond the cap the doors answer 503 with ``Retry-After``. Web reads also talk to SkyPilot with
short timeouts and no retries (:func:`web_client`): connecting is bounded by
``SKYDECK_LOG_CONNECT_TIMEOUT`` and waiting for an answer (or, in a tail, for more of it) by
``SKYDECK_LOG_READ_TIMEOUT``, so a slow SkyPilot frees the slot within seconds. ``manage.py logs``
is a command, not a web thread: it is neither capped nor hurried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from django.http import StreamingHttpResponse

from experiments.models import Job, JobStatus
from syncing import skypilot
from syncing.skypilot import (
    REQUEST_ID_HEADER,
    ServerUnavailable,
    SkyPilotClient,
    SkyPilotError,
    interrupt_stream,
)

logger = logging.getLogger(__name__)

DEFAULT_TAIL = 200
MAX_TAIL = 10_000
TAIL_CHOICES = (50, 200, 1000, 5000, 10_000)
KEEPALIVE_SECONDS = 10.0
#: How often an idle web stream checks whether its client hung up (where the server lets us).
CLIENT_CHECK_SECONDS = 1.0
#: Most lines put into one ``Lines`` event (one SSE message, one DOM append).
BATCH_LINES = 500
#: Lines buffered between the reader thread and a slow consumer (back-pressure beyond that).
QUEUE_LINES = 5000
#: How long ``close()`` waits for the reader thread to let go of the upstream connection.
CLOSE_WAIT_SECONDS = 3.0
_MAX_JOB_ID = 2**63 - 1
#: What a refused log read tells the client to wait (``Retry-After``): tails end within seconds.
RETRY_AFTER_SECONDS = 10

# Outcomes of a finished stream.
COMPLETE = "complete"
STOPPED = "stopped"
ERROR = "error"


class JobLogError(Exception):
    """A log request SkyDeck refuses before talking to SkyPilot; the message is for users."""


class UnknownJob(JobLogError):
    """No job with this id in SkyDeck's ``jobs`` table."""


class InvalidTail(JobLogError):
    """``tail`` is not a whole number from 1 to MAX_TAIL."""


class NoLog(JobLogError):
    """SkyPilot's jobs controller does not know the job, so it has no log."""


class TooManyStreams(JobLogError):
    """Every log-read slot of this process is taken: answer 503, ``Retry-After`` seconds."""

    retry_after = RETRY_AFTER_SECONDS


# --- the request ----------------------------------------------------------------------------


def parse_tail(value: str | int | None) -> int:
    """``tail`` from a query string or option: default when absent, else 1..MAX_TAIL."""
    if value is None or value == "":
        return DEFAULT_TAIL
    message = f"tail: a whole number of lines from 1 to {MAX_TAIL}."
    if isinstance(value, bool):
        raise InvalidTail(message)
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 6:
            raise InvalidTail(message)
        number = int(text)
    if not 1 <= number <= MAX_TAIL:
        raise InvalidTail(message)
    return number


def parse_follow(value: str | None) -> bool | None:
    """``follow`` from a query string: None when absent (follow if the job is active)."""
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise JobLogError("follow: true or false.")


@dataclass(frozen=True)
class LogPlan:
    """What to ask SkyPilot for: validated, and with follow decided from the job's status."""

    job_id: int
    job_name: str
    job_status: str
    tail: int
    follow: bool

    @property
    def active(self) -> bool:
        return self.job_status in JobStatus.active()


def plan(job_id: int, tail: str | int | None = None, follow: bool | None = None) -> LogPlan:
    """Validate a log request for a job known to SkyDeck.

    Only jobs in the ``jobs`` table (as last synced) can be asked for. Following is only
    possible while the job is active: a finished job's log is complete, and following it would
    hold a web thread for nothing. ``follow=None`` means "follow if active".
    """
    job = None
    if isinstance(job_id, int) and not isinstance(job_id, bool) and 0 < job_id <= _MAX_JOB_ID:
        job = Job.objects.filter(pk=job_id).only("id", "job_name", "status").first()
    if job is None:
        raise UnknownJob(f"No job {job_id} in SkyDeck (only synced jobs have logs here).")
    lines = parse_tail(tail)
    active = job.status in JobStatus.active()
    return LogPlan(
        job_id=job.id,
        job_name=job.job_name,
        job_status=job.status,
        tail=lines,
        follow=active and follow is not False,
    )


def outcome_message(log_plan: LogPlan) -> str:
    """What a stream that ended by itself means, for the final event."""
    if log_plan.follow:
        return f"the log of job {log_plan.job_id} ended: the job is no longer running."
    if log_plan.active:
        return (
            f"showed the last {log_plan.tail} lines of job {log_plan.job_id} "
            f"({log_plan.job_status}); not following."
        )
    return (
        f"showed the last {log_plan.tail} lines of job {log_plan.job_id}: it is "
        f"{log_plan.job_status}, so its log is complete."
    )


def ended_with(log_plan: LogPlan, exit_code: int) -> Ended:
    """How a log that SkyPilot finished sending ended, from its request's exit code.

    The exit code tells what the job table may not know yet: that the job failed or was
    cancelled meanwhile, or that the controller has no such job (then no log was shown at all).
    """
    job = f"job {log_plan.job_id}"
    if exit_code == skypilot.LOG_SUCCEEDED or (
        exit_code == skypilot.LOG_NOT_FINISHED and not log_plan.follow
    ):
        return Ended(COMPLETE, outcome_message(log_plan))
    if exit_code == skypilot.LOG_NOT_FOUND:
        return Ended(
            ERROR,
            f"SkyPilot has no log of {job}: its jobs controller does not know the job "
            f"(exit code {exit_code}).",
        )
    meaning = {
        skypilot.LOG_FAILED: "the job failed",
        skypilot.LOG_CANCELLED: "the job was cancelled",
        skypilot.LOG_NOT_FINISHED: "the job has not finished",
    }.get(exit_code, "SkyPilot reported an unknown outcome")
    return Ended(COMPLETE, f"the log of {job} ended: {meaning} (exit code {exit_code}).")


def error_message(exc: SkyPilotError) -> str:
    """A SkyPilot failure as one line for users (the client never puts secrets in messages)."""
    if isinstance(exc, ServerUnavailable):
        return f"SkyPilot is unreachable: {exc}"
    return f"SkyPilot failed: {exc}"


def how_it_ended(log_plan: LogPlan, client: SkyPilotClient, request_id: str) -> Ended:
    """Ask SkyPilot how a log it finished sending ended (its request's exit code).

    If SkyPilot cannot tell, the log still counts as shown and the message says so.
    """
    if not request_id:
        return Ended(
            COMPLETE,
            f"{outcome_message(log_plan)} (SkyPilot sent no {REQUEST_ID_HEADER}, so how the "
            "log ended is unknown)",
        )
    try:
        code = client.log_exit_code(request_id)
    except SkyPilotError as exc:
        logger.warning("log of job %s: no exit code: %s", log_plan.job_id, exc)
        return Ended(
            COMPLETE, f"{outcome_message(log_plan)} (SkyPilot did not say how it ended: {exc})"
        )
    return ended_with(log_plan, code)


def web_client() -> SkyPilotClient:
    """SkyPilot for a log read that holds a web thread: short timeouts, no retries."""
    endpoint = getattr(settings, "SKYDECK_SKYPILOT_ENDPOINT", None)
    return _WebClient(
        endpoint or None,
        timeout=float(settings.SKYDECK_LOG_CONNECT_TIMEOUT),
        read_wait=float(settings.SKYDECK_LOG_READ_TIMEOUT),
    )


class _WebClient(SkyPilotClient):
    """A client whose every wait is bounded: connecting by ``timeout``; an answer, a tail's next
    part and a log's exit code by ``read_wait``. A followed log waits at most ``read_wait`` for
    SkyPilot to answer, then as long as the job is quiet (its socket's timeout is lifted)."""

    def __init__(self, endpoint: str | None, *, timeout: float, read_wait: float) -> None:
        super().__init__(endpoint, timeout=timeout, request_timeout=read_wait, retries=0)
        self.read_wait = read_wait

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        timeout = kwargs.get("timeout") or (self.timeout, self.read_wait)
        kwargs["timeout"] = (timeout[0], min(timeout[1] or self.read_wait, self.read_wait))
        return super()._send(method, path, **kwargs)

    def _stream_opened(self, response: requests.Response, *, follow: bool) -> None:
        if follow:
            _wait_as_long_as_quiet(response)


def _wait_as_long_as_quiet(response: requests.Response) -> None:
    """Lift the read timeout of a followed log once SkyPilot answered (a job may be quiet for
    long); closing the stream still wakes the reader (:func:`interrupt_stream`)."""
    fp = getattr(getattr(response, "raw", None), "_fp", None)
    sock = getattr(getattr(getattr(fp, "fp", None), "raw", None), "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # already closed: nothing left to wait for
            sock.settimeout(None)


def web_tail_text(log_plan: LogPlan) -> str:
    """:func:`tail_text` for a web request: takes a slot (TooManyStreams when none), uses
    :func:`web_client`, and gives the slot back however it ends."""
    slot = acquire_slot()
    try:
        return tail_text(log_plan, web_client())
    finally:
        slot.release()


def tail_text(log_plan: LogPlan, client: SkyPilotClient | None = None) -> str:
    """The last ``tail`` lines, not followed, as plain text (one line each).

    Raises SkyPilotError, or NoLog when SkyPilot's controller does not know the job.
    """
    client = client or SkyPilotClient.from_settings()
    request_ids: list[str] = []

    def opened(response: requests.Response) -> None:
        request_ids.append((response.headers.get(REQUEST_ID_HEADER) or "").strip())

    lines = list(
        client.stream_logs(log_plan.job_id, tail=log_plan.tail, follow=False, on_open=opened)
    )
    ended = how_it_ended(log_plan, client, request_ids[0] if request_ids else "")
    if ended.outcome == ERROR:
        raise NoLog(ended.message)
    return "".join(line + "\n" for line in lines)


# --- concurrency cap ------------------------------------------------------------------------

_slots_lock = threading.Lock()
_slots_taken = 0


class StreamSlot:
    """One of ``SKYDECK_LOG_STREAMS_MAX`` log reads of this process; release once."""

    def __init__(self) -> None:
        self._released = False

    def release(self) -> None:
        global _slots_taken
        with _slots_lock:
            if not self._released:
                self._released = True
                _slots_taken -= 1


def acquire_slot() -> StreamSlot:
    """Take a log-read slot or raise TooManyStreams (read at each call: settings may change)."""
    global _slots_taken
    limit = int(settings.SKYDECK_LOG_STREAMS_MAX)
    with _slots_lock:
        if _slots_taken >= limit:
            raise TooManyStreams(
                f"{limit} job logs are already being read by this server process "
                f"(SKYDECK_LOG_STREAMS_MAX): try again in {RETRY_AFTER_SECONDS} seconds, or "
                "close another log view."
            )
        _slots_taken += 1
    return StreamSlot()


def slots_in_use() -> int:
    """How many log reads this process holds (for tests and diagnostics)."""
    with _slots_lock:
        return _slots_taken


# --- the stream -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """SkyPilot answered: lines will follow."""


@dataclass(frozen=True)
class Lines:
    lines: list[str]


@dataclass(frozen=True)
class KeepAlive:
    """Nothing new for ``keepalive`` seconds: write something to detect a closed client."""


@dataclass(frozen=True)
class Ended:
    outcome: str  # COMPLETE, STOPPED or ERROR
    message: str


Event = Ready | Lines | KeepAlive | Ended


class LogStream:
    """A job's log read in a background thread; iterate :meth:`events`, always :meth:`close`.

    ``close()`` may be called from any thread, also while the reader is blocked waiting for
    SkyPilot: it shuts the upstream socket down so the reader wakes up and closes the
    connection. A ``slot`` given here is released by ``close()``. Without a ``client`` the
    reader thread makes one with ``make_client`` (default: from the settings).
    """

    def __init__(
        self,
        log_plan: LogPlan,
        *,
        client: SkyPilotClient | None = None,
        make_client: Callable[[], SkyPilotClient] | None = None,
        keepalive: float | None = None,
        slot: StreamSlot | None = None,
    ) -> None:
        self.plan = log_plan
        self.keepalive = KEEPALIVE_SECONDS if keepalive is None else keepalive
        self.error: SkyPilotError | None = None
        self._slot = slot
        self._client = client
        self._make_client = make_client or SkyPilotClient.from_settings
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=QUEUE_LINES)
        self._stopping = threading.Event()
        self._settled = threading.Event()
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.lines_read = 0
        #: SkyPilot's id of the log request (from the stream's headers): its result says how
        #: the log ended.
        self.request_id = ""

    # -- lifecycle

    def start(self) -> LogStream:
        """Start reading (idempotent); ``events()`` starts it too."""
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._read, name=f"joblog-{self.plan.job_id}", daemon=True
                )
                self._thread.start()
        return self

    def wait_settled(self, timeout: float) -> bool:
        """Wait until SkyPilot answered (or the stream failed); False on timeout."""
        self.start()
        return self._settled.wait(timeout)

    def close(self) -> None:
        """Stop reading and close the upstream connection (idempotent, any thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopping.set()
            response = self._response
            thread = self._thread
        if response is not None:
            interrupt_stream(response)
        if thread is not None and thread is not threading.current_thread():
            thread.join(CLOSE_WAIT_SECONDS)
            if thread.is_alive():
                logger.warning(
                    "log stream of job %s: the reader did not stop within %.0fs",
                    self.plan.job_id,
                    CLOSE_WAIT_SECONDS,
                )
        if self._slot is not None:
            self._slot.release()
        logger.debug(
            "log stream of job %s closed after %d lines", self.plan.job_id, self.lines_read
        )

    # -- consumer side

    def events(self, *, client_gone: Callable[[], bool] | None = None) -> Iterator[Event]:
        """Ready, Lines, KeepAlive when idle, and finally one Ended (then the iterator stops).

        ``client_gone`` is asked every CLIENT_CHECK_SECONDS while idle; when it says so the
        iterator stops early (without Ended): nobody is listening any more.
        """
        self.start()
        wait = min(CLIENT_CHECK_SECONDS, self.keepalive) if client_gone else self.keepalive
        last_event = time.monotonic()
        pending: tuple[str, Any] | None = None
        while True:
            if pending is None:
                try:
                    pending = self._queue.get(timeout=wait)
                except queue.Empty:
                    if client_gone is not None and client_gone():
                        logger.debug("log stream of job %s: the client left", self.plan.job_id)
                        return
                    if time.monotonic() - last_event >= self.keepalive:
                        last_event = time.monotonic()
                        yield KeepAlive()
                    continue
            last_event = time.monotonic()
            kind, value = pending
            pending = None
            if kind == "ready":
                yield Ready()
            elif kind == "end":
                yield value
                return
            else:
                batch = [value]
                while len(batch) < BATCH_LINES:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item[0] != "line":
                        pending = item
                        break
                    batch.append(item[1])
                yield Lines(batch)

    # -- reader thread

    def _opened(self, response: requests.Response) -> None:
        self.request_id = (response.headers.get(REQUEST_ID_HEADER) or "").strip()
        with self._lock:
            self._response = response
            stopping = self._stopping.is_set()
        if stopping:
            interrupt_stream(response)
            return
        self._settled.set()
        self._put(("ready", None))

    def _put(self, item: tuple[str, Any]) -> bool:
        """Queue an item, waiting while the consumer is behind; False once stopping."""
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.5)
            except queue.Full:
                continue
            return True
        return False

    def _read(self) -> None:
        log_plan = self.plan
        logger.debug(
            "log stream of job %s opened (tail %d, follow %s)",
            log_plan.job_id,
            log_plan.tail,
            log_plan.follow,
        )
        try:
            client = self._client or self._make_client()
            lines = client.stream_logs(
                log_plan.job_id, tail=log_plan.tail, follow=log_plan.follow, on_open=self._opened
            )
            try:
                for line in lines:
                    if not self._put(("line", line)):
                        break
                    self.lines_read += 1
            finally:
                lines.close()
        except SkyPilotError as exc:
            if self._stopping.is_set():
                ended = Ended(STOPPED, "stopped.")
            else:
                self.error = exc
                logger.warning("log stream of job %s failed: %s", log_plan.job_id, exc)
                ended = Ended(ERROR, error_message(exc))
        except Exception:
            logger.exception("log stream of job %s broke", log_plan.job_id)
            ended = Ended(ERROR, "SkyDeck failed to read the log (see the server log).")
        else:
            ended = Ended(STOPPED, "stopped.") if self._stopping.is_set() else self._outcome(client)
        self._settled.set()
        self._put(("end", ended))

    def _outcome(self, client: SkyPilotClient) -> Ended:
        ended = how_it_ended(self.plan, client, self.request_id)
        # closed while asking: the consumer is gone, say so rather than guess
        return Ended(STOPPED, "stopped.") if self._stopping.is_set() else ended


def open_web_stream(log_plan: LogPlan, *, keepalive: float | None = None) -> LogStream:
    """A stream for a web request, tail or follow: it takes a slot (TooManyStreams when none),
    which ``close()`` gives back, and reads with :func:`web_client`."""
    return LogStream(log_plan, make_client=web_client, keepalive=keepalive, slot=acquire_slot())


# --- HTTP bodies ----------------------------------------------------------------------------


def client_gone_check(environ: dict[str, Any]) -> Callable[[], bool] | None:
    """A cheap "did the client hang up?" test for the request's socket, if the server exposes
    it (gunicorn does, as ``gunicorn.socket``); None otherwise.

    Without it a closed tab is only noticed when a keep-alive write fails, which the kernel
    accepts once more after the peer left: 10 to 20 s of a held thread and follow slot. Peeking
    at the socket sees the browser's FIN within CLIENT_CHECK_SECONDS.
    """
    sock = environ.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return None

    def gone() -> bool:
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False  # open, nothing sent: the normal case
        except ValueError:
            return False  # TLS sockets cannot peek: rely on the keep-alive writes
        except OSError:
            return True
        return data == b""

    return gone


def _sse(event: str, data: Any) -> bytes:
    payload = json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


class _Body(ABC):
    """An iterable response body whose ``close()`` (called by the WSGI server and Django once
    the client is gone or the body is done) closes the stream, even if never iterated."""

    def __init__(self, stream: LogStream, client_gone: Callable[[], bool] | None = None) -> None:
        self.stream = stream
        self.client_gone = client_gone

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._frames()
        finally:
            self.stream.close()

    @abstractmethod
    def _frames(self) -> Iterator[bytes]:
        """The bytes of the body, one frame at a time."""

    def close(self) -> None:
        self.stream.close()


class SseBody(_Body):
    """Server-Sent Events: ``ready``, ``lines`` (a JSON list of strings), keep-alive comments
    and one final ``end`` event ``{"outcome", "message"}``. JSON keeps every line on one SSE
    data line whatever it contains; the browser inserts them as text, never as markup."""

    def _frames(self) -> Iterator[bytes]:
        log_plan = self.stream.plan
        # A first write sends the headers at once, so the browser knows it is connected.
        yield b": connecting\n\n"
        for event in self.stream.events(client_gone=self.client_gone):
            if isinstance(event, KeepAlive):
                yield b": keep-alive\n\n"
            elif isinstance(event, Ready):
                yield _sse(
                    "ready",
                    {
                        "job": log_plan.job_id,
                        "status": log_plan.job_status,
                        "tail": log_plan.tail,
                        "follow": log_plan.follow,
                    },
                )
            elif isinstance(event, Lines):
                yield _sse("lines", event.lines)
            else:
                yield _sse("end", {"outcome": event.outcome, "message": event.message})


class TextBody(_Body):
    """Plain text, one line each; a stream that breaks off ends with a ``# skydeck:`` line
    (plain text has no other place for it; errors before the first line are a 502)."""

    def _frames(self) -> Iterator[bytes]:
        for event in self.stream.events(client_gone=self.client_gone):
            if isinstance(event, Lines):
                yield ("\n".join(event.lines) + "\n").encode()
            elif isinstance(event, Ended) and event.outcome == ERROR:
                yield f"# skydeck: {event.message}\n".encode()


def streaming_response(
    stream: LogStream, environ: dict[str, Any], *, events: bool
) -> StreamingHttpResponse:
    """The HTTP answer that relays ``stream``: Server-Sent Events for the page, else plain text.

    Unbuffered (no proxy buffering, no caching), and it notices a client that hung up.
    """
    body_class = SseBody if events else TextBody
    response = StreamingHttpResponse(
        body_class(stream, client_gone_check(environ)),
        content_type="text/event-stream" if events else "text/plain; charset=utf-8",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
