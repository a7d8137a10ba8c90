"""Make SkyPilot match each experiment's desired state, acting only on what SkyDeck owns.

The SkyPilot server is shared: jobs with an experiment's name may belong to people who never
open SkyDeck. A pass therefore acts only on *owned* jobs (a ``Launch`` row carries the job id:
SkyDeck launched it, or a person adopted it). Per experiment:

- desired RUNNING, no active job and no pending launch -> launch (capped per pass); someone
  else's active job under the name blocks the launch (no second job over theirs), visibly;
- desired STOPPED with active *owned* jobs -> cancel them by job id (a person's Stop cancels the
  rest itself: ``syncing.services.stop``);
- the latest owned run since the user's last change SUCCEEDED -> done: desired becomes STOPPED;
- failures are treated by class (``SKYDECK_FAILURE_CLASSES``): a configuration error parks at
  once, no capacity backs off longer without counting towards parking, other failures back off
  exponentially and park after too many in a row.

A launch re-reads its experiment under a row lock, builds the YAML from that row and records the
launch (``Launch``, SUBMITTING, with a token in the task's envs) before the request is sent, so a
person's Stop that lands mid-pass wins, and a crash between "submitted" and "listed" never causes a
second launch. Completion and parking are conditional updates that lose to a person's later
change. Passes hold a lease; no network call happens inside a transaction. In dry-run, off and
paused modes a pass only plans, and each affected experiment's note says what it would do.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from experiments import control, revisions, services
from experiments.control import JobRef
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
from syncing import services as door  # the one cancel, shared with a person's Stop
from syncing.leases import LeaseHeld, lease, restore_in_progress
from syncing.runner import run_sync
from syncing.skypilot import RequestFailed, ServerUnavailable, SkyPilotClient, SkyPilotError

logger = logging.getLogger(__name__)
ACTOR = "reconciler"
PENDING = control.PENDING
#: Notes a non-acting pass writes start with its mode; an acting pass clears them.
MODE_PREFIXES = ("dry-run: ", "off: ", "paused: ")


@dataclass
class Action:
    kind: str  # launch, cancel, wait, park, complete
    experiment: Experiment
    reason: str = ""
    job_ids: list[int] = field(default_factory=list)
    jobs: list[JobRef] = field(default_factory=list)
    logged: bool = False  # a wait that belongs in the operation log (a backoff)

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

    def would(self) -> str:
        """The note a non-acting pass leaves: what it would do."""
        if self.kind == "launch":
            e = self.experiment
            gpus = f" ({e.nodes} x {e.gpus} {e.accelerator or 'GPU'})" if e.gpus else ""
            return f"would launch{gpus}"
        if self.kind == "cancel":
            return f"would cancel {control.describe_jobs(self.jobs)}"
        if self.kind == "park":
            return f"would park: {self.reason}"
        if self.kind == "complete":
            return f"would mark done: {self.reason}"
        return self.reason


@dataclass
class ReconcileResult:
    mode: str  # on, dry-run, off, paused
    actions: list[Action] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    skipped: str = ""
    why: str = ""  # why a non-acting mode is in force

    @property
    def acted(self) -> bool:
        return self.mode == "on" and not self.skipped

    def header(self) -> str:
        """What ``skydeck reconcile`` says first when the pass only plans."""
        if self.mode == "on":
            return ""
        return f"reconciler {self.mode}: {self.why or 'only a plan'}; nothing was sent to SkyPilot"

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"reconcile skipped: {self.skipped}"]
        if self.mode != "on":
            return [f"plan: {a.describe()}" for a in self.actions] or ["plan: nothing to do"]
        return self.done or ["nothing to do"]

    def counts(self) -> dict[str, object]:
        kinds = defaultdict(int)
        for action in self.actions:
            kinds[action.kind] += 1
        data: dict[str, object] = {
            "mode": self.mode,
            **{f"planned_{k}": v for k, v in kinds.items()},
        }
        if self.skipped:
            data["skipped"] = self.skipped
        if self.acted:
            data["launched"] = sum(1 for d in self.done if d.startswith("launched "))
            data["cancelled"] = sum(1 for d in self.done if d.startswith("cancelled "))
        return data


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


def capacity_backoff_seconds(failures: int) -> int:
    """No resources: ten minutes by default, doubling, capped; never leads to parking."""
    if failures <= 0:
        return 0
    return min(
        settings.SKYDECK_CAPACITY_BACKOFF_INITIAL * 2 ** (failures - 1),
        settings.SKYDECK_CAPACITY_BACKOFF_MAX,
    )


def failure_class(status: str) -> str | None:
    """park / capacity / retry for a failed run, None for anything that is not a failure."""
    return settings.SKYDECK_FAILURE_CLASSES.get(status)


def listing_age(now: datetime) -> tuple[float | None, float]:
    """(seconds since the last successful job sync or None when it failed, its duration).

    A sync under way (``sync --loop`` holding the lease) has moved ``last_attempt_at`` on but has
    neither succeeded nor failed yet: the last successful listing is still the freshest one, so
    it counts (otherwise a busy loop would starve the reconciler). Only a failure (which sets
    ``last_error``; a success clears it) means "not acting on old facts".
    """
    state = SyncState.objects.filter(source=SyncSource.SKYPILOT).first()
    if state is None or state.last_success_at is None or state.last_error:
        return None, 0.0
    return (now - state.last_success_at).total_seconds(), float(state.duration or 0.0)


def settle_launches(now: datetime) -> None:
    """Mark launches whose job has been listed, and give up on ones that never appear.

    A launch interrupted before its answer has no job id: its job is the one whose task envs
    carry the launch's token (``SKYDECK_LAUNCH_ID``). Nothing is guessed from names, so a
    colleague's job of the same name is never taken for SkyDeck's.
    """
    pending = list(Launch.objects.filter(status__in=PENDING))
    if not pending:
        return
    listed = set(
        Job.objects.filter(id__in=[p.job_id for p in pending if p.job_id]).values_list(
            "id", flat=True
        )
    )
    tokens = {p.token for p in pending if p.job_id is None and p.token}
    claimed = (
        set(
            Launch.objects.exclude(job_id=None)
            .filter(job_id__in=Job.objects.filter(launch_token__in=tokens).values("id"))
            .values_list("job_id", flat=True)
        )
        if tokens
        else set()
    )
    by_token = {}
    if tokens:
        for job_id, token in Job.objects.filter(launch_token__in=tokens).values_list(
            "id", "launch_token"
        ):
            if job_id not in claimed:
                by_token.setdefault(token, job_id)
    grace = timedelta(seconds=settings.SKYDECK_LAUNCH_GRACE)
    for launch in pending:
        if launch.job_id is None and launch.token in by_token:
            launch.job_id = by_token[launch.token]
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


@dataclass
class _Event:
    when: datetime
    status: str  # a job status, LAUNCH_FAILED or LAUNCH_LOST
    description: str
    reason: str = ""


def _history(running: list[Experiment], now: datetime) -> dict[str, list[_Event]]:
    """Each running experiment's owned runs since its user's last change, newest first.

    Only launches and adoptions count: someone else's job of the same name neither completes
    an experiment nor counts as its failure.
    """
    history: dict[str, list[_Event]] = defaultdict(list)
    if not running:
        return history
    since = {e.name: e.desired_changed_at for e in running}
    launches = list(
        Launch.objects.filter(experiment_name__in=list(since)).values_list(
            "experiment_name", "status", "job_id", "created_at", "updated_at", "error_message"
        )
    )
    launches = [row for row in launches if since[row[0]] is None or row[3] >= since[row[0]]]
    job_ids = [row[2] for row in launches if row[2] is not None]
    jobs = {
        row[0]: row
        for row in Job.objects.filter(id__in=job_ids).values_list(
            "id", "status", "submitted_at", "ended_at", "failure_reason"
        )
    }
    for name, status, job_id, _created, updated, message in launches:
        job = jobs.get(job_id) if job_id is not None else None
        if job is not None:
            _, job_status, submitted, ended, reason = job
            if job_status in JobStatus.active():
                continue
            when = ended or submitted or updated
            history[name].append(_Event(when, job_status, f"job {job_id} {job_status}", reason))
        elif status == LaunchStatus.FAILED:
            history[name].append(
                _Event(updated, "LAUNCH_FAILED", f"launch failed: {message[:200]}", message)
            )
        elif status == LaunchStatus.LOST:
            history[name].append(_Event(updated, "LAUNCH_LOST", "the launch never appeared"))
    for events in history.values():
        events.sort(key=lambda e: e.when, reverse=True)
    return history


def _decide(experiment: Experiment, events: list[_Event], now: datetime) -> Action | None:
    """Complete, park, back off, or None (free to launch), from an experiment's owned runs."""
    # Any success since the user's last change completes it, not only the newest event: an
    # adoption can own several jobs, and one ending after the successful one (its user cancels
    # it) must not turn "done" into a relaunch. (A success always completes at once, so no
    # launch of SkyDeck's can follow one within the same desired-state period.)
    succeeded = next((e for e in events if e.status == JobStatus.SUCCEEDED), None)
    if succeeded is not None:
        return Action("complete", experiment, reason=succeeded.description)
    retry = capacity = 0
    for index, event in enumerate(events):
        kind = failure_class(event.status)
        if kind is None:
            break
        if kind == "park" and index == 0:
            why = (event.reason or "no reason given").strip().splitlines()[0][:300]
            return Action(
                "park",
                experiment,
                reason=f"{event.description}: {why} (a configuration error a retry cannot fix: "
                "fix it, then Start again)",
            )
        if kind == "capacity":
            capacity += 1
        else:
            retry += 1
    if retry >= settings.SKYDECK_MAX_CONSECUTIVE_FAILURES:
        reason = f"crash-looping: {retry} consecutive failures (last: {events[0].description})"
        return Action("park", experiment, reason=reason)
    if not retry and not capacity:
        return None
    newest = failure_class(events[0].status)
    if newest == "capacity":
        until = events[0].when + timedelta(seconds=capacity_backoff_seconds(capacity))
        what = f"no capacity ({capacity} time{'s' if capacity > 1 else ''}, not counted towards parking)"
    else:
        until = events[0].when + timedelta(seconds=backoff_seconds(retry))
        what = f"{retry} failure{'s' if retry > 1 else ''}"
    if now < until:
        left = _humanize((until - now).total_seconds())
        return Action("wait", experiment, reason=f"backing off {left} after {what}", logged=True)
    return None


