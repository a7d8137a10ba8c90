"""Job logs (issue #8): the service, the SSE and plain-text views, the API and ``manage.py logs``.

SkyPilot is either the ``responses`` double (log bodies shaped like the real ``POST /jobs/logs``:
plain text with ``<sky-payload>`` control lines and ANSI colours) or, where connections matter,
:class:`LogServer`: a real HTTP server on 127.0.0.1 that streams chunked lines slowly and records
when the client hangs up, which is how SkyPilot learns to stop following.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
import requests
import responses
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.signals import request_finished
from django.db import close_old_connections
from django.test import Client
from fake_skypilot import ENDPOINT
from rest_framework.authtoken.models import Token

from syncing import joblogs
from syncing.skypilot import REQUEST_ID_HEADER, SkyPilotClient

LOGS_URL = f"{ENDPOINT}/jobs/logs"

#: A log as SkyPilot streams it: colours, a control payload line, markup from the job itself.
RAW_LOG = (
    "\x1b[1m\x1b[32mStarting job 12\x1b[0m\n"
    '<sky-payload type="rich_status">{"msg": "Waiting for task resources"}</sky-payload>\n'
    "epoch 1 loss=0.5\n"
    "<script>alert(1)</script>\n"
    "\x1b[31mepoch 2 loss=0.4\x1b[0m\n"
)
CLEAN_LOG = ["Starting job 12", "epoch 1 loss=0.5", "<script>alert(1)</script>", "epoch 2 loss=0.4"]


# --- a real, slow SkyPilot log server ---------------------------------------------------------


class LogServer:
    """Serves ``POST /jobs/logs`` like SkyPilot: chunked text, ``lines`` one per ``interval``.

    Afterwards it ends the response (``finish=True``) or stays silent, as a quiet running job
    does, until the client disconnects. ``disconnected`` is set the moment it notices the
    client hung up (a failed write, or end-of-file while silent).
    """

    def __init__(self, lines: list[str], *, interval: float = 0.0, finish: bool = False) -> None:
        self.lines = lines
        self.interval = interval
        self.finish = finish
        self.bodies: list[dict] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                """The log request's result, once it ended: exit code 0."""
                path = self.path.split("?", 1)[0]
                if path == "/api/status":
                    body = [{"request_id": "logs-req-1", "status": "SUCCEEDED"}]
                elif path == "/api/get":
                    body = {"request_id": "logs-req-1", "status": "SUCCEEDED", "return_value": "0"}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/jobs/logs":
                    self.send_error(404)
                    return
                owner.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header(REQUEST_ID_HEADER, "logs-req-1")
                self.end_headers()
                owner.connected.set()
                try:
                    for line in owner.lines:
                        data = (line + "\n").encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        self.wfile.flush()
                        if owner.interval and owner._client_gone(self.connection, owner.interval):
                            return
                    if owner.finish:
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                        return
                    owner._client_gone(self.connection, 30.0)
                except (BrokenPipeError, ConnectionResetError):
                    owner.disconnected.set()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _client_gone(self, sock: socket.socket, seconds: float) -> bool:
        """Wait up to ``seconds``; True (and ``disconnected`` set) if the client hung up."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([sock], [], [], min(remaining, 0.02))
            if readable:
                try:
                    data = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    self.disconnected.set()
                    return True
        return False

    def __enter__(self) -> LogServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated(settings, monkeypatch, no_local_skypilot):
    """SkyDeck points at the double; no real ~/.sky; SkyPilot calls fail without retry waits."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    settings.SKYDECK_LOG_STREAMS_MAX = 4
    original = SkyPilotClient.from_settings.__func__

    def from_settings(cls):
        client = original(cls)
        client.retries = 0
        return client

    monkeypatch.setattr(SkyPilotClient, "from_settings", classmethod(from_settings))
    yield
    assert joblogs.slots_in_use() == 0, "a test leaked a follow slot"


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def serve_log(rsps, body: str = RAW_LOG, *, exit_code: int = 0) -> None:
    """The log as SkyPilot streams it, and its request's result (the exit code) afterwards."""
    rsps.add(
        responses.POST,
        LOGS_URL,
        body=body.encode(),
        content_type="text/plain",
        headers={REQUEST_ID_HEADER: "logs-1"},
    )
    rsps.add(
        responses.GET,
        f"{ENDPOINT}/api/status",
        json=[{"request_id": "logs-1", "status": "SUCCEEDED"}],
    )
    rsps.add(
        responses.GET,
        f"{ENDPOINT}/api/get",
        json={"request_id": "logs-1", "status": "SUCCEEDED", "return_value": str(exit_code)},
    )


