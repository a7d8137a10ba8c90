"""The job syncer against a SkyPilot API double that speaks the real protocol (responses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import responses
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from fake_skypilot import ENDPOINT, job_record

from experiments import services
from experiments.models import (
    NO_JOB,
    Experiment,
    Job,
    JobStatus,
    Launch,
    LaunchStatus,
    SyncState,
)
from syncing import jobs as job_sync
from syncing.leases import acquire
from syncing.runner import run_sync
from syncing.skypilot import SkyPilotClient


def client() -> SkyPilotClient:
    return SkyPilotClient(ENDPOINT, sleep=lambda s: None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2x[H100:8]", (2, 8, "H100")),
        ("1x[CPU:4]", (1, 0, "")),
        ("1x[CPU:4+]", (1, 0, "")),
        ("[L4:1, A10G:1]", (1, 1, "L4,A10G")),
        ("4x[A100-80GB:8, cpus=32]", (4, 8, "A100-80GB")),
        ("1x[H100:0.5]", (1, 0, "H100")),
        ("", (None, None, "")),
        (None, (None, None, "")),
    ],
)
def test_parse_resources(text, expected):
    assert job_sync.parse_resources(text) == expected


def test_parse_task_yaml_finds_command_and_git_ref():
    text = "name: x\nworkdir:\n  url: https://github.com/o/r\n  ref: abc123\nrun: |\n  echo hi\n"
    assert job_sync.parse_task_yaml(text) == {"command": "echo hi", "git_ref": "abc123"}
    pipeline = "name: pipe\n---\nname: a\nrun: train\nenvs:\n  GIT_REF: v1\n"
    assert job_sync.parse_task_yaml(pipeline) == {"command": "train", "git_ref": "v1"}
    assert job_sync.parse_task_yaml(": : not yaml [") == {}


def test_first_sync_stores_every_field(server, make_experiment):
    make_experiment("alpha")
    server.jobs = [
        job_record(
            1, "alpha", "FAILED", failure_reason="\x1b[31mOOM\x1b[0m at step 5",
            recovery_count=2, resources="2x[H100:8]",
        ),
        job_record(2, "orphan", "RUNNING", resources="1x[CPU:4]", user_name="bob"),
    ]  # fmt: skip
    result = job_sync.sync_jobs(client())
    assert (result.mode, result.new, result.updated, result.unchanged) == ("full", 2, 0, 0)
    one = Job.objects.get(pk=1)
    assert one.experiment.name == "alpha"
    assert one.status == JobStatus.FAILED
    assert (one.nodes, one.gpus, one.accelerator) == (2, 8, "H100")
    assert one.failure_reason == "OOM at step 5"
    assert one.recovery_count == 2
    assert one.submitted_at == datetime.fromtimestamp(1_760_000_001.0, tz=UTC)
    assert one.started_at.tzinfo is not None
    assert one.ended_at == datetime.fromtimestamp(1_760_003_701.0, tz=UTC)
    assert one.duration == 3600.0
    assert (one.user_name, one.user_hash, one.workspace) == ("alice", "abcd1234", "default")
    assert (one.cloud, one.region, one.infra) == ("AWS", "us-east-1", "AWS (us-east-1)")
    assert one.command == "uv run ./tools/run.py run=alpha"
    assert one.git_ref == "main"
    assert "user_yaml" not in one.raw
    two = Job.objects.get(pk=2)
    assert (two.nodes, two.gpus, two.user_name) == (1, 0, "bob")
    assert list(Job.objects.orphaned().values_list("id", flat=True)) == [2]
    assert Experiment.objects.get(name="alpha").current_state == JobStatus.FAILED
    # the listing asks for all users, explicit fields without user_yaml, and pages
    first = server.queue_bodies[0]
    assert first["all_users"] is True
    assert "user_yaml" not in first["fields"]
    assert first["limit"] == job_sync.PAGE_SIZE and first["page"] == 1
    # user_yaml was read once per new job: the active one before writing, the rest after
    yaml_calls = [b for b in server.queue_bodies if "user_yaml" in b["fields"]]
    assert [sorted(b["job_ids"]) for b in yaml_calls] == [[2], [1]]
    assert result.tasks_read == 2 and not Job.objects.filter(task_fetched_at=None).exists()


def yaml_requests(server) -> list[list[int]]:
    return [sorted(b["job_ids"]) for b in server.queue_bodies if "user_yaml" in b["fields"]]


def test_a_large_history_reads_its_task_yaml_in_batches_newest_first(server, monkeypatch):
    monkeypatch.setattr(job_sync, "YAML_BATCH", 3)
    server.jobs = [job_record(i, f"old-{i}", "SUCCEEDED") for i in range(1, 11)]
    server.jobs.append(job_record(11, "live", "RUNNING"))
    first = job_sync.sync_jobs(client())
    assert first.new == 11
    # the active job before writing, then the newest 3 of the finished history
    assert yaml_requests(server) == [[11], [8, 9, 10]]
    assert first.counts()["tasks_waiting"] == 7
    assert Job.objects.get(pk=11).command and Job.objects.get(pk=10).command
    assert Job.objects.get(pk=7).command == "" and Job.objects.get(pk=7).task_fetched_at is None
    server.queue_bodies.clear()
    job_sync.sync_jobs(client())
    assert yaml_requests(server) == [[5, 6, 7]]
    for _ in range(2):
        job_sync.sync_jobs(client())
    assert Job.objects.get(pk=1).command == "uv run ./tools/run.py run=old-1"
    # caught up: a pass reads no task YAML at all
    server.queue_bodies.clear()
    assert job_sync.sync_jobs(client()).tasks_read == 0 and yaml_requests(server) == []


def test_a_finished_job_of_a_launch_in_flight_is_read_before_writing(server, monkeypatch):
    """The reconciler finds a launch whose answer was lost by the token in its task YAML:
    that job's YAML is never left for a later batch, even when it already ended."""
    monkeypatch.setattr(job_sync, "YAML_BATCH", 0)
    Launch.objects.create(
        experiment_name="inflight", status=LaunchStatus.SUBMITTING, token="b" * 32
    )
    ours = "name: inflight\nrun: echo\nenvs:\n  SKYDECK_LAUNCH_ID: " + "b" * 32 + "\n"
    server.jobs = [
        job_record(1, "inflight", "FAILED_SETUP", user_yaml=ours),
        job_record(2, "history", "SUCCEEDED"),
    ]
    job_sync.sync_jobs(client())
    assert Job.objects.get(pk=1).launch_token == "b" * 32
    assert Job.objects.get(pk=2).task_fetched_at is None  # waits for a batch


