"""The log sampler (syncing/sampler.py) against a SkyPilot double: failed jobs' log tails and
their signatures, running jobs' progress on a budget, bounded samples, stalled runs, health,
the command and the API."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import responses
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from experiments import services
from experiments.models import (
    ExperimentGroup,
    Job,
    JobSample,
    JobStatus,
    Notification,
    SyncSource,
    SyncState,
    WebhookDestination,
)
from syncing import health, sampler
from syncing.jobs import sync_jobs
from tests.fake_skypilot import ENDPOINT, FakeSkyPilot, job_record

GENERIC = "Job failed with return code list: [1]"

OOM_LOG = """\
step 1200 | loss 2.31
Traceback (most recent call last):
  File "/workspace/train.py", line 88, in <module>
    loss.backward()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.10 GiB
"""
NCCL_LOG = """\
[rank3]:[E1203 10:12:01.123 ProcessGroupNCCL.cpp:616] [Rank 3] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=52, OpType=ALLREDUCE, Timeout(ms)=600000) ran for 600054 milliseconds before timing out.
terminate called after throwing an instance of 'c10::DistBackendError'
"""
PREEMPT_LOG = """\
step 40 | loss 3.1
(head, rank=0, pid=2311) sky.exceptions: The spot instance was preempted by the cloud provider.
"""
MODULE_LOG = """\
Traceback (most recent call last):
  File "/workspace/tools/train.py", line 3, in <module>
    import metta.rl
ModuleNotFoundError: No module named 'metta.rl'
"""


class LogDouble(FakeSkyPilot):
    """The double, with a log per job, per-job exit codes and broken jobs; it notes whether a
    database transaction was open each time SkyDeck asked for a log."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.logs: dict[int, str] = {}
        self.exit_codes: dict[int, int] = {}
        self.broken: set[int] = set()
        self.in_transaction: list[bool] = []
        super().__init__(rsps)

    def asked(self) -> list[int]:
        return [body["job_id"] for body in self.logs_bodies]

    def _logs(self, request):
        body = json.loads(request.body)
        self.logs_bodies.append(body)
        self.in_transaction.append(connection.in_atomic_block)
        job_id = body["job_id"]
        if job_id in self.broken:
            return 500, {}, json.dumps({"detail": "internal error"})
        request_id = str(uuid.uuid4())
        code = self.exit_codes.get(job_id, 0)
        self.results[request_id] = (200, {"status": "SUCCEEDED", "return_value": json.dumps(code)})
        headers = {"X-Skypilot-Request-ID": request_id, "Content-Type": "text/plain"}
        return 200, headers, self.logs.get(job_id, "")


@pytest.fixture
def sky(settings, monkeypatch, no_local_skypilot):
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield LogDouble(rsps)


@pytest.fixture
def notified(monkeypatch):
    seen: list[sampler.StalledJob] = []
    monkeypatch.setattr(sampler, "_notify_stalled", lambda jobs: seen.extend(jobs))
    return seen


def failed_job(make_job, job_id: int, *, reason: str = GENERIC, ended_ago=timedelta(hours=1)):
    from experiments import triage

    return make_job(
        job_id,
        name=f"exp-{job_id}",
        status=JobStatus.FAILED,
        failure_reason=reason,
        failure_signature=triage.signature(JobStatus.FAILED, reason),
        ended_at=timezone.now() - ended_ago,
    )


# --- failed jobs' log tails ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("log", "signature"),
    [
        (OOM_LOG, "FAILED: CUDA out of memory"),
        (NCCL_LOG, "FAILED: NCCL timeout"),
        (PREEMPT_LOG, "FAILED: Preempted"),
        (MODULE_LOG, "FAILED: ModuleNotFoundError: No module named 'metta.rl'"),
    ],
)
def test_a_generic_failures_signature_comes_from_its_log(sky, make_job, notified, log, signature):
    job = failed_job(make_job, 501)
    assert job.failure_signature == "FAILED: Job failed with return code list: [<n>]"
    sky.logs[501] = log
    result = sampler.sample_pass()
    job.refresh_from_db()
    assert (job.log_tail, job.failure_signature) == (log, signature)
    assert job.log_fetched_at is not None
    assert (result.tails_read, result.signatures) == (1, 1)
    assert sky.logs_bodies[0]["tail"] == 100  # SKYDECK_FAILURE_LOG_LINES
    sampler.sample_pass()
    assert sky.asked() == [501], "a log tail is read once"


