"""The reconciler: launch preview, launch/cancel payloads, every rule, and its safety nets."""

from __future__ import annotations

import shlex
from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from fake_skypilot import job_record

from experiments import services
from experiments.launching import LaunchConfigError, build_command, build_task, build_task_yaml
from experiments.models import Experiment, Job, Launch, LaunchStatus, OperationLog, SyncState
from syncing import reconciler
from syncing.leases import acquire
from syncing.runner import run_sync

HOSTILE = {"a.cmd": "a; rm -rf /", "b.sub": "$(x)", "c.quote": 'it\'s "quoted"', "d.bool": True}


def make(name="exp", **fields):
    fields.setdefault("base_command", "uv run")
    fields.setdefault("tool_path", "./tools/run.py")
    return services.create_experiment("tester", name=name, **fields)


def fresh(at=None):
    """Pretend a successful job sync just happened (at ``at``)."""
    at = at or timezone.now()
    SyncState.objects.update_or_create(
        source="skypilot", defaults={"last_attempt_at": at, "last_success_at": at}
    )


# --- the task builder --------------------------------------------------------------------------


def test_command_quotes_every_part_and_sorts_flags(db):
    exp = make(flags=HOSTILE)
    command = build_command(exp)
    assert shlex.split(command) == [
        "uv",
        "run",
        "./tools/run.py",
        "run=exp",
        "a.cmd=a; rm -rf /",
        "b.sub=$(x)",
        'c.quote=it\'s "quoted"',
        "d.bool=true",
    ]
    assert "'a.cmd=a; rm -rf /'" in command
    assert "'b.sub=$(x)'" in command


def test_task_yaml_from_the_experiment(db, settings):
    exp = make(nodes=2, gpus=8, accelerator="H100", git_ref="feature/x", flags={"lr": 0.5})
    task = yaml.safe_load(build_task_yaml(exp))
    assert task["name"] == "exp"
    assert task["num_nodes"] == 2
    assert task["resources"]["accelerators"] == "H100:8"
    assert task["envs"] == {"SKYDECK_EXPERIMENT": "exp", "SKYDECK_GIT_REF": "feature/x"}
    assert shlex.split(task["run"])[-1] == "lr=0.5"
    cpu = make("cpu-only", gpus=0)
    assert "resources" not in build_task(cpu)


def test_accelerator_default_and_its_absence(db, settings):
    exp = make(gpus=4)
    settings.SKYDECK_DEFAULT_ACCELERATOR = ""
    with pytest.raises(LaunchConfigError, match="SKYDECK_DEFAULT_ACCELERATOR"):
        build_task(exp)
    settings.SKYDECK_DEFAULT_ACCELERATOR = "A100"
    assert build_task(exp)["resources"]["accelerators"] == "A100:4"


def test_site_template_is_merged_under_the_experiment(db, settings, tmp_path):
    template = tmp_path / "task.yaml"
    template.write_text(
        "setup: pip install -e .\n"
        "workdir:\n  url: https://github.com/org/repo\n  ref: main\n"
        "resources:\n  use_spot: true\n  image_id: docker:img\n"
        "envs:\n  WANDB_PROJECT: metta\n"
    )
    settings.SKYDECK_TASK_TEMPLATE = str(template)
    task = build_task(make(git_ref="abc123", gpus=1, accelerator="L4"))
    assert task["setup"] == "pip install -e ."
    assert task["workdir"] == {"url": "https://github.com/org/repo", "ref": "abc123"}
    assert task["resources"] == {"use_spot": True, "image_id": "docker:img", "accelerators": "L4:1"}
    assert task["envs"]["WANDB_PROJECT"] == "metta"
    template.write_text("run: echo not allowed\n")
    with pytest.raises(ImproperlyConfigured, match="run"):
        build_task(make("other"))


def test_missing_command_is_a_launch_config_error(db):
    exp = services.create_experiment("t", name="empty")
    with pytest.raises(LaunchConfigError, match="no command"):
        build_command(exp)


# --- launching -----------------------------------------------------------------------------


def test_desired_running_launches_once_and_records_the_job_id(server):
    exp = make(flags={"x": "$(x)"})
    services.set_desired_state("alice", [exp], "RUNNING")
    fresh()
    result = reconciler.reconcile()
    assert result.lines() == ["launched exp: job 1000"]
    body = server.launch_bodies[0]
    assert body["name"] is None
    assert yaml.safe_load(body["task"]) == build_task(exp)
    assert body["env_vars"]["SKYPILOT_USER"] == "skydeck"
    assert len(body["env_vars"]["SKYPILOT_USER_ID"]) == 8
    launch = Launch.objects.get()
    assert (launch.status, launch.job_id) == (LaunchStatus.SUBMITTED, 1000)
    log = OperationLog.objects.get(operation="launch")
    assert (log.actor, log.job_id, log.success) == ("reconciler", 1000, True)
    # the job is not listed yet: the pending launch counts as active, so no second launch
    fresh()
    assert reconciler.reconcile().lines() == ["nothing to do"]
    assert len(server.launch_bodies) == 1


