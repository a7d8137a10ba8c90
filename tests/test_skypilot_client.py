"""Tests for the plain-HTTP SkyPilot API client (syncing/skypilot.py).

Response shapes follow docs/skypilot-api.md (recorded against a SkyPilot 0.14.1 server).
No database and no Django settings are needed.
"""

from __future__ import annotations

import base64
import json
import sys
import types

import pytest
import requests
import responses
from responses import matchers

from syncing import skypilot
from syncing.skypilot import (
    API_VERSION,
    DEFAULT_ENDPOINT,
    REQUEST_ID_HEADER,
    SKYPILOT_VERSION,
    AuthenticationRequired,
    Forbidden,
    MalformedResponse,
    QueuePage,
    RequestFailed,
    ServerUnavailable,
    SkyPilotClient,
    SkyPilotError,
    VersionMismatch,
    clean_log_line,
    resolve_endpoint,
    strip_ansi,
)

BASE = "http://sky.test"
TOKEN = "sky_serviceaccounttoken123"
COOKIE_VALUE = "oauth2cookievalue987"
PASSWORD = "hunter2pass"

JOB = {
    "job_id": 7,
    "task_id": 0,
    "job_name": "exp-a",
    "status": "RUNNING",
    "resources": "2x[H100:8]",
    "submitted_at": 1767225600.5,
}


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------------------------


