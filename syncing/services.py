"""The only door from the web UI, the API and the admin to the outside world.

Views import this module, never ``syncing.skypilot``, ``syncing.s3`` or the syncers; its one
error type for "SkyPilot did not answer or refused" is :class:`SkyPilotError` (views map it to a
message, the API to 502).

* A person's acts: Start, Stop, Adopt and Cancel act on any job they name, whoever launched it,
  after showing what they will do (``dry_run``). The database part lives in
  ``experiments.control``; this module adds the one thing it must not do: talk to SkyPilot. The
  cancel request is sent after the transaction that recorded the Stop has committed.
* :func:`cancel_jobs` is the one cancel: the reconciler's cancels of owned jobs go through it
  too, so each job's outcome lands in the operation log the same way, with its id and user.
* :func:`request_sync` queues sync passes for the worker; the health report and job logs are
  re-exported from ``syncing.health`` and ``syncing.joblogs``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from experiments import control, services
from experiments.control import JobRef, Plan
from experiments.models import DesiredState, Experiment, Job, Operation, SyncSource, SyncState
from syncing import joblogs, runner
from syncing.health import (
    SCHEDULER_WAKE_SECONDS,
    health_report,
    recent_health_report,
    sync_status,
)
from syncing.joblogs import (
    DEFAULT_TAIL,
    MAX_TAIL,
    TAIL_CHOICES,
    JobLogError,
    NoLog,
    TooManyStreams,
    UnknownJob,
    parse_follow,
)
from syncing.joblogs import error_message as log_error_message
from syncing.joblogs import open_web_stream as open_log_stream
from syncing.joblogs import plan as log_plan
from syncing.joblogs import streaming_response as log_response
from syncing.joblogs import web_tail_text as log_tail_text
from syncing.notifications import delete_destinations, mask_url, save_destination
from syncing.notifications import send_test as send_test_notification
from syncing.skypilot import SkyPilotClient, SkyPilotError

#: Re-exported for the views: health (``syncing.health``), job logs (``syncing.joblogs``), the
#: admin's webhook destinations (``syncing.notifications``) and the one error type of SkyPilot's
#: answers.
__all__ = [
    "DEFAULT_TAIL",
    "MAX_TAIL",
    "SCHEDULER_WAKE_SECONDS",
    "TAIL_CHOICES",
    "JobLogError",
    "NoLog",
    "SkyPilotError",
    "TooManyStreams",
    "UnknownJob",
    "delete_destinations",
    "health_report",
    "log_error_message",
    "log_plan",
    "log_response",
    "log_tail_text",
    "mask_url",
    "open_full_log",
    "open_log_stream",
    "parse_follow",
    "recent_health_report",
    "save_destination",
    "send_test_notification",
    "sync_status",
]

logger = logging.getLogger(__name__)


def open_full_log(job_id: int) -> joblogs.LogStream:
    """A job's whole log, not followed and with no tail limit, for /jobs/<id>/logs/download.

    Like every web log read it takes one of SKYDECK_LOG_STREAMS_MAX slots (TooManyStreams
    when none is free; ``close()`` gives it back) and reads with the web client's short
    timeouts. UnknownJob for a job SkyDeck has not synced. SkyPilot takes ``tail: null`` as
    "the whole log" (/work/shared/docs/skypilot-api.md, ``POST /jobs/logs``).
    """
    log_plan = replace(joblogs.plan(job_id, follow=False), tail=None)
    return joblogs.open_web_stream(log_plan)


class CancelFailed(SkyPilotError):
    """SkyPilot did not take the cancel request (the message says why; nothing was retried).

    A SkyPilotError like every other refusal, so a door that maps that one type is complete.
    """


@dataclass
class StopResult:
    plan: Plan
    cancelled: list[JobRef] = field(default_factory=list)
    error: str = ""  # why SkyPilot did not take the cancel request

    def as_dict(self) -> dict[str, Any]:
        data = self.plan.as_dict()
        data["cancelled_jobs"] = [j.id for j in self.cancelled]
        data["cancel_error"] = self.error
        return data


def cancel_jobs(
    actor: services.Actor,
    jobs: Sequence[JobRef],
    experiments: dict[str, Experiment],
    names: dict[int, str],
    why: str,
    *,
    client: SkyPilotClient | None = None,
) -> str:
    """Cancel ``jobs`` in one request; log each job's outcome. Returns the error ("" if none).

    ``names`` maps job ids to experiment names, ``experiments`` names to experiments (a job of
    no experiment is logged by its name alone). Nothing is retried: the caller decides.
    """
    if not jobs:
        return ""
    try:
        (client or SkyPilotClient.from_settings()).cancel([j.id for j in jobs])
    except SkyPilotError as exc:
        error = str(exc)[:2000]
        logger.warning("cancel of jobs %s failed: %s", [j.id for j in jobs], error)
        for job in jobs:
            name = names.get(job.id, "")
            services.record(
                actor, Operation.CANCEL, experiment=experiments.get(name), experiment_name=name,
                job_id=job.id, success=False, message=f"cancel of job {job.label} failed: {error}",
            )  # fmt: skip
        return error
    for job in jobs:
        name = names.get(job.id, "")
        owner = "launched by SkyDeck" if job.owned else "not launched by SkyDeck"
        services.record(
            actor, Operation.CANCEL, experiment=experiments.get(name), experiment_name=name,
            job_id=job.id, message=f"cancelled job {job.label} ({job.status}, {owner}): {why}",
        )  # fmt: skip
    return ""


def start(
    actor: services.Actor, experiments: Sequence[Experiment], *, dry_run: bool = False
) -> Plan:
    """Desired RUNNING (the reconciler launches on its next pass); ``dry_run`` only plans."""
    if dry_run:
        return control.start_plan(experiments)
    return control.start(actor, experiments)


def stop(
    actor: services.Actor,
    experiments: Sequence[Experiment],
    *,
    job_ids: Iterable[int] | None = None,
    dry_run: bool = False,
) -> StopResult:
    """Desired STOPPED, and cancel the experiments' active jobs whoever launched them.

    ``job_ids`` limits the cancels to the jobs a confirmation listed. Stop on an experiment that
    is already desired STOPPED still cancels its active jobs: it is a request, not a no-op.
    """
    if dry_run:
        return StopResult(control.stop_plan(experiments, job_ids))
    return cancel_planned(actor, control.stop(actor, experiments, job_ids))


def cancel_planned(actor: services.Actor, plan: Plan) -> StopResult:
    """Send the cancels of a Stop whose database part (``control.stop``) has committed."""
    jobs = plan.cancel_jobs
    by_name = {item.experiment.name: item.experiment for item in plan.items}
    names = {job.id: item.experiment.name for item in plan.items for job in item.cancel}
    error = cancel_jobs(actor, jobs, by_name, names, f"{services.actor_name(actor)} stopped it")
    return StopResult(plan, cancelled=[] if error else list(jobs), error=error)


def adopt(actor: services.Actor, experiment: Experiment, *, dry_run: bool = False) -> Plan:
    """Make someone's active jobs under the experiment's name its current run."""
    if dry_run:
        return control.adopt_plan(experiment)
    return control.adopt(actor, experiment)


@services.writes
def cancel_job(actor: services.Actor, job: Job) -> str:
    """Cancel one job (any user's: a person asked). Returns a warning, or raises CancelFailed.

    The warning says when the job's experiment is still desired RUNNING: with the job gone,
    the reconciler launches the experiment again.
    """
    experiment = (
        Experiment.objects.filter(name=job.experiment_id).first() if job.experiment_id else None
    )
    owned = Job.objects.filter(pk=job.pk).filter(control.owned_exists()).exists()
    target = JobRef(job.id, job.status, job.user_name, owned)
    name = job.experiment_id or job.job_name or ""
    error = cancel_jobs(
        actor,
        [target],
        {name: experiment} if experiment is not None else {},
        {job.id: name},
        f"{services.actor_name(actor)} cancelled it",
    )
    if error:
        raise CancelFailed(f"SkyPilot could not cancel job {job.id}: {error}")
    if experiment is not None and experiment.desired_state == DesiredState.RUNNING:
        return (
            f"Experiment {experiment.name} is still desired RUNNING: the reconciler will "
            "launch it again. Stop the experiment to end it for good."
        )
    return ""


#: What ``request_sync`` queues for each source (the same tasks the schedules run).
SYNC_TASKS = {
    SyncSource.SKYPILOT: "syncing.tasks.sync_jobs_and_reconcile",
    SyncSource.S3: "syncing.tasks.sync_s3",
}


class SyncUnavailable(ValueError):
    """A source that is not configured here (no endpoint or bucket)."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        super().__init__(f"Not available here: {', '.join(self.missing)}.")


def available_sources() -> list[str]:
    """The sources configured here (SkyPilot endpoint, S3 bucket), in sync order."""

    return list(runner.available_sources())


def request_sync(
    actor: services.Actor, sources: Sequence[str] | None = None, *, via: str = "the API"
) -> list[dict[str, str]]:
    """Queue one pass of each source (default: every available one) for the worker.

    Returns ``[{"source", "task_id"}]``; raises SyncUnavailable naming sources not set up here.
    The SkyPilot pass also reconciles (unless the reconciler is off).
    """
    from django_q.tasks import async_task

    available = available_sources()
    wanted = list(dict.fromkeys(sources or available))
    missing = [s for s in wanted if s not in available]
    if missing:
        raise SyncUnavailable(missing)
    tasks = []
    for source in wanted:
        task_id = async_task(SYNC_TASKS[source], task_name=f"api sync {source}")
        tasks.append({"source": source, "task_id": str(task_id)})
    services.record(
        actor, Operation.SYNC, message=f"sync requested via {via}: " + ", ".join(wanted)
    )
    return tasks


def reconciler_status() -> dict[str, Any]:
    """The mode in force and the last pass, for the header pill and ``/api/health``."""

    mode = control.reconciler_mode()
    state = SyncState.objects.filter(source=SyncSource.RECONCILER).first()
    last = None
    if state is not None and state.last_attempt_at is not None:
        last = {
            "at": state.last_attempt_at.isoformat(),
            "ok": not state.last_error
            or bool(state.last_success_at and state.last_success_at >= state.last_attempt_at),
            "skipped": (state.counts or {}).get("skipped", ""),
            "counts": {k: v for k, v in (state.counts or {}).items() if k != "skipped"},
        }
    return {
        "mode": mode.mode,
        "why": mode.why,
        "paused": mode.paused,
        "last_pass": last,
    }
