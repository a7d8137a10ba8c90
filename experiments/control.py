"""A person's Start, Stop and Adopt: what each will launch or cancel, shown before it happens.

The SkyPilot server is shared with people who never open SkyDeck, and their jobs may carry an
experiment's name. So SkyDeck tells apart the jobs it *owns* (it launched them, or a person adopted
them: a ``Launch`` row carries the job id) from everyone else's:

- a reconcile pass only ever cancels owned jobs;
- a person's Stop cancels the experiment's active jobs whoever launched them, and says which first;
- Start shows the GPUs it will request, and never launches over someone's active job of that name;
- Adopt makes someone's active job the experiment's current run (desired RUNNING, owned).

Everything here reads and writes the database only; ``syncing.services`` sends the cancels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from experiments import services
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

#: Launch states that count as an active job until the job is listed.
PENDING = (LaunchStatus.SUBMITTING, LaunchStatus.SUBMITTED)
TIMES = "\u00d7"


# --- the reconciler's mode ---------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcilerMode:
    """on / dry-run / off (the SKYDECK_RECONCILE setting) or paused (after a restore)."""

    mode: str
    why: str
    paused: dict[str, Any] | None = None

    @property
    def acts(self) -> bool:
        return self.mode == "on"


def reconciler_mode() -> ReconcilerMode:
    """The mode in force now: the setting, unless a restore paused the reconciler."""
    setting = settings.SKYDECK_RECONCILE
    state = SyncState.objects.filter(source=SyncSource.RECONCILER).only("cursor").first()
    paused = (state.cursor or {}).get("paused") if state is not None else None
    if setting == "off":
        return ReconcilerMode(
            "off", "SKYDECK_RECONCILE is off: nothing is launched or cancelled by itself", paused
        )
    if paused:
        return ReconcilerMode(
            "paused",
            f"paused since {paused.get('reason', 'a restore')}: resume it to act",
            paused,
        )
    if setting == "dry-run":
        return ReconcilerMode("dry-run", "SKYDECK_RECONCILE is dry-run: it only plans")
    return ReconcilerMode("on", "the reconciler launches and cancels to match desired states")


def pause_reconciler(actor: services.Actor, reason: str) -> None:
    """Stop every pass from acting until a person resumes it (a restore does this)."""
    with transaction.atomic():
        state, _ = SyncState.objects.select_for_update().get_or_create(source=SyncSource.RECONCILER)
        cursor = dict(state.cursor or {})
        cursor["paused"] = {
            "at": timezone.now().isoformat(timespec="seconds"),
            "by": services.actor_name(actor),
            "reason": reason,
        }
        SyncState.objects.filter(pk=state.pk).update(cursor=cursor)
        services.record(actor, Operation.PAUSE, message=f"reconciler paused: {reason}")


@services.writes
def resume_reconciler(actor: services.Actor) -> bool:
    """Let passes act again; False when it was not paused."""
    with transaction.atomic():
        state = SyncState.objects.select_for_update().filter(source=SyncSource.RECONCILER).first()
        cursor = dict(state.cursor or {}) if state is not None else {}
        paused = cursor.pop("paused", None)
        if not paused:
            return False
        SyncState.objects.filter(pk=state.pk).update(cursor=cursor)
        services.record(
            actor,
            Operation.RESUME,
            message=f"reconciler resumed (paused since {paused.get('reason', '?')})",
        )
    return True


# --- jobs under an experiment's name -----------------------------------------------------------


@dataclass(frozen=True)
class JobRef:
    id: int
    status: str
    user_name: str
    owned: bool

    @property
    def label(self) -> str:
        return f"{self.id} ({self.user_name or 'unknown user'})"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "user": self.user_name, "owned": self.owned}


def owned_exists() -> Exists:
    """``Exists`` for "SkyDeck answers for this job" (a launch or adoption carries its id).

    The launch must belong to the experiment that now has the job's name: when an experiment
    is deleted its jobs stay, as orphans (its launches keep their name, without the experiment),
    and an experiment created later under that name does not inherit them — otherwise a pass
    would cancel the old run as soon as someone re-creates the name (creating never cancels).
    """
    return Exists(
        Launch.objects.filter(job_id=OuterRef("id"), experiment__name=OuterRef("experiment_id"))
    )


def active_jobs(names: Iterable[str]) -> dict[str, list[JobRef]]:
    """Active jobs per experiment name, oldest first, with their owner (one query)."""
    names = list(set(names))
    found: dict[str, list[JobRef]] = defaultdict(list)
    if not names:
        return found
    rows = (
        Job.objects.active()
        .filter(experiment_id__in=names)
        .annotate(owned=owned_exists())
        .order_by("id")
        .values_list("id", "experiment_id", "status", "user_name", "owned")
    )
    for job_id, name, status, user, owned in rows:
        found[name].append(JobRef(job_id, status, user, bool(owned)))
    return found


def pending_launch_names(names: Iterable[str]) -> set[str]:
    names = list(set(names))
    if not names:
        return set()
    return set(
        Launch.objects.filter(status__in=PENDING, experiment_name__in=names).values_list(
            "experiment_name", flat=True
        )
    )


def describe_jobs(jobs: Sequence[JobRef]) -> str:
    """``job 4398 (dave)`` / ``jobs 4398 (dave), 4404 (alice)``."""
    return f"job{'s' if len(jobs) != 1 else ''} " + ", ".join(j.label for j in jobs)


def users_notice(jobs: Sequence[JobRef]) -> str:
    """``2 active jobs by dave already use this name`` (for the create dialog and the API)."""
    users = sorted({j.user_name or "an unknown user" for j in jobs})
    count = len(jobs)
    noun = "active job" if count == 1 else "active jobs"
    verb = "uses" if count == 1 else "use"
    return f"{count} {noun} by {', '.join(users)} already {verb} this name ({describe_jobs(jobs)})"


# --- plans --------------------------------------------------------------------------------------


@dataclass
class ItemPlan:
    """What Start/Stop/Adopt does to one experiment."""

    experiment: Experiment
    changes: bool = False  # the desired state changes
    launches: bool = False  # start: a launch will be requested
    cancel: list[JobRef] = field(default_factory=list)  # stop: jobs it cancels
    adopt: list[JobRef] = field(default_factory=list)  # adopt: jobs it takes over
    blocked_by: list[JobRef] = field(default_factory=list)  # start: someone else's active jobs
    pending_launch: bool = False
    note: str = ""

    @property
    def gpus(self) -> int:
        return self.experiment.nodes * self.experiment.gpus if self.launches else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.experiment.pk,
            "name": self.experiment.name,
            "changes_desired_state": self.changes,
            "launches": self.launches,
            "nodes": self.experiment.nodes if self.launches else 0,
            "gpus": self.gpus,
            "cancel_jobs": [j.as_dict() for j in self.cancel],
            "adopt_jobs": [j.as_dict() for j in self.adopt],
            "blocked_by": [j.as_dict() for j in self.blocked_by],
            "note": self.note,
        }


@dataclass
class Plan:
    action: str  # start, stop, adopt
    items: list[ItemPlan]
    mode: ReconcilerMode
    dry_run: bool = True

    @property
    def cancel_jobs(self) -> list[JobRef]:
        return [job for item in self.items for job in item.cancel]

    @property
    def gpus(self) -> int:
        return sum(item.gpus for item in self.items)

    def spend(self) -> str:
        """``40 nodes x 8 H100 = 320 GPUs`` (with a multiplication sign) for what Start requests."""
        shapes: dict[tuple[int, str], int] = defaultdict(int)
        for item in self.items:
            if item.launches:
                e = item.experiment
                shapes[(e.gpus, e.accelerator or settings.SKYDECK_DEFAULT_ACCELERATOR)] += e.nodes
        parts = []
        for (gpus, accelerator), nodes in sorted(shapes.items(), key=lambda s: (-s[0][0], s[0][1])):
            node_word = "node" if nodes == 1 else "nodes"
            if gpus:
                parts.append(f"{nodes} {node_word} {TIMES} {gpus} {accelerator or 'GPU'}".rstrip())
            else:
                parts.append(f"{nodes} CPU {node_word}")
        if not parts:
            return "nothing to launch"
        return f"{' + '.join(parts)} = {self.gpus} GPU{'s' if self.gpus != 1 else ''}"

    def summary(self) -> str:
        count = len(self.items)
        what = self.items[0].experiment.name if count == 1 else f"{count} experiments"
        if self.action == "start":
            launching = sum(1 for i in self.items if i.launches)
            text = f"Start {what}: {self.spend()}"
            extra = []
            if launching and launching != count:
                extra.append(f"{launching} of {count} launch")
            blocked = [i for i in self.items if i.blocked_by]
            if blocked:
                extra.append(
                    f"{len(blocked)} wait{'s' if len(blocked) == 1 else ''} for active jobs "
                    "SkyDeck did not launch"
                )
            if extra:
                text += f" ({'; '.join(extra)})"
            if not self.mode.acts and launching:
                text += f". Reconciler {self.mode.mode}: nothing launches until it is on"
            return text
        if self.action == "stop":
            jobs = self.cancel_jobs
            pending = sum(1 for i in self.items if i.pending_launch)
            text = f"Stop {what}: " + (
                f"cancels {describe_jobs(jobs)}" if jobs else "no active job to cancel"
            )
            if pending:
                text += f"; {pending} launch{'es' if pending > 1 else ''} in flight cancelled when listed"
            return text
        jobs = [job for item in self.items for job in item.adopt]
        return (
            f"Adopt {describe_jobs(jobs)} as {what}'s current run"
            if jobs
            else f"{what}: nothing to adopt"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "summary": self.summary(),
            "reconciler": self.mode.mode,
            "nodes": sum(i.experiment.nodes for i in self.items if i.launches),
            "gpus": self.gpus,
            "cancel_jobs": [j.as_dict() for j in self.cancel_jobs],
            "items": [item.as_dict() for item in self.items],
        }


def start_plan(experiments: Sequence[Experiment]) -> Plan:
    """What Start would do: which experiments launch, the GPUs they request, what blocks them."""
    names = [e.name for e in experiments]
    active = active_jobs(names)
    pending = pending_launch_names(names)
    items = []
    for e in experiments:
        jobs = active.get(e.name, [])
        item = ItemPlan(e, changes=e.desired_state != DesiredState.RUNNING)
        foreign = [j for j in jobs if not j.owned]
        if foreign:
            one = len(foreign) == 1
            item.blocked_by = foreign
            item.note = (
                f"{users_notice(foreign)}: SkyDeck will not launch a second job over "
                f"{'it' if one else 'them'}; Adopt {'it' if one else 'them'}, or it launches "
                f"once {'it ends' if one else 'they end'}"
            )
        elif jobs:
            item.note = f"its {describe_jobs(jobs)} is still active"
        elif e.name in pending:
            item.note = "a launch is already in flight"
        elif not item.changes:
            item.note = "already desired RUNNING"
        else:
            item.launches = True
        items.append(item)
    _note_budgets([item for item in items if item.launches])
    return Plan("start", items, reconciler_mode())


def _note_budgets(items: list[ItemPlan]) -> None:
    """A launch into a group past 80 % of its budget says so before it spends (one query when
    no group of theirs has a budget)."""
    if not items:
        return
    from experiments import budgets  # it reads usage; control is read by the services

    found = budgets.for_experiments([item.experiment.pk for item in items])
    for item in items:
        notes = []
        for status in found.get(item.experiment.pk, []):
            if status.level == budgets.OK:
                continue
            over = "over budget" if status.level == budgets.EXCEEDED else "budget"
            notes.append(f"{over}: {status.describe()}")
        if notes:
            item.note = "; ".join(notes)


def stop_plan(experiments: Sequence[Experiment], job_ids: Iterable[int] | None = None) -> Plan:
    """What Stop would do: the active jobs it cancels, whoever launched them.

    ``job_ids`` (the jobs a confirmation showed) limits the cancels to those: a job that
    appeared after the person confirmed is not cancelled behind their back.
    """
    names = [e.name for e in experiments]
    active = active_jobs(names)
    pending = pending_launch_names(names)
    shown = None if job_ids is None else set(job_ids)
    items = []
    for e in experiments:
        jobs = [j for j in active.get(e.name, []) if j.status != JobStatus.CANCELLING]
        item = ItemPlan(e, changes=e.desired_state != DesiredState.STOPPED)
        item.cancel = jobs if shown is None else [j for j in jobs if j.id in shown]
        unshown = [j for j in jobs if j not in item.cancel]
        item.pending_launch = e.name in pending
        if unshown:
            item.note = (
                f"{describe_jobs(unshown)} appeared after the confirmation and "
                f"{'is' if len(unshown) == 1 else 'are'} not cancelled: Stop again to cancel"
            )
        items.append(item)
    return Plan("stop", items, reconciler_mode())


def adopt_plan(experiment: Experiment) -> Plan:
    jobs = [j for j in active_jobs([experiment.name]).get(experiment.name, []) if not j.owned]
    item = ItemPlan(
        experiment, changes=experiment.desired_state != DesiredState.RUNNING, adopt=jobs
    )
    if not jobs:
        item.note = "no active job SkyDeck did not launch uses this name"
    return Plan("adopt", [item], reconciler_mode())


# --- acting (database only) -------------------------------------------------------------------


@services.writes
def start(actor: services.Actor, experiments: Sequence[Experiment]) -> Plan:
    """Desired RUNNING; the reconciler launches what the plan says on its next pass."""
    plan = start_plan(experiments)
    plan.dry_run = False
    services.set_desired_state(actor, experiments, DesiredState.RUNNING, plans=plan)
    return plan


@services.writes
def stop(
    actor: services.Actor, experiments: Sequence[Experiment], job_ids: Iterable[int] | None = None
) -> Plan:
    """Desired STOPPED, and the plan of jobs to cancel (``syncing.services.stop`` sends them)."""
    plan = stop_plan(experiments, job_ids)
    plan.dry_run = False
    services.set_desired_state(actor, experiments, DesiredState.STOPPED, plans=plan)
    return plan


@services.writes
def adopt(actor: services.Actor, experiment: Experiment) -> Plan:
    """Make the active jobs under the experiment's name SkyDeck's own, as its current run.

    The experiment becomes desired RUNNING without a launch: the adopted job *is* the run, so
    when it ends the usual rules apply (SUCCEEDED completes it; failures back off).
    """
    with transaction.atomic():
        locked = Experiment.objects.select_for_update().filter(pk=experiment.pk).first()
        if locked is None:
            raise ValidationError({"experiment": "It was deleted meanwhile."})
        plan = adopt_plan(locked)
        plan.dry_run = False
        jobs = plan.items[0].adopt
        if not jobs:
            raise ValidationError(
                {
                    "experiment": f"Nothing to adopt: no active job SkyDeck did not launch uses {locked.name}."
                }
            )
        services.set_desired(locked, DesiredState.RUNNING)
        name = services.actor_name(actor)
        for job in jobs:
            Launch.objects.create(
                experiment=locked,
                experiment_name=locked.name,
                status=LaunchStatus.ADOPTED,
                job_id=job.id,
                requested_by=name[:150],
                node=settings.SKYDECK_NODE_ID,
            )
            services.record(
                actor,
                Operation.ADOPT,
                experiment=locked,
                job_id=job.id,
                message=f"adopted job {job.label} ({job.status}) as its current run; desired RUNNING",
            )
    experiment.refresh_from_db()
    return plan