@pytest.mark.parametrize("status", JobStatus.values)
def test_every_status_is_stored_as_is(server, status):
    server.jobs = [job_record(5, "s", status)]
    job_sync.sync_jobs(client())
    assert Job.objects.get(pk=5).status == status


def test_resync_is_idempotent_and_counts_unchanged(server):
    server.jobs = [job_record(i, f"e{i}", "SUCCEEDED") for i in range(1, 6)]
    job_sync.sync_jobs(client())
    before = {j.id: j.first_seen for j in Job.objects.all()}
    result = job_sync.sync_jobs(client(), full=True)
    assert (result.new, result.updated, result.unchanged) == (0, 0, 5)
    assert Job.objects.count() == 5
    assert {j.id: j.first_seen for j in Job.objects.all()} == before


def test_paging_across_pages(server, monkeypatch):
    monkeypatch.setattr(job_sync, "PAGE_SIZE", 3)
    server.jobs = [job_record(i, "p", "SUCCEEDED") for i in range(1, 9)]
    result = job_sync.sync_jobs(client())
    assert result.new == 8
    pages = [b["page"] for b in server.queue_bodies if "page" in b]
    assert pages == [1, 2, 3]
    assert all(b["limit"] == 3 for b in server.queue_bodies if "page" in b)


def test_multi_task_job_is_one_row_speaking_for_the_current_task(server):
    server.jobs = [
        job_record(9, "pipe", "SUCCEEDED", task_id=0),
        job_record(9, "pipe", "RUNNING", task_id=1),
        job_record(9, "pipe", "PENDING", task_id=2),
    ]
    job_sync.sync_jobs(client())
    job = Job.objects.get(pk=9)
    assert (job.status, job.task_count) == ("RUNNING", 3)