class FakeTime:
    """Replaces sleep and the monotonic clock so polling and backoff cost nothing."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Keep the developer's real ~/.sky and SKYPILOT_* variables out of every test."""
    for name in (
        "SKYPILOT_API_SERVER_ENDPOINT",
        "SKYPILOT_GLOBAL_CONFIG",
        "SKYPILOT_SERVICE_ACCOUNT_TOKEN",
        "SKYPILOT_API_COOKIE_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".sky").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return home


@pytest.fixture
def fake_time():
    return FakeTime()


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client(fake_time):
    return make_client(fake_time)


def make_client(fake_time: FakeTime, endpoint: str = BASE, **kwargs) -> SkyPilotClient:
    return SkyPilotClient(endpoint, sleep=fake_time.sleep, clock=fake_time.clock, **kwargs)


def add_submit(rsps, path: str, request_id: str = "req-1", *, base: str = BASE, **kwargs):
    return rsps.add(
        responses.POST,
        base + path,
        body="null",
        content_type="application/json",
        headers={REQUEST_ID_HEADER: request_id},
        **kwargs,
    )


def add_status(rsps, request_id: str = "req-1", status: str = "SUCCEEDED", *, base: str = BASE):
    return rsps.add(
        responses.GET,
        base + "/api/status",
        json=[{"request_id": request_id, "name": "jobs.queue_v2", "status": status}],
        match=[matchers.query_param_matcher({"request_ids": request_id, "all_status": "true"})],
    )


def add_get(rsps, value, request_id: str = "req-1", *, base: str = BASE):
    payload = {"request_id": request_id, "status": "SUCCEEDED", "return_value": json.dumps(value)}
    return rsps.add(
        responses.GET,
        base + "/api/get",
        json=payload,
        match=[matchers.query_param_matcher({"request_id": request_id})],
    )


def add_get_failed(rsps, error_type: str, message: str, request_id: str = "req-1"):
    error = json.dumps({"type": error_type, "message": message, "object": "gASVpickle=="})
    payload = {"request_id": request_id, "status": "FAILED", "return_value": "null", "error": error}
    return rsps.add(responses.GET, BASE + "/api/get", status=500, json={"detail": payload})


def add_operation(rsps, path: str, value, request_id: str = "req-1"):
    """Register one full submit -> status -> get round trip."""
    add_submit(rsps, path, request_id)
    add_status(rsps, request_id)
    add_get(rsps, value, request_id)


def queue_result(jobs=None, total=1):
    jobs = [JOB] if jobs is None else jobs
    return {
        "jobs": jobs,
        "total": total,
        "total_no_filter": total + 2,
        "status_counts": {"RUNNING": total},
        "infra_options": ["aws"],
    }


def body_of(call) -> dict:
    return json.loads(call.request.body)


def paths(rsps) -> list[str]:
    return [requests.utils.urlparse(c.request.url).path for c in rsps.calls]


def write_cookie_file(path, *, host: str = "sky.test", secure: bool = False, value=COOKIE_VALUE):
    flag = "TRUE" if secure else "FALSE"
    path.write_text(
        "# Netscape HTTP Cookie File\n"
        f"{host}\tFALSE\t/\t{flag}\t2000000000\t_oauth2_proxy\t{value}\n"
    )


# ---------------------------------------------------------------------------------------------
# Endpoint resolution
# ---------------------------------------------------------------------------------------------


def test_endpoint_defaults_to_local_server():
    assert resolve_endpoint() == DEFAULT_ENDPOINT == "http://127.0.0.1:46580"


def test_endpoint_from_home_config_file(isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text(
        "api_server:\n  endpoint: https://sky.example.com/prefix/\n"
    )
    assert resolve_endpoint() == "https://sky.example.com/prefix"


def test_endpoint_from_skypilot_global_config(monkeypatch, isolated_env, tmp_path):
    (isolated_env / ".sky" / "config.yaml").write_text("api_server:\n  endpoint: http://home\n")
    other = tmp_path / "other.yaml"
    other.write_text("api_server:\n  endpoint: http://from-global-config:8080\n")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", str(other))
    assert resolve_endpoint() == "http://from-global-config:8080"


def test_env_endpoint_beats_config_and_override_beats_env(monkeypatch, isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text("api_server:\n  endpoint: http://cfg\n")
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", "http://env-host:1234/")
    assert resolve_endpoint() == "http://env-host:1234"
    assert resolve_endpoint("https://override.test///") == "https://override.test"


def test_config_without_endpoint_falls_back_to_default(isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text("jobs:\n  controller: {}\n")
    assert resolve_endpoint() == DEFAULT_ENDPOINT


@pytest.mark.parametrize("bad", ["localhost:46580", "ftp://sky.test", "HTTP//sky", "http://"])
def test_bad_endpoint_scheme_is_rejected(monkeypatch, bad):
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", bad)
    with pytest.raises(SkyPilotError, match="endpoint"):
        resolve_endpoint()


def test_bad_endpoint_in_config_is_not_silently_replaced(isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text("api_server:\n  endpoint: sky.test:80\n")
    with pytest.raises(SkyPilotError, match="http:// or https://"):
        resolve_endpoint()


def test_rejected_endpoint_message_hides_credentials():
    with pytest.raises(SkyPilotError) as info:
        resolve_endpoint(f"ftp://alice:{PASSWORD}@sky.test")
    assert PASSWORD not in str(info.value)
    assert "sky.test" in str(info.value)


def test_unparseable_config_raises_without_quoting_it(isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text(
        f"api_server:\n  service_account_token: {TOKEN}\n  endpoint: [unclosed\n"
    )
    with pytest.raises(SkyPilotError, match="not valid YAML") as info:
        resolve_endpoint()
    assert TOKEN not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Credentials and headers
# ---------------------------------------------------------------------------------------------


class RecordingSession(requests.Session):
    """Records the keyword arguments of every request (allow_redirects is not visible later)."""

    def __init__(self) -> None:
        super().__init__()
        self.kwargs: list[dict] = []

    def request(self, method, url, **kwargs):
        self.kwargs.append(kwargs)
        return super().request(method, url, **kwargs)


def test_version_headers_timeouts_and_no_redirect_following(rsps, fake_time):
    session = RecordingSession()
    client = make_client(fake_time, session=session, timeout=4.0)
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "healthy"})
    add_operation(rsps, "/jobs/queue/v2", queue_result())
    client.health()
    client.queue()
    assert len(rsps.calls) == 4
    for call in rsps.calls:
        assert call.request.headers["X-SkyPilot-API-Version"] == str(API_VERSION) == "62"
        assert call.request.headers["X-SkyPilot-Version"] == SKYPILOT_VERSION == "0.14.1"
    assert len(session.kwargs) == 4
    for kwargs in session.kwargs:
        assert kwargs["allow_redirects"] is False
        assert kwargs["timeout"] == (4.0, 4.0)


def test_bearer_token_from_env_is_sent_and_cookies_are_not(
    rsps, fake_time, monkeypatch, isolated_env
):
    monkeypatch.setenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", TOKEN)
    write_cookie_file(isolated_env / ".sky" / "cookies.txt")
    rsps.add(
        responses.GET,
        BASE + "/api/health",
        json={"status": "healthy"},
        headers={"Set-Cookie": "_oauth2_proxy=fromserver; Path=/"},
    )
    client = make_client(fake_time)
    client.health()
    client.health()  # a cookie set by the server must not be sent back either
    for call in rsps.calls:
        assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "Cookie" not in call.request.headers


def test_bearer_token_from_config(rsps, fake_time, isolated_env):
    (isolated_env / ".sky" / "config.yaml").write_text(
        f"api_server:\n  endpoint: {BASE}\n  service_account_token: {TOKEN}\n"
    )
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "healthy"})
    SkyPilotClient(sleep=fake_time.sleep, clock=fake_time.clock).health()
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_cookie_jar_is_loaded_and_sent(rsps, fake_time, isolated_env):
    write_cookie_file(isolated_env / ".sky" / "cookies.txt")
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "healthy"})
    make_client(fake_time).health()
    headers = rsps.calls[0].request.headers
    assert headers["Cookie"] == f"_oauth2_proxy={COOKIE_VALUE}"
    assert "Authorization" not in headers


