"""The reconciler: launch preview, launch/cancel payloads, every rule, and its safety nets."""

from __future__ import annotations

import shlex
from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
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


def own(job_id, name="exp", status=LaunchStatus.LISTED):
    """Record that SkyDeck launched ``job_id`` (what makes a job its own)."""
    return Launch.objects.create(
        experiment=Experiment.objects.filter(name=name).first(),
        experiment_name=name,
        status=status,
        job_id=job_id,
        task_yaml="...",
    )


def fresh(at=None):
    """Pretend a successful job sync just happened (at ``at``)."""
    at = at or timezone.now()
    SyncState.objects.update_or_create(
        source="skypilot", defaults={"last_attempt_at": at, "last_success_at": at}
    )


def succeeded_just_now(server) -> Experiment:
    """An experiment started by alice whose own job 8 has just succeeded (and been synced)."""
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    own(8)
    now = timezone.now().timestamp()
    server.jobs = [job_record(8, "exp", "SUCCEEDED", submitted_at=now, end_at=now + 1)]
    assert run_sync("skypilot").ok
    return exp


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
    launch = Launch.objects.get()
    assert len(launch.token) == 32
    task = yaml.safe_load(body["task"])
    assert task == build_task(exp, launch_id=launch.token)
    assert task["envs"]["SKYDECK_LAUNCH_ID"] == launch.token
    assert body["env_vars"]["SKYPILOT_USER"] == "skydeck"
    assert len(body["env_vars"]["SKYPILOT_USER_ID"]) == 8
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
        experiment=exp,
        experiment_name="exp",
        status=LaunchStatus.SUBMITTING,
        task_yaml="...",
        token="a" * 32,
    )
    fresh()
    reconciler.reconcile()
    assert server.launch_bodies == []
    # Meanwhile dave launched a job of the same name from the CLI, and the crashed launch's job
    # shows up too: the launch is settled with the job carrying its token, never dave's.
    now = timezone.now().timestamp()
    ours = "name: exp\nrun: echo\nenvs:\n  SKYDECK_LAUNCH_ID: " + "a" * 32 + "\n"
    server.jobs = [
        job_record(76, "exp", "RUNNING", submitted_at=now, user_name="dave"),
        job_record(77, "exp", "RUNNING", submitted_at=now, user_name="skydeck", user_yaml=ours),
    ]
    assert run_sync("skypilot").ok
    assert Job.objects.get(pk=77).launch_token == "a" * 32
    reconciler.reconcile()
    launch = Launch.objects.get()
    assert (launch.status, launch.job_id) == (LaunchStatus.LISTED, 77)
    assert server.launch_bodies == []
    # stopping it cancels only SkyDeck's job in a pass; dave's stays
    services.set_desired_state("alice", [exp], "STOPPED")
    fresh()
    reconciler.reconcile()
    assert server.cancel_bodies == [{"job_ids": [77]}]


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


def test_desired_stopped_cancels_only_the_jobs_skydeck_owns(server):
    make("exp")
    server.jobs = [
        job_record(5, "exp", "RUNNING"),
        job_record(6, "exp", "CANCELLING"),
        job_record(4, "exp", "FAILED"),
        job_record(9, "exp", "RUNNING", user_name="dave"),  # dave's, from the CLI
        job_record(10, "exp", "PENDING", user_name="erin"),
    ]
    for job_id in (4, 5, 6):
        own(job_id)
    assert run_sync("skypilot").ok
    result = reconciler.reconcile()
    assert server.cancel_bodies == [{"job_ids": [5]}]
    assert result.lines() == ["cancelled job 5 (exp)"]
    log = OperationLog.objects.get(operation="cancel")
    assert (log.job_id, log.success, log.actor) == (5, True, "reconciler")
    assert "alice" in log.message  # the job's user is in the log