def test_incremental_sync_asks_only_for_active_and_recent_jobs(server):
    server.jobs = [job_record(i, "old", "SUCCEEDED") for i in range(1, 50)]
    server.jobs.append(job_record(50, "live", "RUNNING"))
    assert run_sync("skypilot").ok
    server.queue_bodies.clear()
    # job 50 finished meanwhile; a new job 51 appeared
    server.jobs[-1] = job_record(50, "live", "SUCCEEDED")
    now = timezone.now().timestamp()
    server.jobs.append(job_record(51, "live", "PENDING", submitted_at=now))
    outcome = run_sync("skypilot")
    assert outcome.ok, outcome.error
    assert outcome.counts["mode"] == "incremental"
    assert (outcome.counts["new"], outcome.counts["updated"]) == (1, 1)
    assert Job.objects.get(pk=50).status == "SUCCEEDED"
    assert Job.objects.get(pk=51).status == "PENDING"
    listing = [b for b in server.queue_bodies if "user_yaml" not in b["fields"]]
    assert listing[0]["skip_finished"] is True
    assert listing[1]["submitted_after"] > now - 3600  # since the last success, not all history
    assert listing[2]["job_ids"] == [50]  # the job we last saw active
    assert Experiment.objects.filter(name="live").count() == 0  # nothing invented


def test_jobs_missing_from_a_listing_are_kept(server):
    server.jobs = [job_record(1, "a", "RUNNING"), job_record(2, "b", "SUCCEEDED")]
    job_sync.sync_jobs(client())
    server.jobs = []
    job_sync.sync_jobs(client(), full=True)
    assert Job.objects.count() == 2
    assert Job.objects.get(pk=1).status == "RUNNING"


def test_orphans_attach_when_the_experiment_is_created(server):
    server.jobs = [job_record(1, "later", "RUNNING")]
    job_sync.sync_jobs(client())
    exp = services.create_experiment("t", name="later")
    assert exp.current_state == "RUNNING"
    assert list(exp.jobs.values_list("id", flat=True)) == [1]
    assert not Job.objects.orphaned().exists()


def test_current_state_follows_the_latest_job(server, make_experiment):
    make_experiment("exp")
    idle = make_experiment("idle")
    server.jobs = [
        job_record(1, "exp", "FAILED", submitted_at=1000.0),
        job_record(2, "exp", "RUNNING", submitted_at=2000.0),
    ]
    job_sync.sync_jobs(client())
    assert Experiment.objects.get(name="exp").current_state == "RUNNING"
    assert Experiment.objects.get(pk=idle.pk).current_state == NO_JOB


def test_cluster_not_up_means_no_jobs(server):
    server.queue_error = {"type": "ClusterNotUpError", "message": "No in-progress managed jobs."}
    outcome = run_sync("skypilot")
    assert outcome.ok
    assert outcome.counts["fetched"] == 0


def _assert_failed_and_unchanged(outcome, words):
    assert not outcome.ok
    assert words in outcome.error
    state = SyncState.objects.get(source="skypilot")
    assert state.last_error == outcome.error
    assert not state.ok
    assert Job.objects.get(pk=1).status == "RUNNING"


def test_server_error_is_recorded_and_nothing_changes(server):
    server.jobs = [job_record(1, "a", "RUNNING")]
    assert run_sync("skypilot").ok
    server.jobs = [job_record(1, "a", "SUCCEEDED")]
    server.queue_error = {"type": "ValueError", "message": "boom"}
    _assert_failed_and_unchanged(run_sync("skypilot", full=True), "boom")


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("submitted_at", "yesterday", "expected epoch seconds"),
        ("start_at", True, "expected epoch seconds"),
        ("end_at", float("inf"), "not a time"),
        ("end_at", float("nan"), "not a time"),
        ("start_at", 1e20, "not a time"),
    ],
)
def test_a_time_that_is_not_one_fails_the_sync_and_writes_nothing(server, key, value, says):
    """JSON allows Infinity and NaN: a record carrying one (or a date past year 9999) is a
    malformed response, named, and no job of the pass is written."""
    server.jobs = [job_record(1, "a", "RUNNING")]
    assert run_sync("skypilot").ok
    bad = job_record(2, "b", "SUCCEEDED")
    bad[key] = value
    server.jobs = [job_record(1, "a", "SUCCEEDED"), bad]
    state = run_sync("skypilot", full=True)
    assert not state.ok and f"job 2: {key} is" in state.error and says in state.error
    assert Job.objects.get(pk=1).status == "RUNNING" and not Job.objects.filter(pk=2).exists()