def test_cookie_file_env_override_and_secure_cookies_need_https(
    rsps, fake_time, monkeypatch, tmp_path
):
    jar = tmp_path / "jar.txt"
    write_cookie_file(jar, secure=True)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", str(jar))
    rsps.add(responses.GET, "https://sky.test/api/health", json={"status": "healthy"})
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "healthy"})
    make_client(fake_time, "https://sky.test").health()
    make_client(fake_time, BASE).health()
    assert rsps.calls[0].request.headers["Cookie"] == f"_oauth2_proxy={COOKIE_VALUE}"
    assert "Cookie" not in rsps.calls[1].request.headers


def test_missing_cookie_file_means_no_cookies(rsps, client):
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "healthy"})
    client.health()
    assert "Cookie" not in rsps.calls[0].request.headers


def test_corrupt_cookie_file_is_a_clear_error_without_its_content(fake_time, isolated_env):
    (isolated_env / ".sky" / "cookies.txt").write_text(f"garbage line {COOKIE_VALUE}\n")
    with pytest.raises(SkyPilotError, match="cookie file") as info:
        make_client(fake_time)
    assert COOKIE_VALUE not in str(info.value)
    assert "sky api login" in str(info.value)


def test_basic_auth_from_endpoint_url(rsps, fake_time):
    rsps.add(responses.GET, BASE + "/prefix/api/health", json={"status": "healthy"})
    client = make_client(fake_time, f"http://alice:{PASSWORD}@sky.test/prefix")
    client.health()
    request = rsps.calls[0].request
    assert request.url == BASE + "/prefix/api/health"
    expected = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    assert client.endpoint == "http://sky.test/prefix"
    assert PASSWORD not in repr(client)


# ---------------------------------------------------------------------------------------------
# The asynchronous request protocol
# ---------------------------------------------------------------------------------------------


def test_request_id_protocol_end_to_end(rsps, client, fake_time):
    add_submit(rsps, "/jobs/queue/v2", "abc-123")
    add_status(rsps, "abc-123", "PENDING")
    add_status(rsps, "abc-123", "RUNNING")
    add_status(rsps, "abc-123", "SUCCEEDED")
    add_get(rsps, queue_result(), "abc-123")

    page = client.queue()

    assert page == QueuePage(jobs=[JOB], total=1, total_no_filter=3)
    assert paths(rsps) == [
        "/jobs/queue/v2",
        "/api/status",
        "/api/status",
        "/api/status",
        "/api/get",
    ]
    assert len(fake_time.sleeps) == 2  # slept between polls, never for real
    assert all(0 < s <= 2.0 for s in fake_time.sleeps)


def test_status_answer_as_single_object_is_tolerated(rsps, client):
    add_submit(rsps, "/jobs/cancel")
    rsps.add(
        responses.GET,
        BASE + "/api/status",
        json={"request_id": "req-1", "status": "SUCCEEDED"},
    )
    add_get(rsps, None)
    assert client.cancel([1]) is None
    assert paths(rsps)[-1] == "/api/get"