def assert_clean_text(response) -> None:
    """A log answered as plain text: the cleaned lines, one a line."""
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content.decode() == "\n".join(CLEAN_LOG) + "\n"


def sent_bodies(rsps) -> list[dict]:
    return [json.loads(call.request.body) for call in rsps.calls if call.request.url == LOGS_URL]


@pytest.fixture
def api(user):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"
    return client


def close_response(response) -> None:
    """Close a streamed response as a WSGI server does when the client leaves.

    The test client would also close the test's database connection here (its request_finished
    handler), which breaks the surrounding test transaction on PostgreSQL.
    """
    request_finished.disconnect(close_old_connections)
    try:
        response.close()
    finally:
        request_finished.connect(close_old_connections)


def sse_events(chunks: Iterator[bytes], until: str = "end") -> list[tuple[str, object]]:
    """Parse SSE frames (event, data) until an event named ``until``; comments as ("", text)."""
    events: list[tuple[str, object]] = []
    for chunk in chunks:
        text = chunk.decode()
        assert text.endswith("\n\n"), f"not one whole SSE frame: {text!r}"
        for frame in text[:-2].split("\n\n"):
            if frame.startswith(":"):
                events.append(("", frame[1:].strip()))
                continue
            fields = dict(line.split(": ", 1) for line in frame.split("\n"))
            events.append((fields["event"], json.loads(fields["data"])))
        if events and events[-1][0] == until:
            return events
    return events


# --- the service ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 200), ("", 200), ("1", 1), (" 500 ", 500), ("10000", 10000)]
)
def test_parse_tail_accepts_1_to_10000(raw, expected):
    assert joblogs.parse_tail(raw) == expected


@pytest.mark.parametrize("raw", ["0", "10001", "-1", "1.5", "abc", "³", "9" * 40, True])
def test_parse_tail_rejects_everything_else(raw):
    with pytest.raises(joblogs.InvalidTail, match="from 1 to 10000"):
        joblogs.parse_tail(raw)


def test_plan_follows_only_active_jobs(make_job):
    make_job(1, status="RUNNING")
    make_job(2, status="SUCCEEDED")
    assert joblogs.plan(1).follow is True
    assert joblogs.plan(1, follow=False).follow is False
    assert joblogs.plan(2).follow is False
    assert joblogs.plan(2, follow=True).follow is False  # a finished log is complete
    assert joblogs.plan(1, "50").tail == 50


@pytest.mark.parametrize("job_id", [3, 0, -1, 2**63])
def test_plan_knows_only_synced_jobs(make_job, job_id):
    make_job(1)
    with pytest.raises(joblogs.UnknownJob, match=f"No job {job_id}"):
        joblogs.plan(job_id)


def test_stream_cleans_lines_and_ends_with_the_outcome(db, make_job, rsps):
    make_job(12, status="SUCCEEDED")
    serve_log(rsps)
    stream = joblogs.LogStream(joblogs.plan(12, 100))
    try:
        events = list(stream.events())
    finally:
        stream.close()
    assert events[0] == joblogs.Ready()
    lines = [line for e in events if isinstance(e, joblogs.Lines) for line in e.lines]
    assert lines == CLEAN_LOG
    assert events[-1] == joblogs.Ended(
        joblogs.COMPLETE,
        "showed the last 100 lines of job 12: it is SUCCEEDED, so its log is complete.",
    )
    assert sent_bodies(rsps) == [{"job_id": 12, "follow": False, "tail": 100, "controller": False}]