def test_a_specific_reason_keeps_its_own_signature(sky, make_job, notified):
    job = failed_job(make_job, 502, reason="Failed to provision all resources: quota exceeded")
    before = job.failure_signature
    sky.logs[502] = OOM_LOG
    sampler.sample_pass()
    job.refresh_from_db()
    assert job.log_tail == OOM_LOG and job.failure_signature == before


def test_the_job_syncer_keeps_a_log_signature(sky, make_job, notified):
    """A later sync recomputes signatures from status and reason only: not over a log's."""
    ended = {"end_at": timezone.now().timestamp() - 60}
    sky.jobs = [job_record(601, "exp-a", "FAILED", failure_reason=GENERIC, **ended)]
    sync_jobs()
    sky.logs[601] = OOM_LOG
    sampler.sample_pass()
    assert Job.objects.get(pk=601).failure_signature == "FAILED: CUDA out of memory"
    # the job changes (another status, its details): the row is rewritten, the cause stays
    sky.jobs = [
        job_record(601, "exp-a", "FAILED_SETUP", failure_reason=GENERIC, details="x", **ended)
    ]
    sync_jobs(full=True)
    job = Job.objects.get(pk=601)
    assert (job.details, job.failure_signature) == ("x", "FAILED_SETUP: CUDA out of memory")
    # a reason that names a cause wins again
    sky.jobs = [job_record(601, "exp-a", "FAILED", failure_reason="Disk quota on /data", **ended)]
    sync_jobs(full=True)
    assert Job.objects.get(pk=601).failure_signature == "FAILED: Disk quota on /data"


def test_the_tail_is_capped_keeping_its_end(sky, make_job, settings, notified):
    settings.SKYDECK_FAILURE_LOG_MAX_CHARS = 1000
    lines = [f"line {i:04d} of the training log" for i in range(200)]
    failed_job(make_job, 503)
    sky.logs[503] = "\n".join(lines) + "\n"
    sampler.sample_pass()
    tail = Job.objects.get(pk=503).log_tail
    assert len(tail) <= 1000
    assert tail.endswith(lines[-1] + "\n")
    assert tail.splitlines()[0] in lines  # starts at a whole line


def test_a_batch_newest_first_and_only_the_last_7_days(sky, make_job, settings, notified):
    settings.SKYDECK_FAILURE_LOG_BATCH = 3
    for job_id in range(701, 706):
        failed_job(make_job, job_id)
        sky.logs[job_id] = MODULE_LOG
    failed_job(make_job, 799, ended_ago=timedelta(days=8))  # old history: never read
    make_job(700, name="exp-ok", status=JobStatus.SUCCEEDED, ended_at=timezone.now())
    sampler.sample_pass()
    assert sky.asked() == [705, 704, 703]
    sampler.sample_pass()
    assert sky.asked()[3:] == [702, 701]
    sampler.sample_pass()
    assert 799 not in sky.asked() and 700 not in sky.asked()
    old = Job.objects.get(pk=799)
    assert old.log_tail is None and old.log_fetched_at is not None  # retired: out of the index
    # what is left to read is the recent failures only, however long the history
    assert list(Job.objects.filter(log_fetched_at__isnull=True).exclude(failure_signature="")) == []


def test_a_job_whose_log_is_gone_is_read_as_empty_once(sky, make_job, notified):
    job = failed_job(make_job, 801)
    sky.exit_codes[801] = 102  # the jobs controller does not know the job
    sky.logs[801] = ""
    result = sampler.sample_pass()
    job.refresh_from_db()
    assert job.log_tail == "" and job.log_fetched_at is not None
    assert job.failure_signature == "FAILED: Job failed with return code list: [<n>]"
    assert result.tails_missing == 1 and not result.errors
    sampler.sample_pass()
    assert sky.asked() == [801]