def test_creating_an_experiment_over_other_peoples_jobs_cancels_nothing(server):
    server.jobs = [
        job_record(21, "dave-debug-2", "RUNNING", user_name="dave"),
        job_record(22, "dave-debug-2", "PENDING", user_name="dave"),
    ]
    assert run_sync("skypilot").ok
    exp = make("dave-debug-2")
    copy = services.duplicate_experiment("alice", exp, name="dave-debug-3")
    services.update_experiment("alice", exp, description="mine now", flags={"lr": 0.1})
    for _ in range(3):
        fresh()
        assert reconciler.reconcile().lines() == ["nothing to do"]
    assert server.cancel_bodies == [] and server.launch_bodies == []
    # Start over them does not launch a second job: it waits, and says why
    services.set_desired_state("alice", [exp], "RUNNING")
    fresh()
    result = reconciler.reconcile()
    assert server.launch_bodies == [] and server.cancel_bodies == []
    exp.refresh_from_db()
    assert "2 active jobs by dave" in exp.reconcile_note
    assert "Adopt" in exp.reconcile_note
    services.delete_experiments("alice", [exp, copy])
    fresh()
    reconciler.reconcile()
    assert server.cancel_bodies == [] and server.launch_bodies == []
    assert result.actions[0].kind == "wait"


def test_a_succeeded_job_completes_the_experiment(server):
    exp = succeeded_just_now(server)
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


def _failed_jobs(server, count, *, ended, status="FAILED"):
    """``count`` failed runs SkyDeck launched, the last ending at ``ended`` (epoch s) + 30 s."""
    server.jobs = [
        job_record(
            100 + i,
            "exp",
            status,
            submitted_at=ended - 60 * (count - i),
            end_at=ended - 60 * (count - i) + 30,
        )
        for i in range(count)
    ]
    for i in range(count):
        own(100 + i)


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
    fresh(timezone.now() - timedelta(seconds=settings.SKYDECK_RECONCILE_MAX_LISTING_AGE + 5))
    result = reconciler.reconcile()
    assert "old" in result.skipped
    assert server.launch_bodies == [] and not Launch.objects.exists()


def test_dry_run_changes_nothing(server):
    exp = make()
    stop_me = make("stop-me")
    services.set_desired_state("alice", [exp], "RUNNING")
    server.jobs = [job_record(3, "stop-me", "RUNNING")]
    own(3, "stop-me")
    assert run_sync("skypilot").ok
    logs_before = OperationLog.objects.count()
    result = reconciler.reconcile(dry_run=True)
    assert result.lines() == ["plan: launch exp", "plan: cancel job 3 (stop-me)"]
    assert server.launch_bodies == [] and server.cancel_bodies == []
    assert list(Launch.objects.values_list("job_id", flat=True)) == [3]  # only the fixture's
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
    call_command("reconcile")
    out = capsys.readouterr().out
    assert "reconciler off: SKYDECK_RECONCILE is off" in out
    assert "nothing was sent to SkyPilot" in out and "plan: launch exp" in out
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


# --- ownership, failure classes, latest facts, modes (issue 12) -------------------------------


def test_failed_prechecks_parks_at_once_with_skypilots_reason(server, settings):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    now = timezone.now().timestamp()
    server.jobs = [
        job_record(
            50, "exp", "FAILED_PRECHECKS", submitted_at=now, end_at=now + 1,
            failure_reason="Cloud access is not set up.",
        )
    ]  # fmt: skip
    own(50)
    assert run_sync("skypilot").ok
    result = reconciler.reconcile()
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"
    assert "FAILED_PRECHECKS" in exp.parked_reason
    assert "Cloud access is not set up." in exp.parked_reason
    assert result.lines()[0].startswith("park exp: job 50 FAILED_PRECHECKS")
    assert server.launch_bodies == []