def _events(job_id: int, **plan) -> list:
    stream = joblogs.LogStream(joblogs.plan(job_id, **plan))
    try:
        return list(stream.events())
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("status", "follow", "code", "outcome", "message"),
    [
        ("SUCCEEDED", False, 0, joblogs.COMPLETE, "it is SUCCEEDED, so its log is complete."),
        ("RUNNING", True, 0, joblogs.COMPLETE, "ended: the job is no longer running."),
        ("RUNNING", True, 100, joblogs.COMPLETE, "ended: the job failed (exit code 100)."),
        ("RUNNING", True, 103, joblogs.COMPLETE, "ended: the job was cancelled (exit code 103)."),
        ("RUNNING", True, 101, joblogs.COMPLETE, "the job has not finished (exit code 101)."),
        ("RUNNING", False, 101, joblogs.COMPLETE, "(RUNNING); not following."),
        ("RUNNING", True, 7, joblogs.COMPLETE, "an unknown outcome (exit code 7)."),
        ("SUCCEEDED", False, 102, joblogs.ERROR, "does not know the job (exit code 102)."),
    ],
)
def test_the_end_of_a_log_says_how_the_job_ended(
    db, make_job, rsps, status, follow, code, outcome, message
):
    """After the stream, the log request's exit code (from /api/get) says what the job table
    may not know yet: that the job failed, was cancelled, or is unknown to the controller."""
    make_job(12, status=status)
    serve_log(rsps, exit_code=code)
    ended = _events(12, follow=follow)[-1]
    assert (ended.outcome, ended.message.endswith(message)) == (outcome, True), ended
    asked = [c.request.url for c in rsps.calls if "/api/get" in c.request.url]
    assert asked == [f"{ENDPOINT}/api/get?request_id=logs-1"]


def test_a_missing_exit_code_is_said_not_hidden(db, make_job, rsps):
    make_job(12, status="SUCCEEDED")
    rsps.add(responses.POST, LOGS_URL, body=b"only\n", headers={REQUEST_ID_HEADER: "logs-1"})
    rsps.add(responses.GET, f"{ENDPOINT}/api/status", json=[])  # the request expired
    rsps.add(
        responses.GET,
        f"{ENDPOINT}/api/get",
        status=404,
        json={"detail": "Request logs-1 not found"},
    )
    events = _events(12)
    assert joblogs.Lines(["only"]) in events
    ended = events[-1]
    assert ended.outcome == joblogs.COMPLETE
    assert ended.message.startswith("showed the last 200 lines of job 12")
    assert "(SkyPilot did not say how it ended: " in ended.message
    # and without a request id there is nothing to ask: also said
    rsps.replace(responses.POST, LOGS_URL, body=b"only\n")
    ended = _events(12)[-1]
    assert "SkyPilot sent no X-Skypilot-Request-ID, so how the log ended is unknown" in (
        ended.message
    )


def test_a_job_unknown_to_the_controller_is_404_in_plain_text_and_the_api(web, api, make_job, rsps):
    make_job(12, status="SUCCEEDED")
    serve_log(rsps, "No managed job found with ID 12\n", exit_code=102)
    text = web.get("/jobs/12/logs?format=text")
    assert text.status_code == 404
    assert "its jobs controller does not know the job (exit code 102)" in text.content.decode()
    response = api.get("/api/jobs/12/logs", HTTP_ACCEPT="text/plain")
    assert response.status_code == 404
    assert "does not know the job" in response.json()["detail"]
    with pytest.raises(CommandError, match="does not know the job"):
        call_command("logs", "12")


def test_plain_tail_keeps_its_lines_when_the_exit_code_is_unavailable(db, make_job, rsps):
    make_job(12, status="SUCCEEDED")
    rsps.add(responses.POST, LOGS_URL, body=b"a\nb\n", headers={REQUEST_ID_HEADER: "logs-1"})
    rsps.add(responses.GET, f"{ENDPOINT}/api/status", status=503)
    assert joblogs.tail_text(joblogs.plan(12)) == "a\nb\n"


