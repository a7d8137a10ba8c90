"""Against a real SkyPilot 0.14.1 API server (consolidation mode, no cloud): launch a CPU-only job
through the HTTP API, then ``manage.py sync skypilot`` must store it as the server reports it.

Run with ``pytest -m integration`` (``.ci/run`` does); the first run installs SkyPilot into a
cached virtualenv, which takes a few minutes.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from skypilot_server import start_server

from experiments import services
from experiments.models import (
    Experiment,
    Job,
    JobStatus,
    Launch,
    LaunchStatus,
    OperationLog,
    SyncState,
)
from syncing.reconciler import sync_and_reconcile
from syncing.skypilot import SkyPilotClient

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def skypilot(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("skyhome"))
    try:
        yield server
    finally:
        server.stop()


def wait_for_terminal(client: SkyPilotClient, job_id: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.queue(job_ids=[job_id], fields=["job_id", "status"])
        if page.jobs and page.jobs[0].get("status") in JobStatus.terminal():
            return page.jobs[0]
        time.sleep(2)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def test_sync_stores_a_real_job(skypilot, db, settings, capsys):
    settings.SKYDECK_SKYPILOT_ENDPOINT = skypilot.endpoint
    experiment = services.create_experiment("ci", name="itest-cpu")
    client = SkyPilotClient(skypilot.endpoint, request_timeout=180)
    assert client.health()["status"] == "healthy"

    before = timezone.now()
    job_id = client.launch(
        "name: itest-cpu\nresources:\n  cpus: 1\nrun: echo hello from skydeck\n",
        env_vars={"SKYPILOT_USER_ID": "5kyd3ck0", "SKYPILOT_USER": "skydeck-ci"},
    )
    wait_for_terminal(client, job_id)

    call_command("sync", "skypilot")
    out = capsys.readouterr().out
    assert out.startswith("skypilot (full): new 1,"), out

    job = Job.objects.get(pk=job_id)
    assert job.experiment == experiment
    assert job.job_name == "itest-cpu"
    assert job.user_name == "skydeck-ci"
    assert job.status == JobStatus.FAILED_PRECHECKS
    assert before - timedelta(minutes=1) <= job.submitted_at <= timezone.now()
    assert job.ended_at is not None and job.ended_at >= job.submitted_at
    assert "Cloud access is not set up" in job.failure_reason
    assert "\x1b[" not in job.failure_reason
    assert job.command == "echo hello from skydeck"
    experiment.refresh_from_db()
    assert experiment.current_state == JobStatus.FAILED_PRECHECKS
    state = SyncState.objects.get(source="skypilot")
    assert state.ok and state.counts["new"] == 1

    # a second pass is incremental and changes nothing
    call_command("sync", "skypilot")
    assert "skypilot (incremental): new 0, updated 0, unchanged 1" in capsys.readouterr().out


def test_desired_state_drives_a_real_server(skypilot, db, settings, capsys):
    """RUNNING -> a real launch -> synced FAILED_PRECHECKS -> parked at once -> no more."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = skypilot.endpoint
    settings.SKYDECK_RECONCILE = "on"
    exp = services.create_experiment(
        "ci", name="itest-reconcile", base_command="echo", tool_path="hello", gpus=0
    )
    services.set_desired_state("ci", [exp], "RUNNING")

    call_command("reconcile")
    out = capsys.readouterr().out
    assert "launched itest-reconcile: job" in out, out
    launch = Launch.objects.get(experiment_name="itest-reconcile")
    assert launch.status == LaunchStatus.SUBMITTED and launch.job_id
    client = SkyPilotClient(skypilot.endpoint, request_timeout=180)
    wait_for_terminal(client, launch.job_id)

    # FAILED_PRECHECKS is a configuration error: parked at once, no backoff, no retry
    call_command("reconcile")
    out = capsys.readouterr().out
    assert f"park itest-reconcile: job {launch.job_id} FAILED_PRECHECKS: " in out, out
    job = Job.objects.get(pk=launch.job_id)
    assert job.status == JobStatus.FAILED_PRECHECKS
    assert job.experiment == exp
    assert job.command.startswith("echo hello run=itest-reconcile")
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.LISTED
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"
    assert "Cloud access is not set up" in exp.parked_reason
    assert OperationLog.objects.filter(operation="park", experiment=exp).exists()
    assert not OperationLog.objects.filter(operation="backoff", experiment=exp).exists()

    call_command("reconcile")
    assert "nothing to do" in capsys.readouterr().out
    assert Launch.objects.filter(experiment_name="itest-reconcile").count() == 1
    names = [j.get("job_name") for j in client.queue(fields=["job_id", "job_name"]).jobs]
    assert names.count("itest-reconcile") == 1


def spy_on(monkeypatch, method: str) -> list[tuple]:
    """Record every call of ``SkyPilotClient.<method>`` (any instance) and still send it."""
    calls: list[tuple] = []
    real = getattr(SkyPilotClient, method)

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SkyPilotClient, method, spy)
    return calls