def test_no_capacity_backs_off_longer_and_never_parks(server, settings):
    settings.SKYDECK_MAX_CONSECUTIVE_FAILURES = 2
    settings.SKYDECK_CAPACITY_BACKOFF_INITIAL, settings.SKYDECK_CAPACITY_BACKOFF_MAX = 600, 3600
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    Experiment.objects.filter(pk=exp.pk).update(
        desired_changed_at=timezone.now() - timedelta(hours=2)
    )
    Launch.objects.update(created_at=timezone.now() - timedelta(hours=2))
    t0 = timezone.now()
    _failed_jobs(server, 3, ended=t0.timestamp(), status="FAILED_NO_RESOURCE")
    assert run_sync("skypilot").ok
    last_end = Job.objects.order_by("-ended_at").first().ended_at
    at = last_end + timedelta(seconds=60)
    fresh(at)
    plan = reconciler.plan(at)
    # three in a row, more than the parking limit, yet only waiting: 600 * 2**2 = 40m, 1m gone
    assert [(a.kind, a.reason) for a in plan] == [
        ("wait", "backing off 39m after no capacity (3 times, not counted towards parking)")
    ]
    later = last_end + timedelta(seconds=2400)
    fresh(later)
    assert reconciler.reconcile(now=later).lines() == ["launched exp: job 1000"]


def test_a_stop_that_lands_during_a_pass_wins(server, monkeypatch):
    exps = [make(f"e{i}") for i in range(3)]
    services.set_desired_state("alice", exps, "RUNNING")
    fresh()
    real_launch = reconciler._do_launch
    calls = []

    def launch_then_admin_stops(client, action):
        calls.append(action.experiment.name)
        answer = real_launch(client, action)
        if len(calls) == 1:  # an admin stops every experiment while the pass is launching
            services.set_desired_state("admin", Experiment.objects.all(), "STOPPED")
        return answer

    monkeypatch.setattr(reconciler, "_do_launch", launch_then_admin_stops)
    result = reconciler.reconcile()
    assert len(server.launch_bodies) == 1
    assert result.done[1:] == [
        "launch e1 skipped: desired state is now STOPPED",
        "launch e2 skipped: desired state is now STOPPED",
    ]


def test_each_launch_builds_its_yaml_from_the_row_as_saved_now(server, monkeypatch):
    exp = make(flags={"lr": 0.1})
    services.set_desired_state("alice", [exp], "RUNNING")
    fresh()
    actions = reconciler.plan()
    services.update_experiment("alice", Experiment.objects.get(pk=exp.pk), flags={"lr": 0.2})
    reconciler.execute(actions, reconciler.SkyPilotClient.from_settings())
    assert "lr=0.2" in server.launch_bodies[0]["task"]


def test_completion_and_parking_lose_to_a_persons_later_change(server):
    exp = succeeded_just_now(server)
    actions = reconciler.plan()
    assert [a.kind for a in actions] == ["complete"]
    # alice starts it again after the plan was made: the pass must not stop it
    services.set_desired_state("alice", [exp], "STOPPED")
    services.set_desired_state("alice", [exp], "RUNNING")
    assert reconciler.execute(actions, None) == [
        "complete exp skipped: changed by a person meanwhile"
    ]
    exp.refresh_from_db()
    assert exp.desired_state == "RUNNING"


def test_a_sync_loop_holding_the_lease_does_not_starve_the_reconciler(server):
    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    assert run_sync("skypilot").ok  # sync --loop's last pass
    assert acquire("skypilot", "sync-loop-elsewhere", ttl=600)  # ... and it is in its next one
    SyncState.objects.filter(source="skypilot").update(last_attempt_at=timezone.now())
    summary, result = reconciler.sync_and_reconcile()
    assert "skipped" in summary
    assert result.lines() == ["launched exp: job 1000"]