def test_failure_on_a_later_page_writes_nothing(server, monkeypatch):
    monkeypatch.setattr(job_sync, "PAGE_SIZE", 2)
    server.jobs = [job_record(1, "a", "RUNNING")]
    assert run_sync("skypilot").ok
    server.jobs = [job_record(i, "a", "SUCCEEDED") for i in range(1, 6)]
    server.truncate_page = 2  # page 2 answers with truncated JSON
    _assert_failed_and_unchanged(run_sync("skypilot", full=True), "SkyPilot")
    assert Job.objects.count() == 1  # page 1's new jobs were not written either


def test_login_redirect_is_a_clear_failure(db, settings, monkeypatch):
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    with responses.RequestsMock() as rsps:
        rsps.add(
            responses.POST,
            f"{ENDPOINT}/jobs/queue/v2",
            status=307,
            headers={"Location": f"{ENDPOINT}/oauth2/start?rd=/jobs/queue/v2"},
        )
        outcome = run_sync("skypilot")
    assert not outcome.ok
    assert "sky api login" in outcome.error
    assert SyncState.objects.get(source="skypilot").last_error == outcome.error


def test_unreachable_server_fails_the_command_with_one_line(db, settings, monkeypatch, capsys):
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"  # nothing listens on discard
    settings.SKYDECK_SKYPILOT_TIMEOUT = 0.5
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    with pytest.raises(CommandError, match="sync failed for skypilot"):
        call_command("sync", "skypilot")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "skypilot: FAILED" in err and "127.0.0.1:9" in err
    assert "Traceback" not in err
    assert SyncState.objects.get(source="skypilot").last_error


def test_sync_command_prints_a_summary(server, capsys):
    server.jobs = [job_record(1, "a", "RUNNING"), job_record(2, "b", "SUCCEEDED")]
    call_command("sync", "skypilot")
    out = capsys.readouterr().out
    assert out.startswith("skypilot (full): new 2, updated 0, unchanged 0")
    call_command("sync", "skypilot")
    assert "skypilot (incremental): new 0, updated 0, unchanged 1" in capsys.readouterr().out


def test_a_sync_already_running_is_not_started_twice(server):
    server.jobs = [job_record(1, "a", "RUNNING")]
    assert acquire("skypilot", "another-process", ttl=60)
    outcome = run_sync("skypilot")
    assert outcome.skipped
    assert "already running" in outcome.summary()
    assert not server.queue_bodies
    assert not Job.objects.exists()


def test_an_expired_lease_is_taken_over(server):
    server.jobs = [job_record(1, "a", "RUNNING")]
    assert acquire("skypilot", "dead-process", ttl=60)
    SyncState.objects.filter(source="skypilot").update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    outcome = run_sync("skypilot")
    assert outcome.ok and not outcome.skipped
    assert SyncState.objects.get(source="skypilot").lease_owner == ""


def test_unknown_source_is_a_clear_command_error(db):
    with pytest.raises(CommandError, match="unknown source"):
        call_command("sync", "dropbox")


def test_the_api_tells_a_job_not_read_yet_from_one_without_a_command(server, api, monkeypatch):
    monkeypatch.setattr(job_sync, "YAML_BATCH", 1)
    server.jobs = [
        job_record(1, "older", "SUCCEEDED"),
        job_record(2, "newer", "SUCCEEDED", user_yaml="name: newer\n"),  # no run: section
    ]
    job_sync.sync_jobs(client())
    older = api.get("/api/jobs/1/").json()
    newer = api.get("/api/jobs/2/").json()
    assert older["command"] == "" and older["task_fetched_at"] is None  # not read yet
    assert newer["command"] == "" and newer["task_fetched_at"] is not None  # read: none