def test_a_skypilot_error_leaves_the_job_unread_and_says_so(sky, make_job, notified):
    job = failed_job(make_job, 901)
    sky.broken.add(901)
    outcome = sampler.run_pass()
    job.refresh_from_db()
    assert job.log_tail is None and job.log_fetched_at is None
    assert not outcome.ok and "job 901" in outcome.error
    state = SyncState.objects.get(source=SyncSource.SAMPLER)
    assert "log of job 901" in state.last_error and state.lease_owner == ""
    assert any("log sampler" in w for w in health.health_report()["warnings"])
    with pytest.raises(CommandError, match=r"sampler: FAILED.*job 901"):
        call_command("sample")
    # SkyPilot answers again: the next pass reads it and the pass succeeds
    sky.broken.clear()
    sky.logs[901] = OOM_LOG
    assert sampler.run_pass().ok
    assert Job.objects.get(pk=901).log_tail == OOM_LOG
    assert SyncState.objects.get(source=SyncSource.SAMPLER).last_error == ""


# --- progress ---------------------------------------------------------------------------------


def running_job(make_experiment, make_job, job_id: int, name: str, **fields) -> Job:
    if not services_exists(name):
        make_experiment(name, desired_state="RUNNING")
    fields.setdefault("started_at", timezone.now() - timedelta(minutes=10))
    return make_job(job_id, name=name, **fields)


def services_exists(name: str) -> bool:
    from experiments.models import Experiment

    return Experiment.objects.filter(name=name).exists()


def test_running_jobs_are_sampled_on_a_budget(sky, make_experiment, make_job, settings, notified):
    settings.SKYDECK_SAMPLE_MAX_JOBS = 2
    settings.SKYDECK_SAMPLE_LINES = 50
    now = timezone.now()
    running_job(make_experiment, make_job, 11, "run-a", progress_at=now - timedelta(hours=1))
    running_job(make_experiment, make_job, 12, "run-b")  # never sampled: first
    running_job(make_experiment, make_job, 13, "run-c", progress_at=now - timedelta(minutes=30))
    running_job(make_experiment, make_job, 14, "run-d", progress_at=now - timedelta(minutes=1))
    make_experiment("stopped-exp")
    make_job(15, name="stopped-exp", status=JobStatus.RUNNING)  # not desired RUNNING
    running_job(make_experiment, make_job, 16, "run-e", status=JobStatus.PENDING)
    make_job(17, name="orphan", status=JobStatus.RUNNING)  # no experiment
    for job_id in range(11, 18):
        sky.logs[job_id] = f"step {job_id}/100 loss=0.5\n"
    sampler.sample_pass()
    assert sky.asked() == [12, 11]
    assert {body["tail"] for body in sky.logs_bodies} == {50}
    sampler.sample_pass()
    assert sky.asked()[2:] == [13]  # 14 was sampled a minute ago: within the interval
    sampler.sample_pass()
    assert sky.asked()[3:] == []
    assert Job.objects.get(pk=12).progress == {
        "step": 12,
        "total": 100,
        "epoch": None,
        "metrics": {"loss": 0.5},
    }


def test_a_sample_is_kept_and_advancing_is_noted(
    sky, make_experiment, make_job, settings, notified
):
    settings.SKYDECK_SAMPLE_INTERVAL = 0
    job = running_job(make_experiment, make_job, 21, "run-a")
    sky.logs[21] = "Epoch 1/10\nstep 5/50 | loss 1.5 | tok/s 1000\n"
    sampler.sample_pass()
    job.refresh_from_db()
    first = job.progress_advanced_at
    assert job.progress == {
        "step": 5,
        "total": 50,
        "epoch": 1,
        "metrics": {"loss": 1.5, "tok/s": 1000},
    }
    assert first is not None and job.progress_at is not None
    sampler.sample_pass()  # the same step: sampled, not advanced
    job.refresh_from_db()
    assert job.progress_advanced_at == first and job.progress_at > first
    sky.logs[21] += "step 6/50 | loss 1.4\n"
    sampler.sample_pass()
    job.refresh_from_db()
    assert job.progress_advanced_at > first
    samples = list(JobSample.objects.filter(job=job).values_list("step", "metrics"))
    assert samples == [
        (5, {"loss": 1.5, "tok/s": 1000}),
        (5, {"loss": 1.5, "tok/s": 1000}),
        (6, {"loss": 1.4, "tok/s": 1000}),
    ]
    # a log with nothing to read: sampled (progress_at moves), no sample, progress kept
    sky.logs[21] = "loading...\n"
    sampler.sample_pass()
    assert JobSample.objects.filter(job=job).count() == 3
    assert Job.objects.get(pk=21).progress["step"] == 6