@pytest.mark.parametrize("mode", ["dry-run", "off", "paused"])
def test_a_mode_that_does_not_act_says_what_it_would_do(server, settings, mode):
    from experiments import control

    exp = make(gpus=8, nodes=2, accelerator="H100")
    services.set_desired_state("alice", [exp], "RUNNING")
    if mode == "paused":
        control.pause_reconciler("restore", "restored from skydeck-1.db")
    else:
        settings.SKYDECK_RECONCILE = mode
    _, result = reconciler.sync_and_reconcile()
    assert result.mode == mode
    assert mode in result.header() and "nothing was sent" in result.header()
    assert server.launch_bodies == [] and not Launch.objects.exists()
    exp.refresh_from_db()
    assert exp.reconcile_note == f"{mode}: would launch (2 x 8 H100)"
    state = SyncState.objects.get(source="reconciler")
    assert state.counts["mode"] == mode and state.counts["planned_launch"] == 1
    # back on: it acts, and the "would" note goes
    settings.SKYDECK_RECONCILE = "on"
    control.resume_reconciler("alice")
    reconciler.sync_and_reconcile()
    exp.refresh_from_db()
    assert exp.reconcile_note == "launched job 1000"
    assert OperationLog.objects.filter(operation="launch", success=True).count() == 1


def test_an_adopted_job_is_the_run_and_is_never_relaunched_after_it_succeeds(server):
    from syncing import services as door

    server.jobs = [job_record(31, "exp", "RUNNING", user_name="dave")]
    assert run_sync("skypilot").ok
    exp = make()
    plan = door.adopt("alice", exp)
    assert [j.id for j in plan.items[0].adopt] == [31]
    exp.refresh_from_db()
    assert exp.desired_state == "RUNNING"
    launch = Launch.objects.get(job_id=31)
    assert (launch.status, launch.requested_by) == (LaunchStatus.ADOPTED, "alice")
    fresh()
    assert reconciler.reconcile().lines() == ["nothing to do"]  # the adopted job is the run
    now = timezone.now().timestamp()
    server.jobs = [job_record(31, "exp", "SUCCEEDED", user_name="dave", end_at=now)]
    assert run_sync("skypilot").ok
    assert reconciler.reconcile().lines() == ["done exp: job 31 SUCCEEDED"]
    for _ in range(2):
        fresh()
        reconciler.reconcile()
    assert server.launch_bodies == []
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"


def test_names_are_identities_once_anything_exists_under_them(server, make_checkpoint):
    from django.core.exceptions import ValidationError

    exp = make()
    services.update_experiment("alice", exp, name="exp-renamed")  # nothing under it yet: fine
    server.jobs = [job_record(40, "exp-renamed", "RUNNING", user_name="dave")]
    assert run_sync("skypilot").ok
    with pytest.raises(ValidationError) as caught:
        services.update_experiment("alice", exp, name="exp-v2")
    message = caught.value.message_dict["name"][0]
    assert "1 active job" in message and "Duplicate" in message
    exp.refresh_from_db()
    assert exp.name == "exp-renamed"
    other = make("with-ckpt")
    make_checkpoint(other, 3)
    with pytest.raises(ValidationError, match="1 checkpoint"):
        services.update_experiment("alice", other, name="with-ckpt-2")
    pending = make("pending")
    Launch.objects.create(
        experiment=pending, experiment_name="pending", status=LaunchStatus.SUBMITTING
    )
    with pytest.raises(ValidationError, match="a launch in flight"):
        services.update_experiment("alice", pending, name="pending-2")


def test_edits_cannot_change_the_desired_state(db):
    from django.core.exceptions import ValidationError

    exp = make()
    with pytest.raises(ValidationError, match="Start, Stop or Adopt"):
        services.update_experiment("alice", exp, desired_state="RUNNING")
    with pytest.raises(ValidationError, match="Start, Stop or Adopt"):
        services.create_experiment("alice", name="x", desired_state="RUNNING")
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"


def test_reconcile_resume_lifts_the_pause_of_a_restore(server, capsys):
    from experiments import control

    exp = make()
    services.set_desired_state("alice", [exp], "RUNNING")
    control.pause_reconciler("restore", "the restore of snap.db at 2026-12-01 10:00 UTC")
    call_command("reconcile")
    out = capsys.readouterr().out
    assert "reconciler paused: paused since the restore of snap.db" in out
    assert "plan: launch exp" in out and server.launch_bodies == []
    call_command("reconcile", "--resume")
    out = capsys.readouterr().out
    assert "reconciler resumed" in out and "launched exp: job 1000" in out
    assert OperationLog.objects.filter(operation="resume", actor="command").exists()