def plan(now: datetime | None = None) -> list[Action]:
    """What a pass would do, from the stored facts (a constant number of queries)."""
    now = now or timezone.now()
    experiments = list(Experiment.objects.order_by("name"))
    names = [e.name for e in experiments]
    active = control.active_jobs(names)
    pending = control.pending_launch_names(names)
    running = [e for e in experiments if e.desired_state == DesiredState.RUNNING]
    history = _history(running, now)

    actions: list[Action] = []
    launches_left = settings.SKYDECK_RECONCILE_MAX_LAUNCHES
    for experiment in experiments:
        jobs_now = active.get(experiment.name, [])
        owned = [j for j in jobs_now if j.owned]
        if experiment.desired_state == DesiredState.STOPPED:
            to_cancel = [j for j in owned if j.status != JobStatus.CANCELLING]
            if to_cancel:
                actions.append(
                    Action("cancel", experiment, job_ids=[j.id for j in to_cancel], jobs=to_cancel)
                )
            continue
        if owned or experiment.name in pending:
            continue
        foreign = [j for j in jobs_now if not j.owned]
        if foreign:
            one = len(foreign) == 1
            reason = (
                f"not launching: {control.users_notice(foreign)} and SkyDeck did not launch "
                f"{'it' if one else 'them'}; Adopt to make {'it' if one else 'them'} this run, "
                f"or it launches once {'it ends' if one else 'they end'}"
            )
            actions.append(Action("wait", experiment, reason=reason, jobs=foreign))
            continue
        decided = _decide(experiment, history.get(experiment.name, []), now)
        if decided is not None:
            actions.append(decided)
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


