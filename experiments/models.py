"""SkyDeck's domain: experiments, their groups, synced jobs and checkpoints, and the audit trail.

Table names are fixed (``db_table``) because people query the SQLite file directly.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.core.validators import (
    MaxValueValidator,
    MinValueValidator,
)
from django.db import models
from django.db.models.functions import Lower

from experiments import triage, validation
from experiments.choices import CURRENT_STATE_CHOICES, NO_JOB, JobStatus
from experiments.querysets import (
    CheckpointQuerySet,
    ExperimentManager,
    JobQuerySet,
    OperationLogQuerySet,
)


class DesiredState(models.TextChoices):
    RUNNING = "RUNNING", "Running"
    STOPPED = "STOPPED", "Stopped"


def _optional_text(max_length: int, validator: Callable[[str], None]) -> models.CharField:
    """A one-line text field that may be blank and, when not, passes ``validator``."""
    return models.CharField(max_length=max_length, blank=True, validators=[validator])


class Experiment(models.Model):
    """A named configuration template; jobs and S3 paths are matched by ``name``."""

    name = models.CharField(
        max_length=validation.NAME_MAX_LENGTH,
        unique=True,
        validators=[validation.validate_experiment_name],
        help_text="Also the SkyPilot job name and the S3 folder name.",
    )
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.STOPPED
    )
    current_state = models.CharField(
        max_length=32, choices=CURRENT_STATE_CHOICES, default=NO_JOB, editable=False
    )
    flags = models.JSONField(
        default=dict,
        blank=True,
        encoder=validation.FlagsEncoder,
        validators=[validation.validate_flags],
    )
    nodes = models.PositiveIntegerField(
        default=1,
        validators=[
            MinValueValidator(validation.NODES_MIN),
            MaxValueValidator(validation.NODES_MAX),
        ],
    )
    gpus = models.PositiveIntegerField(
        default=0,
        validators=[
            MinValueValidator(validation.GPUS_MIN),
            MaxValueValidator(validation.GPUS_MAX),
        ],
        help_text="GPUs per node.",
    )
    accelerator = _optional_text(validation.ACCELERATOR_MAX_LENGTH, validation.validate_accelerator)
    base_command = _optional_text(
        validation.BASE_COMMAND_MAX_LENGTH, validation.validate_single_line
    )
    tool_path = _optional_text(validation.TOOL_PATH_MAX_LENGTH, validation.validate_single_line)
    git_ref = _optional_text(validation.GIT_REF_MAX_LENGTH, validation.validate_git_ref)
    # The limit is a validator (run by full_clean()): a TextField's max_length would not enforce
    # it, and changing it rebuilds the SQLite table. NUL is refused as the forms and API do.
    description = models.TextField(blank=True)  # its rules: validation.validate_description
    tags = models.JSONField(default=list, blank=True, validators=[validation.validate_tags])
    starred = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Reconciler bookkeeping (never edited by users directly).
    desired_changed_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When desired_state last changed."
    )
    parked_reason = models.TextField(
        blank=True, editable=False, help_text="Why the reconciler stopped relaunching it."
    )
    gpu_seconds = models.FloatField(
        null=True,
        blank=True,
        editable=False,
        help_text="GPU-seconds of all its jobs (nodes x GPUs x run time) as of the last sync; "
        "empty: no job says its GPUs and run time.",
    )
    reconcile_note = models.CharField(
        max_length=500, blank=True, editable=False, help_text="The reconciler's last decision."
    )
    # Lineage (fork from a checkpoint). The parent's name, epoch and URI are copied, so the
    # child still says where it came from after the parent or its checkpoint row is deleted.
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forks",
        editable=False,
        help_text="The experiment this one was forked from.",
    )
    # NULL, not "": a NOT NULL column would rebuild the table (and drop its deck triggers)
    parent_name = models.CharField(  # noqa: DJ001
        max_length=validation.NAME_MAX_LENGTH,
        null=True,
        blank=True,
        editable=False,
        help_text="The parent's name when forked (kept after the parent is deleted).",
    )
    parent_checkpoint = models.ForeignKey(
        "Checkpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forks",
        editable=False,
    )
    parent_epoch = models.BigIntegerField(null=True, blank=True, editable=False)
    parent_uri = models.CharField(  # noqa: DJ001 (NULL: see parent_name)
        max_length=1024,
        null=True,
        blank=True,
        editable=False,
        help_text="The checkpoint it started from.",
    )

    objects = ExperimentManager()

    class Meta:
        db_table = "experiments"
        ordering = ["name"]
        indexes = [
            models.Index(fields=["desired_state"], name="experiments_desired_idx"),
            models.Index(fields=["current_state"], name="experiments_current_idx"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Cross-field rules (field rules run as validators); shared by forms, admin and API."""
        errors: dict[str, list[str]] = {}
        # blank JSON values skip field validators; null would fail at save time instead
        if self.flags is None:
            errors.setdefault("flags", []).append("Flags must be an object ({} for none).")
        if self.tags is None:
            errors.setdefault("tags", []).append("Tags must be a list ([] for none).")
        if self.gpus and self.nodes and self.gpus * self.nodes > validation.MAX_TOTAL_GPUS:
            errors.setdefault("gpus", []).append(
                f"More than {validation.MAX_TOTAL_GPUS} GPUs in total is not plausible."
            )
        try:  # in clean(), not as field validators: no migration each time a limit moves
            validation.validate_description(self.description)
        except ValidationError as exc:
            errors.setdefault("description", []).extend(exc.messages)
        if self.accelerator and not self.gpus:
            errors.setdefault("gpus", []).append(
                f"Accelerator {self.accelerator} is set but GPUs per node is 0."
            )
        if errors:
            raise ValidationError(errors)

    @property
    def is_desired_running(self) -> bool:
        return self.desired_state == DesiredState.RUNNING