def test_wait_gives_up_after_request_timeout(rsps, fake_time):
    client = make_client(fake_time, request_timeout=5.0)
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps, "req-1", "RUNNING")
    with pytest.raises(ServerUnavailable, match="still RUNNING"):
        client.queue()
    assert "/api/get" not in paths(rsps)
    assert fake_time.now == pytest.approx(5.0)


def test_request_id_header_is_ignored_on_4xx(rsps, client):
    rsps.add(
        responses.POST,
        BASE + "/jobs/launch",
        status=422,
        json={"detail": [{"loc": ["body", "name"], "msg": "Field required"}]},
        headers={REQUEST_ID_HEADER: "should-not-be-used"},
    )
    with pytest.raises(RequestFailed) as info:
        client.launch("name: exp\nrun: echo hi\n")
    assert info.value.status_code == 422
    assert "Field required" in str(info.value)
    assert paths(rsps) == ["/jobs/launch"]  # never polled the bogus id


def test_missing_request_id_on_200_is_malformed(rsps, client):
    rsps.add(responses.POST, BASE + "/jobs/queue/v2", body="null")
    with pytest.raises(MalformedResponse, match=REQUEST_ID_HEADER):
        client.queue()


def test_failed_request_raises_request_failed_with_type_and_message(rsps, client):
    add_submit(rsps, "/jobs/launch")
    add_status(rsps, "req-1", "FAILED")
    add_get_failed(rsps, "ValueError", "\x1b[31mInvalid task YAML:\x1b[0m\n  bad `resources`")
    with pytest.raises(RequestFailed) as info:
        client.launch("name: exp\n")
    err = info.value
    assert err.error_type == "ValueError"
    assert err.server_message == "Invalid task YAML:\n  bad `resources`"
    assert str(err) == "ValueError: Invalid task YAML: bad `resources`"
    assert "gASV" not in str(err)  # the pickled object is ignored


def test_cancelled_request_raises_request_failed(rsps, client):
    add_submit(rsps, "/jobs/cancel")
    add_status(rsps, "req-1", "CANCELLED")
    with pytest.raises(RequestFailed, match="cancelled") as info:
        client.cancel([3])
    assert info.value.error_type == "RequestCancelled"


def test_return_value_that_is_not_json_is_malformed(rsps, client):
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps)
    rsps.add(
        responses.GET,
        BASE + "/api/get",
        json={"request_id": "req-1", "status": "SUCCEEDED", "return_value": "{not json"},
    )
    with pytest.raises(MalformedResponse):
        client.queue()


def test_truncated_json_is_malformed(rsps, client):
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps)
    rsps.add(
        responses.GET,
        BASE + "/api/get",
        body='{"request_id": "req-1", "status": "SUCCEEDED", "return_value": "{\\"jo',
        content_type="application/json",
    )
    with pytest.raises(MalformedResponse, match="invalid JSON"):
        client.queue()


def test_truncated_health_json_is_malformed(rsps, client):
    rsps.add(responses.GET, BASE + "/api/health", body='{"status": "heal')
    with pytest.raises(MalformedResponse):
        client.health()


# ---------------------------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------------------------


def test_queue_default_body(rsps, client):
    add_operation(rsps, "/jobs/queue/v2", queue_result())
    client.queue()
    assert body_of(rsps.calls[0]) == {"all_users": True, "skip_finished": False, "refresh": False}


def test_queue_paging_and_filters_passed_through(rsps, client):
    add_operation(rsps, "/jobs/queue/v2", queue_result(total=40))
    page = client.queue(
        all_users=False,
        skip_finished=True,
        fields=["job_id", "status"],
        page=2,
        limit=20,
        submitted_after=1767225600.0,
        job_ids=[7, 8],
        statuses=["RUNNING"],
    )
    assert body_of(rsps.calls[0]) == {
        "all_users": False,
        "skip_finished": True,
        "refresh": False,
        "fields": ["job_id", "status"],
        "page": 2,
        "limit": 20,
        "submitted_after": 1767225600.0,
        "job_ids": [7, 8],
        "statuses": ["RUNNING"],
    }
    assert page.total == 40


