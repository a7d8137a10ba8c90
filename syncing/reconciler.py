"""Make SkyPilot match each experiment's desired state, safely.

A pass acts only on fresh facts: it runs right after a successful job sync and refuses a listing
older than one sync interval. Then, per experiment:

- desired RUNNING, no active job and no pending launch -> launch (capped per pass);
- desired STOPPED with active jobs -> cancel them by job id;
- the latest job since the user's last change SUCCEEDED -> done: desired becomes STOPPED;
- failures back off exponentially, and too many in a row park the experiment (desired STOPPED,
  with a visible reason) until a user starts it again.

A launch is recorded (``Launch``, SUBMITTING) and committed before the request is sent, and counts
as an active job until its job is listed or a grace period passes — so a crash or a timeout between
"submitted" and "listed" never causes a second launch. Passes hold a lease, so the worker and
``manage.py reconcile`` can never both launch. No network call happens inside a transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from experiments import services
from experiments.launching import LaunchConfigError, build_task_yaml
from experiments.models import (
    DesiredState,
    Experiment,
    Job,
    JobStatus,
    Launch,
    LaunchStatus,
    Operation,
    SyncSource,
    SyncState,
)
from syncing.leases import LeaseHeld, lease
from syncing.skypilot import RequestFailed, ServerUnavailable, SkyPilotClient, SkyPilotError

logger = logging.getLogger(__name__)
ACTOR = "reconciler"
PENDING = (LaunchStatus.SUBMITTING, LaunchStatus.SUBMITTED)


@dataclass
class Action:
    kind: str  # launch, cancel, wait, park, complete
    experiment: Experiment
    reason: str = ""
    job_ids: list[int] = field(default_factory=list)

    def describe(self) -> str:
        name = self.experiment.name
        if self.kind == "launch":
            return f"launch {name}"
        if self.kind == "cancel":
            jobs = ", ".join(str(j) for j in self.job_ids)
            return f"cancel job{'s' if len(self.job_ids) > 1 else ''} {jobs} ({name})"
        if self.kind == "wait":
            return f"wait {name}: {self.reason}"
        if self.kind == "park":
            return f"park {name}: {self.reason}"
        return f"done {name}: {self.reason}"


@dataclass
class ReconcileResult:
    mode: str
    actions: list[Action] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: str = ""

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"reconcile skipped: {self.skipped}"]
        if self.mode == "dry-run":
            return [f"plan: {a.describe()}" for a in self.actions] or ["plan: nothing to do"]
        return self.done or ["nothing to do"]


def _humanize(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def backoff_seconds(failures: int) -> int:
    """One minute by default, doubling per consecutive failure, capped (settings)."""
    if failures <= 0:
        return 0
    return min(settings.SKYDECK_BACKOFF_INITIAL * 2 ** (failures - 1), settings.SKYDECK_BACKOFF_MAX)


def listing_age(now: datetime) -> float | None:
    """Seconds since the last successful job sync, or None when the last attempt failed."""
    state = SyncState.objects.filter(source=SyncSource.SKYPILOT).first()
    if state is None or not state.ok or state.last_success_at is None:
        return None
    return (now - state.last_success_at).total_seconds()


def settle_launches(now: datetime) -> None:
    """Mark launches whose job has been listed, and give up on ones that never appear."""
    pending = list(Launch.objects.filter(status__in=PENDING))
    if not pending:
        return
    listed = set(
        Job.objects.filter(id__in=[p.job_id for p in pending if p.job_id]).values_list(
            "id", flat=True
        )
    )
    # A launch interrupted before its answer has no job id: find the job it created by name
    # and time, among jobs no other launch has claimed.
    claimed = set(Launch.objects.exclude(job_id=None).values_list("job_id", flat=True))
    candidates: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    orphans = {p.experiment_name for p in pending if p.job_id is None}
    for job_id, name, submitted in Job.objects.filter(experiment_id__in=orphans).values_list(
        "id", "experiment_id", "submitted_at"
    ):
        if submitted is not None and job_id not in claimed:
            candidates[name].append((submitted, job_id))
    grace = timedelta(seconds=settings.SKYDECK_LAUNCH_GRACE)
    for launch in sorted(pending, key=lambda p: p.created_at):
        if launch.job_id is None:
            found = sorted(
                c for c in candidates[launch.experiment_name]
                if c[0] >= launch.created_at - timedelta(minutes=2) and c[1] not in claimed
            )  # fmt: skip
            if found:
                launch.job_id = found[0][1]
                claimed.add(launch.job_id)
                listed.add(launch.job_id)
        if launch.job_id is not None and launch.job_id in listed:
            launch.status = LaunchStatus.LISTED
        elif now - launch.created_at > grace:
            launch.status = LaunchStatus.LOST
            services.record(
                ACTOR,
                Operation.LAUNCH,
                experiment=launch.experiment,
                experiment_name=launch.experiment_name,
                job_id=launch.job_id,
                success=False,
                message=f"the launch never appeared in the job list within {_humanize(grace.total_seconds())}",
            )
        else:
            continue
        launch.save(update_fields=["status", "job_id", "updated_at"])


def plan(now: datetime | None = None) -> list[Action]:
    """What a pass would do, from the stored facts (a constant number of queries)."""
    now = now or timezone.now()
    experiments = list(Experiment.objects.order_by("name"))
    names = [e.name for e in experiments]
    active: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for job_id, name, status in (
        Job.objects.active()
        .filter(experiment_id__in=names)
        .values_list("id", "experiment_id", "status")
    ):
        active[name].append((job_id, status))
    pending = set(
        Launch.objects.filter(status__in=PENDING).values_list("experiment_name", flat=True)
    )
    running = [e for e in experiments if e.desired_state == DesiredState.RUNNING]
    since = min((e.desired_changed_at for e in running if e.desired_changed_at), default=None)
    # (time it ended, status, description, time it started) per experiment
    history: dict[str, list[tuple[datetime, str, str, datetime]]] = defaultdict(list)
    if running:
        jobs = Job.objects.filter(experiment_id__in=[e.name for e in running]).exclude(
            status__in=JobStatus.active()
        )
        launches = Launch.objects.filter(
            experiment_name__in=[e.name for e in running], status=LaunchStatus.FAILED
        )
        if since is not None:
            jobs = jobs.filter(submitted_at__gte=since)
            launches = launches.filter(updated_at__gte=since)
        for name, status, submitted, ended, job_id in jobs.values_list(
            "experiment_id", "status", "submitted_at", "ended_at", "id"
        ):
            started = submitted or ended or now
            history[name].append((ended or started, status, f"job {job_id} {status}", started))
        for name, when, message in launches.values_list(
            "experiment_name", "updated_at", "error_message"
        ):
            history[name].append((when, "LAUNCH_FAILED", f"launch failed: {message[:200]}", when))

    actions: list[Action] = []
    launches_left = settings.SKYDECK_RECONCILE_MAX_LAUNCHES
    for experiment in experiments:
        jobs_now = active.get(experiment.name, [])
        if experiment.desired_state == DesiredState.STOPPED:
            to_cancel = sorted(j for j, s in jobs_now if s != JobStatus.CANCELLING)
            if to_cancel:
                actions.append(Action("cancel", experiment, job_ids=to_cancel))
            continue
        if jobs_now or experiment.name in pending:
            continue
        events = sorted(
            (
                e
                for e in history.get(experiment.name, [])
                if experiment.desired_changed_at is None or e[3] >= experiment.desired_changed_at
            ),
            key=lambda e: e[0],
            reverse=True,
        )
        if events and events[0][1] == JobStatus.SUCCEEDED:
            actions.append(Action("complete", experiment, reason=events[0][2]))
            continue
        failures = 0
        for _, status, _, _ in events:
            if status == "LAUNCH_FAILED" or status in JobStatus.failed():
                failures += 1
            else:
                break
        if failures >= settings.SKYDECK_MAX_CONSECUTIVE_FAILURES:
            reason = f"crash-looping: {failures} consecutive failures (last: {events[0][2]})"
            actions.append(Action("park", experiment, reason=reason))
            continue
        if failures:
            until = events[0][0] + timedelta(seconds=backoff_seconds(failures))
            if now < until:
                left = _humanize((until - now).total_seconds())
                reason = f"backing off {left} after {failures} failure{'s' if failures > 1 else ''}"
                actions.append(Action("wait", experiment, reason=reason))
                continue
        if launches_left <= 0:
            actions.append(Action("wait", experiment, reason="launch cap for this pass reached"))
            continue
        launches_left -= 1
        actions.append(Action("launch", experiment))
    return actions


def _launch_env() -> dict[str, str]:
    user = settings.SKYDECK_LAUNCH_USER
    return {
        "SKYPILOT_USER": user,
        "SKYPILOT_USER_ID": hashlib.sha256(user.encode()).hexdigest()[:8],
    }


def _do_launch(client: SkyPilotClient, action: Action) -> str:
    experiment = action.experiment
    try:
        task_yaml = build_task_yaml(experiment)
    except (LaunchConfigError, ImproperlyConfigured) as exc:
        Launch.objects.create(
            experiment=experiment,
            experiment_name=experiment.name,
            status=LaunchStatus.FAILED,
            task_yaml="",
            error_type=type(exc).__name__,
            error_message=str(exc),
        )
        services.record(
            ACTOR, Operation.LAUNCH, experiment=experiment, success=False, message=str(exc)
        )
        return f"launch {experiment.name} FAILED: {exc}"
    # Recorded and committed before the request: from here on this launch counts as active.
    launch = Launch.objects.create(
        experiment=experiment,
        experiment_name=experiment.name,
        status=LaunchStatus.SUBMITTING,
        task_yaml=task_yaml,
    )
    try:
        job_id = client.launch(task_yaml, env_vars=_launch_env())
    except ServerUnavailable as exc:
        # The server may have created the job anyway: keep the launch pending until it is
        # listed or the grace period ends; never retry blindly.
        launch.error_type, launch.error_message = type(exc).__name__, str(exc)
        launch.save(update_fields=["error_type", "error_message", "updated_at"])
        services.record(
            ACTOR, Operation.LAUNCH, experiment=experiment, success=False,
            message=f"no answer, waiting to see whether the job appears: {exc}",
        )  # fmt: skip
        return f"launch {experiment.name} UNCERTAIN: {exc}"
    except SkyPilotError as exc:
        error_type = exc.error_type if isinstance(exc, RequestFailed) else type(exc).__name__
        launch.status = LaunchStatus.FAILED
        launch.error_type, launch.error_message = error_type, str(exc)
        launch.save(update_fields=["status", "error_type", "error_message", "updated_at"])
        services.record(
            ACTOR, Operation.LAUNCH, experiment=experiment, success=False, message=str(exc)
        )
        return f"launch {experiment.name} FAILED: {exc}"
    launch.status, launch.job_id = LaunchStatus.SUBMITTED, job_id
    launch.save(update_fields=["status", "job_id", "updated_at"])
    services.record(
        ACTOR,
        Operation.LAUNCH,
        experiment=experiment,
        job_id=job_id,
        message=f"launched job {job_id}",
    )
    Experiment.objects.filter(pk=experiment.pk).update(reconcile_note=f"launched job {job_id}")
    return f"launched {experiment.name}: job {job_id}"


def _do_cancel(client: SkyPilotClient, action: Action) -> str:
    experiment, ids = action.experiment, action.job_ids
    try:
        client.cancel(ids)
    except SkyPilotError as exc:
        for job_id in ids:
            services.record(
                ACTOR, Operation.CANCEL, experiment=experiment, job_id=job_id, success=False,
                message=str(exc),
            )  # fmt: skip
        return f"cancel {experiment.name} FAILED: {exc}"
    for job_id in ids:
        services.record(
            ACTOR, Operation.CANCEL, experiment=experiment, job_id=job_id,
            message="desired state is STOPPED",
        )  # fmt: skip
    return f"cancelled {action.describe()[len('cancel ') :]}"


def _stop(action: Action, operation: str, *, parked: bool) -> str:
    experiment = action.experiment
    with transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(
            desired_state=DesiredState.STOPPED,
            desired_changed_at=timezone.now(),
            parked_reason=action.reason if parked else "",
            reconcile_note=action.reason,
            updated_at=timezone.now(),
        )
        services.record(ACTOR, operation, experiment=experiment, message=action.reason)
    return action.describe()


def _note_wait(action: Action) -> str:
    """Record a wait; the operation log gets one row per backoff, not one per pass."""
    experiment = action.experiment
    stable = action.reason.split(" after ", 1)[-1]
    if not experiment.reconcile_note.endswith(stable) or not experiment.reconcile_note.startswith(
        "backing off"
    ):
        services.record(ACTOR, Operation.BACKOFF, experiment=experiment, message=action.reason)
    Experiment.objects.filter(pk=experiment.pk).update(reconcile_note=action.reason)
    return action.describe()


def execute(actions: list[Action], client: SkyPilotClient) -> list[str]:
    done = []
    for action in actions:
        if action.kind == "launch":
            done.append(_do_launch(client, action))
        elif action.kind == "cancel":
            done.append(_do_cancel(client, action))
        elif action.kind == "park":
            done.append(_stop(action, Operation.PARK, parked=True))
        elif action.kind == "complete":
            done.append(_stop(action, Operation.COMPLETE, parked=False))
        elif action.kind == "wait":
            done.append(_note_wait(action))
    return done


def reconcile(
    *, dry_run: bool = False, client: SkyPilotClient | None = None, now: datetime | None = None
) -> ReconcileResult:
    """One reconcile pass on the stored facts, which must come from a fresh successful sync."""
    now = now or timezone.now()
    mode = "dry-run" if dry_run else "on"
    age = listing_age(now)
    if age is None:
        return ReconcileResult(
            mode, skipped="the last SkyPilot sync failed: not acting on old facts"
        )
    if age > settings.SKYDECK_SYNC_SKYPILOT_INTERVAL:
        return ReconcileResult(mode, skipped=f"the job listing is {_humanize(age)} old")
    try:
        with lease(SyncSource.RECONCILER, ttl=settings.Q_CLUSTER["timeout"]):
            if not dry_run:
                settle_launches(now)
            actions = plan(now)
            result = ReconcileResult(mode, actions=actions)
            if dry_run:
                for action in actions:
                    logger.info("reconcile plan: %s", action.describe())
                return result
            if any(a.kind in {"launch", "cancel"} for a in actions):
                client = client or SkyPilotClient.from_settings()
            result.done = execute(actions, client)
            return result
    except LeaseHeld as exc:
        return ReconcileResult(mode, skipped=str(exc))


def sync_and_reconcile(*, dry_run: bool = False) -> tuple[str, ReconcileResult | None]:
    """The scheduled pass: sync jobs, then reconcile on success, as ``SKYDECK_RECONCILE`` allows.

    Returns the sync summary and the reconcile result (None when the sync did not succeed).
    """
    from syncing.runner import run_sync

    outcome = run_sync(SyncSource.SKYPILOT)
    if not outcome.ok or outcome.skipped:
        return outcome.summary(), None
    mode = settings.SKYDECK_RECONCILE
    if mode == "off" and not dry_run:
        return outcome.summary(), ReconcileResult("off", skipped="SKYDECK_RECONCILE is off")
    return outcome.summary(), reconcile(dry_run=dry_run or mode == "dry-run")