def test_stream_reports_skypilot_down_as_its_last_event(db, make_job, settings):
    make_job(12)
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"  # discard port: refused
    stream = joblogs.LogStream(joblogs.plan(12))
    try:
        events = list(stream.events())
    finally:
        stream.close()
    assert len(events) == 1
    ended = events[0]
    assert ended.outcome == joblogs.ERROR
    assert ended.message.startswith("SkyPilot is unreachable: cannot reach SkyPilot API server")
    assert stream.error is not None


def test_idle_stream_sends_keepalives(db, make_job, settings):
    make_job(12)
    with LogServer(["first"]) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        stream = joblogs.LogStream(joblogs.plan(12), keepalive=0.05)
        events = stream.events()
        try:
            # on a busy machine connecting can take longer than one keep-alive interval: those
            # come first then (that is the point of keep-alives), but nothing else may
            first = next(events)
            while first == joblogs.KeepAlive():
                first = next(events)
            assert first == joblogs.Ready()
            following = next(events)
            while following == joblogs.KeepAlive():
                following = next(events)
            assert following == joblogs.Lines(["first"])
            assert next(events) == joblogs.KeepAlive()
            assert next(events) == joblogs.KeepAlive()
        finally:
            stream.close()
        assert server.disconnected.wait(2)


def test_close_interrupts_a_reader_blocked_on_a_quiet_job(db, make_job, settings):
    """The reader thread sits in recv() while the job prints nothing: close() must still end
    the upstream connection at once, not at the job's next line."""
    make_job(12)
    with LogServer(["only line"]) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        stream = joblogs.LogStream(joblogs.plan(12))
        events = stream.events()
        assert next(events) == joblogs.Ready()
        assert next(events) == joblogs.Lines(["only line"])
        started = time.monotonic()
        stream.close()
        # well inside the 10 s keep-alive: the close itself ended it, not a later write
        assert server.disconnected.wait(5)
        assert time.monotonic() - started < 5
        assert not stream._thread.is_alive()


def test_log_read_slots_are_capped_per_process(settings):
    settings.SKYDECK_LOG_STREAMS_MAX = 2
    first, second = joblogs.acquire_slot(), joblogs.acquire_slot()
    try:
        with pytest.raises(joblogs.TooManyStreams, match="2 job logs are already being read"):
            joblogs.acquire_slot()
    finally:
        first.release()
    first.release()  # idempotent: must not free someone else's slot
    assert joblogs.slots_in_use() == 1
    third = joblogs.acquire_slot()
    second.release()
    third.release()


# --- the UI -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/jobs/12/logs", "/jobs/12/logs/stream", "/jobs/12/logs?format=text"]
)
def test_log_views_need_a_login(db, make_job, path):
    make_job(12)
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize(
    "path", ["/jobs/99/logs", "/jobs/99/logs/stream", "/jobs/99/logs?format=text"]
)
def test_log_views_404_for_unknown_jobs(web, make_job, path):
    make_job(12)
    assert web.get(path).status_code == 404


def test_log_views_400_for_a_bad_tail(web, make_job):
    make_job(12)
    page = web.get("/jobs/12/logs?tail=0")
    assert page.status_code == 400
    assert "a whole number of lines from 1 to 10000" in page.content.decode()
    for path in ["/jobs/12/logs/stream?tail=x", "/jobs/12/logs?tail=10001&format=text"]:
        response = web.get(path)
        assert response.status_code == 400
        assert b"from 1 to 10000" in response.content
    assert web.get("/jobs/12/logs/stream?follow=maybe").status_code == 400
    assert web.get("/jobs/12/logs?format=pdf").status_code == 400