def test_queue_rejects_page_without_limit(client):
    with pytest.raises(ValueError, match="limit"):
        client.queue(page=1)


def test_queue_cluster_not_up_means_no_jobs(rsps, client):
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps, "req-1", "FAILED")
    add_get_failed(rsps, "ClusterNotUpError", "No in-progress managed jobs.")
    assert client.queue() == QueuePage(jobs=[], total=0, total_no_filter=0)


def test_cluster_not_up_is_not_swallowed_outside_the_queue(rsps, client):
    add_submit(rsps, "/jobs/cancel")
    add_status(rsps, "req-1", "FAILED")
    add_get_failed(rsps, "ClusterNotUpError", "No in-progress managed jobs.")
    with pytest.raises(RequestFailed) as info:
        client.cancel([1])
    assert info.value.error_type == "ClusterNotUpError"


def test_queue_other_failures_propagate(rsps, client):
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps, "req-1", "FAILED")
    add_get_failed(rsps, "RuntimeError", "database is locked")
    with pytest.raises(RequestFailed, match="RuntimeError: database is locked"):
        client.queue()


@pytest.mark.parametrize(
    "result",
    [[JOB], {"total": 1}, {"jobs": "nope"}, {"jobs": ["x"]}, {"jobs": [], "total": "1"}],
)
def test_queue_unexpected_shape_is_malformed(rsps, client, result):
    add_operation(rsps, "/jobs/queue/v2", result)
    with pytest.raises(MalformedResponse):
        client.queue()


def test_queue_missing_totals_are_none(rsps, client):
    add_operation(rsps, "/jobs/queue/v2", {"jobs": []})
    assert client.queue() == QueuePage(jobs=[], total=None, total_no_filter=None)


# ---------------------------------------------------------------------------------------------
# Launch, cancel, logs, health
# ---------------------------------------------------------------------------------------------


def test_launch_returns_job_id_and_sends_name_null_and_env_vars(rsps, client):
    add_operation(rsps, "/jobs/launch", {"job_id": [42], "handle": "opaque"})
    task = "name: exp-a\nrun: echo hi\n"
    env = {"SKYPILOT_USER_ID": "abcd1234", "SKYPILOT_USER": "tester"}
    assert client.launch(task, env_vars=env) == 42
    body = body_of(rsps.calls[0])
    assert body == {"task": task, "name": None, "env_vars": env}
    assert '"name": null' in rsps.calls[0].request.body.decode()


def test_launch_without_env_vars_omits_them_and_accepts_bare_int(rsps, client):
    add_operation(rsps, "/jobs/launch", 5)
    assert client.launch("name: x\n") == 5
    assert body_of(rsps.calls[0]) == {"task": "name: x\n", "name": None}


def test_launch_without_job_id_is_malformed(rsps, client):
    add_operation(rsps, "/jobs/launch", {"job_id": [], "handle": None})
    with pytest.raises(MalformedResponse):
        client.launch("name: x\n")


def test_cancel_sends_job_ids_and_waits(rsps, client):
    add_operation(rsps, "/jobs/cancel", None)
    assert client.cancel([3, 4]) is None
    assert body_of(rsps.calls[0]) == {"job_ids": [3, 4]}
    assert paths(rsps) == ["/jobs/cancel", "/api/status", "/api/get"]


def test_cancel_rejects_empty_list(client):
    with pytest.raises(ValueError):
        client.cancel([])


def test_stream_logs_cleans_lines(rsps, client):
    raw = (
        "\x1b[1m\x1b[32mStarting job\x1b[0m\n"
        '<sky-payload type="rich_status">{"msg": "spinner"}</sky-payload>\n'
        "\n"
        "epoch 1 loss=0.5\n"
        "progress 10%\rprogress 100%\r\n"
        "prefix <sky-payload>{}</sky-payload>suffix\n"
        "last line without newline é"
    ).encode()
    rsps.add(
        responses.POST,
        BASE + "/jobs/logs",
        body=raw,
        content_type="text/plain",
        headers={REQUEST_ID_HEADER: "logs-1"},
    )
    lines = list(client.stream_logs(7, tail=100))
    assert lines == [
        "Starting job",
        "",
        "epoch 1 loss=0.5",
        "progress 100%",
        "prefix suffix",
        "last line without newline é",
    ]
    call = rsps.calls[0]
    assert body_of(call) == {"job_id": 7, "follow": False, "tail": 100, "controller": False}
    assert call.request.req_kwargs["stream"] is True


