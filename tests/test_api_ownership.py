"""The API's doors onto the ownership rules: create over others' jobs, Start/Stop plans with
dry_run, Stop cancelling whoever's jobs it lists, Adopt, and bulk Start/Stop (issue 12)."""

from __future__ import annotations

import pytest

from experiments.models import Experiment, Launch, LaunchStatus, OperationLog
from syncing import reconciler

pytestmark = pytest.mark.django_db


def fresh():
    from django.utils import timezone

    from experiments.models import SyncState

    now = timezone.now()
    SyncState.objects.update_or_create(
        source="skypilot", defaults={"last_attempt_at": now, "last_success_at": now}
    )


def test_create_over_active_jobs_says_so_and_cancels_nothing(api, make_job, server):
    make_job(4398, "dave-debug-2", user_name="dave")
    make_job(4399, "dave-debug-2", user_name="dave", status="PENDING")
    response = api.post("/api/experiments/", {"name": "dave-debug-2"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["desired_state"] == "STOPPED"
    assert body["plan"] is None
    assert body["notices"][0].startswith("2 active jobs by dave already use this name")
    assert "/api/experiments/dave-debug-2/adopt/" in body["notices"][0]
    fresh()
    assert reconciler.reconcile().lines() == ["nothing to do"]
    assert server.cancel_bodies == [] and server.launch_bodies == []
    # an experiment whose name nobody uses has no notice
    assert api.post("/api/experiments/", {"name": "free"}, format="json").json()["notices"] == []


def test_create_and_patch_refuse_the_desired_state(api, make_experiment):
    response = api.post(
        "/api/experiments/", {"name": "x", "desired_state": "RUNNING"}, format="json"
    )
    assert response.status_code == 400
    assert "desired_state" in response.json()
    assert not Experiment.objects.filter(name="x").exists()


def test_start_shows_the_gpus_it_requests_and_dry_run_changes_nothing(api, make_experiment):
    make_experiment("big", nodes=4, gpus=8, accelerator="H100")
    before = OperationLog.objects.count()
    response = api.post("/api/experiments/big/start/", {"dry_run": True}, format="json")
    assert response.status_code == 200, response.content
    plan = response.json()["plan"]
    assert plan["summary"] == "Start big: 4 nodes \u00d7 8 H100 = 32 GPUs"
    assert (plan["dry_run"], plan["gpus"], plan["nodes"]) == (True, 32, 4)
    assert response.json()["desired_state"] == "STOPPED"
    assert OperationLog.objects.count() == before
    response = api.post("/api/experiments/big/start/", {}, format="json")
    assert response.json()["desired_state"] == "RUNNING"
    assert response.json()["plan"]["dry_run"] is False
    log = OperationLog.objects.filter(operation="start").last()
    assert "4 nodes x 8 H100 = 32 GPUs" in log.message


def test_start_over_someone_elses_job_says_it_will_not_launch(api, make_experiment, make_job):
    make_experiment("shared", gpus=8, accelerator="H100")
    make_job(77, "shared", user_name="dave")
    plan = api.post("/api/experiments/shared/start/", {}, format="json").json()["plan"]
    item = plan["items"][0]
    assert item["launches"] is False and plan["gpus"] == 0
    assert item["blocked_by"] == [{"id": 77, "status": "RUNNING", "user": "dave", "owned": False}]
    assert "Adopt" in item["note"]


def test_stop_lists_and_cancels_every_active_job_whoever_launched_it(
    api, make_experiment, make_job, server
):
    exp = make_experiment("run", desired_state="RUNNING")
    make_job(10, "run", user_name="dave")
    make_job(11, "run", user_name="alice", status="PENDING")
    Launch.objects.create(experiment=exp, experiment_name="run", status="LISTED", job_id=11)
    dry = api.post("/api/experiments/run/stop/", {"dry_run": True}, format="json").json()
    assert dry["plan"]["summary"] == "Stop run: cancels jobs 10 (dave), 11 (alice)"
    assert [j["id"] for j in dry["plan"]["cancel_jobs"]] == [10, 11]
    assert dry["desired_state"] == "RUNNING" and server.cancel_bodies == []
    make_job(12, "run", user_name="erin")  # appears after the dry run
    response = api.post("/api/experiments/run/stop/", {"jobs": [10, 11]}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["desired_state"] == "STOPPED"
    assert body["plan"]["cancelled_jobs"] == [10, 11]
    assert server.cancel_bodies == [{"job_ids": [10, 11]}]
    assert "12 (erin) appeared after the confirmation" in body["plan"]["items"][0]["note"]
    cancels = OperationLog.objects.filter(operation="cancel", actor="alice")
    assert sorted(cancels.values_list("job_id", flat=True)) == [10, 11]
    assert "not launched by SkyDeck" in cancels.get(job_id=10).message
    # Stop on an experiment already desired STOPPED still cancels its active jobs
    response = api.post("/api/experiments/run/stop/", {}, format="json")
    assert response.json()["plan"]["cancelled_jobs"] == [10, 11, 12]
    assert server.cancel_bodies[-1] == {"job_ids": [10, 11, 12]}


def test_a_refused_cancel_is_a_502_and_the_experiment_stays_stopped(
    api, make_experiment, make_job, server, settings
):
    make_experiment("run", desired_state="RUNNING")
    make_job(10, "run", user_name="dave")
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"  # nothing listens there
    response = api.post("/api/experiments/run/stop/", {}, format="json")
    assert response.status_code == 502
    assert "did not cancel job 10 (dave)" in response.json()["detail"]
    assert Experiment.objects.get(name="run").desired_state == "STOPPED"
    failed = OperationLog.objects.get(operation="cancel")
    assert (failed.job_id, failed.success) == (10, False)


def test_adopt_makes_the_job_the_run(api, make_experiment, make_job):
    make_experiment("dave-debug-2")
    make_job(4398, "dave-debug-2", user_name="dave")
    dry = api.post("/api/experiments/dave-debug-2/adopt/", {"dry_run": True}, format="json")
    assert dry.json()["plan"]["summary"] == "Adopt job 4398 (dave) as dave-debug-2's current run"
    assert not Launch.objects.exists()
    response = api.post("/api/experiments/dave-debug-2/adopt/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["desired_state"] == "RUNNING"
    assert response.json()["notices"] == []  # it is SkyDeck's now
    launch = Launch.objects.get()
    assert (launch.job_id, launch.status, launch.requested_by) == (
        4398,
        LaunchStatus.ADOPTED,
        "alice",
    )
    again = api.post("/api/experiments/dave-debug-2/adopt/", {}, format="json")
    assert again.status_code == 400
    assert "Nothing to adopt" in str(again.json())


def test_bulk_start_and_stop_plans(api, make_experiment, make_job, server):
    make_experiment("a", nodes=2, gpus=8, accelerator="H100")
    make_experiment("b", nodes=1, gpus=8, accelerator="H100")
    make_experiment("c", nodes=1, gpus=4, accelerator="A100")
    body = {
        "action": "set_desired_state",
        "desired_state": "RUNNING",
        "experiments": ["a", "b", "c"],
    }
    dry = api.post("/api/bulk/", {**body, "dry_run": True}, format="json").json()
    assert dry["plan"]["summary"] == (
        "Start 3 experiments: 3 nodes \u00d7 8 H100 + 1 node \u00d7 4 A100 = 28 GPUs"
    )
    assert dry["counts"]["ok"] == 3
    assert set(Experiment.objects.values_list("desired_state", flat=True)) == {"STOPPED"}
    done = api.post("/api/bulk/", body, format="json").json()
    assert done["plan"]["gpus"] == 28 and done["plan"]["dry_run"] is False
    assert set(Experiment.objects.values_list("desired_state", flat=True)) == {"RUNNING"}
    make_job(20, "a", user_name="dave")
    make_job(21, "c", user_name="erin")
    stop = {**body, "desired_state": "STOPPED"}
    result = api.post("/api/bulk/", stop, format="json").json()
    assert result["plan"]["summary"] == "Stop 3 experiments: cancels jobs 20 (dave), 21 (erin)"
    assert server.cancel_bodies == [{"job_ids": [20, 21]}]
    assert result["plan"]["cancelled_jobs"] == [20, 21]
    bad = api.post(
        "/api/bulk/", {"action": "delete", "experiments": ["a"], "dry_run": True}, format="json"
    )
    assert bad.status_code == 400 and "dry_run" in bad.json()


def test_health_reports_the_reconcilers_mode_and_last_pass(client, settings, server):
    from django.contrib.auth.models import User

    from experiments import control

    client.force_login(User.objects.create_user("watcher"))  # details need a login

    body = client.get("/api/health").json()
    assert body["reconciler"]["mode"] == "on"
    assert not any("reconciler" in w for w in body["warnings"])
    settings.SKYDECK_RECONCILE = "dry-run"
    body = client.get("/api/health").json()
    assert body["reconciler"]["mode"] == "dry-run"
    assert "the reconciler is dry-run: SKYDECK_RECONCILE is dry-run" in " ".join(body["warnings"])
    settings.SKYDECK_RECONCILE = "on"
    control.pause_reconciler("restore", "the restore of snap.db at 2026-12-01 10:00 UTC")
    fresh()
    reconciler.reconcile()
    entry = client.get("/api/health").json()["reconciler"]
    assert entry["mode"] == "paused" and "the restore of snap.db" in entry["why"]
    assert entry["last_pass"] is not None and entry["last_pass_mode"] == "paused"