def _launch_blocker(experiment: Experiment | None) -> str:
    """Why a launch planned earlier in this pass must not be sent now ("" when it may)."""
    if experiment is None:
        return "the experiment was deleted"
    if experiment.desired_state != DesiredState.RUNNING:
        return f"desired state is now {experiment.desired_state}"
    if Launch.objects.filter(experiment_name=experiment.name, status__in=PENDING).exists():
        return "a launch is already in flight"
    job = Job.objects.active().filter(experiment_id=experiment.name).order_by("id").first()
    if job is not None:
        return f"job {job.id} ({job.user_name or 'unknown user'}) is active under its name"
    return ""


def _do_launch(client: SkyPilotClient, action: Action) -> str:
    name = action.experiment.name
    token = uuid.uuid4().hex
    # Re-read the row under a lock and decide on it: a Stop or an edit that landed since the
    # plan wins, and the YAML is built from what is saved now.
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().filter(pk=action.experiment.pk).first()
        blocker = _launch_blocker(experiment)
        if blocker:
            return f"launch {name} skipped: {blocker}"
        try:
            task_yaml = build_task_yaml(experiment, launch_id=token)
        except (LaunchConfigError, ImproperlyConfigured) as exc:
            Launch.objects.create(
                experiment=experiment,
                experiment_name=experiment.name,
                status=LaunchStatus.FAILED,
                task_yaml="",
                token=token,
                error_type=type(exc).__name__,
                error_message=str(exc),
                node=settings.SKYDECK_NODE_ID,
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
            token=token,
            revision=revisions.latest_revision(experiment),  # the config this job runs
            node=settings.SKYDECK_NODE_ID,
        )
    try:
        job_id = client.launch(task_yaml, env_vars=_launch_env())
    except ServerUnavailable as exc:
        # The server may have created the job anyway: keep the launch pending until it is
        # listed (found by its token) or the grace period ends; never retry blindly.
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
    e = experiment
    shape = f"{e.nodes} node{'s' if e.nodes != 1 else ''}" + (
        f" x {e.gpus} {e.accelerator or settings.SKYDECK_DEFAULT_ACCELERATOR or 'GPU'}"
        if e.gpus
        else " (CPU)"
    )
    services.record(
        ACTOR,
        Operation.LAUNCH,
        experiment=experiment,
        job_id=job_id,
        message=f"launched job {job_id}: {shape}",
    )
    Experiment.objects.filter(pk=experiment.pk).update(reconcile_note=f"launched job {job_id}")
    return f"launched {experiment.name}: job {job_id}"


