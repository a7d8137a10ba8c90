"""Issue 13 item 4: log reads cannot starve the web.

Every log read of a web request (a tail or a follow; the page's SSE stream, ``?format=text``, the
API) takes one of ``SKYDECK_LOG_STREAMS_MAX`` slots of its process, talks to SkyPilot with short
timeouts and no retries, and beyond the cap is answered 503 with ``Retry-After``. The unit tests
use the Django test client; the served test runs ``skydeck serve`` (real gunicorn, 2 workers x 8
threads) against a SkyPilot that accepts connections and never answers, opens 50 log reads at
once and times ``GET /`` while they hang.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.test import Client
from rest_framework.authtoken.models import Token
from test_job_logs import LogServer, close_response, sse_events

from syncing import joblogs
from syncing.skypilot import ServerUnavailable

ROOT = Path(__file__).resolve().parent.parent


class HangingSkyPilot:
    """Accepts every connection, reads what it is sent and never answers (a stuck server)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=256)
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.accepted += 1

    def open_connections(self) -> int:
        """Connections the client has not closed yet (peeking: a closed one reads b"")."""
        alive = 0
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                while True:
                    data = conn.recv(65536, socket.MSG_DONTWAIT)
                    if not data:
                        break
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def __enter__(self) -> HangingSkyPilot:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                conn.close()


@pytest.fixture(autouse=True)
def isolated(settings, no_local_skypilot):
    """No real ~/.sky; short log timeouts; every test gives its slots back."""
    settings.SKYDECK_LOG_STREAMS_MAX = 2
    settings.SKYDECK_LOG_CONNECT_TIMEOUT = 1.0
    settings.SKYDECK_LOG_READ_TIMEOUT = 1.0
    yield
    deadline = time.monotonic() + 5
    while joblogs.slots_in_use() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert joblogs.slots_in_use() == 0, "a test leaked a log slot"


@pytest.fixture
def hanging(settings):
    with HangingSkyPilot() as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        yield server


@pytest.fixture
def api(user):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"
    return client


@pytest.fixture
def taken(settings):
    """Every slot of this process is held (by other log views)."""
    slots = [joblogs.acquire_slot() for _ in range(settings.SKYDECK_LOG_STREAMS_MAX)]
    yield slots
    for slot in slots:
        slot.release()


# --- the rule ---------------------------------------------------------------------------------


@pytest.mark.slow  # fault: a SkyPilot that never answers
def test_a_tail_holds_a_slot_while_skypilot_is_slow_and_lets_go_in_bounded_time(
    db, make_job, hanging, settings
):
    settings.SKYDECK_LOG_STREAMS_MAX = 1
    log_plan = joblogs.plan(make_job(13, status="SUCCEEDED").id)
    seen: dict[str, object] = {}

    def meanwhile() -> None:
        deadline = time.monotonic() + 5
        while not hanging.accepted and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["slots"] = joblogs.slots_in_use()
        try:
            joblogs.acquire_slot().release()
        except joblogs.TooManyStreams as exc:
            seen["refused"] = exc

    helper = threading.Thread(target=meanwhile)
    helper.start()
    started = time.monotonic()
    with pytest.raises(ServerUnavailable):
        joblogs.web_tail_text(log_plan)
    elapsed = time.monotonic() - started
    helper.join(5)
    assert seen["slots"] == 1  # a plain tail counts, not only follows
    assert isinstance(seen["refused"], joblogs.TooManyStreams)
    assert seen["refused"].retry_after == joblogs.RETRY_AFTER_SECONDS
    assert hanging.accepted == 1  # no retries for a web read
    assert elapsed < 1.0 + 2.0  # SKYDECK_LOG_READ_TIMEOUT, not SkyPilot's 120 s
    assert joblogs.slots_in_use() == 0  # released on the error