def test_log_page_points_the_viewer_at_the_stream_and_escapes_names(web, make_job):
    make_job(12, name="<b>odd</b>", status="RUNNING")
    html = web.get("/jobs/12/logs?tail=50").content.decode()
    assert 'data-stream-url="/jobs/12/logs/stream?tail=50"' in html
    assert 'href="/jobs/12/logs?tail=50&amp;format=text"' in html
    assert '<option value="50" selected>' in html
    assert "&lt;b&gt;odd&lt;/b&gt;" in html and "<b>odd</b>" not in html
    assert '<pre class="log-output" data-log-output' in html


def test_job_lists_link_to_the_log(web, make_experiment, make_job):
    experiment = make_experiment("linked")
    make_job(77, name="linked")
    panels = web.get(f"/experiments/{experiment.pk}/panels").content.decode()
    assert 'href="/jobs/77/logs"' in panels
    assert 'href="/jobs/77/logs"' in web.get("/jobs").content.decode()


def test_sse_stream_frames_cleaned_lines_and_ends(web, make_job, rsps):
    make_job(12, status="FAILED")
    serve_log(rsps)
    response = web.get("/jobs/12/logs/stream?tail=30")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["X-Accel-Buffering"] == "no"
    assert "no-cache" in response["Cache-Control"]
    try:
        events = sse_events(iter(response.streaming_content))
    finally:
        close_response(response)
    assert events[0] == ("", "connecting")
    assert events[1] == ("ready", {"job": 12, "status": "FAILED", "tail": 30, "follow": False})
    lines = [line for name, data in events if name == "lines" for line in data]
    # markup from the log stays a JSON string: the page inserts it as text, never as HTML
    assert lines == CLEAN_LOG
    assert events[-1] == (
        "end",
        {
            "outcome": "complete",
            "message": "showed the last 30 lines of job 12: it is FAILED, so its log is complete.",
        },
    )
    assert sent_bodies(rsps)[0]["follow"] is False


def test_sse_stream_says_why_when_skypilot_is_down(web, make_job, settings):
    make_job(12, status="RUNNING")
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    response = web.get("/jobs/12/logs/stream")
    assert response.status_code == 200  # EventSource cannot read an error body: tell it in-band
    try:
        events = sse_events(iter(response.streaming_content))
    finally:
        close_response(response)
    name, data = events[-1]
    assert name == "end" and data["outcome"] == "error"
    assert data["message"].startswith("SkyPilot is unreachable:")
    assert "Traceback" not in json.dumps(events)


def test_sse_streams_are_capped_with_503(web, make_job, settings, rsps):
    settings.SKYDECK_LOG_STREAMS_MAX = 1
    make_job(12, status="RUNNING")
    make_job(13, status="SUCCEEDED")
    serve_log(rsps)
    first = web.get("/jobs/12/logs/stream")
    assert first.status_code == 200
    try:
        refused = web.get("/jobs/12/logs/stream")
        assert refused.status_code == 503
        assert refused["Retry-After"] == str(joblogs.RETRY_AFTER_SECONDS)
        assert b"1 job logs are already being read" in refused.content
        # a finished job's log is not followed, but reading its tail needs a slot too
        assert web.get("/jobs/13/logs/stream").status_code == 503
    finally:
        close_response(first)  # never iterated: closing must still free the slot
    assert joblogs.slots_in_use() == 0
    again = web.get("/jobs/12/logs/stream")
    assert again.status_code == 200
    close_response(again)


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet-job", "chatty-job"])
def test_closing_the_view_stops_the_stream_on_the_server(web, make_job, settings, quiet):
    """What happens when a tab closes: the WSGI server closes the response; the upstream
    connection to SkyPilot must be closed promptly, whether the job is printing or quiet."""
    make_job(12, status="RUNNING")
    lines = ["one", "two", "three"] if quiet else [f"line {i}" for i in range(10_000)]
    with LogServer(lines, interval=0.0 if quiet else 0.05) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        response = web.get("/jobs/12/logs/stream?tail=3")
        frames = iter(response.streaming_content)
        events = sse_events(frames, until="lines")
        assert events[-2][0] == "ready" and events[-1][1][0] in ("one", "line 0")
        assert server.connected.is_set() and not server.disconnected.is_set()
        assert joblogs.slots_in_use() == 1
        started = time.monotonic()
        close_response(response)
        assert server.disconnected.wait(5), "SkyPilot's connection was left open"
        assert time.monotonic() - started < 5  # not at the next 10 s keep-alive
        assert server.bodies == [{"job_id": 12, "follow": True, "tail": 3, "controller": False}]
    assert joblogs.slots_in_use() == 0