class ExperimentGroup(models.Model):
    """An ordered list of experiments shown as one table."""

    name = models.CharField(
        max_length=validation.GROUP_NAME_MAX_LENGTH,
        unique=True,
        validators=[validation.validate_single_line],
    )
    flags = models.JSONField(
        default=list,
        blank=True,
        validators=[validation.validate_flag_key_list],
        help_text="Flag names shown as columns; empty means every flag of its experiments.",
    )
    order = models.IntegerField(default=0)
    collapsed = models.BooleanField(default=False)
    stall_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Minutes without log progress or a new checkpoint before a running job is "
        "flagged stalled; empty: the global SKYDECK_STALL_MINUTES.",
    )
    metric_patterns = models.JSONField(
        null=True,
        blank=True,
        help_text="Regular expressions with named groups (key, value) that read metrics from "
        "its jobs' logs, tried before the built-in ones; empty: the built-in ones only.",
    )
    experiments = models.ManyToManyField(
        Experiment, through="ExperimentGroupMember", related_name="experiment_groups", blank=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "experiment_groups"
        ordering = ["order", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.flags is None:
            raise ValidationError({"flags": "Flag columns must be a list ([] for all flags)."})
        try:  # in clean(), not as a field validator: no migration for a rule that may move
            validation.validate_metric_patterns(self.metric_patterns)
        except ValidationError as exc:
            raise ValidationError({"metric_patterns": exc.messages}) from None

    def ordered_experiments(self) -> list[Experiment]:
        """Members in their display order."""
        members = self.memberships.select_related("experiment").order_by("order", "id")
        return [m.experiment for m in members]


class ExperimentGroupMember(models.Model):
    group = models.ForeignKey(ExperimentGroup, on_delete=models.CASCADE, related_name="memberships")
    experiment = models.ForeignKey(
        Experiment, on_delete=models.CASCADE, related_name="group_memberships"
    )
    order = models.IntegerField(default=0)

    class Meta:
        db_table = "experiment_group_members"
        ordering = ["group", "order", "id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "experiment"], name="unique_group_member"),
        ]
        indexes = [models.Index(fields=["group", "order"], name="group_member_order_idx")]

    def __str__(self) -> str:
        return f"{self.group} #{self.order}: {self.experiment}"


class Job(models.Model):
    """One SkyPilot managed job, as last listed by the API server (one row per job id).

    ``experiment_id`` holds the job *name*: a job belongs to the experiment with that name, if any.
    There is no database constraint, so jobs of unknown or deleted experiments stay ("orphaned")
    and attach by themselves when an experiment of that name appears.
    """

    id = models.BigIntegerField(primary_key=True, help_text="SkyPilot managed job id.")
    experiment = models.ForeignKey(
        Experiment,
        to_field="name",
        db_constraint=False,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        related_name="jobs",
        help_text="The job's name; links to the experiment of that name when there is one.",
    )
    job_name = models.TextField(
        blank=True, help_text="The job name exactly as SkyPilot reports it."
    )
    task_count = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=32, choices=JobStatus.choices)
    command = models.TextField(blank=True)
    git_ref = models.CharField(max_length=200, blank=True)
    nodes = models.PositiveIntegerField(null=True, blank=True)
    gpus = models.PositiveIntegerField(null=True, blank=True, help_text="GPUs per node.")
    accelerator = models.CharField(max_length=64, blank=True)
    resources = models.TextField(blank=True)
    user_name = models.CharField(max_length=255, blank=True)
    user_hash = models.CharField(max_length=64, blank=True)
    workspace = models.CharField(max_length=255, blank=True)
    infra = models.CharField(max_length=255, blank=True)
    cloud = models.CharField(max_length=64, blank=True)
    region = models.CharField(max_length=64, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds.")
    recovery_count = models.PositiveIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    failure_signature = models.CharField(
        max_length=triage.SIGNATURE_MAX_LENGTH,
        blank=True,
        help_text="A failed job's status and cause with numbers, ids, paths and hosts masked: "
        "jobs that failed the same way share it (empty for any other status).",
    )
    details = models.TextField(blank=True)
    launch_token = models.CharField(
        max_length=32, blank=True, help_text="SKYDECK_LAUNCH_ID from the task's envs, if any."
    )
    task_fetched_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When command, git ref and launch token were read from the task YAML; empty: "
        "not yet (a large history is read a batch per sync pass, newest first).",
    )
    # NULL, not "": a NOT NULL column would make SQLite rebuild the table (and drop its triggers)
    log_tail = models.TextField(  # noqa: DJ001
        null=True,
        blank=True,
        editable=False,
        help_text="A failed job's last log lines (size-capped), read once after it ended; "
        "empty: not read yet.",
    )
    log_fetched_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When log_tail was read."
    )
    progress = models.JSONField(
        null=True,
        blank=True,
        editable=False,
        help_text="The last progress parsed from the log: step, total, epoch and metrics.",
    )
    progress_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the log was last sampled."
    )
    progress_advanced_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="When the log's step (or epoch) last moved forward.",
    )
    stalled = models.CharField(  # noqa: DJ001 (NULL: see log_tail)
        max_length=200,
        null=True,
        blank=True,
        editable=False,
        help_text="Why a running job looks stuck (no log progress or no new checkpoint for "
        "longer than the threshold), as of the last sampler pass; empty: not stalled.",
    )
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    raw = models.JSONField(
        default=dict, blank=True, help_text="The record(s) as the API returned them."
    )

    objects = JobQuerySet.as_manager()

    class Meta:
        db_table = "jobs"
        ordering = ["-submitted_at", "-id"]
        indexes = [
            models.Index(
                fields=["experiment", "-submitted_at", "-id"], name="jobs_experiment_latest_idx"
            ),
            # the deck's "has an active job" probe: one index seek per experiment
            models.Index(fields=["experiment", "status"], name="jobs_experiment_status_idx"),
            models.Index(fields=["status"], name="jobs_status_idx"),
            models.Index(fields=["-submitted_at", "-id"], name="jobs_submitted_idx"),
            models.Index(fields=["user_name"], name="jobs_user_idx"),
            # Usage: jobs by the time they ended
            models.Index(fields=["ended_at"], name="jobs_ended_idx"),
            # the failure buckets: failed jobs only
            models.Index(
                fields=["failure_signature", "-submitted_at"],
                name="jobs_failure_idx",
                condition=~models.Q(failure_signature=""),
            ),
            # health's stalled and often-recovered jobs: a few rows, however many run
            models.Index(
                fields=["status"],
                name="jobs_stalled_idx",
                condition=models.Q(stalled__isnull=False),
            ),
            models.Index(
                fields=["status", "recovery_count"],
                name="jobs_recovered_idx",
                condition=models.Q(recovery_count__gt=0),
            ),
            # failed jobs whose log tail is still to read, newest first
            models.Index(
                fields=["-id"],
                name="jobs_log_pending_idx",
                condition=models.Q(log_fetched_at__isnull=True) & ~models.Q(failure_signature=""),
            ),
            # the jobs whose task YAML is still to read, newest first (empty once caught up)
            models.Index(
                fields=["-id"],
                name="jobs_task_pending_idx",
                condition=models.Q(task_fetched_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.id} ({self.job_name or 'unnamed'}): {self.status}"

    @property
    def is_active(self) -> bool:
        return self.status in JobStatus.active()


#: What SkyPilot reports about a job, in the order people read it: the job syncer stores these
#: columns, the admin and the API show them (the API leaves out ``user_hash``).
JOB_RESOURCE_FIELDS = ("nodes", "gpus", "accelerator", "resources")
#: Where and for whom it ran.
JOB_PLACE_FIELDS = ("user_name", "user_hash", "workspace", "infra", "cloud", "region")
#: How the run went (the deck's latest-job summary shows these).
JOB_TIME_FIELDS = (
    "submitted_at",
    "started_at",
    "ended_at",
    "duration",
    "recovery_count",
    "failure_reason",
    "failure_signature",
)
JOB_RUN_FIELDS = (*JOB_PLACE_FIELDS, *JOB_TIME_FIELDS, "details")


class Checkpoint(models.Model):
    """A policy file found under the experiment's S3 prefix."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="checkpoints")
    epoch = models.BigIntegerField()
    model_path = models.CharField(max_length=1024, unique=True, help_text="s3://bucket/key")
    replay_paths = models.JSONField(default=list, blank=True)
    policy_version = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    last_modified = models.DateTimeField(null=True, blank=True, help_text="S3 LastModified.")
    missing = models.BooleanField(
        default=False, help_text="The object was not found at the last sync; kept, not deleted."
    )
    synced_at = models.DateTimeField()

    objects = CheckpointQuerySet.as_manager()

    class Meta:
        db_table = "checkpoints"
        ordering = ["experiment", "-epoch"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "epoch"], name="unique_checkpoint_epoch"),
        ]
        indexes = [
            # the deck's latest epoch: ORDER BY epoch DESC LIMIT 1 over present checkpoints
            models.Index(
                fields=["experiment", "-epoch"],
                name="checkpoints_latest_idx",
                condition=models.Q(missing=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}@{self.epoch}"


class LaunchStatus(models.TextChoices):
    SUBMITTING = "SUBMITTING", "Submitting"  # written before the request: a crash leaves this
    SUBMITTED = "SUBMITTED", "Submitted"  # the server returned a job id
    LISTED = "LISTED", "Listed"  # the job appeared in a sync
    FAILED = "FAILED", "Failed"  # the server refused the launch
    LOST = "LOST", "Lost"  # never appeared within the grace period
    ADOPTED = "ADOPTED", "Adopted"  # a person made a job SkyDeck did not launch its own


class Launch(models.Model):
    """A job SkyDeck answers for: one launch request by the reconciler, or one adopted job.

    A launch is recorded before it is sent. Until its job shows up in a sync, a pending launch
    counts as an active job, so a crash between "submitted" and "listed" can never cause a
    second launch. A job is *owned* by SkyDeck exactly when a row here carries its id: only
    owned jobs are ever cancelled by a reconcile pass (everyone else's are left alone).
    """

    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="launches"
    )
    experiment_name = models.CharField(max_length=validation.NAME_MAX_LENGTH)
    status = models.CharField(max_length=16, choices=LaunchStatus.choices)
    job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    task_yaml = models.TextField(blank=True)
    error_type = models.CharField(max_length=200, blank=True)
    error_message = models.TextField(blank=True)
    token = models.CharField(
        max_length=32,
        blank=True,
        help_text="Sent in the task's envs (SKYDECK_LAUNCH_ID): finds the job of a launch "
        "whose answer was lost, without guessing by name.",
    )
    requested_by = models.CharField(
        max_length=150, blank=True, help_text="Who adopted the job (adoptions only)."
    )
    node = models.CharField(  # noqa: DJ001 (NULL: an added column, no table rebuild)
        max_length=64, null=True, blank=True, help_text="SKYDECK_NODE_ID of the node that sent it."
    )
    revision = models.ForeignKey(
        "ExperimentRevision",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="launches",
        help_text="The configuration revision this launch ran.",
    )

    class Meta:
        db_table = "launches"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["status"], name="launches_status_idx"),
            models.Index(fields=["job_id"], name="launches_job_idx"),
            models.Index(fields=["experiment_name", "-created_at"], name="launches_name_idx"),
        ]

    def __str__(self) -> str:
        return f"launch {self.experiment_name} ({self.status}, job {self.job_id})"


class Operation(models.TextChoices):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    DUPLICATE = "duplicate"
    LAUNCH = "launch"
    CANCEL = "cancel"
    BACKOFF = "backoff"
    PARK = "park"
    COMPLETE = "complete"
    GROUP_CREATE = "group_create"
    GROUP_UPDATE = "group_update"
    GROUP_DELETE = "group_delete"
    GROUP_ADD = "group_add"
    GROUP_REMOVE = "group_remove"
    GROUP_MOVE = "group_move"
    GROUP_REORDER = "group_reorder"
    SYNC = "sync"
    BACKUP = "backup"
    RESTORE = "restore"
    ADOPT = "adopt"
    PAUSE = "pause"
    RESUME = "resume"
    PRICE = "price"
    BUDGET = "budget"
    NOTIFY = "notify"
    SWEEP = "sweep"
    FORK = "fork"
    REVERT = "revert"


class RevisionSource(models.TextChoices):
    UI = "ui"
    API = "api"
    BULK = "bulk"
    ADMIN = "admin"
    SWEEP = "sweep"
    FORK = "fork"
    DUPLICATE = "duplicate"
    RESTORE = "restore"
    COMMAND = "command"


class ExperimentRevision(models.Model):
    """One saved state of an experiment's configuration: what changed, from what, by whom.

    ``number`` counts from 1 per experiment; ``config`` is the whole configuration after the
    change (so any two revisions diff without replaying), ``changes`` maps each changed field
    to ``[old, new]`` (``old`` is None for the first revision). The experiment's name is kept
    after it is deleted, as the operation log does.
    """

    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="revisions"
    )
    experiment_name = models.CharField(max_length=validation.NAME_MAX_LENGTH)
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(max_length=150)
    source = models.CharField(max_length=16, choices=RevisionSource.choices)
    config = models.JSONField(default=dict, encoder=validation.FlagsEncoder)
    changes = models.JSONField(default=dict, blank=True, encoder=validation.FlagsEncoder)
    restored_from = models.PositiveIntegerField(
        null=True, blank=True, help_text="The revision number this one restored."
    )

    class Meta:
        db_table = "experiment_revisions"
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["experiment", "number"], name="experiment_revisions_number_uniq"
            )
        ]
        indexes = [
            models.Index(fields=["experiment_name", "-number"], name="revisions_name_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_name} r{self.number}"


class OperationLog(models.Model):
    """The audit trail: who did what to which experiment, and whether it worked."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=150, help_text='A user name, "reconciler" or "sync".')
    operation = models.CharField(max_length=32, choices=Operation.choices)
    experiment = models.ForeignKey(
        Experiment, null=True, blank=True, on_delete=models.SET_NULL, related_name="operations"
    )
    experiment_name = models.CharField(max_length=validation.NAME_MAX_LENGTH, blank=True)
    job_id = models.BigIntegerField(null=True, blank=True)
    success = models.BooleanField(default=True)
    message = models.TextField(blank=True)
    node = models.CharField(  # noqa: DJ001 (NULL: an added column, no table rebuild)
        max_length=64, null=True, blank=True, help_text="SKYDECK_NODE_ID of the node that did it."
    )

    objects = OperationLogQuerySet.as_manager()

    class Meta:
        db_table = "operation_logs"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["experiment", "-created_at"], name="oplog_experiment_idx"),
            models.Index(
                fields=["experiment_name", "-created_at"], name="oplog_experiment_name_idx"
            ),
        ]

    def __str__(self) -> str:
        outcome = "ok" if self.success else "failed"
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.operation} {self.experiment_name} {outcome}"