def test_a_crash_between_submitted_and_listed_does_not_launch_twice(server):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    # a previous pass wrote its launch record and died before the answer came back
    Launch.objects.create(
        experiment=exp, experiment_name="exp", status=LaunchStatus.SUBMITTING, task_yaml="..."
    )
    fresh()
    reconciler.reconcile()
    assert server.launch_bodies == []
    # the job it created shows up in the next sync: the launch is settled with its id
    server.jobs = [job_record(77, "exp", "RUNNING", submitted_at=timezone.now().timestamp())]
    assert run_sync("skypilot").ok
    reconciler.reconcile()
    launch = Launch.objects.get()
    assert (launch.status, launch.job_id) == (LaunchStatus.LISTED, 77)
    assert server.launch_bodies == []


def test_a_launch_that_never_appears_is_given_up_after_the_grace_period(server, settings):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    launch = Launch.objects.create(
        experiment=exp, experiment_name="exp", status=LaunchStatus.SUBMITTING, task_yaml="..."
    )
    Launch.objects.filter(pk=launch.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.SKYDECK_LAUNCH_GRACE + 1)
    )
    fresh()
    result = reconciler.reconcile()
    assert Launch.objects.get(pk=launch.pk).status == LaunchStatus.LOST
    assert result.lines() == ["launched exp: job 1000"]


def test_server_refusal_is_kept_and_shown(server):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    server.launch_error = {"type": "InvalidSkyPilotConfigError", "message": "bad resources"}
    fresh()
    result = reconciler.reconcile()
    assert "FAILED" in result.lines()[0] and "bad resources" in result.lines()[0]
    launch = Launch.objects.get()
    assert launch.status == LaunchStatus.FAILED
    assert launch.error_type == "InvalidSkyPilotConfigError"
    assert "bad resources" in launch.error_message
    log = OperationLog.objects.get(operation="launch")
    assert not log.success and "bad resources" in log.message
    # the failure backs off the next launch
    fresh()
    plan = reconciler.plan()
    assert [(a.kind, a.reason.split(" after")[0][:11]) for a in plan] == [("wait", "backing off")]


def test_launches_per_pass_are_capped(server, settings):
    settings.SKYDECK_RECONCILE_MAX_LAUNCHES = 2
    exps = [make(f"e{i}") for i in range(4)]
    services.set_desired_state("alice", exps, "RUNNING")
    fresh()
    kinds = [(a.kind, a.experiment.name) for a in reconciler.plan()]
    assert kinds[:2] == [("launch", "e0"), ("launch", "e1")]
    assert [k for k, _ in kinds[2:]] == ["wait", "wait"]


# --- cancelling, completing, backing off, parking ------------------------------------------


def test_desired_stopped_cancels_active_jobs_by_id(server):
    make("exp")
    server.jobs = [
        job_record(5, "exp", "RUNNING"),
        job_record(6, "exp", "CANCELLING"),
        job_record(4, "exp", "FAILED"),
    ]
    assert run_sync("skypilot").ok
    result = reconciler.reconcile()
    assert server.cancel_bodies == [{"job_ids": [5]}]
    assert result.lines() == ["cancelled job 5 (exp)"]
    log = OperationLog.objects.get(operation="cancel")
    assert (log.job_id, log.success, log.actor) == (5, True, "reconciler")


def test_a_succeeded_job_completes_the_experiment(server):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    now = timezone.now().timestamp()
    server.jobs = [job_record(8, "exp", "SUCCEEDED", submitted_at=now, end_at=now + 1)]
    assert run_sync("skypilot").ok
    result = reconciler.reconcile()
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"
    assert result.lines() == ["done exp: job 8 SUCCEEDED"]
    assert OperationLog.objects.filter(operation="complete", experiment=exp).exists()
    assert server.launch_bodies == []


def test_an_old_success_does_not_stop_a_new_run(server):
    server.jobs = [job_record(8, "exp", "SUCCEEDED", submitted_at=1000.0, end_at=2000.0)]
    assert run_sync("skypilot").ok
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    fresh()
    assert [a.kind for a in reconciler.plan()] == ["launch"]


def _failed_jobs(server, count, *, ended):
    server.jobs = [
        job_record(
            100 + i,
            "exp",
            "FAILED_PRECHECKS",
            submitted_at=ended - 60 * (count - i),
            end_at=ended - 60 * (count - i) + 30,
        )
        for i in range(count)
    ]