def test_a_groups_patterns_read_its_jobs_logs(sky, make_experiment, make_job, notified):
    job = running_job(make_experiment, make_job, 31, "run-a")
    group = services.create_group("tester", name="rl")
    services.add_to_group("tester", group, [job.experiment])
    ExperimentGroup.objects.filter(pk=group.pk).update(
        metric_patterns=[r"(?P<key>reward) is (?P<value>[-\d.]+)"]
    )
    sky.logs[31] = "[3/9] mean reward is -0.25\n"
    sampler.sample_pass()
    assert Job.objects.get(pk=31).progress["metrics"] == {"reward": -0.25}


def test_a_broken_stored_pattern_is_reported_not_skipped_silently(
    sky, make_experiment, make_job, notified
):
    job = running_job(make_experiment, make_job, 32, "run-a")
    group = services.create_group("tester", name="rl")
    services.add_to_group("tester", group, [job.experiment])
    ExperimentGroup.objects.filter(pk=group.pk).update(metric_patterns=["(broken"])
    sky.logs[32] = "step 3 loss=1\n"
    result = sampler.sample_pass()
    assert "group rl: metric pattern '(broken' is not a regular expression" in result.errors[0]
    assert Job.objects.get(pk=32).progress["step"] == 3  # the built-in forms still read it


def test_samples_stay_bounded_by_thinning_the_older_half(
    sky, make_experiment, make_job, settings, notified
):
    settings.SKYDECK_SAMPLE_INTERVAL = 0
    settings.SKYDECK_SAMPLES_PER_JOB = 10
    job = running_job(make_experiment, make_job, 41, "run-a")
    twin = running_job(make_experiment, make_job, 43, "run-b")
    for step in range(1, 31):
        sky.logs[41] = sky.logs[43] = f"step {step}\n"
        sampler.sample_pass()
        assert JobSample.objects.filter(job=job).count() <= 10
    steps = list(JobSample.objects.filter(job=job).values_list("step", flat=True))
    assert steps[0] == 1 and steps[-1] == 30  # the first and the newest stay
    assert steps == sorted(steps) and len(steps) > 5
    # deterministic: the same history thins the same way
    assert list(JobSample.objects.filter(job=twin).values_list("step", flat=True)) == steps


def test_thin_samples_drops_every_other_of_the_older_half(make_job):
    job = make_job(42)
    start = timezone.now()
    for i in range(11):
        JobSample.objects.create(job=job, taken_at=start + timedelta(minutes=i), step=i)
    assert sampler.thin_samples(job.id, 10) == 2  # the older half: 0..4, drop 1 and 3
    assert list(JobSample.objects.filter(job=job).values_list("step", flat=True)) == [
        0,
        2,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
    ]
    assert sampler.thin_samples(job.id, 10) == 0


@pytest.mark.django_db(transaction=True)
def test_logs_are_never_read_inside_a_transaction(
    sky, make_experiment, make_job, settings, notified
):
    failed_job(make_job, 51)
    sky.logs[51] = OOM_LOG
    running_job(make_experiment, make_job, 52, "run-a")
    sky.logs[52] = "step 1\n"
    assert sampler.run_pass().ok
    assert sky.asked() == [51, 52]
    assert sky.in_transaction == [False, False]
    assert Job.objects.get(pk=52).progress["step"] == 1


# --- stalled runs -----------------------------------------------------------------------------