def api_client(username: str) -> APIClient:
    api = APIClient()
    api.force_authenticate(User.objects.create_user(username))
    return api


DAVE_TASK = "name: dave-debug-2\nresources:\n  cpus: 1\nrun: sleep 600\n"
DAVE_ENV = {"SKYPILOT_USER": "dave", "SKYPILOT_USER_ID": "da7e0008"}


def launch_as_dave(endpoint: str, launch) -> tuple[threading.Thread, dict]:
    """dave's own ``sky jobs launch``, in the background: the job is listed (PENDING) while the
    request is still running, and in consolidation mode it fails its prechecks seconds after."""
    out: dict = {}
    client = SkyPilotClient(endpoint, request_timeout=180)  # its own session, in its thread

    def go():
        try:
            out["job_id"] = launch(client, DAVE_TASK, env_vars=DAVE_ENV)
        except Exception as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, out


def wait_listed(client: SkyPilotClient, name: str, known: set[int], timeout: float = 120) -> int:
    """The id of a job named ``name`` not in ``known``, as soon as the server lists it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in client.queue(fields=["job_id", "job_name"]).jobs:
            if job.get("job_name") == name and job["job_id"] not in known:
                return job["job_id"]
        time.sleep(0.5)
    raise AssertionError(f"no new job {name} listed in {timeout}s")


def test_a_job_launched_outside_skydeck_is_never_cancelled(skypilot, db, settings, monkeypatch):
    """dave launches ``dave-debug-2`` himself; then someone creates an experiment of that name
    (desired STOPPED). Reconcile passes that see dave's job active must leave it alone: SkyDeck
    does not own it, so it sends no cancel (the old rule cancelled any active job of a STOPPED
    experiment's name)."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = skypilot.endpoint
    settings.SKYDECK_RECONCILE = "on"
    client = SkyPilotClient(skypilot.endpoint, request_timeout=180)
    real_launch = SkyPilotClient.launch  # dave's launches are not SkyDeck's: not spied on
    cancels = spy_on(monkeypatch, "cancel")
    launches = spy_on(monkeypatch, "launch")
    api = api_client("alice")

    dave_jobs: list[int] = []
    seen: dict[int, list[str]] = {}  # each dave job's status as each pass's sync stored it
    # The job is active for only ~10-20 s (then FAILED_PRECHECKS by itself) and a pass takes
    # several seconds here, so dave tries again (same name) if no pass caught it active.
    for _attempt in range(3):
        thread, out = launch_as_dave(skypilot.endpoint, real_launch)
        job_id = wait_listed(client, "dave-debug-2", set(dave_jobs))
        dave_jobs.append(job_id)
        if not Experiment.objects.filter(name="dave-debug-2").exists():
            answer = api.post(
                "/api/experiments/",
                {"name": "dave-debug-2", "base_command": "echo", "tool_path": "hi", "gpus": 0},
                format="json",
            )
            assert answer.status_code == 201, answer.content
            assert answer.json()["desired_state"] == "STOPPED"
        statuses = seen.setdefault(job_id, [])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            summary, result = sync_and_reconcile()
            assert result is not None and result.acted, summary
            assert not [a for a in result.actions if a.kind == "cancel"], result.lines()
            job = Job.objects.filter(pk=job_id).first()
            statuses.append(job.status if job else "-")
            assert statuses[-1] not in {JobStatus.CANCELLING, JobStatus.CANCELLED}, seen
            if job is not None and job.status in JobStatus.terminal() and not thread.is_alive():
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"dave's job {job_id} did not end in 120s: {seen}")
        thread.join(timeout=60)
        assert out.get("job_id") == job_id, out
        if any(s in JobStatus.active() for s in statuses):
            break
    # a pass ran while dave's job was active and listed under the experiment's name
    assert any(s in JobStatus.active() for ss in seen.values() for s in ss), seen

    assert cancels == [] and launches == []
    assert not OperationLog.objects.filter(operation="cancel").exists()
    assert not OperationLog.objects.filter(job_id__in=dave_jobs).exists()
    assert not Launch.objects.filter(job_id__in=dave_jobs).exists()
    for job in Job.objects.filter(pk__in=dave_jobs):
        assert job.experiment_id == "dave-debug-2" and job.user_name == "dave"
        assert job.status == JobStatus.FAILED_PRECHECKS
    # on the server they ended by themselves (consolidation mode: no cloud), not cancelled
    server_side = client.queue(job_ids=dave_jobs, fields=["job_id", "status"]).jobs
    assert sorted(j["job_id"] for j in server_side) == dave_jobs
    assert {j["status"] for j in server_side} == {JobStatus.FAILED_PRECHECKS}, server_side
    assert Experiment.objects.get(name="dave-debug-2").desired_state == "STOPPED"


