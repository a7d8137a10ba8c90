"""Faults of the outside world, against real loopback servers: SkyPilot down, slow and answering
garbage; S3 throttling (503 SlowDown) and down.

For each: the sync pass fails with a clear error recorded in ``SyncState``, nothing already stored
changes, the dashboard still answers 200 with a red health pill for that source naming the error,
``/api/health`` reports it, and once the fault clears the next pass succeeds.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_isolation import isolate_aws
from django.contrib.auth.models import User
from django.test import Client
from stub_skypilot import S3FaultProxy, StubSkyPilot

from experiments import services
from experiments.models import Checkpoint, Experiment, Job, SyncState
from syncing.runner import run_sync

# fault proofs against real loopback servers (.ci/run runs them: -m slow)
pytestmark = pytest.mark.slow

BUCKET = "skydeck-faults"
PILL_RE = re.compile(
    r'<span class="pill health-(?P<tone>\w+)" title="(?P<title>[^"]*)" tabindex="0" '
    r'data-source="(?P<source>\w+)">'
)


@pytest.fixture
def ui(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", password="pw"))
    return client


def pills(client: Client) -> dict[str, tuple[str, str]]:
    """source -> (tone, title) of the dashboard's health pills; the page must answer 200."""
    response = client.get("/")
    assert response.status_code == 200
    found = PILL_RE.finditer(response.content.decode())
    return {m["source"]: (m["tone"], html.unescape(m["title"])) for m in found}


def stored() -> dict[str, list[dict[str, Any]]]:
    """Everything the syncers could damage, row by row."""
    return {
        "jobs": list(Job.objects.order_by("id").values()),
        "checkpoints": list(Checkpoint.objects.order_by("id").values()),
        "experiments": list(Experiment.objects.order_by("id").values()),
    }


def assert_fault_shown(client: Client, source: str, *needles: str) -> str:
    """The pass failed, the error is recorded, and the UI and /api/health both say so."""
    state = SyncState.objects.get(source=source)
    assert not state.ok and state.last_error_at is not None
    for needle in needles:
        assert needle in state.last_error, state.last_error
    tone, title = pills(client)[source]
    assert tone == "bad"
    assert state.last_error in title and "failed" in title
    entry = client.get("/api/health").json()["sync"][source]
    assert entry["ok"] is False and entry["last_error"] == state.last_error
    return state.last_error


def assert_pass_fails(client: Client, source: str, before: dict, *needles: str):
    """The next ``source`` pass fails, shows the fault (``assert_fault_shown``) and changes no
    stored row (``before``); its outcome and the recorded error."""
    outcome = run_sync(source)
    assert not outcome.ok
    error = assert_fault_shown(client, source, *needles)
    assert stored() == before
    return outcome, error


# --- SkyPilot ------------------------------------------------------------------------------------


@pytest.fixture
def skypilot(db, settings, no_local_skypilot) -> Iterator[StubSkyPilot]:
    """A stub API server with 600 jobs of 20 experiments, already synced once."""
    for i in range(20):
        services.create_experiment("t", name=f"exp-{i:04}")
    with StubSkyPilot(jobs=600, experiments=20) as stub:
        settings.SKYDECK_SKYPILOT_ENDPOINT = stub.endpoint
        settings.SKYDECK_SKYPILOT_TIMEOUT = 0.5  # stands in for the default 10 s
        first = run_sync("skypilot")
        assert first.ok, first.error
        assert Job.objects.count() == 600
        yield stub


def recovers(stub: StubSkyPilot, client: Client) -> None:
    """With the fault gone, the next pass succeeds and the pill turns green."""
    stub.set_mode("ok")
    stub.advance(moves=10, new_jobs=1)
    outcome = run_sync("skypilot")
    assert outcome.ok, outcome.error
    assert Job.objects.count() == 601
    assert pills(client)["skypilot"][0] == "ok"


def test_skypilot_down(skypilot: StubSkyPilot, ui: Client):
    before = stored()
    skypilot.stop()
    _, error = assert_pass_fails(
        ui, "skypilot", before, "cannot reach SkyPilot API server", skypilot.endpoint
    )
    assert "Connection refused" in error
    skypilot.start()  # the same port again
    recovers(skypilot, ui)


