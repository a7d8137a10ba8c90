"""The log sampler: failed jobs' log tails, running jobs' progress, stalled runs (issue 16).

One pass (every SKYDECK_SAMPLE_INTERVAL seconds, under the SAMPLER lease, never inside the job
syncer's) does three things, each fetching everything from SkyPilot first and then writing in
short transactions, so a slow or failing SkyPilot holds no database lock:

1. **Failure logs.** Up to SKYDECK_FAILURE_LOG_BATCH failed jobs whose log was not read yet,
   newest first, that ended within FAILURE_LOG_DAYS: their last SKYDECK_FAILURE_LOG_LINES lines,
   the end kept within SKYDECK_FAILURE_LOG_MAX_CHARS, go to ``Job.log_tail``; a generic reason's
   signature is taken from them (``triage.signature``). A job whose log is gone is read as ""
   (never asked again); a SkyPilot error leaves it for the next pass. Older failures are never
   read: a first sync of a long history must not queue a log fetch per old job.
2. **Progress.** At most SKYDECK_SAMPLE_MAX_JOBS RUNNING jobs of desired-RUNNING experiments,
   least recently sampled first and not within SKYDECK_SAMPLE_INTERVAL: their last
   SKYDECK_SAMPLE_LINES lines are parsed (``experiments.progress``, the groups' patterns first)
   into ``Job.progress`` and a ``JobSample``; each job keeps at most SKYDECK_SAMPLES_PER_JOB
   (every other of the older half is dropped when it has more).
3. **Stalls.** ``Job.stalled`` of every RUNNING job is recomputed (``progress.stall_reason``) and
   cleared on every other job, and each newly stalled job is notified once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Min, Q
from django.utils import timezone

from experiments import deckchanges, progress, triage
from experiments.models import (
    Checkpoint,
    DesiredState,
    ExperimentGroupMember,
    Job,
    JobSample,
    JobStatus,
    NotificationEvent,
    SyncSource,
    SyncState,
)
from syncing import joblogs
from syncing.leases import LeaseHeld, lease, restore_in_progress
from syncing.runner import describe_error
from syncing.skypilot import ServerUnavailable, SkyPilotClient, SkyPilotError

logger = logging.getLogger(__name__)

#: Only failures that ended this recently get their log read (older history never is).
FAILURE_LOG_DAYS = 7
#: At most this many error messages are kept in a pass's report.
MAX_ERRORS = 5


@dataclass
class SamplerResult:
    """What one pass did; ``counts()`` is what SyncState(SAMPLER) keeps."""

    tails_read: int = 0
    tails_missing: int = 0
    signatures: int = 0
    sampled: int = 0
    parsed: int = 0
    thinned: int = 0
    stalled: int = 0
    cleared: int = 0
    newly_stalled: list[StalledJob] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_reads: int = 0

    def counts(self) -> dict[str, Any]:
        return {
            "tails_read": self.tails_read,
            "tails_missing": self.tails_missing,
            "signatures": self.signatures,
            "sampled": self.sampled,
            "parsed": self.parsed,
            "thinned": self.thinned,
            "stalled": self.stalled,
            "newly_stalled": len(self.newly_stalled),
            "cleared": self.cleared,
            "errors": self.failed_reads,
        }

    def error(self, message: str) -> None:
        self.failed_reads += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


@dataclass(frozen=True)
class StalledJob:
    """A job this pass found stalled that was not before (what a notification says)."""

    id: int
    experiment_name: str
    reason: str


def _read_tail(job_id: int, lines: int, client: SkyPilotClient) -> str | None:
    """A job's last ``lines`` lines; None when it has no log (gone, or no longer synced).

    Raises SkyPilotError: ServerUnavailable ends the pass's reads (the rest would fail alike)."""
    try:
        return joblogs.tail_text(joblogs.plan(job_id, tail=lines, follow=False), client)
    except (joblogs.NoLog, joblogs.UnknownJob):
        return None