def test_stream_logs_follow_has_no_read_timeout(rsps, client):
    rsps.add(responses.POST, BASE + "/jobs/logs", body=b"a\n")
    assert list(client.stream_logs(7, follow=True)) == ["a"]
    assert body_of(rsps.calls[0])["follow"] is True
    assert rsps.calls[0].request.req_kwargs["timeout"][1] is None


def test_stream_logs_closes_response_when_generator_closed(rsps, client, monkeypatch):
    closed = []
    original_close = requests.Response.close

    def spy_close(self):
        closed.append(self.url)
        original_close(self)

    monkeypatch.setattr(requests.Response, "close", spy_close)
    rsps.add(responses.POST, BASE + "/jobs/logs", body=b"one\ntwo\nthree\n")
    gen = client.stream_logs(7, follow=True)
    assert next(gen) == "one"
    assert closed == []
    gen.close()
    assert closed == [BASE + "/jobs/logs"]


def test_stream_logs_maps_auth_errors(rsps, client):
    rsps.add(
        responses.POST,
        BASE + "/jobs/logs",
        status=307,
        headers={"Location": "/oauth2/start?rd=%2Fjobs%2Flogs"},
    )
    with pytest.raises(AuthenticationRequired):
        list(client.stream_logs(7))


def test_clean_log_line_and_strip_ansi_helpers():
    assert strip_ansi("\x1b[31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07") == "red link"
    assert clean_log_line('x<sky-payload type="a">{"b": 1}</sky-payload>y\n') == "xy"
    assert clean_log_line("  indented\r\n") == "  indented"


def test_health_strips_user(rsps, client):
    rsps.add(
        responses.GET,
        BASE + "/api/health",
        json={
            "status": "healthy",
            "api_version": "62",
            "version": "0.14.1",
            "commit": "abc",
            "user": {"name": "alice", "id": "1234abcd", "password": "$2b$12$hash"},
        },
    )
    health = client.health()
    assert health == {
        "status": "healthy",
        "api_version": "62",
        "version": "0.14.1",
        "commit": "abc",
    }


def test_health_needs_auth_and_version_mismatch(rsps, client):
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "needs_auth"})
    rsps.add(responses.GET, BASE + "/api/health", json={"status": "version_mismatch"})
    with pytest.raises(AuthenticationRequired, match="sky api login"):
        client.health()
    with pytest.raises(VersionMismatch):
        client.health()


# ---------------------------------------------------------------------------------------------
# Error mapping and retries
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [302, 307])
def test_redirect_to_oauth2_start_needs_authentication(rsps, client, code):
    rsps.add(
        responses.POST,
        BASE + "/jobs/queue/v2",
        status=code,
        headers={"Location": BASE + "/oauth2/start?rd=%2Fjobs%2Fqueue%2Fv2"},
    )
    rsps.add(responses.GET, BASE + "/oauth2/start", body="<html>Sign in</html>")
    with pytest.raises(AuthenticationRequired) as info:
        client.queue()
    assert "sky api login" in str(info.value)
    assert paths(rsps) == ["/jobs/queue/v2"]  # not followed, not retried


def test_401_needs_authentication_with_detail(rsps, client):
    rsps.add(responses.GET, BASE + "/api/health", status=401, json={"detail": "Token expired"})
    with pytest.raises(AuthenticationRequired) as info:
        client.health()
    message = str(info.value)
    assert "Token expired" in message and "sky api login" in message
    assert "\n" not in message


def test_403_is_forbidden(rsps, client):
    rsps.add(responses.POST, BASE + "/jobs/launch", status=403, json={"detail": "Forbidden"})
    with pytest.raises(Forbidden, match="/jobs/launch"):
        client.launch("name: x\n")
    assert not isinstance(Forbidden("x"), AuthenticationRequired)


def test_400_version_mismatch(rsps, client):
    rsps.add(
        responses.POST,
        BASE + "/jobs/queue/v2",
        status=400,
        json={"error": "version_mismatch", "message": "Client API version 62 is too new"},
    )
    with pytest.raises(VersionMismatch, match="too new"):
        client.queue()