def test_no_log_progress_flags_a_job_once_and_clears_when_it_moves(
    sky, make_experiment, make_job, settings, notified
):
    settings.SKYDECK_SAMPLE_INTERVAL = 0
    long_ago = timezone.now() - timedelta(hours=2, minutes=5)
    job = running_job(
        make_experiment,
        make_job,
        61,
        "run-a",
        started_at=long_ago - timedelta(hours=1),
        progress={"step": 7, "total": None, "epoch": None, "metrics": {}},
        progress_advanced_at=long_ago,
    )
    sky.logs[61] = "step 7\n"
    result = sampler.sample_pass()
    job.refresh_from_db()
    assert job.stalled == "no log progress for 2 h 5 min"
    assert [(j.id, j.experiment_name) for j in notified] == [(61, "run-a")]
    assert [j.id for j in result.newly_stalled] == [61]
    sampler.sample_pass()
    assert len(notified) == 1, "notified once, not on every pass"
    warnings = health.health_report()["warnings"]
    assert "1 running job looks stalled: run-a (no log progress for 2 h 5 min)" in warnings
    sky.logs[61] = "step 8\n"
    sampler.sample_pass()
    assert Job.objects.get(pk=61).stalled is None
    assert not any("stalled" in w for w in health.health_report()["warnings"])


def test_the_threshold_is_the_smallest_group_override_and_zero_is_off(
    sky, make_experiment, make_job, settings, notified
):
    settings.SKYDECK_STALL_MINUTES = 0  # off, except where a group sets its own
    quiet = timezone.now() - timedelta(minutes=45)
    fields = {
        "started_at": quiet - timedelta(hours=1),
        "progress": {"step": 1, "total": None, "epoch": None, "metrics": {}},
        "progress_advanced_at": quiet,
        "progress_at": timezone.now(),  # not due for sampling: only the stall is computed
    }
    a = running_job(make_experiment, make_job, 62, "run-a", **fields)
    b = running_job(make_experiment, make_job, 63, "run-b", **fields)
    slow = services.create_group("tester", name="slow")
    fast = services.create_group("tester", name="fast")
    services.add_to_group("tester", slow, [a.experiment, b.experiment])
    services.add_to_group("tester", fast, [a.experiment])
    ExperimentGroup.objects.filter(pk=slow.pk).update(stall_minutes=120)
    ExperimentGroup.objects.filter(pk=fast.pk).update(stall_minutes=30)
    sampler.sample_pass()
    assert Job.objects.get(pk=62).stalled == "no log progress for 45 min"  # min(120, 30)
    assert Job.objects.get(pk=63).stalled is None  # 120 min
    settings.SKYDECK_STALL_MINUTES = 60
    ExperimentGroup.objects.update(stall_minutes=None)
    sampler.sample_pass()
    assert Job.objects.get(pk=62).stalled is None  # the global 60 min


def test_no_new_checkpoint_flags_a_job_that_has_run_long_enough(
    sky, make_experiment, make_job, make_checkpoint, settings, notified
):
    now = timezone.now()
    old = running_job(make_experiment, make_job, 71, "ck-a", started_at=now - timedelta(hours=5))
    make_checkpoint(old.experiment, 1, last_modified=now - timedelta(hours=4))
    make_checkpoint(old.experiment, 2, last_modified=now - timedelta(hours=3, minutes=1))
    fresh = running_job(
        make_experiment, make_job, 72, "ck-b", started_at=now - timedelta(minutes=20)
    )
    make_checkpoint(fresh.experiment, 1, last_modified=now - timedelta(hours=3))
    never = running_job(make_experiment, make_job, 73, "ck-c", started_at=now - timedelta(hours=9))
    for job_id in (71, 72, 73):
        sky.logs[job_id] = "warming up\n"
    sampler.sample_pass()
    assert Job.objects.get(pk=71).stalled == "no new checkpoint for 3 h 1 min"
    assert Job.objects.get(pk=72).stalled is None  # restarted 20 min ago: given its time
    assert Job.objects.get(pk=73).stalled is None  # never wrote one: off
    assert never.stalled is None
    assert [j.id for j in notified] == [71]


def test_stalled_is_cleared_for_jobs_no_longer_running(sky, make_job, notified):
    make_job(81, name="gone", status=JobStatus.SUCCEEDED, stalled="no log progress for 2 h")
    make_job(82, name="gone", status=JobStatus.RECOVERING, stalled="no new checkpoint for 2 h")
    result = sampler.sample_pass()
    assert result.cleared == 2
    assert set(Job.objects.filter(pk__in=[81, 82]).values_list("stalled", flat=True)) == {None}