def test_failures_back_off_exponentially_with_a_frozen_clock(server, settings):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    Experiment.objects.filter(pk=exp.pk).update(
        desired_changed_at=timezone.now() - timedelta(hours=1)
    )
    t0 = timezone.now()
    _failed_jobs(server, 2, ended=t0.timestamp())
    assert run_sync("skypilot").ok
    last_end = Job.objects.order_by("-ended_at").first().ended_at
    # two failures: wait 2 minutes after the last one
    fresh(last_end + timedelta(seconds=60))
    plan = reconciler.plan(last_end + timedelta(seconds=60))
    assert [(a.kind, a.reason) for a in plan] == [("wait", "backing off 1m after 2 failures")]
    result = reconciler.reconcile(now=last_end + timedelta(seconds=60))
    assert result.lines() == ["wait exp: backing off 1m after 2 failures"]
    assert OperationLog.objects.filter(operation="backoff").count() == 1
    reconciler.reconcile(now=last_end + timedelta(seconds=61))  # same backoff: not logged again
    assert OperationLog.objects.filter(operation="backoff").count() == 1
    assert server.launch_bodies == []
    fresh(last_end + timedelta(seconds=121))
    result = reconciler.reconcile(now=last_end + timedelta(seconds=121))
    assert result.lines() == ["launched exp: job 1000"]


def test_backoff_is_capped(settings):
    settings.SKYDECK_BACKOFF_INITIAL, settings.SKYDECK_BACKOFF_MAX = 60, 3600
    assert [reconciler.backoff_seconds(n) for n in (0, 1, 2, 3, 7, 20)] == [
        0,
        60,
        120,
        240,
        3600,
        3600,
    ]


def test_crash_looping_experiment_is_parked_until_started_again(server, settings):
    settings.SKYDECK_MAX_CONSECUTIVE_FAILURES = 3
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    Experiment.objects.filter(pk=exp.pk).update(
        desired_changed_at=timezone.now() - timedelta(hours=1)
    )
    _failed_jobs(server, 3, ended=timezone.now().timestamp())
    assert run_sync("skypilot").ok
    result = reconciler.reconcile()
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"
    assert "crash-looping: 3 consecutive failures" in exp.parked_reason
    assert result.lines()[0].startswith("park exp: crash-looping")
    assert OperationLog.objects.filter(operation="park", experiment=exp).exists()
    assert server.launch_bodies == []
    # a user starting it again clears the parking and the failure history
    services.set_desired_state("alice", [exp], "RUNNING")
    exp.refresh_from_db()
    assert exp.parked_reason == ""
    fresh()
    assert [a.kind for a in reconciler.plan()] == ["launch"]


# --- acting only on fresh facts --------------------------------------------------------------


def test_a_failed_sync_blocks_action(server):
    exp = make()
    assert run_sync("skypilot").ok
    services.set_desired_state("alice", [exp], "RUNNING")
    server.queue_error = {"type": "ValueError", "message": "db down"}
    summary, result = reconciler.sync_and_reconcile()
    assert "FAILED" in summary
    assert result is None
    assert server.launch_bodies == []
    # even called directly, a pass refuses to act after a failed sync
    assert reconciler.reconcile().skipped.startswith("the last SkyPilot sync failed")
    assert server.launch_bodies == [] and not Launch.objects.exists()


def test_a_stale_listing_blocks_action(server, settings):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    fresh(timezone.now() - timedelta(seconds=settings.SKYDECK_SYNC_SKYPILOT_INTERVAL + 5))
    result = reconciler.reconcile()
    assert "old" in result.skipped
    assert server.launch_bodies == [] and not Launch.objects.exists()


def test_dry_run_changes_nothing(server):
    exp = make()
    stop_me = make("stop-me")
    services.set_desired_state("alice", [exp], "RUNNING")
    server.jobs = [job_record(3, "stop-me", "RUNNING")]
    assert run_sync("skypilot").ok
    logs_before = OperationLog.objects.count()
    result = reconciler.reconcile(dry_run=True)
    assert result.lines() == ["plan: launch exp", "plan: cancel job 3 (stop-me)"]
    assert server.launch_bodies == [] and server.cancel_bodies == []
    assert not Launch.objects.exists()
    assert OperationLog.objects.count() == logs_before
    stop_me.refresh_from_db()
    assert stop_me.desired_state == "STOPPED"


def test_reconcile_command(server, settings, capsys):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    call_command("reconcile", "--dry-run")
    out = capsys.readouterr().out
    assert "plan: launch exp" in out
    assert server.launch_bodies == []
    settings.SKYDECK_RECONCILE = "off"
    with pytest.raises(CommandError, match="SKYDECK_RECONCILE is off"):
        call_command("reconcile")
    assert server.launch_bodies == []
    settings.SKYDECK_RECONCILE = "on"
    call_command("reconcile")
    assert "launched exp: job 1000" in capsys.readouterr().out
    assert len(server.launch_bodies) == 1


def test_global_dry_run_switch_only_plans(server, settings):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    settings.SKYDECK_RECONCILE = "dry-run"
    _, result = reconciler.sync_and_reconcile()
    assert result.mode == "dry-run"
    assert server.launch_bodies == []


def test_concurrent_passes_cannot_both_launch(server):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    assert acquire("reconciler", "the-worker", ttl=60)
    fresh()
    result = reconciler.reconcile()
    assert "already running" in result.skipped
    assert server.launch_bodies == []
