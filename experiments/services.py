"""Business operations on experiments and groups.

Admin actions, UI views, API views and commands call these functions (and nothing else) so every
change is validated the same way and lands in the operation log. Each function runs in one
transaction; none makes a network call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F, Max
from django.utils import timezone

from experiments import revisions
from experiments.models import (
    AcceleratorPrice,
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentGroupMember,
    GroupBudget,
    Operation,
    OperationLog,
    RevisionSource,
)
from experiments.validation import NAME_MAX_LENGTH

Actor = Any  # a user object or a plain name such as "reconciler"

#: Fields a user may set on an experiment (everything else is synced or automatic). The
#: desired state is not among them: only Start, Stop and Adopt change it, because they say what
#: they will launch or cancel first (an edit never launches or cancels anything).
EDITABLE_FIELDS = (
    "name",
    "flags",
    "nodes",
    "gpus",
    "accelerator",
    "base_command",
    "tool_path",
    "git_ref",
    "description",
    "tags",
    "starred",
)
COPY_FIELDS = tuple(f for f in EDITABLE_FIELDS if f not in {"name", "starred"})
DESIRED_STATE_MESSAGE = (
    "The desired state changes only with Start, Stop or Adopt (POST .../start/, .../stop/, "
    ".../adopt/), which show what they launch or cancel first."
)


# --- roles: who may write -------------------------------------------------------------------

#: Members of this Django group may read everything through the API but change nothing.
READ_ONLY_GROUP = "read-only"


def is_read_only_user(user) -> bool:
    if not getattr(user, "is_authenticated", False):
        return False
    cached = getattr(user, "_skydeck_read_only", None)
    if cached is None:
        cached = user.groups.filter(name=READ_ONLY_GROUP).exists()
        user._skydeck_read_only = cached
    return cached


def check_can_write(actor: Actor) -> None:
    """Refuse a write by someone whose role may only read (every door calls the services).

    Plain names ("reconciler", "restore", a command's "command") are SkyDeck itself; a user
    must be logged in and not in the read-only group.
    """
    if isinstance(actor, str):
        return
    if actor is None or not getattr(actor, "is_authenticated", False):
        raise PermissionDenied("Log in to change anything.")
    if is_read_only_user(actor):
        raise PermissionDenied(
            f'{actor.get_username()} is read-only (member of the "{READ_ONLY_GROUP}" group): '
            "it may look at everything but change nothing."
        )


def writes(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a service that changes something: its first argument, the actor, must be allowed."""

    @wraps(func)
    def checked(actor: Actor, *args: Any, **kwargs: Any) -> Any:
        check_can_write(actor)
        return func(actor, *args, **kwargs)

    return checked


def actor_name(actor: Actor) -> str:
    """The name recorded in the operation log for a user or a system actor."""
    if isinstance(actor, str):
        return actor
    if actor is None or not getattr(actor, "is_authenticated", False):
        return "anonymous"
    return actor.get_username()


def record(
    actor: Actor,
    operation: str,
    *,
    experiment: Experiment | None = None,
    experiment_name: str = "",
    job_id: int | None = None,
    success: bool = True,
    message: str = "",
) -> OperationLog:
    """Write one audit row; the experiment's name is kept even after it is deleted."""
    return OperationLog.objects.create(
        actor=actor_name(actor)[:150],
        operation=operation,
        experiment=experiment if experiment is not None and experiment.pk else None,
        experiment_name=experiment_name or (experiment.name if experiment is not None else ""),
        job_id=job_id,
        success=success,
        message=message,
        node=settings.SKYDECK_NODE_ID,
    )


def _check_fields(changes: dict[str, Any]) -> None:
    unknown = sorted(set(changes) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValidationError(
            {
                field: DESIRED_STATE_MESSAGE
                if field == "desired_state"
                else "This field cannot be set."
                for field in unknown
            }
        )


def rename_blockers(experiment: Experiment) -> list[str]:
    """Why an experiment's name can no longer change (empty when it still can).

    The name is its SkyPilot job name and its S3 folder: once anything exists under it, a new
    name would orphan its jobs and checkpoints, and a running job would be launched again.
    """
    from experiments.models import Checkpoint, Job, Launch, LaunchStatus

    name = experiment.name
    reasons = []
    active = Job.objects.active().filter(experiment_id=name).count()
    jobs = Job.objects.filter(experiment_id=name).count()
    pending = Launch.objects.filter(
        experiment_name=name,
        status__in=[LaunchStatus.SUBMITTING, LaunchStatus.SUBMITTED, LaunchStatus.LOST],
    ).exists()
    checkpoints = Checkpoint.objects.filter(experiment_id=experiment.pk).count()
    if active:
        reasons.append(f"{active} active job{'s' if active > 1 else ''}")
    if jobs > active:
        finished = jobs - active
        reasons.append(f"{finished} finished job{'s' if finished > 1 else ''}")
    if pending:
        reasons.append("a launch in flight")
    if checkpoints:
        reasons.append(f"{checkpoints} checkpoint{'s' if checkpoints > 1 else ''}")
    return reasons


def _check_rename(experiment: Experiment, old_name: str) -> None:
    current = Experiment(pk=experiment.pk, name=old_name)
    reasons = rename_blockers(current)
    if reasons:
        raise ValidationError(
            {
                "name": f"{old_name} cannot be renamed: its name is the SkyPilot job name and S3 "
                f"folder of its {', '.join(reasons)}. Duplicate it under the new name instead."
            }
        )


@writes
def create_experiment(
    actor: Actor, *, source: str = RevisionSource.UI, **fields: Any
) -> Experiment:
    """Validate and create an experiment: desired STOPPED, so creating never launches or cancels.

    Active jobs that already carry its name stay untouched (they are not SkyDeck's); the
    caller can show ``control.users_notice`` and offer Adopt.
    """
    _check_fields(fields)
    experiment = Experiment(**fields)
    experiment.desired_changed_at = timezone.now()
    experiment.full_clean()
    with transaction.atomic():
        experiment.save()
        # jobs already synced under this name attach now
        Experiment.objects.filter(pk=experiment.pk).refresh_current_state()
        record(actor, Operation.CREATE, experiment=experiment)
        config = revisions.snapshot(experiment)
        revisions.record_revision(
            experiment, actor_name(actor), source, {f: [None, v] for f, v in config.items()}
        )
        # read back inside the transaction: a restore that lands between the commit and a
        # later read would otherwise leave this caller with a row that no longer exists
        experiment.refresh_from_db(fields=["current_state"])
    return experiment


class ConflictError(ValidationError):
    """An edit loaded from an older version changes fields that were changed meanwhile.

    ``fields``: the conflicting fields; ``current``: their saved values now; ``updated_at``: the
    saved version now (a form that carries it overwrites deliberately); ``last_update``: the
    latest update row of the operation log (who saved, when), or None.
    """

    def __init__(
        self,
        fields: Sequence[str],
        current: dict[str, Any],
        updated_at: Any,
        last_update: OperationLog | None = None,
    ) -> None:
        who = f" by {last_update.actor}" if last_update is not None else ""
        super().__init__(
            {f: f"Changed{who} since you loaded it: the saved value differs." for f in fields}
        )
        self.fields = list(fields)
        self.current = current
        self.updated_at = updated_at
        self.last_update = last_update


def same_value(a: Any, b: Any) -> bool:
    """Equal as stored (1, 1.0 and True differ; flag order does not matter)."""
    import json

    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):
        return a == b


def _merge_changes(
    experiment: Experiment,
    changes: dict[str, Any],
    expected_updated_at: Any,
    base: dict[str, Any] | None,
) -> dict[str, Any]:
    """The changes to apply to the (locked, fresh) row, or ConflictError.

    With ``base`` (the values the editor was loaded with) only fields that differ from it are
    the user's changes; a field is a conflict only when it also changed meanwhile (saved value
    differs from base) to something else than the user's value. Without ``base``, a stale
    ``expected_updated_at`` makes every field whose value differs from the saved one a conflict.
    """
    if base is not None:
        changes = {f: v for f, v in changes.items() if f not in base or not same_value(v, base[f])}
    if expected_updated_at is None or experiment.updated_at == expected_updated_at:
        return changes
    conflicts = [
        f
        for f, v in changes.items()
        if not same_value(v, getattr(experiment, f))
        and (base is None or f not in base or not same_value(base[f], getattr(experiment, f)))
    ]
    if conflicts:
        last = OperationLog.objects.filter(
            experiment=experiment, operation=Operation.UPDATE
        ).first()
        raise ConflictError(
            conflicts, {f: getattr(experiment, f) for f in conflicts}, experiment.updated_at, last
        )
    return changes


@writes
def update_experiment(
    actor: Actor,
    experiment: Experiment,
    *,
    expected_updated_at: Any = None,
    base: dict[str, Any] | None = None,
    source: str = RevisionSource.UI,
    restored_from: int | None = None,
    **changes: Any,
) -> Experiment:
    """Apply changes, validate the whole experiment, save, and log what changed.

    With ``expected_updated_at`` (the version an editor was loaded with) and/or ``base`` (its
    loaded values), the row is locked and re-read first: only the fields the user changed are
    applied (a merge with changes saved meanwhile), and a field changed on both sides raises
    ConflictError with nothing saved. ``experiment`` then holds the saved values.
    """
    _check_fields(changes)
    if expected_updated_at is not None or base is not None:
        with transaction.atomic():
            experiment.refresh_from_db(from_queryset=Experiment.objects.select_for_update())
            merged = _merge_changes(experiment, changes, expected_updated_at, base)
            return update_experiment(
                actor, experiment, source=source, restored_from=restored_from, **merged
            )
    before = {field: getattr(experiment, field) for field in changes}
    old_config = revisions.snapshot(experiment)
    for field, value in changes.items():
        setattr(experiment, field, value)
    experiment.full_clean()
    changed = [field for field in changes if before[field] != getattr(experiment, field)]
    if not changed:
        return experiment
    with transaction.atomic():
        if "name" in changed:
            try:
                _check_rename(experiment, before["name"])
            except ValidationError:
                for field, value in before.items():
                    setattr(experiment, field, value)
                raise
        experiment.save()
        if "name" in changed:
            Experiment.objects.filter(pk=experiment.pk).refresh_current_state()
            experiment.refresh_from_db(fields=["current_state"])
        config_changes = revisions.changed_fields(old_config, revisions.snapshot(experiment))
        if config_changes:  # starring alone is no configuration change: no revision
            revisions.record_revision(
                experiment,
                actor_name(actor),
                source,
                config_changes,
                restored_from,
                before=old_config,
            )
            message = revisions.change_text(config_changes)
            if "starred" in changed:
                message += f", {'starred' if experiment.starred else 'unstarred'}"
        else:
            message = "starred" if experiment.starred else "unstarred"
        record(
            actor,
            Operation.REVERT if restored_from else Operation.UPDATE,
            experiment=experiment,
            message=f"restored r{restored_from}: {message}" if restored_from else message,
        )
    return experiment


@writes
def restore_revision(actor: Actor, experiment: Experiment, number: int) -> Any:
    """Make revision ``number``'s configuration the experiment's again, as a new revision.

    Every configuration field but the name is applied (the name is the SkyPilot job and S3
    folder: a restore never renames) through ``update_experiment``, so it is validated like any
    edit, logged as REVERT with the values and stored with ``restored_from``. It never launches
    or touches the desired state. Returns the new revision, or None when nothing differs.
    """
    from experiments.models import ExperimentRevision

    revision = ExperimentRevision.objects.filter(experiment=experiment, number=number).first()
    if revision is None:
        raise ValidationError({"number": f"{experiment.name} has no revision {number}."})
    restore = {f: revision.config[f] for f in revisions.RESTORE_FIELDS if f in revision.config}
    with transaction.atomic():
        experiment.refresh_from_db(from_queryset=Experiment.objects.select_for_update())
        latest = revisions.latest_number(experiment)
        update_experiment(
            actor, experiment, source=RevisionSource.RESTORE, restored_from=number, **restore
        )
        if revisions.latest_number(experiment) == latest:
            return None
        return ExperimentRevision.objects.filter(experiment=experiment).order_by("-number").first()


@writes
def delete_experiments(actor: Actor, experiments: Iterable[Experiment]) -> int:
    """Delete experiments (their checkpoint rows go too; jobs stay, as orphans)."""
    count = 0
    with transaction.atomic():
        for experiment in list(experiments):
            name = experiment.name
            experiment.delete()
            record(actor, Operation.DELETE, experiment_name=name)
            count += 1
    return count


def set_desired(experiment: Experiment, state: str, at=None) -> None:
    """Save a user's new intent; it resets the reconciler's memory (backoff, parking) for it."""
    experiment.desired_state = state
    experiment.desired_changed_at = at or timezone.now()
    experiment.parked_reason = ""
    experiment.reconcile_note = ""
    experiment.save(
        update_fields=[
            "desired_state",
            "desired_changed_at",
            "parked_reason",
            "reconcile_note",
            "updated_at",
        ]
    )


@writes
def set_desired_state(
    actor: Actor, experiments: Iterable[Experiment], state: str, *, plans: Any = None
) -> int:
    """Set desired RUNNING/STOPPED and log it; returns how many experiments changed.

    This only records the wish. What acts next:

    * RUNNING: the reconciler (``syncing.reconciler``, run by the scheduled task
      ``syncing.tasks.sync_jobs_and_reconcile`` right after each SkyPilot job sync) launches the
      experiment on its next pass, unless a job under its name is already active.
    * STOPPED: a person's Stop cancels the active jobs itself, right after this commits
      (``syncing.services.stop`` -> ``cancel_jobs``); later reconciler passes cancel any job
      SkyDeck launched that is still active. Jobs SkyDeck did not launch are never touched.

    Callers go through ``experiments.control.start`` / ``stop``, which pass their ``plans`` so
    the operation log records what the change requests (GPUs, jobs to cancel).
    """
    if state not in DesiredState.values:
        raise ValidationError({"desired_state": f"{state!r} is not one of {DesiredState.values}"})
    operation = Operation.START if state == DesiredState.RUNNING else Operation.STOP
    notes = {}
    if plans is not None:
        for item in plans.items:
            notes[item.experiment.pk] = _plan_note(item)
    changed = 0
    with transaction.atomic():
        for experiment in list(experiments):
            if experiment.desired_state == state:
                continue
            set_desired(experiment, state)
            message = f"desired state {state}"
            if notes.get(experiment.pk):
                message += f"; {notes[experiment.pk]}"
            record(actor, operation, experiment=experiment, message=message)
            changed += 1
    return changed


def _plan_note(item: Any) -> str:
    """The values a Start/Stop requested, for the operation log."""
    e = item.experiment
    if item.launches:
        shape = f"{e.nodes} node{'s' if e.nodes != 1 else ''}"
        if e.gpus:
            shape += f" x {e.gpus} {e.accelerator or 'GPU'} = {e.nodes * e.gpus} GPUs"
        return f"requests {shape}"
    if item.cancel:
        return "cancels jobs " + ", ".join(j.label for j in item.cancel)
    return item.note


_COPY_SUFFIX = re.compile(r"\.copy\d*\Z")


def next_copy_name(name: str, taken: set[str] | None = None) -> str:
    """``name.copy``, then ``name.copy2``, ... — valid, unique and at most 128 characters.

    The stem loses trailing separators (after a cut to fit 128), so ``.copy`` never makes three
    separators in a row: every candidate of a valid name is valid under SkyPilot's rule.
    """
    base = _COPY_SUFFIX.sub("", name)
    if taken is None:
        taken = set(
            Experiment.objects.filter(name__startswith=base[: NAME_MAX_LENGTH - 12]).values_list(
                "name", flat=True
            )
        )
    number = 1
    while True:
        suffix = ".copy" if number == 1 else f".copy{number}"
        stem = base[: NAME_MAX_LENGTH - len(suffix)].rstrip("-_.")
        candidate = stem + suffix
        if candidate not in taken:
            return candidate
        number += 1


def _open_slot(group_id: int, after_order: int) -> int:
    """Shift members after ``after_order`` down by one and return the freed position."""
    ExperimentGroupMember.objects.filter(group_id=group_id, order__gt=after_order).update(
        order=F("order") + 1
    )
    return after_order + 1


@writes
def duplicate_experiment(
    actor: Actor,
    experiment: Experiment,
    *,
    name: str | None = None,
    source: str = RevisionSource.DUPLICATE,
) -> Experiment:
    """Copy an experiment's configuration under a new name, placed right after it in its groups.

    The copy starts STOPPED: duplicating must never launch anything by itself.
    """
    with transaction.atomic():
        copy = Experiment(
            name=name or next_copy_name(experiment.name),
            desired_state=DesiredState.STOPPED,
            **{field: getattr(experiment, field) for field in COPY_FIELDS},
        )
        copy.flags = dict(experiment.flags)
        copy.tags = list(experiment.tags)
        copy.full_clean()
        copy.save()
        _place_after(experiment, copy)
        record(
            actor,
            Operation.DUPLICATE,
            experiment=copy,
            message=f"duplicated from {experiment.name}",
        )
        config = revisions.snapshot(copy)
        revisions.record_revision(
            copy, actor_name(actor), source, {f: [None, v] for f, v in config.items()}
        )
    return copy


# --- fork from a checkpoint (lineage) -------------------------------------------------------

#: What a fork may change of the parent's configuration (besides its name): starring is a
#: person's bookmark, not configuration, so a fork starts unstarred.
FORK_CHANGE_FIELDS = tuple(f for f in EDITABLE_FIELDS if f not in {"name", "starred"})
FORK_FLAG_REQUIRED = (
    "Name the flag that receives the checkpoint's URI (e.g. trainer.initial_policy.uri): "
    "the SKYDECK_FORK_FLAG setting is not set."
)


def next_fork_name(name: str, epoch: int, taken: set[str] | None = None) -> str:
    """``name.from120``, then ``name.from120-2``, ... — valid, unique and at most 128 characters.

    Like ``next_copy_name``: the stem loses trailing separators after a cut, so every candidate
    of a valid name is valid.
    """
    first = f".from{epoch}"
    base = name[: NAME_MAX_LENGTH - len(first) - 4].rstrip("-_.")
    if taken is None:
        taken = set(Experiment.objects.filter(name__startswith=base).values_list("name", flat=True))
    number = 1
    while True:
        suffix = first if number == 1 else f"{first}-{number}"
        candidate = name[: NAME_MAX_LENGTH - len(suffix)].rstrip("-_.") + suffix
        if candidate not in taken:
            return candidate
        number += 1


def fork_flag_key(flag_key: str | None) -> str:
    """The flag that receives a fork's checkpoint URI: the one given, else SKYDECK_FORK_FLAG.

    Validated with the flag-name rule every flag obeys; missing is a ValidationError on
    ``flag_key`` (the form and the API then ask for it).
    """
    from django.conf import settings

    key = (flag_key or "").strip() or getattr(settings, "SKYDECK_FORK_FLAG", "") or ""
    if not key:
        raise ValidationError({"flag_key": FORK_FLAG_REQUIRED})
    from experiments.validation import validate_flag_key

    try:
        validate_flag_key(key)
    except ValidationError as exc:
        raise ValidationError({"flag_key": exc.messages}) from None
    return key


def _place_after(experiment: Experiment, copy: Experiment) -> None:
    """Put ``copy`` right after ``experiment`` in each of its groups."""
    memberships = list(experiment.group_memberships.all())
    for membership in memberships:
        position = _open_slot(membership.group_id, membership.order)
        ExperimentGroupMember.objects.create(
            group_id=membership.group_id, experiment=copy, order=position
        )
    _touch_groups(m.group_id for m in memberships)


@writes
def fork_experiment(
    actor: Actor,
    checkpoint: Any,
    *,
    name: str | None = None,
    flag_key: str | None = None,
    changes: dict[str, Any] | None = None,
) -> Experiment:
    """A new experiment that continues from ``checkpoint``: clone, modify, point at the file.

    The parent's configuration is copied, ``changes`` applied, and the checkpoint's URI set in
    the flag ``flag_key`` (default: SKYDECK_FORK_FLAG). The lineage (parent, its name, the
    checkpoint, epoch and URI) is recorded in the same transaction; the names and the URI are
    copies, so the child keeps them after the parent is deleted. The child starts STOPPED
    (creating never launches) and sits right after the parent in its groups. A checkpoint
    marked missing is refused: its file is gone, a run started from it would fail.
    """
    changes = dict(changes or {})
    refused = sorted(set(changes) - set(FORK_CHANGE_FIELDS))
    if refused:
        _check_fields({f: v for f, v in changes.items() if f not in EDITABLE_FIELDS})
        raise ValidationError(
            {
                field: "Give the fork's name apart from its changes."
                if field == "name"
                else "A fork starts unstarred: star it afterwards."
                for field in refused
            }
        )
    key = fork_flag_key(flag_key)
    if checkpoint.missing:
        raise ValidationError(
            {
                "checkpoint": f"Epoch {checkpoint.epoch} of {checkpoint.experiment.name} is "
                f"marked missing (not found in S3 at the last sync): {checkpoint.model_path} "
                "cannot be forked."
            }
        )
    parent = checkpoint.experiment
    fields: dict[str, Any] = {field: getattr(parent, field) for field in COPY_FIELDS}
    fields["flags"] = dict(parent.flags or {})
    fields["tags"] = list(parent.tags or [])
    fields.update(changes)
    flags = fields["flags"]
    if not isinstance(flags, dict):
        raise ValidationError({"flags": "Flags must be an object of name: value pairs."})
    fields["flags"] = {**flags, key: checkpoint.model_path}
    with transaction.atomic():
        child = create_experiment(
            actor,
            source=RevisionSource.FORK,
            name=name or next_fork_name(parent.name, checkpoint.epoch),
            **fields,
        )
        child.parent = parent
        child.parent_name = parent.name
        child.parent_checkpoint = checkpoint
        child.parent_epoch = checkpoint.epoch
        child.parent_uri = checkpoint.model_path
        child.save(
            update_fields=[
                "parent",
                "parent_name",
                "parent_checkpoint",
                "parent_epoch",
                "parent_uri",
                "updated_at",
            ]
        )
        _place_after(parent, child)
        record(
            actor,
            Operation.FORK,
            experiment=child,
            message=f"forked from {parent.name} @ epoch {checkpoint.epoch} "
            f"({checkpoint.model_path}); {key} set to it",
        )
    return child


# --- groups ---------------------------------------------------------------------------------


@writes
def create_group(actor: Actor, name: str, *, flags: Sequence[str] | None = ()) -> ExperimentGroup:
    """Create a group placed after every existing group."""
    group = ExperimentGroup(name=name, flags=list(flags) if flags is not None else None)
    with transaction.atomic():
        last = ExperimentGroup.objects.aggregate(m=Max("order"))["m"]
        group.order = 0 if last is None else last + 1
        group.full_clean()
        group.save()
        record(actor, Operation.GROUP_CREATE, message=f"group {group.name}")
    return group


@writes
def update_group(actor: Actor, group: ExperimentGroup, **changes: Any) -> ExperimentGroup:
    allowed = {"name", "flags", "collapsed", "stall_minutes", "metric_patterns"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValidationError({field: "This field cannot be set." for field in unknown})
    old_name = group.name
    for field, value in changes.items():
        setattr(group, field, value)
    group.full_clean()
    with transaction.atomic():
        group.save()
        if set(changes) - {"collapsed"}:
            what = ", ".join(
                f"flag columns {', '.join(group.flags) or 'automatic'}"
                if field == "flags"
                else field
                for field in sorted(changes)
            )
            label = group.name if old_name == group.name else f"{old_name} -> {group.name}"
            record(actor, Operation.GROUP_UPDATE, message=f"group {label}: {what}")
    return group


@writes
def delete_group(actor: Actor, group: ExperimentGroup) -> None:
    """Delete a group; its experiments stay (ungrouped unless in another group)."""
    with transaction.atomic():
        name = group.name
        group.delete()
        record(actor, Operation.GROUP_DELETE, message=f"group {name}")


def _touch_groups(group_ids: Iterable[int], *, loaded: ExperimentGroup | None = None) -> None:
    """Bump ``updated_at`` of groups whose membership changed.

    Membership lives in its own table, so without this a group's ETag (and If-Match checks in
    the API) would not notice experiments being added, removed or reordered.
    """
    ids = set(group_ids)
    if ids:
        now = timezone.now()
        ExperimentGroup.objects.filter(pk__in=ids).update(updated_at=now)
        if loaded is not None and loaded.pk in ids:
            loaded.updated_at = now


def _renumber(group: ExperimentGroup, members: list[ExperimentGroupMember]) -> None:
    changed = []
    for position, member in enumerate(members):
        if member.order != position:
            member.order = position
            changed.append(member)
    if changed:
        ExperimentGroupMember.objects.bulk_update(changed, ["order"])


@writes
def add_to_group(
    actor: Actor,
    group: ExperimentGroup,
    experiments: Iterable[Experiment],
    *,
    operation: str = Operation.GROUP_ADD,
) -> int:
    """Append experiments to the end of a group (already-present ones keep their place)."""
    added = 0
    with transaction.atomic():
        present = set(group.memberships.values_list("experiment_id", flat=True))
        last = group.memberships.aggregate(m=Max("order"))["m"]
        position = -1 if last is None else last
        for experiment in experiments:
            if experiment.pk in present:
                continue
            position += 1
            ExperimentGroupMember.objects.create(group=group, experiment=experiment, order=position)
            present.add(experiment.pk)
            record(actor, operation, experiment=experiment, message=f"added to group {group.name}")
            added += 1
        if added:
            _touch_groups([group.pk], loaded=group)
    return added


@writes
def remove_from_group(
    actor: Actor, group: ExperimentGroup, experiments: Iterable[Experiment]
) -> int:
    """Remove experiments from one group; the rest keep their relative order."""
    ids = [e.pk for e in experiments]
    with transaction.atomic():
        gone = list(group.memberships.filter(experiment_id__in=ids).select_related("experiment"))
        if not gone:
            return 0
        group.memberships.filter(pk__in=[m.pk for m in gone]).delete()
        _renumber(group, list(group.memberships.order_by("order", "id")))
        _touch_groups([group.pk], loaded=group)
        for member in gone:
            record(
                actor,
                Operation.GROUP_REMOVE,
                experiment=member.experiment,
                message=f"removed from group {group.name}",
            )
    return len(gone)


@writes
def move_to_group(
    actor: Actor,
    experiments: Iterable[Experiment],
    target: ExperimentGroup,
    *,
    source: ExperimentGroup | None = None,
) -> int:
    """Move experiments into ``target``: out of ``source`` if given, else out of every other group."""
    experiments = list(experiments)
    with transaction.atomic():
        others = ExperimentGroupMember.objects.filter(experiment__in=experiments).exclude(
            group=target
        )
        if source is not None:
            others = others.filter(group=source)
        affected = {m.group_id for m in others}
        others.delete()
        for group in ExperimentGroup.objects.filter(pk__in=affected):
            _renumber(group, list(group.memberships.order_by("order", "id")))
        _touch_groups(affected)
        return add_to_group(actor, target, experiments, operation=Operation.GROUP_MOVE)


@writes
def reorder_group(actor: Actor, group: ExperimentGroup, experiment_ids: Sequence[int]) -> None:
    """Set the member order: ``experiment_ids`` must list every member exactly once."""
    with transaction.atomic():
        members = {m.experiment_id: m for m in group.memberships.all()}
        if sorted(experiment_ids) != sorted(members):
            raise ValidationError(
                {"order": "The new order must list every experiment of the group exactly once."}
            )
        _renumber(group, [members[i] for i in experiment_ids])
        _touch_groups([group.pk], loaded=group)
        record(actor, Operation.GROUP_REORDER, message=f"group {group.name} reordered")


@writes
def move_member(actor: Actor, group: ExperimentGroup, experiment: Experiment, delta: int) -> None:
    """Move one member up (negative) or down (positive) within its group."""
    with transaction.atomic():
        members = list(group.memberships.order_by("order", "id"))
        index = next((i for i, m in enumerate(members) if m.experiment_id == experiment.pk), None)
        if index is None:
            raise ValidationError(
                {"experiment": f"{experiment.name} is not in group {group.name}."}
            )
        target = max(0, min(len(members) - 1, index + delta))
        if target == index:
            return
        members.insert(target, members.pop(index))
        _renumber(group, members)
        _touch_groups([group.pk], loaded=group)
        record(
            actor,
            Operation.GROUP_REORDER,
            experiment=experiment,
            message=f"moved to position {target + 1} in group {group.name}",
        )


def _placed(ids: list[int], moving: int, before: int | None, after: int | None) -> list[int]:
    """``ids`` with ``moving`` put right before ``before`` or right after ``after``."""
    target = before if before is not None else after
    if target is None or target == moving or target not in ids or moving not in ids:
        raise ValueError("no such place")
    rest = [i for i in ids if i != moving]
    index = rest.index(target) + (0 if before is not None else 1)
    return [*rest[:index], moving, *rest[index:]]


@writes
def place_member(
    actor: Actor,
    group: ExperimentGroup,
    experiment: Experiment,
    *,
    before: int | None = None,
    after: int | None = None,
) -> None:
    """Put a member right before (or after) another member of its group: a drag and drop."""
    with transaction.atomic():
        members = list(group.memberships.order_by("order", "id"))
        by_id = {m.experiment_id: m for m in members}
        try:
            order = _placed([m.experiment_id for m in members], experiment.pk, before, after)
        except ValueError:
            raise ValidationError(
                {
                    "order": f"{experiment.name} and the row it was dropped on must both be in "
                    f"group {group.name}."
                }
            ) from None
        if order == [m.experiment_id for m in members]:
            return
        _renumber(group, [by_id[i] for i in order])
        _touch_groups([group.pk], loaded=group)
        record(
            actor,
            Operation.GROUP_REORDER,
            experiment=experiment,
            message=f"moved to position {order.index(experiment.pk) + 1} in group {group.name}",
        )


@writes
def place_group(
    actor: Actor, group: ExperimentGroup, *, before: int | None = None, after: int | None = None
) -> None:
    """Put a group right before (or after) another one: a drag and drop of its header."""
    ids = list(ExperimentGroup.objects.values_list("pk", flat=True))
    try:
        order = _placed(ids, group.pk, before, after)
    except ValueError:
        raise ValidationError({"order": "The group it was dropped on does not exist."}) from None
    if order != ids:
        reorder_groups(actor, order)


@writes
def reorder_groups(actor: Actor, group_ids: Sequence[int]) -> None:
    """Set the order of all groups: ``group_ids`` must list every group exactly once."""
    with transaction.atomic():
        groups = {g.pk: g for g in ExperimentGroup.objects.all()}
        if sorted(group_ids) != sorted(groups):
            raise ValidationError({"order": "The new order must list every group exactly once."})
        changed = []
        for position, pk in enumerate(group_ids):
            if groups[pk].order != position:
                groups[pk].order = position
                changed.append(groups[pk])
        ExperimentGroup.objects.bulk_update(changed, ["order"])
        record(actor, Operation.GROUP_REORDER, message="groups reordered")


# --- accelerator prices (Usage's cost) ------------------------------------------------------


def _price_text(price: AcceleratorPrice) -> str:
    where = price.cloud or "any cloud"
    return f"{price.accelerator} ({where}): ${price.usd_per_gpu_hour:.4f} per GPU-hour"


@writes
def save_price(actor: Actor, price: AcceleratorPrice) -> AcceleratorPrice:
    """Create or change a price, validated; the log says the old and the new value."""
    old = None
    if price.pk:
        old = AcceleratorPrice.objects.filter(pk=price.pk).first()
    price.full_clean()
    with transaction.atomic():
        price.save()
        if old is None:
            message = f"price set: {_price_text(price)}"
        else:
            message = f"price changed: {_price_text(old)} -> {_price_text(price)}"
            if old.estimate and price.estimate:
                message += " (still marked an estimate)"
        record(actor, Operation.PRICE, message=message)
    return price


@writes
def delete_prices(actor: Actor, prices: Iterable[AcceleratorPrice]) -> int:
    """Delete prices: their accelerators show "no price" from now on."""
    count = 0
    with transaction.atomic():
        for price in list(prices):
            text = _price_text(price)
            price.delete()
            record(actor, Operation.PRICE, message=f"price deleted: {text}")
            count += 1
    return count


# --- group budgets --------------------------------------------------------------------------


def budget_text(budget: GroupBudget) -> str:
    from experiments import budgets  # budgets reads usage, which reads the models

    """ "50 GPU-h and $500 per calendar month (UTC), stops its experiments at 100 %"."""
    limits = []
    if budget.gpu_hours is not None:
        limits.append(f"{budgets.gpu_text(budget.gpu_hours)} GPU-h")
    if budget.usd is not None:
        limits.append(budgets.usd_text(budget.usd))
    per = "in all" if budget.period == "total" else f"per {budget.get_period_display()}"
    then = "stops its experiments" if budget.stop_at_limit else "warns only"
    return f"{' and '.join(limits) or 'no limit'} {per}, {then} at 100 %"


@writes
def save_budget(actor: Actor, budget: GroupBudget) -> GroupBudget:
    """Create or change a group's budget, validated; the log says the old and the new value.

    A changed limit or period may be crossed again: its warning and stop are given anew."""
    old = GroupBudget.objects.filter(pk=budget.pk).first() if budget.pk else None
    budget.full_clean()
    if old is not None and (
        (old.gpu_hours, old.usd, old.period) != (budget.gpu_hours, budget.usd, budget.period)
    ):
        budget.warned_for = budget.exceeded_for = ""
    with transaction.atomic():
        budget.save()
        group = budget.group.name
        if old is None:
            message = f"budget set for group {group}: {budget_text(budget)}"
        else:
            message = (
                f"budget of group {group} changed: {budget_text(old)} -> {budget_text(budget)}"
            )
        record(actor, Operation.BUDGET, message=message)
    return budget


@writes
def delete_budgets(actor: Actor, budgets: Iterable[GroupBudget]) -> int:
    """Remove budgets: their groups are not watched any more."""
    count = 0
    with transaction.atomic():
        for budget in list(budgets):
            text, group = budget_text(budget), budget.group.name
            budget.delete()
            record(actor, Operation.BUDGET, message=f"budget of group {group} removed: {text}")
            count += 1
    return count