def test_jobs_recovering_too_often_are_flagged_and_warned(sky, make_job, settings, notified):
    settings.SKYDECK_MAX_RECOVERIES = 3
    make_job(91, name="flaky", status=JobStatus.RUNNING, recovery_count=5)
    make_job(92, name="flaky2", status=JobStatus.RECOVERING, recovery_count=4)
    make_job(93, name="fine", status=JobStatus.RUNNING, recovery_count=3)
    sampler.sample_pass()
    assert Job.objects.get(pk=91).stalled == "recovered 5 times (more than 3)"
    assert Job.objects.get(pk=93).stalled is None
    warnings = health.health_report()["warnings"]
    assert (
        "2 active jobs have recovered more than 3 times: flaky (job 91, 5 times), "
        "flaky2 (job 92, 4 times)"
    ) in warnings


def test_health_job_warnings_cost_one_query(make_job, settings):
    settings.SKYDECK_MAX_RECOVERIES = 0
    for job_id in range(100, 110):
        make_job(job_id, name=f"e{job_id}", stalled="no log progress for 2 h", recovery_count=1)
    with CaptureQueriesContext(connection) as queries:
        warnings = health.job_warnings()
    assert len(queries) == 1
    assert warnings[0].startswith("10 running jobs look stalled: e100 (no log progress")
    assert warnings[0].endswith("and 5 more")
    assert warnings[1].startswith("10 active jobs have recovered more than 0 times: e100 (job 100")


def test_a_newly_stalled_job_is_a_notification(sky, make_job, settings):
    settings.SKYDECK_MAX_RECOVERIES = 0
    WebhookDestination.objects.create(name="team", url="https://hooks.test/x", events=["stalled"])
    make_job(95, name="flaky", status=JobStatus.RUNNING, recovery_count=2)
    sampler.sample_pass()
    sampler.sample_pass()
    (row,) = Notification.objects.all()
    assert (row.event, row.key, row.experiment_name) == ("stalled", "job 95", "flaky")
    assert "recovered 2 times" in row.text


# --- the command and the API ------------------------------------------------------------------


def test_the_command_prints_one_line(sky, make_experiment, make_job, capsys, notified):
    running_job(make_experiment, make_job, 96, "run-a")
    sky.logs[96] = "step 3\n"
    call_command("sample")
    out = capsys.readouterr().out.strip()
    assert out.startswith("sampler: 1 jobs sampled (1 with progress), 0 failure logs read")
    assert len(out.splitlines()) == 1
    state = SyncState.objects.get(source=SyncSource.SAMPLER)
    assert state.ok and state.counts["sampled"] == 1


def test_the_api_shows_progress_stalled_and_the_log_tail(api, make_job):
    job = make_job(
        97,
        name="exp-a",
        status=JobStatus.FAILED,
        log_tail="<script>alert(1)</script>\nCUDA out of memory\n",
        progress={"step": 3, "total": 9, "epoch": None, "metrics": {"loss": 0.5}},
        progress_at=timezone.now(),
        stalled="no log progress for 2 h",
    )
    detail = api.get(f"/api/jobs/{job.id}/").json()
    assert detail["log_tail"] == "<script>alert(1)</script>\nCUDA out of memory\n"
    assert detail["progress"] == {"step": 3, "total": 9, "epoch": None, "metrics": {"loss": 0.5}}
    assert detail["stalled"] == "no log progress for 2 h" and detail["progress_at"]
    (row,) = api.get("/api/jobs/").json()["results"]
    assert "log_tail" not in row  # kilobytes a job: only a job's own answer carries it
    assert row["progress"]["step"] == 3 and row["stalled"] == "no log progress for 2 h"