def test_other_4xx_is_request_failed_with_status_and_detail(rsps, client):
    add_submit(rsps, "/jobs/queue/v2")
    rsps.add(
        responses.GET,
        BASE + "/api/status",
        status=404,
        json={"detail": "Request 'req-1' not found"},
    )
    with pytest.raises(RequestFailed) as info:
        client.queue()
    assert info.value.status_code == 404
    assert str(info.value) == "HTTP 404: Request 'req-1' not found"


def test_503_is_retried_for_queue(rsps, client, fake_time):
    rsps.add(responses.POST, BASE + "/jobs/queue/v2", status=503)
    rsps.add(responses.POST, BASE + "/jobs/queue/v2", status=502)
    add_operation(rsps, "/jobs/queue/v2", queue_result())
    assert client.queue().jobs == [JOB]
    assert paths(rsps)[:3] == ["/jobs/queue/v2"] * 3
    assert fake_time.sleeps[:2] == [0.5, 1.0]  # exponential backoff


def test_503_on_status_poll_is_retried(rsps, client):
    add_submit(rsps, "/jobs/launch")
    rsps.add(responses.GET, BASE + "/api/status", status=504)
    add_status(rsps)
    add_get(rsps, {"job_id": [9]})
    assert client.launch("name: x\n") == 9
    assert paths(rsps).count("/jobs/launch") == 1


def test_launch_is_not_retried_on_503(rsps, client, fake_time):
    rsps.add(responses.POST, BASE + "/jobs/launch", status=503)
    add_operation(rsps, "/jobs/launch", {"job_id": [1]})
    with pytest.raises(ServerUnavailable, match="HTTP 503"):
        client.launch("name: x\n")
    assert paths(rsps) == ["/jobs/launch"]
    assert fake_time.sleeps == []


def test_cancel_is_not_retried_on_connection_error(rsps, client):
    rsps.add(responses.POST, BASE + "/jobs/cancel", body=requests.ConnectionError("boom"))
    with pytest.raises(ServerUnavailable):
        client.cancel([1])
    assert len(rsps.calls) == 1


def test_retries_are_bounded(rsps, fake_time):
    client = make_client(fake_time, retries=2)
    rsps.add(responses.GET, BASE + "/api/health", status=503)
    with pytest.raises(ServerUnavailable):
        client.health()
    assert len(rsps.calls) == 3
    assert fake_time.sleeps == [0.5, 1.0]


def test_connect_timeout_is_server_unavailable(rsps, client):
    rsps.add(
        responses.GET,
        BASE + "/api/health",
        body=requests.ConnectTimeout("HTTPConnectionPool(host='sky.test'): timed out"),
    )
    with pytest.raises(ServerUnavailable) as info:
        client.health()
    assert str(info.value) == f"cannot reach SkyPilot API server at {BASE}: timed out"


def test_connection_refused_message_is_short(rsps, client):
    rsps.add(
        responses.GET,
        BASE + "/api/health",
        body=requests.ConnectionError(
            "HTTPConnectionPool(host='sky.test', port=80): Max retries exceeded with url: "
            "/api/health (Caused by NewConnectionError('<urllib3.connection.HTTPConnection "
            "object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection "
            "refused'))"
        ),
    )
    with pytest.raises(ServerUnavailable) as info:
        client.health()
    assert str(info.value) == (
        f"cannot reach SkyPilot API server at {BASE}: [Errno 111] Connection refused"
    )


def test_exception_hierarchy():
    for cls in (
        AuthenticationRequired,
        Forbidden,
        VersionMismatch,
        ServerUnavailable,
        RequestFailed,
        MalformedResponse,
    ):
        assert issubclass(cls, SkyPilotError)


# ---------------------------------------------------------------------------------------------
# Secrets never leak into messages
# ---------------------------------------------------------------------------------------------


