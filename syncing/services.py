"""The door the web UI, the API, the admin and commands use for a person's acts on SkyPilot.

Start, Stop, Adopt and Cancel are requests by a person, so they act on any job they name —
whoever launched it — after showing what they will do (``dry_run``). The database part lives in
``experiments.control``; this module adds the one thing it must not do: talk to SkyPilot. The
cancel request is sent after the transaction that recorded the Stop has committed, and each job's
outcome lands in the operation log with the job id and its user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments import control, services
from experiments.control import JobRef, Plan
from experiments.models import DesiredState, Experiment, Job, Operation
from syncing.skypilot import SkyPilotClient
from syncing.skypilot import SkyPilotError as SkyPilotError  # the doors catch it from here

logger = logging.getLogger(__name__)


class CancelFailed(Exception):
    """SkyPilot did not take the cancel request (the message says why; nothing was retried)."""


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


def _send_cancel(
    actor: services.Actor,
    jobs: Sequence[JobRef],
    experiments: dict[str, Experiment],
    names: dict[int, str],
    why: str,
) -> str:
    """Cancel ``jobs`` in one request; log each job's outcome. Returns the error ("" if none)."""
    if not jobs:
        return ""
    try:
        SkyPilotClient.from_settings().cancel([j.id for j in jobs])
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
    error = _send_cancel(actor, jobs, by_name, names, f"{services.actor_name(actor)} stopped it")
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
    error = _send_cancel(
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


def reconciler_status() -> dict[str, Any]:
    """The mode in force and the last pass, for the header pill and ``/api/health``."""
    from experiments.models import SyncSource, SyncState

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