def test_the_api_serves_a_jobs_samples_in_constant_queries(api, make_job):
    job = make_job(98)
    start = timezone.now() - timedelta(hours=1)

    def samples() -> tuple[int, list]:
        with CaptureQueriesContext(connection) as queries:
            answer = api.get(f"/api/jobs/{job.id}/samples/")
        assert answer.status_code == 200
        return len(queries), answer.json()

    JobSample.objects.create(job=job, taken_at=start, step=1, total=10, metrics={"loss": 2})
    few, body = samples()
    assert body == [
        {
            "taken_at": start.isoformat().replace("+00:00", "Z"),
            "step": 1,
            "total": 10,
            "epoch": None,
            "metrics": {"loss": 2},
        }
    ]
    for i in range(2, 30):
        JobSample.objects.create(job=job, taken_at=start + timedelta(minutes=i), step=i)
    many, body = samples()
    assert many == few and len(body) == 29
    assert [s["step"] for s in body] == list(range(1, 30))
    assert api.get("/api/jobs/123456/samples/").status_code == 404
    assert api.get(f"/api/jobs/{job.id}/samples/?tail=3").status_code == 400


def test_stalls_cost_the_same_queries_for_more_jobs(make_experiment, make_job, make_checkpoint):
    long_ago = timezone.now() - timedelta(hours=3)

    def jobs(first: int, count: int) -> None:
        for job_id in range(first, first + count):
            job = running_job(
                make_experiment,
                make_job,
                job_id,
                f"q-{job_id}",
                started_at=long_ago,
                progress={"step": 1},
                progress_advanced_at=long_ago,
            )
            make_checkpoint(job.experiment, 1, last_modified=long_ago)
            make_job(job_id + 500, name=f"q-{job_id}", status=JobStatus.FAILED, stalled="x")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            sampler.update_stalls(sampler.SamplerResult(), timezone.now())
        return len(captured)

    jobs(1, 2)
    few = queries()
    Job.objects.update(stalled=None)
    jobs(10, 8)
    Job.objects.filter(status=JobStatus.FAILED).update(stalled="x")
    assert queries() == few
    assert Job.objects.filter(stalled__startswith="no log progress").count() == 10
    assert not Job.objects.filter(status=JobStatus.FAILED, stalled__isnull=False).exists()


def test_the_group_admin_sets_the_stall_threshold_and_patterns_through_the_services(
    admin_client,
):
    from experiments import services
    from experiments.models import ExperimentGroup, OperationLog

    group = services.create_group("alice", "sweep")
    url = f"/admin/experiments/experimentgroup/{group.pk}/change/"
    form = {"name": "sweep", "flags": "[]", "order": "0", "stall_minutes": "30",
            "metric_patterns": '["(?P<key>reward) is (?P<value>[-\\\\d.]+)"]',
            "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}  # fmt: skip
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    group.refresh_from_db()
    assert group.stall_minutes == 30
    assert group.metric_patterns == [r"(?P<key>reward) is (?P<value>[-\d.]+)"]
    assert OperationLog.objects.filter(
        operation="group_update", message__contains="metric_patterns, stall_minutes"
    ).exists()
    bad = admin_client.post(url, {**form, "metric_patterns": '["(broken"]'})
    assert bad.status_code == 200 and "is not a regular expression" in bad.content.decode()
    assert ExperimentGroup.objects.get(pk=group.pk).metric_patterns == group.metric_patterns


def test_health_job_warnings_read_two_partial_indexes_not_the_active_jobs(db):
    """Every page asks health: its job warnings cost the flagged jobs, not every running one."""
    with CaptureQueriesContext(connection) as queries:
        health.job_warnings()
    sql = queries.captured_queries[0]["sql"]
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        else:  # tiny test tables: ask what it can use
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql)
            plan = " ".join(row[0] for row in cursor.fetchall())
    assert "jobs_stalled_idx" in plan and "jobs_recovered_idx" in plan, plan
    assert "jobs_status_idx" not in plan


def test_the_page_header_reuses_a_recent_health_report(db, settings, monkeypatch):
    settings.SKYDECK_HEALTH_CACHE_SECONDS = 5
    monkeypatch.setattr(health, "_recent", None)
    clock = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: clock[0])
    first = health.recent_health_report()
    with CaptureQueriesContext(connection) as queries:
        assert health.recent_health_report() is first
    assert len(queries) == 0
    clock[0] += 5.5
    fresh = health.recent_health_report()
    assert fresh is not first and fresh["database"] == "ok"
    settings.SKYDECK_HEALTH_CACHE_SECONDS = 0
    assert health.recent_health_report() is not health.recent_health_report()