def _do_cancel(client: SkyPilotClient, action: Action) -> str:
    experiment, ids = action.experiment, action.job_ids
    current = (
        Experiment.objects.filter(pk=experiment.pk).values_list("desired_state", flat=True).first()
    )
    if current is not None and current != DesiredState.STOPPED:
        return f"cancel {experiment.name} skipped: desired state is now {current}"
    error = door.cancel_jobs(
        ACTOR,
        action.jobs,
        {experiment.name: experiment},
        dict.fromkeys(ids, experiment.name),
        "desired state is STOPPED",
        client=client,
    )
    if error:
        return f"cancel {experiment.name} FAILED: {error}"
    return f"cancelled {action.describe()[len('cancel ') :]}"


def _stop(action: Action, operation: str, *, parked: bool) -> str:
    """Park or complete, unless a person changed the experiment since the plan was made."""
    experiment = action.experiment
    with transaction.atomic():
        updated = Experiment.objects.filter(
            pk=experiment.pk,
            desired_state=DesiredState.RUNNING,
            desired_changed_at=experiment.desired_changed_at,
        ).update(
            desired_state=DesiredState.STOPPED,
            desired_changed_at=timezone.now(),
            parked_reason=action.reason if parked else "",
            reconcile_note=action.reason,
            updated_at=timezone.now(),
        )
        if not updated:
            return f"{action.kind} {experiment.name} skipped: changed by a person meanwhile"
        services.record(ACTOR, operation, experiment=experiment, message=action.reason)
    return action.describe()


def _note_wait(action: Action) -> str:
    """Record a wait; the operation log gets one row per backoff, not one per pass."""
    experiment = action.experiment
    if action.logged:
        stable = action.reason.split(" after ", 1)[-1]
        note = experiment.reconcile_note
        if not (note.startswith("backing off") and note.endswith(stable)):
            services.record(ACTOR, Operation.BACKOFF, experiment=experiment, message=action.reason)
    if experiment.reconcile_note != action.reason:
        Experiment.objects.filter(pk=experiment.pk).update(reconcile_note=action.reason[:500])
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


def _mode_notes_query() -> Q:
    query = Q()
    for prefix in MODE_PREFIXES:
        query |= Q(reconcile_note__startswith=prefix)
    return query