def test_skypilot_slower_than_the_client_timeout(skypilot: StubSkyPilot, ui: Client):
    before = stored()
    skypilot.set_mode("slow", 2.0)  # every answer takes 2 s; the client waits 0.5 s
    outcome, _ = assert_pass_fails(
        ui, "skypilot", before, "cannot reach SkyPilot API server", "timed out"
    )
    # four tries (three retries with backoff) of 0.5 s each, then a clear error: not a hang
    assert outcome.seconds < 10
    recovers(skypilot, ui)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("garbage", "returned invalid JSON for GET /api/status"),
        ("wrong-shape", "returned a jobs queue without a jobs list"),
    ],
)
def test_skypilot_answering_garbage(skypilot: StubSkyPilot, ui: Client, mode: str, message: str):
    before = stored()
    skypilot.set_mode(mode)
    assert_pass_fails(ui, "skypilot", before, message)
    recovers(skypilot, ui)


# --- S3 ------------------------------------------------------------------------------------------


@pytest.fixture
def s3(db, settings, monkeypatch, tmp_path) -> Iterator[S3FaultProxy]:
    """moto's S3 behind a fault proxy; six experiments with four checkpoints each, synced once."""
    from moto.server import ThreadedMotoServer

    isolate_aws(monkeypatch, tmp_path)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = S3FaultProxy(f"http://{host}:{port}").start()
    try:
        raw = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1")
        raw.create_bucket(Bucket=BUCKET)
        for i in range(6):
            name = f"ckpt-{i}"
            services.create_experiment("t", name=name)
            for epoch in range(1, 5):
                raw.put_object(Bucket=BUCKET, Key=f"policies/{name}/{name}:v{epoch}.mpt", Body=b"w")
        settings.SKYDECK_S3_BUCKET = BUCKET
        settings.SKYDECK_S3_ENDPOINT_URL = proxy.endpoint
        settings.SKYDECK_S3_REGION = "us-east-1"
        first = run_sync("s3")
        assert first.ok, first.error
        assert Checkpoint.objects.count() == 24
        yield proxy
    finally:
        proxy.stop()
        server.stop()


def s3_recovers(client: Client) -> None:
    """With the fault gone, a pass over every experiment finds all 24 checkpoints as they were
    and the pill turns green."""
    outcome = run_sync("s3", all_experiments=True)
    assert outcome.ok, outcome.error
    assert outcome.counts["unchanged"] == 24
    assert pills(client)["s3"][0] == "ok"


def test_s3_throttling(s3: S3FaultProxy, ui: Client):
    before = stored()
    s3.throttle = True
    # throttled listings never mark checkpoints missing
    assert_pass_fails(ui, "s3", before, "all 6 listed experiments failed", "throttled", "SlowDown")
    # botocore retried each listing (three tries in all) before giving up
    assert s3.throttled >= 6 * 3
    s3.throttle = False
    s3_recovers(ui)


def test_s3_down(s3: S3FaultProxy, ui: Client):
    before = stored()
    s3.stop()
    assert_pass_fails(ui, "s3", before, "endpoint unavailable", "Could not connect")
    s3.start()  # the same port again
    s3_recovers(ui)


def test_a_pass_under_way_shows_the_outcome_before_it(skypilot: StubSkyPilot, ui: Client):
    """While a pass runs (lease held by a live process) the pill keeps the last known outcome."""
    from django.utils import timezone

    from syncing.leases import acquire, new_owner, release

    owner = new_owner()
    assert acquire("skypilot", owner, ttl=60)
    SyncState.objects.filter(source="skypilot").update(last_attempt_at=timezone.now())
    assert pills(ui)["skypilot"][0] == "ok"
    assert client_health(ui)["ok"] is True
    # the same pass after a failed one: still red, with the earlier error
    SyncState.objects.filter(source="skypilot").update(last_error="HTTP 500: boom")
    tone, title = pills(ui)["skypilot"]
    assert tone == "bad" and "HTTP 500: boom" in title
    release("skypilot", owner)


def client_health(client: Client) -> dict[str, Any]:
    return client.get("/api/health").json()["sync"]["skypilot"]