def test_client_gone_check_peeks_at_the_request_socket():
    assert joblogs.client_gone_check({}) is None  # a server that hides its socket
    ours, theirs = socket.socketpair()
    with ours:
        gone = joblogs.client_gone_check({"gunicorn.socket": ours})
        assert gone() is False
        theirs.sendall(b"x")
        assert gone() is False  # data is not a hang-up (and is left unread)
        assert ours.recv(1) == b"x"
        theirs.close()
        assert gone() is True


def test_a_client_hanging_up_ends_a_quiet_stream_without_a_write(web, make_job, settings):
    """Under gunicorn the view peeks at the client's socket while idle: a closed tab ends the
    stream (and SkyPilot's) within about a second, not at the second failed keep-alive."""
    make_job(12, status="RUNNING")
    ours, theirs = socket.socketpair()
    with LogServer(["one"]) as server, ours:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        response = web.get("/jobs/12/logs/stream", **{"gunicorn.socket": ours})
        frames = iter(response.streaming_content)
        assert sse_events(frames, until="lines")[-1] == ("lines", ["one"])
        started = time.monotonic()
        theirs.close()
        assert list(frames) == []  # ends without an "end" event: nobody is listening
        assert time.monotonic() - started < 5  # not at a keep-alive write (10 s, then 20 s)
        assert server.disconnected.wait(5)
        assert joblogs.slots_in_use() == 0
        close_response(response)


def test_plain_text_tail_for_use_without_javascript(web, make_job, rsps, settings):
    make_job(12, status="RUNNING")
    serve_log(rsps)
    response = web.get("/jobs/12/logs?tail=5&format=text")
    assert_clean_text(response)
    assert response["X-Content-Type-Options"] == "nosniff"
    assert sent_bodies(rsps) == [{"job_id": 12, "follow": False, "tail": 5, "controller": False}]
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    down = web.get("/jobs/12/logs?format=text")
    assert down.status_code == 502
    assert down.content.decode().startswith("SkyPilot is unreachable:")


# --- the API ----------------------------------------------------------------------------------


def test_api_log_is_plain_text_of_the_tail(api, make_job, rsps):
    make_job(12, status="RUNNING")
    serve_log(rsps)
    assert_clean_text(api.get("/api/jobs/12/logs?tail=7"))
    # not followed unless asked, even for an active job
    assert sent_bodies(rsps) == [{"job_id": 12, "follow": False, "tail": 7, "controller": False}]
    assert api.get("/api/jobs/12/logs", HTTP_ACCEPT="text/plain").status_code == 200
    assert sent_bodies(rsps)[-1]["tail"] == 200


def test_api_log_errors_are_json(api, make_job, settings):
    make_job(12)
    bad = api.get("/api/jobs/12/logs?tail=0")
    assert bad.status_code == 400
    assert bad.json() == {"tail": ["a whole number of lines from 1 to 10000."]}
    assert api.get("/api/jobs/12/logs?follow=sometimes").json() == {"follow": ["true or false."]}
    missing = api.get("/api/jobs/99/logs", HTTP_ACCEPT="text/plain")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/json"
    assert "No job 99" in missing.json()["detail"]
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    for query in ["", "?follow=true"]:
        down = api.get(f"/api/jobs/12/logs{query}", HTTP_ACCEPT="text/plain")
        assert down.status_code == 502
        assert down["Content-Type"] == "application/json"
        assert "cannot reach SkyPilot API server at http://127.0.0.1:9" in down.json()["detail"]
    assert joblogs.slots_in_use() == 0
    assert Client().get("/api/jobs/12/logs").status_code == 401