def test_failed_prechecks_parks_after_one_launch(skypilot, db, settings, monkeypatch):
    """Started through the API, launched once, FAILED_PRECHECKS: parked (desired STOPPED) with
    SkyPilot's reason, and no pass launches it again."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = skypilot.endpoint
    settings.SKYDECK_RECONCILE = "on"
    launches = spy_on(monkeypatch, "launch")
    cancels = spy_on(monkeypatch, "cancel")
    api = api_client("erin")
    answer = api.post(
        "/api/experiments/",
        {"name": "itest-parked", "base_command": "echo hi", "gpus": 0},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    answer = api.post("/api/experiments/itest-parked/start/", {}, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["desired_state"] == "RUNNING"

    statuses: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        summary, result = sync_and_reconcile()
        assert result is not None and result.acted, summary
        exp = Experiment.objects.get(name="itest-parked")
        launch = Launch.objects.filter(experiment_name="itest-parked").first()
        job = Job.objects.filter(pk=launch.job_id).first() if launch and launch.job_id else None
        statuses.append(job.status if job else "-")
        if exp.desired_state == "STOPPED":
            break
        time.sleep(1)
    else:
        raise AssertionError(f"itest-parked was not parked in 120s: {statuses}")

    assert len(launches) == 1, launches
    assert Launch.objects.filter(experiment_name="itest-parked").count() == 1
    job = Job.objects.get(pk=launch.job_id)
    assert job.status == JobStatus.FAILED_PRECHECKS
    assert statuses[-1] == JobStatus.FAILED_PRECHECKS, statuses
    assert job.experiment_id == "itest-parked"
    assert job.command == "echo hi run=itest-parked"
    exp = Experiment.objects.get(name="itest-parked")
    assert exp.desired_state == "STOPPED"
    assert f"job {job.id} FAILED_PRECHECKS" in exp.parked_reason, exp.parked_reason
    assert "NoCloudAccessError" in exp.parked_reason
    assert "Cloud access is not set up" in exp.parked_reason
    assert "\x1b[" not in exp.parked_reason
    ops = list(OperationLog.objects.filter(experiment=exp).values_list("operation", flat=True))
    assert ops.count("launch") == 1 and ops.count("park") == 1, ops
    assert "backoff" not in ops and "cancel" not in ops, ops
    # the API shows why it stopped
    shown = api.get("/api/experiments/itest-parked/").json()
    assert shown["desired_state"] == "STOPPED" and shown["parked_reason"] == exp.parked_reason

    # further passes launch nothing more
    for _ in range(2):
        summary, result = sync_and_reconcile()
        assert result is not None and result.acted, summary
        assert result.lines() == ["nothing to do"], result.lines()
    assert len(launches) == 1 and cancels == []
    assert Launch.objects.filter(experiment_name="itest-parked").count() == 1
    client = SkyPilotClient(skypilot.endpoint, request_timeout=180)
    names = [j.get("job_name") for j in client.queue(fields=["job_id", "job_name"]).jobs]
    assert names.count("itest-parked") == 1


def test_a_real_job_log_and_how_it_ended(skypilot, db, settings, capsys):
    """The log of a real (failed) job through ``manage.py logs`` and the API's plain text; the
    exit code SkyPilot gives for the log request says how the job ended, and a job the
    controller does not know is reported as such, not as an empty log."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = skypilot.endpoint
    client = SkyPilotClient(skypilot.endpoint, request_timeout=180)
    job_id = client.launch("name: itest-log\nresources:\n  cpus: 1\nrun: echo log line\n")
    wait_for_terminal(client, job_id)
    call_command("sync", "skypilot")
    capsys.readouterr()
    assert Job.objects.get(pk=job_id).status == JobStatus.FAILED_PRECHECKS

    call_command("logs", str(job_id), "--tail", "50")
    out, err = capsys.readouterr()
    # a job that failed its prechecks: SkyPilot prints why (seen from 0.14.1)
    assert f"Job {job_id} is already in terminal state FAILED_PRECHECKS" in out, out
    assert "Cloud access is not set up" in out
    assert "\x1b[" not in out and "<sky-payload" not in out
    assert f"the log of job {job_id} ended: the job failed (exit code 100)." in err, err
    # the API's plain text is the same log
    api = Client()
    api.force_login(User.objects.create_user("itest"))
    answer = api.get(f"/api/jobs/{job_id}/logs?tail=50", HTTP_ACCEPT="text/plain")
    assert answer.status_code == 200
    assert answer["Content-Type"] == "text/plain; charset=utf-8"
    assert answer.content.decode() == out

    Job.objects.create(
        id=job_id + 1000,
        job_name="itest-ghost",
        status=JobStatus.SUCCEEDED,
        submitted_at=timezone.now(),
        first_seen=timezone.now(),
        last_seen=timezone.now(),
    )
    with pytest.raises(CommandError, match=r"does not know the job \(exit code 102\)"):
        call_command("logs", str(job_id + 1000))