def test_no_secret_in_messages_with_basic_auth(rsps, fake_time, caplog):
    caplog.set_level("DEBUG", logger="syncing.skypilot")
    client = make_client(fake_time, f"http://alice:{PASSWORD}@sky.test", retries=1)
    rsps.add(responses.GET, BASE + "/api/health", body=requests.ConnectionError("refused"))
    with pytest.raises(ServerUnavailable) as info:
        client.health()
    assert PASSWORD not in str(info.value) and "alice" not in str(info.value)
    assert PASSWORD not in caplog.text


def test_no_token_or_cookie_echoed_by_server_in_messages(
    rsps, fake_time, monkeypatch, isolated_env
):
    monkeypatch.setenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", TOKEN)
    client = make_client(fake_time)
    rsps.add(
        responses.GET,
        BASE + "/api/health",
        status=401,
        json={"detail": f"invalid token {TOKEN}"},
    )
    add_submit(rsps, "/jobs/queue/v2")
    add_status(rsps, "req-1", "FAILED")
    add_get_failed(rsps, "ValueError", f"bad header Authorization: Bearer {TOKEN}")
    with pytest.raises(AuthenticationRequired) as auth_info:
        client.health()
    with pytest.raises(RequestFailed) as failed_info:
        client.queue()
    for err in (auth_info.value, failed_info.value):
        assert TOKEN not in str(err)
    assert TOKEN not in failed_info.value.server_message

    # Cookie values are scrubbed the same way when cookies are in use.
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN")
    write_cookie_file(isolated_env / ".sky" / "cookies.txt")
    cookie_client = make_client(fake_time)
    rsps.add(
        responses.POST,
        BASE + "/jobs/launch",
        status=418,
        json={"detail": f"cookie {COOKIE_VALUE} rejected"},
    )
    with pytest.raises(RequestFailed) as cookie_info:
        cookie_client.launch("name: x\n")
    assert COOKIE_VALUE not in str(cookie_info.value)


# ---------------------------------------------------------------------------------------------
# Django settings
# ---------------------------------------------------------------------------------------------


def test_from_settings_reads_django_settings_lazily(monkeypatch):
    fake_conf = types.ModuleType("django.conf")
    fake_conf.settings = types.SimpleNamespace(
        SKYDECK_SKYPILOT_ENDPOINT="https://from-settings.test/",
        SKYDECK_SKYPILOT_TIMEOUT=3,
        SKYDECK_SKYPILOT_REQUEST_TIMEOUT=30.5,
        SKYDECK_NODE_ID="node-x",
    )
    monkeypatch.setitem(sys.modules, "django.conf", fake_conf)
    client = SkyPilotClient.from_settings()
    assert client.base_url == "https://from-settings.test"
    assert client.user_agent.endswith("(node node-x)")  # the API server's log says which node
    assert client.timeout == 3.0
    assert client.request_timeout == 30.5


def test_from_settings_takes_the_timeouts_from_the_settings(monkeypatch):
    from django.conf import settings as real

    # the settings' own defaults, not a second copy in the client that could drift from them
    assert (real.SKYDECK_SKYPILOT_TIMEOUT, real.SKYDECK_SKYPILOT_REQUEST_TIMEOUT) == (10.0, 120.0)
    fake_conf = types.ModuleType("django.conf")
    fake_conf.settings = types.SimpleNamespace(
        SKYDECK_SKYPILOT_TIMEOUT=7.0, SKYDECK_SKYPILOT_REQUEST_TIMEOUT=90.0, SKYDECK_NODE_ID="n"
    )
    monkeypatch.setitem(sys.modules, "django.conf", fake_conf)
    monkeypatch.setenv("SKYPILOT_API_SERVER_ENDPOINT", "http://env.test")
    client = SkyPilotClient.from_settings()
    assert client.base_url == "http://env.test"
    assert (client.timeout, client.request_timeout) == (7.0, 90.0)


def test_module_does_not_import_django_at_import_time():
    assert "django" not in skypilot.__dict__


def test_every_request_says_which_node_sends_it(rsps, fake_time):
    """Issue 18: the API server (and the double's launch record) can tell the nodes apart."""
    rsps.add(responses.GET, f"{BASE}/api/health", json={"status": "healthy", "api_version": "1"})
    make_client(fake_time, node="node-b").health()
    agent = rsps.calls[-1].request.headers["User-Agent"]
    assert agent.startswith("skydeck/") and agent.endswith("(node node-b)")