def test_api_follow_streams_while_active(api, make_job, settings):
    make_job(12, status="RUNNING")
    with LogServer(["a", "\x1b[1mb\x1b[0m", "c"], finish=True) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        response = api.get("/api/jobs/12/logs?follow=true&tail=3")
        assert response.status_code == 200
        assert response.streaming
        try:
            assert b"".join(response.streaming_content) == b"a\nb\nc\n"
        finally:
            close_response(response)
        assert server.bodies == [{"job_id": 12, "follow": True, "tail": 3, "controller": False}]


def test_api_follow_is_capped(api, make_job, settings):
    settings.SKYDECK_LOG_STREAMS_MAX = 1
    make_job(12, status="RUNNING")
    with LogServer(["a"]) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        first = api.get("/api/jobs/12/logs?follow=true")
        try:
            busy = api.get("/api/jobs/12/logs?follow=true")
            assert busy.status_code == 503
            assert "SKYDECK_LOG_STREAMS_MAX" in busy.json()["detail"]
        finally:
            close_response(first)
        assert server.disconnected.wait(2)


def test_api_schema_documents_the_log(api):
    schema = api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/jobs/{id}/logs/"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/plain"}
    assert set(operation["responses"]["502"]["content"]) == {"application/json"}
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"id", "tail", "follow"}
    assert params["tail"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000}
    assert params["follow"]["schema"] == {"type": "boolean"}


# --- manage.py logs ---------------------------------------------------------------------------


def test_command_prints_the_cleaned_tail(make_job, rsps, capsys):
    make_job(12, status="SUCCEEDED")
    serve_log(rsps)
    call_command("logs", "12", "--tail", "5")
    out, err = capsys.readouterr()
    assert out == "\n".join(CLEAN_LOG) + "\n"
    assert "it is SUCCEEDED, so its log is complete" in err
    assert sent_bodies(rsps) == [{"job_id": 12, "follow": False, "tail": 5, "controller": False}]


def test_command_follows_active_jobs_unless_told_not_to(make_job, rsps, capsys):
    make_job(12, status="RUNNING")
    serve_log(rsps, "x\n")
    call_command("logs", "12")
    call_command("logs", "12", "--no-follow")
    assert [b["follow"] for b in sent_bodies(rsps)] == [True, False]
    assert capsys.readouterr().out == "x\nx\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["99"], "No job 99 in SkyDeck"),
        (["12", "--tail", "0"], "tail: a whole number of lines from 1 to 10000."),
    ],
)
def test_command_refuses_bad_requests(make_job, args, message):
    make_job(12)
    with pytest.raises(CommandError, match=message):
        call_command("logs", *args)


def test_command_fails_with_one_line_when_skypilot_is_down(make_job, settings):
    make_job(12)
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    with pytest.raises(CommandError) as info:
        call_command("logs", "12")
    message = str(info.value)
    assert message.startswith("SkyPilot is unreachable: cannot reach SkyPilot API server")
    assert "\n" not in message


class _InterruptAfter(StringIO):
    """stdout that raises KeyboardInterrupt (what Ctrl-C does) once ``n`` lines arrived."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def write(self, text: str) -> int:
        written = super().write(text)
        if self.getvalue().count("\n") >= self.n:
            raise KeyboardInterrupt
        return written


def test_command_ctrl_c_exits_quietly_and_closes_the_stream(make_job, settings):
    make_job(12, status="RUNNING")
    with LogServer([f"line {i}" for i in range(1000)], interval=0.02) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        stdout, stderr = _InterruptAfter(2), StringIO()
        with pytest.raises(SystemExit) as info:
            call_command("logs", "12", stdout=stdout, stderr=stderr)
        assert info.value.code == 130
        assert stdout.getvalue() == "line 0\nline 1\n"
        assert stderr.getvalue() == ""
        assert server.disconnected.wait(2)


def test_interrupt_stream_without_a_socket_is_refused():
    """A response with no live socket (released, or a test double) cannot be interrupted."""
    response = requests.Response()
    assert joblogs.interrupt_stream(response) is False