@pytest.mark.slow  # fault: a SkyPilot that never answers
def test_a_followed_log_waits_bounded_for_an_answer_then_as_long_as_the_job_is_quiet(
    db, make_job, hanging, settings
):
    running = joblogs.plan(make_job(12, status="RUNNING").id)
    stream = joblogs.open_web_stream(running, keepalive=0.3)
    try:
        assert joblogs.slots_in_use() == 1
        started = time.monotonic()
        ended = [e for e in stream.events() if isinstance(e, joblogs.Ended)]
        assert time.monotonic() - started < 3
        assert ended[0].outcome == joblogs.ERROR
        assert ended[0].message.startswith("SkyPilot is unreachable")
    finally:
        stream.close()
    assert joblogs.slots_in_use() == 0
    # once SkyPilot answered, a quiet job is not a timeout (1 s read timeout, 2.5 s of silence)
    with LogServer(["one"]) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        stream = joblogs.open_web_stream(running, keepalive=0.5)
        try:
            events = stream.events()
            kinds = []
            deadline = time.monotonic() + 2.5
            for event in events:
                kinds.append(type(event).__name__)
                assert not isinstance(event, joblogs.Ended), event
                if time.monotonic() > deadline:
                    break
            assert kinds[:2] == ["Ready", "Lines"] and "KeepAlive" in kinds
        finally:
            stream.close()
        assert server.disconnected.wait(5)


def test_connect_failures_release_the_slot(db, make_job, settings):
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    with pytest.raises(ServerUnavailable):
        joblogs.web_tail_text(joblogs.plan(make_job(13, status="SUCCEEDED").id))
    assert joblogs.slots_in_use() == 0


# --- the doors --------------------------------------------------------------------------------


def test_beyond_the_cap_every_door_answers_503_with_retry_after(web, api, make_job, taken):
    make_job(12, status="RUNNING")
    make_job(13, status="SUCCEEDED")
    retry = str(joblogs.RETRY_AFTER_SECONDS)
    for path in ["/jobs/13/logs/stream", "/jobs/12/logs/stream", "/jobs/13/logs?format=text"]:
        busy = web.get(path)
        assert busy.status_code == 503, path
        assert busy["Retry-After"] == retry
        assert busy["Content-Type"].startswith("text/plain")
        # the page's viewer shows this text when its stream is refused
        text = busy.content.decode()
        assert "2 job logs are already being read" in text and "try again in" in text
    for query in ["", "?follow=true"]:
        busy = api.get(f"/api/jobs/12/logs{query}", HTTP_ACCEPT="text/plain")
        assert busy.status_code == 503
        assert busy["Retry-After"] == retry
        assert busy["Content-Type"] == "application/json"
        assert "SKYDECK_LOG_STREAMS_MAX" in busy.json()["detail"]
    # the page itself reads nothing: it still renders, and its stream says why
    assert web.get("/jobs/13/logs").status_code == 200


@pytest.mark.slow  # fault: a SkyPilot that never answers
def test_doors_release_slots_on_errors(web, api, make_job, hanging):
    make_job(13, status="SUCCEEDED")
    started = time.monotonic()
    text = web.get("/jobs/13/logs?format=text")
    assert text.status_code == 502 and b"SkyPilot is unreachable" in text.content
    api_tail = api.get("/api/jobs/13/logs")
    assert api_tail.status_code == 502
    assert time.monotonic() - started < 2 * (1.0 + 2.0)
    assert joblogs.slots_in_use() == 0
    stream = web.get("/jobs/13/logs/stream")
    try:
        events = sse_events(stream.streaming_content)
    finally:
        close_response(stream)
    assert events[-1][0] == "end" and events[-1][1]["outcome"] == "error"
    assert joblogs.slots_in_use() == 0


@pytest.mark.slow  # fault: a SkyPilot that never answers
def test_a_client_that_hangs_up_gives_its_slot_back(web, make_job, hanging, settings):
    settings.SKYDECK_LOG_READ_TIMEOUT = 30.0  # the slot must come back because the tab left
    make_job(13, status="SUCCEEDED")
    ours, theirs = socket.socketpair()
    with ours:
        response = web.get("/jobs/13/logs/stream", **{"gunicorn.socket": ours})
        frames = iter(response.streaming_content)
        assert next(frames) == b": connecting\n\n"
        assert joblogs.slots_in_use() == 1
        theirs.close()
        started = time.monotonic()
        assert list(frames) == []
        close_response(response)
        assert time.monotonic() - started < 5
    assert joblogs.slots_in_use() == 0
    # and a response closed before it was ever iterated
    response = web.get("/jobs/13/logs/stream")
    assert joblogs.slots_in_use() == 1
    close_response(response)
    assert joblogs.slots_in_use() == 0


# --- served: 50 hanging log reads, and the dashboard still answers ----------------------------