def note_plan(actions: list[Action], mode: str) -> None:
    """In a mode that does not act, each affected experiment's note says what it would do."""
    noted = set()
    for action in actions:
        note = f"{mode}: {action.would()}"[:500]
        noted.add(action.experiment.pk)
        if action.experiment.reconcile_note != note:
            Experiment.objects.filter(pk=action.experiment.pk).update(reconcile_note=note)
    Experiment.objects.filter(_mode_notes_query()).exclude(pk__in=noted).update(reconcile_note="")


def _record_pass(result: ReconcileResult, now: datetime) -> None:
    """The last pass, for ``/api/health`` and the header pill."""
    fields = {"last_attempt_at": now, "counts": result.counts()}
    if not result.skipped:
        fields.update(last_success_at=now, last_error="")
    else:
        fields.update(last_error=result.skipped, last_error_at=now)
    SyncState.objects.filter(source=SyncSource.RECONCILER).update(**fields)


def reconcile(
    *, dry_run: bool = False, client: SkyPilotClient | None = None, now: datetime | None = None
) -> ReconcileResult:
    """One reconcile pass on the stored facts, which must come from a fresh successful sync.

    It acts only when the reconciler is on (``SKYDECK_RECONCILE=on`` and not paused by a
    restore) and ``dry_run`` is not asked for; otherwise it plans, and in a non-acting mode
    leaves "would ..." notes on the experiments concerned.
    """

    now = now or timezone.now()
    state_mode = control.reconciler_mode()
    mode = state_mode.mode if not (dry_run and state_mode.acts) else "dry-run"
    why = state_mode.why if not (dry_run and state_mode.acts) else "asked for a dry run"
    result = ReconcileResult(mode, why=why)
    restoring = restore_in_progress()
    if restoring is not None:
        result.skipped = f"restoring: {restoring.describe()}"
        return result
    age, duration = listing_age(now)
    if age is None:
        result.skipped = "the last SkyPilot sync failed: not acting on old facts"
    elif age > settings.SKYDECK_RECONCILE_MAX_LISTING_AGE + duration:
        result.skipped = f"the job listing is {_humanize(age)} old"
    if result.skipped:
        SyncState.objects.get_or_create(source=SyncSource.RECONCILER)
        _record_pass(result, now)
        return result
    try:
        with lease(SyncSource.RECONCILER, ttl=settings.Q_CLUSTER["timeout"]):
            acting = mode == "on"
            if acting:
                settle_launches(now)
            result.actions = plan(now)
            if not acting:
                for action in result.actions:
                    logger.info("reconcile plan (%s): %s", mode, action.describe())
                if not dry_run:  # the mode in force, not a one-off look: leave the notes
                    note_plan(result.actions, mode)
            else:
                Experiment.objects.filter(_mode_notes_query()).update(reconcile_note="")
                if any(a.kind in {"launch", "cancel"} for a in result.actions):
                    client = client or SkyPilotClient.from_settings()
                result.done = execute(result.actions, client)
            _record_pass(result, now)
            return result
    except LeaseHeld as exc:
        result.skipped = str(exc)
        return result


def sync_and_reconcile(*, dry_run: bool = False) -> tuple[str, ReconcileResult | None]:
    """The scheduled pass: sync jobs, then reconcile on the freshest successful listing.

    When another process holds the SkyPilot lease (``skydeck sync --loop``), its listing is
    used: a busy syncer never starves the reconciler. Returns the sync summary and the result
    (None when the sync failed).
    """

    outcome = run_sync(SyncSource.SKYPILOT)
    if not outcome.ok:
        return outcome.summary(), None
    summary = outcome.summary()
    if not dry_run:
        summary = "\n".join([summary, *check_budgets()])
    return summary, reconcile(dry_run=dry_run)


def check_budgets() -> list[str]:
    """The group budgets on the fresh listing (``syncing.budgets``), before the reconciler acts:
    a stop it makes is then planned on. A failing check is logged and reported, and the
    reconciler still runs: a budget must not hold every launch and cancel hostage."""
    from syncing import budgets

    try:
        return budgets.enforce()
    except Exception as exc:  # reported in the task's result and the log
        logger.exception("budget check failed")
        return [f"budget check failed: {type(exc).__name__}: {exc}"]