def cap_tail(text: str, max_chars: int) -> str:
    """The end of ``text`` within ``max_chars``, starting at a whole line when it was cut."""
    if len(text) <= max_chars:
        return text
    cut = text[-max_chars:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < len(cut) - 1 else cut


# --- 1. failed jobs' log tails ----------------------------------------------------------------


def failure_logs_pending(now: datetime) -> Any:
    """Failed jobs whose log is still to read and worth reading, newest first (the partial
    index ``jobs_log_pending_idx``)."""
    return (
        Job.objects.filter(log_fetched_at__isnull=True)
        .exclude(failure_signature="")
        .filter(ended_at__gte=now - timedelta(days=FAILURE_LOG_DAYS))
        .order_by("-id")
    )


def retire_old_failures(now: datetime) -> int:
    """Failed jobs too old to read are marked read with no tail (``log_tail`` NULL): they
    leave the partial index, so the pending query costs what the recent failures cost, not
    the history (a first sync of 50,000 old jobs is retired in one UPDATE, then nothing)."""
    cutoff = now - timedelta(days=FAILURE_LOG_DAYS)
    return (
        Job.objects.filter(log_fetched_at__isnull=True)
        .exclude(failure_signature="")
        .filter(Q(ended_at__lt=cutoff) | Q(ended_at__isnull=True, first_seen__lt=cutoff))
        .update(log_fetched_at=now)
    )


def read_failure_logs(client: SkyPilotClient, result: SamplerResult, now: datetime) -> None:
    """Read the log tails of the next batch of failed jobs (see the module's docstring)."""
    retire_old_failures(now)
    jobs = list(
        failure_logs_pending(now).only("id", "job_name", "status", "failure_reason")[
            : settings.SKYDECK_FAILURE_LOG_BATCH
        ]
    )
    fetched: list[tuple[Job, str]] = []
    for job in jobs:  # network first, no transaction
        try:
            text = _read_tail(job.id, settings.SKYDECK_FAILURE_LOG_LINES, client)
        except ServerUnavailable as exc:
            result.error(f"log of job {job.id}: {joblogs.error_message(exc)}")
            break
        except SkyPilotError as exc:
            result.error(f"log of job {job.id}: {joblogs.error_message(exc)}")
            continue
        fetched.append((job, "" if text is None else cap_tail(text, _max_chars())))
    if not fetched:
        return
    names = set()
    with transaction.atomic():
        for job, tail in fetched:
            values: dict[str, Any] = {"log_tail": tail, "log_fetched_at": now}
            if tail and triage.is_generic(job.failure_reason):
                values["failure_signature"] = triage.signature(
                    job.status, job.failure_reason, tail.splitlines()
                )
            # read once: a pass that raced this one and wrote first wins
            if Job.objects.filter(pk=job.id, log_fetched_at__isnull=True).update(**values):
                result.tails_read += bool(tail)
                result.tails_missing += not tail
                if "failure_signature" in values:
                    result.signatures += 1
                    names.add(job.job_name)
        deckchanges.record_experiments(name for name in names if name)


def _max_chars() -> int:
    return int(settings.SKYDECK_FAILURE_LOG_MAX_CHARS)


# --- 2. progress of running jobs ------------------------------------------------------------


def jobs_to_sample(now: datetime) -> Any:
    """RUNNING jobs of desired-RUNNING experiments not sampled within the interval, least
    recently sampled first."""
    due = now - timedelta(seconds=settings.SKYDECK_SAMPLE_INTERVAL)
    return (
        Job.objects.filter(status=JobStatus.RUNNING, experiment__desired_state=DesiredState.RUNNING)
        .filter(Q(progress_at__isnull=True) | Q(progress_at__lte=due))
        .order_by(F("progress_at").asc(nulls_first=True), "id")
    )


def group_patterns(names: set[str], result: SamplerResult) -> dict[str, list]:
    """The compiled metric patterns of each experiment's groups, in the groups' order (one
    query). A stored pattern that does not compile is reported, not silently skipped."""
    rows = (
        ExperimentGroupMember.objects.filter(
            experiment__name__in=names, group__metric_patterns__isnull=False
        )
        .order_by("group__order", "group_id")
        .values_list("experiment__name", "group__name", "group__metric_patterns")
    )
    out: dict[str, list] = {}
    for name, group, patterns in rows:
        try:
            out.setdefault(name, []).extend(progress.compile_patterns(patterns))
        except ValueError as exc:
            result.error(f"group {group}: {exc}")
    return out


def thin_samples(job_id: int, keep: int) -> int:
    """Keep at most ``keep`` samples of a job: over it, drop every other sample of the older
    half (the oldest stays), so old history gets sparser and storage stays bounded."""
    count = JobSample.objects.filter(job_id=job_id).count()
    if count <= keep:
        return 0
    older = list(
        JobSample.objects.filter(job_id=job_id)
        .order_by("taken_at", "id")
        .values_list("id", flat=True)[: count // 2]
    )
    doomed = older[1::2]
    JobSample.objects.filter(id__in=doomed).delete()
    return len(doomed)


def sample_progress(client: SkyPilotClient, result: SamplerResult, now: datetime) -> None:
    """Sample the next running jobs' logs (see the module's docstring)."""
    jobs = list(
        jobs_to_sample(now).only("id", "experiment_id", "progress")[
            : settings.SKYDECK_SAMPLE_MAX_JOBS
        ]
    )
    if not jobs:
        return
    patterns = group_patterns({job.experiment_id for job in jobs}, result)
    read: list[tuple[Job, str | None]] = []
    for job in jobs:  # network first, no transaction
        try:
            read.append((job, _read_tail(job.id, settings.SKYDECK_SAMPLE_LINES, client)))
        except ServerUnavailable as exc:
            result.error(f"log of job {job.id}: {joblogs.error_message(exc)}")
            break
        except SkyPilotError as exc:
            result.error(f"log of job {job.id}: {joblogs.error_message(exc)}")
    keep = int(settings.SKYDECK_SAMPLES_PER_JOB)
    for job, text in read:
        sample = progress.parse((text or "").splitlines(), patterns.get(job.experiment_id))
        with transaction.atomic():
            values: dict[str, Any] = {"progress_at": now}
            if sample is not None:
                values["progress"] = sample.as_json()
                if progress.advanced(job.progress, sample):
                    values["progress_advanced_at"] = now
                JobSample.objects.create(
                    job_id=job.id,
                    taken_at=now,
                    step=sample.step,
                    total=sample.total,
                    epoch=sample.epoch,
                    metrics=sample.metrics,
                )
                result.thinned += thin_samples(job.id, keep)
                result.parsed += 1
            Job.objects.filter(pk=job.id).update(**values)
            if sample is not None:
                deckchanges.record_experiments([job.experiment_id])
        result.sampled += 1


# --- 3. stalled runs --------------------------------------------------------------------------


def update_stalls(result: SamplerResult, now: datetime) -> list[StalledJob]:
    """Recompute ``stalled`` of RUNNING jobs, clear it elsewhere; the newly stalled ones.

    A constant number of queries: the running jobs, their groups' thresholds, their
    experiments' newest checkpoints, one UPDATE of the changed ones and one that clears the
    rest."""
    running = Job.objects.filter(status=JobStatus.RUNNING)
    names = running.exclude(experiment_id=None).values("experiment_id")
    jobs = list(
        running.only(
            "id",
            "experiment_id",
            "job_name",
            "started_at",
            "progress_advanced_at",
            "recovery_count",
            "stalled",
        )
    )
    thresholds = dict(
        ExperimentGroupMember.objects.filter(
            experiment__name__in=names, group__stall_minutes__isnull=False
        )
        .values("experiment__name")
        .annotate(minutes=Min("group__stall_minutes"))
        .values_list("experiment__name", "minutes")
    )
    newest = dict(
        Checkpoint.objects.filter(experiment__name__in=names, last_modified__isnull=False)
        .values("experiment__name")
        .annotate(newest=Max("last_modified"))
        .values_list("experiment__name", "newest")
    )
    default = int(settings.SKYDECK_STALL_MINUTES)
    limit = int(settings.SKYDECK_MAX_RECOVERIES)
    changed: list[Job] = []
    newly: list[StalledJob] = []
    for job in jobs:
        reason = progress.stall_reason(
            now,
            threshold_minutes=thresholds.get(job.experiment_id, default),
            advanced_at=job.progress_advanced_at,
            newest_checkpoint_at=newest.get(job.experiment_id),
            started_at=job.started_at,
            recovery_count=job.recovery_count,
            max_recoveries=limit,
        )
        result.stalled += reason is not None
        if (reason or None) != (job.stalled or None):
            if reason and not job.stalled:
                newly.append(StalledJob(job.id, job.experiment_id or job.job_name, reason))
            job.stalled = reason
            changed.append(job)
    with transaction.atomic():
        if changed:
            Job.objects.bulk_update(changed, ["stalled"])
        result.cleared = (
            Job.objects.exclude(status=JobStatus.RUNNING)
            .filter(stalled__isnull=False)
            .update(stalled=None)
        )
        deckchanges.record_experiments(j.experiment_id for j in changed if j.experiment_id)
    result.newly_stalled = newly
    return newly


def _notify_stalled(jobs: list[StalledJob]) -> None:
    """One STALLED notification per newly stalled job (the outbox collapses repeats by key)."""
    if not jobs:
        return
    from syncing import notifications  # written alongside (issue 16's notifications)

    for job in jobs:
        notifications.emit(
            NotificationEvent.STALLED,
            key=f"job {job.id}",
            title=f"{job.experiment_name}: job {job.id} looks stalled",
            text=f"Job {job.id} of {job.experiment_name} is RUNNING but shows {job.reason}.",
            experiment_name=job.experiment_name,
            data={"job_id": job.id, "reason": job.reason},
        )


# --- the pass -----------------------------------------------------------------------------------


def sample_pass(client: SkyPilotClient | None = None) -> SamplerResult:
    """One pass: failure logs, progress, stalls. Never raises for SkyPilot errors: they are in
    ``errors`` (the jobs concerned stay for the next pass)."""
    client = client or SkyPilotClient.from_settings()
    result = SamplerResult()
    read_failure_logs(client, result, timezone.now())
    sample_progress(client, result, timezone.now())
    _notify_stalled(update_stalls(result, timezone.now()))
    return result


@dataclass
class SamplerOutcome:
    ok: bool
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    skipped: bool = False

    def summary(self) -> str:
        """The one line ``skydeck sample`` prints and the task returns."""
        if self.skipped:
            return f"sampler: skipped: {self.error}"
        c = self.counts
        done = (
            f"{c.get('sampled', 0)} jobs sampled ({c.get('parsed', 0)} with progress), "
            f"{c.get('tails_read', 0) + c.get('tails_missing', 0)} failure logs read, "
            f"{c.get('stalled', 0)} stalled ({c.get('newly_stalled', 0)} new)"
        )
        if not self.ok:
            return f"sampler: FAILED after {self.seconds:.1f}s: {self.error} ({done})"
        return f"sampler: {done} in {self.seconds:.1f}s"


def run_pass() -> SamplerOutcome:
    """One pass under the SAMPLER lease, recorded in its SyncState row (like ``run_sync``)."""
    restoring = restore_in_progress()
    if restoring is not None:
        return SamplerOutcome(ok=True, skipped=True, error=f"restoring: {restoring.describe()}")
    source = SyncSource.SAMPLER
    started = time.monotonic()
    try:
        with lease(source, settings.Q_CLUSTER["timeout"] + 60):
            SyncState.objects.filter(source=source).update(last_attempt_at=timezone.now())
            try:
                result = sample_pass()
            except Exception as exc:
                message = describe_error(exc)
                logger.exception("log sampler pass failed")
                seconds = time.monotonic() - started
                SyncState.objects.filter(source=source).update(
                    last_error=message, last_error_at=timezone.now(), duration=seconds
                )
                return SamplerOutcome(ok=False, seconds=seconds, error=message)
            seconds = time.monotonic() - started
            counts = result.counts()
            if result.errors:
                more = result.failed_reads - len(result.errors)
                message = "; ".join(result.errors) + (f"; and {more} more" if more > 0 else "")
                logger.warning("log sampler: %s", message)
                SyncState.objects.filter(source=source).update(
                    last_error=message,
                    last_error_at=timezone.now(),
                    counts=counts,
                    duration=seconds,
                )
                return SamplerOutcome(ok=False, seconds=seconds, counts=counts, error=message)
            SyncState.objects.filter(source=source).update(
                last_success_at=timezone.now(), last_error="", counts=counts, duration=seconds
            )
            return SamplerOutcome(ok=True, seconds=seconds, counts=counts)
    except LeaseHeld as exc:
        return SamplerOutcome(ok=True, skipped=True, error=str(exc))