SETUP = """
import json
from datetime import timedelta
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from experiments.models import Job
user = User.objects.create_user("alice", password="pw")
now = timezone.now()
for job_id, status in [(12, "RUNNING"), (13, "SUCCEEDED")]:
    Job.objects.create(id=job_id, job_name="exp", experiment_id="exp", status=status,
                       submitted_at=now - timedelta(minutes=5), first_seen=now, last_seen=now)
client = Client()
client.force_login(user)
print(json.dumps({"cookie": settings.SESSION_COOKIE_NAME,
                  "session": client.cookies[settings.SESSION_COOKIE_NAME].value,
                  "token": Token.objects.create(user=user).key}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # serves: skydeck serve
def test_served_50_hanging_log_reads_leave_the_dashboard_fast(tmp_path):
    with HangingSkyPilot() as skypilot:
        db = tmp_path / "caps.db"
        environ = {
            k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SKYDECK_DB_PATH"}
        }
        environ.update(
            HOME=str(tmp_path),
            SKYDECK_HOME=str(tmp_path / "home"),
            SKYDECK_STATIC_ROOT=str(tmp_path / "static"),
            SKYDECK_SKYPILOT_ENDPOINT=skypilot.url,
            SKYPILOT_API_COOKIE_FILE="/nonexistent/cookies.txt",
            SKYPILOT_GLOBAL_CONFIG="/nonexistent/config.yaml",
            SKYDECK_LOG_READ_TIMEOUT="20",  # they hang for the whole measurement
        )
        environ.pop("SKYPILOT_SERVICE_ACCOUNT_TOKEN", None)
        cli = [sys.executable, "-m", "skydeck_site.cli", "--db-path", str(db)]
        run = dict(cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
        subprocess.run([*cli, "migrate", "-v", "0"], check=True, **run)
        made = subprocess.run([*cli, "shell", "-c", SETUP], check=True, **run)
        auth = json.loads(made.stdout.strip().splitlines()[-1])
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [*cli, "serve", "--no-worker", "--no-migrate", "--port", str(port)],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cookies = {auth["cookie"]: auth["session"]}
        token = {"Authorization": f"Token {auth['token']}"}
        statuses: list[int | str] = []
        held: list[requests.Response] = []
        lock = threading.Lock()
        stop = threading.Event()

        def read(i: int) -> None:
            kind = i % 3
            try:
                if kind == 0:
                    r = requests.get(
                        f"{base}/jobs/13/logs?format=text", cookies=cookies, timeout=30
                    )
                elif kind == 1:
                    r = requests.get(f"{base}/api/jobs/13/logs", headers=token, timeout=30)
                else:
                    job = 12 if i % 2 else 13  # followed and not
                    r = requests.get(
                        f"{base}/jobs/{job}/logs/stream", cookies=cookies, stream=True, timeout=30
                    )
                    if r.status_code == 200:
                        with lock:
                            held.append(r)
                        stop.wait(30)
                with lock:
                    statuses.append(r.status_code)
            except requests.RequestException as exc:
                with lock:
                    statuses.append(type(exc).__name__)

        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{base}/api/health", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
            for _ in range(6):  # warm both workers' dashboard (templates, first queries)
                assert requests.get(f"{base}/", cookies=cookies, timeout=10).status_code == 200

            readers = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(50)]
            for reader in readers:
                reader.start()
            # every read is either refused (503) or hanging on SkyPilot, holding a slot
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                with lock:
                    refused = statuses.count(503)
                if refused + skypilot.open_connections() >= 50:
                    break
                time.sleep(0.1)
            hanging_reads = skypilot.open_connections()
            with lock:
                refused = statuses.count(503)
            assert hanging_reads <= 2 * 4  # 2 web processes x SKYDECK_LOG_STREAMS_MAX
            assert refused + hanging_reads == 50, (refused, hanging_reads, statuses)

            timings = []
            for _ in range(10):
                started = time.monotonic()
                home = requests.get(f"{base}/", cookies=cookies, timeout=5)
                timings.append(time.monotonic() - started)
                assert home.status_code == 200
            assert skypilot.open_connections() == hanging_reads  # still hanging meanwhile
            print(
                f"\n50 log reads at once against a hanging SkyPilot: {hanging_reads} held, "
                f"{refused} answered 503; GET / x{len(timings)}: max {max(timings):.3f}s, "
                f"median {statistics.median(timings):.3f}s"
            )
            assert max(timings) < 1.0, timings
        finally:
            stop.set()
            with lock:
                for response in held:
                    response.close()
            proc.terminate()
            try:
                proc.wait(timeout=5)  # the hanging reads would hold a graceful stop
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
