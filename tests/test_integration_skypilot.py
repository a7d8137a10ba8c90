"""Against a real SkyPilot 0.14.1 API server (consolidation mode, no cloud): launch a CPU-only job
through the HTTP API, then ``manage.py sync skypilot`` must store it as the server reports it.

Run with ``pytest -m integration`` (``.ci/run`` does); the first run installs SkyPilot into a
cached virtualenv, which takes a few minutes.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from skypilot_server import start_server

from experiments import services
from experiments.models import Job, JobStatus, Launch, LaunchStatus, OperationLog, SyncState
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
    """RUNNING -> a real launch -> synced FAILED_PRECHECKS -> backoff -> STOPPED -> no more."""
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

    call_command("reconcile")
    out = capsys.readouterr().out
    assert "wait itest-reconcile: backing off" in out, out
    job = Job.objects.get(pk=launch.job_id)
    assert job.status == JobStatus.FAILED_PRECHECKS
    assert job.experiment == exp
    assert job.command.startswith("echo hello run=itest-reconcile")
    launch.refresh_from_db()
    assert launch.status == LaunchStatus.LISTED
    assert OperationLog.objects.filter(operation="backoff", experiment=exp).exists()

    services.set_desired_state("ci", [exp], "STOPPED")
    call_command("reconcile")
    assert "nothing to do" in capsys.readouterr().out
    assert Launch.objects.filter(experiment_name="itest-reconcile").count() == 1
    names = [j.get("job_name") for j in client.queue(fields=["job_id", "job_name"]).jobs]
    assert names.count("itest-reconcile") == 1


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