class SyncSource(models.TextChoices):
    SKYPILOT = "skypilot", "SkyPilot jobs"
    S3 = "s3", "S3 checkpoints"
    RECONCILER = "reconciler", "Reconciler"
    BACKUP = "backup", "Scheduled backups"
    SCHEDULER = "scheduler", "Task scheduler"  # the lease of the one `serve` running the worker
    SAMPLER = "sampler", "Log sampler"  # progress from running jobs' logs, failed jobs' log tails
    NOTIFY = "notify", "Notifications"  # the event checks' cursor and last pass


class NodeRole(models.TextChoices):
    WEB = "web"
    WORKER = "worker"


class Node(models.Model):
    """A SkyDeck process group sharing this database: ``skydeck serve`` (web and worker),
    ``serve --no-worker`` (web) or ``skydeck worker``. Its supervisor writes ``last_seen`` every
    heartbeat, so health can tell a node that stopped (``stopped_at``) from one that is gone."""

    node_id = models.CharField(max_length=64, unique=True)
    roles = models.JSONField(default=list, help_text='"web" and/or "worker".')
    version = models.CharField(max_length=32, blank=True)
    host = models.CharField(max_length=255, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField()
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "nodes"
        ordering = ["node_id"]

    def __str__(self) -> str:
        return self.node_id


class SyncState(models.Model):
    """One row per source: what the health view shows, and the lease that stops double runs."""

    source = models.CharField(max_length=32, choices=SyncSource.choices, unique=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds of the last attempt.")
    cursor = models.JSONField(default=dict, blank=True, help_text="Syncer-specific resume data.")
    lease_owner = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_node = models.CharField(  # noqa: DJ001 (NULL: an added column, no table rebuild)
        max_length=64, null=True, blank=True, help_text="SKYDECK_NODE_ID of the lease's holder."
    )

    class Meta:
        db_table = "sync_states"
        ordering = ["source"]

    def __str__(self) -> str:
        return self.source

    @property
    def ok(self) -> bool:
        """True when the last attempt succeeded."""
        if self.last_attempt_at is None:
            return False
        return self.last_success_at is not None and self.last_success_at >= self.last_attempt_at


class DeckState(models.Model):
    """The deck's identity (one row): a new token after a restore, so no poll mixes histories.

    A browser's deck version is ``<token>-<last change id>``; a restored database may reuse
    change ids the browser saw before the restore, but never with the same token.
    """

    token = models.CharField(max_length=32)

    class Meta:
        db_table = "deck_state"

    def __str__(self) -> str:
        return self.token


class DeckChange(models.Model):
    """One change to something the deck shows, written by database triggers (migration 0009).

    Triggers, not application code, so that every door (services, syncers, the reconciler,
    admin bulk edits, a ``QuerySet.update``) is seen; only the jobs table, which the job
    syncer alone writes, has none (``write_jobs`` records what it touched): the deck's poll asks only "anything after
    id N?" (one index seek) and re-renders just the sections those rows name.

    - ``experiment_id`` alone: that experiment's row (its fields, jobs, checkpoints, launches);
    - ``experiment_id`` and ``group_id``: its membership of that group (and so of "Ungrouped");
    - ``group_id`` alone: that group's header or columns; with ``layout``, groups were added,
      removed or reordered (the whole deck).

    Ids are plain integers, not foreign keys: a deleted experiment's change must stay.
    """

    id = models.BigAutoField(primary_key=True)
    experiment_id = models.BigIntegerField(null=True)
    group_id = models.BigIntegerField(null=True)
    layout = models.BooleanField(default=False)

    class Meta:
        db_table = "deck_changes"

    def __str__(self) -> str:
        return f"change {self.id}: experiment {self.experiment_id} group {self.group_id}"


class AcceleratorPrice(models.Model):
    """What one GPU-hour of an accelerator costs, on one cloud or on any: Usage's cost is
    GPU-hours x this price. Migration 0012 seeds rough estimates (``estimate``); the admin edits
    them, each change in the operation log. An accelerator with no price shows "no price"."""

    accelerator = models.CharField(
        max_length=64,
        validators=[validation.validate_accelerator],
        help_text="As SkyPilot names it (H100, A100-80GB, L4); case does not matter.",
    )
    cloud = models.CharField(
        max_length=64,
        blank=True,
        help_text="aws, gcp, ... as SkyPilot reports it; empty: any cloud without its own price.",
    )
    usd_per_gpu_hour = models.DecimalField(
        "USD per GPU-hour", max_digits=10, decimal_places=4, validators=[MinValueValidator(0)]
    )
    estimate = models.BooleanField(
        default=False, help_text="A rough list price (seeded), not what you pay."
    )
    note = models.CharField(max_length=200, blank=True, help_text="Where the price comes from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "accelerator_prices"
        ordering = ["accelerator", "cloud"]
        constraints = [
            models.UniqueConstraint(
                Lower("accelerator"),
                Lower("cloud"),
                name="unique_accelerator_price",
                violation_error_message="A price for this accelerator and cloud already exists.",
            )
        ]

    def __str__(self) -> str:
        where = f" on {self.cloud}" if self.cloud else ""
        return f"{self.accelerator}{where}: ${self.usd_per_gpu_hour}/GPU-h"


class JobSample(models.Model):
    """One reading of a running job's log: progress and metrics at a moment. Kept bounded per
    job (older samples thinned), so storage grows with jobs, not with how long they run."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField()
    step = models.BigIntegerField(null=True, blank=True)
    total = models.BigIntegerField(null=True, blank=True)
    epoch = models.BigIntegerField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "job_samples"
        ordering = ["job", "taken_at", "id"]
        indexes = [models.Index(fields=["job", "taken_at"], name="job_samples_job_idx")]

    def __str__(self) -> str:
        return f"job {self.job_id} at {self.taken_at:%Y-%m-%d %H:%M}: step {self.step}"


class BudgetPeriod(models.TextChoices):
    MONTH = "month", "calendar month (UTC)"
    WEEK = "week", "ISO week (UTC, from Monday)"
    TOTAL = "total", "all time"


class GroupBudget(models.Model):
    """A group's GPU-hour and/or cost budget per period: a warning at 80 %, and at 100 % (if
    ``stop_at_limit``) its experiments set to desired STOPPED through the logged Stop path."""

    group = models.OneToOneField(ExperimentGroup, on_delete=models.CASCADE, related_name="budget")
    gpu_hours = models.DecimalField(
        "GPU-hours",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    usd = models.DecimalField(
        "USD",
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )
    stop_at_limit = models.BooleanField(
        default=False, help_text="At 100 %, set the group's experiments to desired STOPPED."
    )
    warned_for = models.CharField(
        max_length=16, blank=True, editable=False, help_text="The period last warned about."
    )
    exceeded_for = models.CharField(
        max_length=16, blank=True, editable=False, help_text="The period last found exceeded."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "group_budgets"

    def __str__(self) -> str:
        return f"budget of {self.group}"

    def clean(self) -> None:
        if self.gpu_hours is None and self.usd is None:
            raise ValidationError("Give a GPU-hour budget, a USD budget, or both.")


class NotificationEvent(models.TextChoices):
    JOB_FAILED = "job_failed", "a job of a desired-RUNNING experiment failed"
    PARKED = "parked", "an experiment was parked"
    COMPLETED = "completed", "an experiment completed"
    STALLED = "stalled", "a running job stalled"
    BUDGET_WARNING = "budget_warning", "a group reached 80 % of its budget"
    BUDGET_EXCEEDED = "budget_exceeded", "a group reached its budget"
    SYNC_FAILING = "sync_failing", "a sync has been failing for a while"


class WebhookFormat(models.TextChoices):
    SLACK = "slack", "Slack-compatible incoming webhook ({text, blocks})"
    JSON = "json", "plain JSON (event, title, text, data)"


def validate_events(value: object) -> None:
    """A list of known event names, each once."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Events must be a list of event names.")
    unknown = sorted(set(value) - set(NotificationEvent.values))
    if unknown:
        raise ValidationError(
            f"Unknown events: {', '.join(unknown)} (known: {', '.join(NotificationEvent.values)})."
        )
    if len(set(value)) != len(value):
        raise ValidationError("Each event once.")


class WebhookDestination(models.Model):
    """Where notifications go. The URL is a secret (Slack's carries its token): never shown
    after it is saved, never logged."""

    name = models.CharField(
        max_length=100, unique=True, validators=[validation.validate_single_line]
    )
    url = models.TextField(
        "URL", help_text="https://hooks.slack.com/services/... or any URL that takes a JSON POST."
    )
    format = models.CharField(
        max_length=8, choices=WebhookFormat.choices, default=WebhookFormat.SLACK
    )
    events = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_events],
        help_text="The events this destination wants; empty: none.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "webhook_destinations"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Notification(models.Model):
    """One message to one destination (the outbox): repeats of an event with the same key within
    the collapse window add to ``count`` instead of sending again."""

    destination = models.ForeignKey(
        WebhookDestination, on_delete=models.CASCADE, related_name="notifications"
    )
    event = models.CharField(max_length=32, choices=NotificationEvent.choices)
    key = models.CharField(max_length=400, help_text="What repeats collapse on (a bucket, a name).")
    experiment_name = models.CharField(max_length=validation.NAME_MAX_LENGTH, blank=True)
    title = models.CharField(max_length=300)
    text = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    count = models.PositiveIntegerField(default=1, help_text="Events collapsed into this one.")
    status = models.CharField(
        max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    answer = models.TextField(blank=True, help_text="The receiver's last answer or error.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "notifications"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["destination", "event", "key", "-created_at"], name="notify_collapse_idx"
            ),
            models.Index(fields=["status", "next_attempt_at"], name="notify_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.destination}: {self.title} ({self.status})"
