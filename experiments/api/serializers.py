"""API serializers: reading over the annotated querysets, writing as strict shapes.

Reading uses model serializers over the annotated querysets (no per-row queries). Writing uses
plain, strict serializers (``experiments.api.fields``): they only check JSON types and sizes and
hand the values to ``experiments.services``, where the model's ``full_clean()`` applies the real
rules, exactly as for the admin and the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from experiments import services, validation
from experiments.api.fields import (
    ACCELERATOR_PATTERN,
    FLAG_KEY_PATTERN,
    GIT_REF_PATTERN,
    MAX_BULK_ITEMS,
    SINGLE_LINE_PATTERN,
    TAG_PATTERN,
    ExperimentNameField,
    ExperimentRefField,
    FastRepresentation,
    FlagsField,
    IdField,
    SchemaPattern,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
    UniqueListField,
)
from experiments.control import owned_exists
from experiments.models import (
    CURRENT_STATE_CHOICES,
    JOB_RESOURCE_FIELDS,
    JOB_RUN_FIELDS,
    JOB_TIME_FIELDS,
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentGroupMember,
    Job,
    JobSample,
    JobStatus,
    OperationLog,
)
from experiments.validation import (
    DESCRIPTION_MAX_LENGTH,
    FLAG_KEY_MAX_LENGTH,
    GPUS_MAX,
    GPUS_MIN,
    MAX_FLAG_NAMES,
    MAX_TAGS,
    NODES_MAX,
    NODES_MIN,
    TAG_MAX_LENGTH,
)


def _max_length(model: type, field: str) -> int:
    """A model field's max_length: the limit the admin's ModelForm and full_clean() apply."""
    return model._meta.get_field(field).max_length


def _optional_text(field: str, pattern: SchemaPattern) -> StrictCharField:
    """An optional experiment text field: the model's length, the schema's pattern."""
    return StrictCharField(
        max_length=_max_length(Experiment, field),
        allow_blank=True,
        required=False,
        validators=[pattern],
    )


# --- reading --------------------------------------------------------------------------------


class GroupRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class LatestJobSerializer(FastRepresentation, serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id",
            "status",
            *JOB_TIME_FIELDS,
            "user_name",
        ]
        read_only_fields = fields


class LatestCheckpointSerializer(FastRepresentation, serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = ["id", "epoch", "model_path", "policy_version", "size", "last_modified"]
        read_only_fields = fields


#: Where a fork came from (``services.fork_experiment`` sets them; never editable).
LINEAGE_FIELDS = ("parent", "parent_name", "parent_epoch", "parent_uri")


class ForkRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    parent_epoch = serializers.IntegerField(read_only=True, allow_null=True)


def attach_related(experiments: Sequence[Experiment]) -> None:
    """Each experiment's groups, latest checkpoint and latest job, as plain rows: three queries
    for a page, and no model instances (building ~400 of them for a page of 100 cost more than
    the rows' own). The latest job is the one ``with_latest()`` annotated (none without it)."""
    by_id = {e.pk: e for e in experiments}
    for experiment in experiments:
        experiment.api_groups = []
        experiment.api_latest_checkpoint = None
        experiment.api_latest_job = None
    members = (
        ExperimentGroupMember.objects.filter(experiment_id__in=by_id)
        .order_by("group__order", "group_id")
        .values_list("experiment_id", "group_id", "group__name")
    )
    for experiment_id, group_id, group_name in members:
        by_id[experiment_id].api_groups.append({"id": group_id, "name": group_name})
    checkpoints = (
        Checkpoint.objects.latest_per_experiment()
        .filter(experiment_id__in=by_id)
        .values("experiment_id", *LatestCheckpointSerializer.Meta.fields)
    )
    for row in checkpoints:
        by_id[row.pop("experiment_id")].api_latest_checkpoint = SimpleNamespace(**row)
    wanted = {}
    for experiment in experiments:
        job_id = getattr(experiment, "latest_job_id", None)
        if job_id is not None:
            wanted.setdefault(job_id, []).append(experiment)
    if wanted:
        for row in Job.objects.filter(pk__in=wanted).values(*LatestJobSerializer.Meta.fields):
            for experiment in wanted[row["id"]]:
                experiment.api_latest_job = SimpleNamespace(**row)


class ExperimentListSerializer(serializers.ListSerializer):
    """Loads the groups, latest checkpoint and latest job of every experiment on the page at
    once (``attach_related``)."""

    def to_representation(self, data: Any) -> list[Any]:
        items = list(data.all() if hasattr(data, "all") else data)
        attach_related(items)
        return super().to_representation(items)


class ExperimentSerializer(FastRepresentation, serializers.ModelSerializer):
    flags = FlagsField(read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    current_state = serializers.ChoiceField(choices=CURRENT_STATE_CHOICES, read_only=True)
    has_active_job = serializers.SerializerMethodField()
    groups = serializers.SerializerMethodField()
    latest_job = serializers.SerializerMethodField()
    latest_checkpoint = serializers.SerializerMethodField()
    parent_name = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="Forked from: the parent's name, kept after the parent is deleted (parent "
        "null then); null when not a fork.",
    )
    forks_count = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        list_serializer_class = ExperimentListSerializer
        fields = [
            "id",
            "desired_state",
            "current_state",
            *services.EDITABLE_FIELDS,
            "created_at",
            "updated_at",
            "desired_changed_at",
            "parked_reason",
            "reconcile_note",
            "gpu_seconds",
            "has_active_job",
            "groups",
            "latest_job",
            "latest_checkpoint",
            *LINEAGE_FIELDS,
            "forks_count",
        ]
        read_only_fields = fields

    def get_forks_count(self, obj: Experiment) -> int:
        """Experiments forked from this one (annotated by ``experiment_queryset``)."""
        value = getattr(obj, "forks_count", None)
        return obj.forks.count() if value is None else int(value)

    def get_has_active_job(self, obj: Experiment) -> bool:
        value = getattr(obj, "has_active_job", None)
        if value is None:
            value = obj.jobs.filter(status__in=JobStatus.active()).exists()
        return bool(value)

    def to_representation(self, instance: Experiment) -> dict[str, Any]:
        if not hasattr(instance, "api_groups"):  # one experiment, not a page (which attached)
            attach_related([instance])
        return super().to_representation(instance)

    @extend_schema_field(GroupRefSerializer(many=True))
    def get_groups(self, obj: Experiment) -> list[dict[str, Any]]:
        return obj.api_groups

    @extend_schema_field(LatestJobSerializer(allow_null=True))
    def get_latest_job(self, obj: Experiment) -> dict[str, Any] | None:
        job = obj.api_latest_job
        return self._nested(LatestJobSerializer).to_representation(job) if job is not None else None

    @extend_schema_field(LatestCheckpointSerializer(allow_null=True))
    def get_latest_checkpoint(self, obj: Experiment) -> dict[str, Any] | None:
        latest = obj.api_latest_checkpoint
        return (
            self._nested(LatestCheckpointSerializer).to_representation(latest)
            if latest is not None
            else None
        )

    def _nested(self, serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
        """One instance per nested serializer class for the whole page: a ModelSerializer
        builds its fields from the model on first use, which per row cost ~1 ms (most of a
        100-row page's time). List pages share this serializer across rows, so they share it."""
        cache = self.__dict__.setdefault("_nested_serializers", {})
        if serializer_class not in cache:
            cache[serializer_class] = serializer_class(context=self.context)
        return cache[serializer_class]


class ExperimentDetailSerializer(ExperimentSerializer):
    """One experiment (GET, and the answer of every write to one): also its forks."""

    forks = serializers.SerializerMethodField()

    class Meta(ExperimentSerializer.Meta):
        fields = [*ExperimentSerializer.Meta.fields, "forks"]
        read_only_fields = fields

    @extend_schema_field(ForkRefSerializer(many=True))
    def get_forks(self, obj: Experiment) -> list[dict[str, Any]]:
        forks = obj.forks.order_by("name").values("id", "name", "parent_epoch")
        return [dict(fork) for fork in forks]


class GroupMemberSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True, help_text="The experiment's id.")
    name = serializers.CharField(read_only=True)
    order = serializers.IntegerField(read_only=True, help_text="Position in the group, from 0.")
    desired_state = serializers.ChoiceField(choices=DesiredState.choices, read_only=True)
    current_state = serializers.ChoiceField(choices=CURRENT_STATE_CHOICES, read_only=True)


class GroupSerializer(serializers.ModelSerializer):
    flags = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Flag names shown as columns; empty means every flag of its experiments.",
    )
    members = serializers.SerializerMethodField()

    class Meta:
        model = ExperimentGroup
        fields = [
            "id",
            "name",
            "flags",
            "order",
            "collapsed",
            "created_at",
            "updated_at",
            "members",
        ]
        read_only_fields = fields

    @extend_schema_field(GroupMemberSerializer(many=True))
    def get_members(self, obj: ExperimentGroup) -> list[dict[str, Any]]:
        memberships = getattr(obj, "api_memberships", None)
        if memberships is None:
            memberships = obj.memberships.select_related("experiment").order_by("order", "id")
        return [
            {
                "id": m.experiment_id,
                "name": m.experiment.name,
                "order": m.order,
                "desired_state": m.experiment.desired_state,
                "current_state": m.experiment.current_state,
            }
            for m in memberships
        ]


class JobProgressSerializer(serializers.Serializer):
    """The shape of a job's ``progress`` (the schema's; the value is the stored JSON)."""

    step = serializers.IntegerField(allow_null=True)
    total = serializers.IntegerField(allow_null=True)
    epoch = serializers.IntegerField(allow_null=True)
    metrics = serializers.DictField(child=serializers.FloatField())


@extend_schema_field(JobProgressSerializer(allow_null=True))
class ProgressField(serializers.JSONField):
    """``Job.progress`` as stored by the log sampler."""


class JobSampleSerializer(FastRepresentation, serializers.ModelSerializer):
    metrics = serializers.DictField(child=serializers.FloatField(), read_only=True)

    class Meta:
        model = JobSample
        fields = ["taken_at", "step", "total", "epoch", "metrics"]
        read_only_fields = fields


class JobSerializer(FastRepresentation, serializers.ModelSerializer):
    progress = ProgressField(
        read_only=True,
        allow_null=True,
        help_text="The last progress read from its log (RUNNING jobs of desired-RUNNING "
        "experiments): step, total, epoch and metrics; null: never sampled or nothing found.",
    )
    stalled = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="Why a RUNNING job looks stuck (no log progress or no new checkpoint for "
        "longer than the threshold, too many recoveries); null: it does not.",
    )
    experiment = serializers.CharField(
        source="experiment_id",
        read_only=True,
        allow_null=True,
        help_text="The job's name: the experiment it belongs to (if one has that name).",
    )
    orphaned = serializers.SerializerMethodField(
        help_text="True when no experiment has the job's name."
    )
    active = serializers.SerializerMethodField(help_text="True while the job is not finished.")
    launched_by_skydeck = serializers.SerializerMethodField(
        help_text="True when SkyDeck launched the job or a person adopted it: only such jobs "
        "are ever cancelled by the reconciler (a person's Stop or Cancel acts on any job)."
    )

    class Meta:
        model = Job
        fields = [
            "id",
            "experiment",
            "job_name",
            "status",
            "active",
            "orphaned",
            "launched_by_skydeck",
            "task_count",
            "command",
            "git_ref",
            "task_fetched_at",  # null: command and git ref not read yet (a large history)
            *JOB_RESOURCE_FIELDS,
            *(f for f in JOB_RUN_FIELDS if f != "user_hash"),
            "first_seen",
            "last_seen",
            "progress",
            "progress_at",
            "stalled",
        ]
        read_only_fields = fields

    def get_orphaned(self, obj: Job) -> bool:
        value = getattr(obj, "api_orphaned", None)
        if value is None:
            value = not Experiment.objects.filter(name=obj.experiment_id).exists()
        return bool(value)

    def get_active(self, obj: Job) -> bool:
        return obj.is_active

    def get_launched_by_skydeck(self, obj: Job) -> bool:
        value = getattr(obj, "api_owned", None)
        if value is None:
            value = Job.objects.filter(pk=obj.pk).filter(owned_exists()).exists()
        return bool(value)


class JobDetailSerializer(JobSerializer):
    """One job: also its log tail (kilobytes, so not in lists)."""

    log_tail = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="A failed job's last log lines (size-capped), read once after it ended; "
        "null: not read (yet, or it ended before SkyDeck reads logs), empty: no log was left.",
    )

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "log_tail"]
        read_only_fields = fields


class CheckpointSerializer(FastRepresentation, serializers.ModelSerializer):
    experiment_name = serializers.CharField(source="experiment.name", read_only=True)
    replay_paths = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = Checkpoint
        fields = [
            "id",
            "experiment",
            "experiment_name",
            "epoch",
            "model_path",
            "replay_paths",
            "policy_version",
            "size",
            "last_modified",
            "missing",
            "synced_at",
        ]
        read_only_fields = fields


class OperationLogSerializer(FastRepresentation, serializers.ModelSerializer):
    class Meta:
        model = OperationLog
        fields = [
            "id",
            "created_at",
            "actor",
            "operation",
            "experiment",
            "experiment_name",
            "job_id",
            "success",
            "message",
        ]
        read_only_fields = fields


# --- writing --------------------------------------------------------------------------------

UPDATED_AT_HELP = (
    "Optional precondition: the updated_at value you last read. If the row changed since, "
    "nothing is written and the answer is 409. (The If-Match header does the same.)"
)


class FlagsPatchSerializer(StrictSerializer):
    set = FlagsField(required=False, help_text="Flags to add or overwrite.")
    remove = serializers.ListField(
        child=StrictCharField(max_length=FLAG_KEY_MAX_LENGTH, validators=[FLAG_KEY_PATTERN]),
        required=False,
        max_length=MAX_FLAG_NAMES,
        help_text="Flag names to delete; names that are not set are ignored.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        bad = []
        for key in attrs.get("remove", []):
            try:
                validation.validate_flag_key(key)
            except DjangoValidationError as exc:
                bad.extend(exc.messages)
        if bad:
            raise serializers.ValidationError({"remove": bad})
        both = sorted(set(attrs.get("set", {})) & set(attrs.get("remove", [])))
        if both:
            raise serializers.ValidationError(
                {"remove": [f"Flags both set and removed: {', '.join(both)}."]}
            )
        return attrs


class ExperimentFieldsSerializer(StrictSerializer):
    """The fields a user sets (``services.EDITABLE_FIELDS``); the model validates the values.

    Every limit here is the model's (its fields' max_length, ``experiments.validation``): the
    API accepts exactly what the UI and the admin save, so a GET answer PUT back is accepted.
    """

    refused_fields = {"desired_state": services.DESIRED_STATE_MESSAGE}

    name = ExperimentNameField()
    flags = FlagsField(required=False)
    nodes = StrictIntegerField(min_value=NODES_MIN, max_value=NODES_MAX, required=False)
    gpus = StrictIntegerField(
        min_value=GPUS_MIN, max_value=GPUS_MAX, required=False, help_text="GPUs per node."
    )
    accelerator = _optional_text("accelerator", ACCELERATOR_PATTERN)
    base_command = _optional_text("base_command", SINGLE_LINE_PATTERN)
    tool_path = _optional_text("tool_path", SINGLE_LINE_PATTERN)
    git_ref = _optional_text("git_ref", GIT_REF_PATTERN)
    description = StrictCharField(
        max_length=DESCRIPTION_MAX_LENGTH, allow_blank=True, required=False
    )
    tags = serializers.ListField(
        child=StrictCharField(max_length=TAG_MAX_LENGTH, validators=[TAG_PATTERN]),
        max_length=MAX_TAGS,
        required=False,
    )
    starred = StrictBooleanField(required=False)


@extend_schema_serializer(component_name="ExperimentCreate")
class ExperimentCreateSerializer(ExperimentFieldsSerializer):
    pass


#: Fields a request may not combine (``ExperimentUpdateSerializer.validate``; the schema says
#: so with ``not: {required: [...]}``, see ``experiments.api.system.postprocess_schema``).
EXCLUSIVE_FIELDS = ("flags", "flags_patch")


@extend_schema_serializer(component_name="ExperimentUpdate")
class ExperimentUpdateSerializer(ExperimentFieldsSerializer):
    """PUT and PATCH change only the fields given (PUT needs ``name``)."""

    flags_patch = FlagsPatchSerializer(
        required=False,
        help_text='Change some flags: {"set": {"lr": 0.1}, "remove": ["warmup"]}. Keys in '
        "set are added or overwritten, names in remove are deleted, every other flag stays. "
        "Cannot be combined with flags (which replaces all flags).",
    )
    updated_at = serializers.DateTimeField(required=False, help_text=UPDATED_AT_HELP)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if set(EXCLUSIVE_FIELDS) <= set(attrs):
            raise serializers.ValidationError(
                {
                    "flags_patch": [
                        "Send flags (replace all) or flags_patch (change some), not both."
                    ]
                }
            )
        return attrs


@extend_schema_serializer(component_name="ExperimentChanges")
class ExperimentChangesSerializer(ExperimentUpdateSerializer):
    """What a bulk update applies to every experiment it names (no renames)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields.pop("name")
        fields.pop("updated_at")
        return fields


class PreconditionSerializer(StrictSerializer):
    updated_at = serializers.DateTimeField(required=False, help_text=UPDATED_AT_HELP)


DRY_RUN_HELP = "true: answer the plan (GPUs requested, jobs cancelled) and change nothing."


class StartSerializer(PreconditionSerializer):
    dry_run = StrictBooleanField(required=False, default=False, help_text=DRY_RUN_HELP)


class StopSerializer(StartSerializer):
    jobs = serializers.ListField(
        child=IdField(),
        required=False,
        max_length=10_000,
        help_text="Cancel only these of its active jobs (the ones a dry run listed); default: "
        "every active job under its name, whoever launched it.",
    )


class AdoptSerializer(StrictSerializer):
    dry_run = StrictBooleanField(required=False, default=False, help_text=DRY_RUN_HELP)


class PlanJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    user = serializers.CharField(allow_blank=True)
    owned = serializers.BooleanField(help_text="SkyDeck launched or adopted it.")


class PlanItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    changes_desired_state = serializers.BooleanField()
    launches = serializers.BooleanField(help_text="Start: a launch will be requested.")
    nodes = serializers.IntegerField()
    gpus = serializers.IntegerField(help_text="GPUs in total this item requests.")
    cancel_jobs = PlanJobSerializer(many=True)
    adopt_jobs = PlanJobSerializer(many=True)
    blocked_by = PlanJobSerializer(
        many=True, help_text="Active jobs SkyDeck did not launch: Start waits for them."
    )
    note = serializers.CharField(allow_blank=True)


class PlanSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=[(a, a) for a in ("start", "stop", "adopt")])
    dry_run = serializers.BooleanField()
    summary = serializers.CharField(
        help_text='e.g. "Start 10 experiments: 40 nodes \u00d7 8 H100 = 320 GPUs".'
    )
    reconciler = serializers.ChoiceField(
        choices=[(m, m) for m in ("on", "dry-run", "off", "paused")],
        help_text="The reconciler's mode: anything but on launches nothing by itself.",
    )
    nodes = serializers.IntegerField()
    gpus = serializers.IntegerField()
    cancel_jobs = PlanJobSerializer(many=True)
    items = PlanItemSerializer(many=True)
    cancelled_jobs = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="Stop: jobs SkyPilot took."
    )
    cancel_error = serializers.CharField(
        allow_blank=True, required=False, help_text="Stop: why SkyPilot did not take the cancel."
    )


class ExperimentActionSerializer(ExperimentDetailSerializer):
    """The answer of create, start, stop and adopt: the experiment, plus what was planned."""

    plan = PlanSerializer(read_only=True, allow_null=True)
    notices = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text='E.g. "2 active jobs by dave already use this name (...)": SkyDeck leaves '
        "them alone; adopt them to make them this experiment's run.",
    )

    class Meta(ExperimentDetailSerializer.Meta):
        fields = [*ExperimentDetailSerializer.Meta.fields, "plan", "notices"]
        read_only_fields = fields


class DuplicateSerializer(StrictSerializer):
    name = ExperimentNameField(
        required=False, help_text="Name of the copy; default: <name>.copy, <name>.copy2, ..."
    )


class LaunchPreviewSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="False when the experiment cannot be launched.")
    command = serializers.CharField(allow_null=True, help_text="The shell command the task runs.")
    task_yaml = serializers.CharField(
        allow_null=True, help_text="The exact task YAML the reconciler would submit."
    )
    error = serializers.CharField(allow_null=True, help_text="Why there is no task.")


class GroupFieldsSerializer(StrictSerializer):
    name = StrictCharField(
        max_length=_max_length(ExperimentGroup, "name"), validators=[SINGLE_LINE_PATTERN]
    )
    flags = UniqueListField(  # validate_flag_key_list: no repeats, at most MAX_FLAG_NAMES
        child=StrictCharField(max_length=FLAG_KEY_MAX_LENGTH, validators=[FLAG_KEY_PATTERN]),
        max_length=MAX_FLAG_NAMES,
        required=False,
        help_text="Flag names shown as columns; empty means every flag of its experiments.",
    )
    collapsed = StrictBooleanField(required=False)


@extend_schema_serializer(component_name="GroupCreate")
class GroupCreateSerializer(GroupFieldsSerializer):
    pass


@extend_schema_serializer(component_name="GroupUpdate")
class GroupUpdateSerializer(GroupFieldsSerializer):
    updated_at = serializers.DateTimeField(required=False, help_text=UPDATED_AT_HELP)


class MemberListSerializer(StrictSerializer):
    experiments = serializers.ListField(
        child=ExperimentRefField(),
        min_length=1,
        max_length=MAX_BULK_ITEMS,
        help_text="Experiments by id or name.",
    )
    updated_at = serializers.DateTimeField(required=False, help_text=UPDATED_AT_HELP)


class MemberAddSerializer(MemberListSerializer):
    mode = serializers.ChoiceField(
        choices=[("add", "add"), ("move", "move")],
        default="add",
        help_text="add: keep the experiments' other groups; move: take them out of every "
        "other group.",
    )


class MemberOrderSerializer(StrictSerializer):
    experiments = serializers.ListField(
        child=ExperimentRefField(),
        max_length=100_000,
        help_text="Every member of the group exactly once, in the new order.",
    )
    updated_at = serializers.DateTimeField(required=False, help_text=UPDATED_AT_HELP)


class GroupOrderSerializer(StrictSerializer):
    groups = serializers.ListField(
        child=IdField(),
        max_length=100_000,
        help_text="Every group id exactly once, in the new order.",
    )


class GroupOrderResultSerializer(serializers.Serializer):
    groups = serializers.ListField(child=serializers.IntegerField(), read_only=True)


class SyncTriggerSerializer(StrictSerializer):
    sources = serializers.ListField(
        child=serializers.ChoiceField(choices=[("skypilot", "skypilot"), ("s3", "s3")]),
        required=False,
        max_length=10,
        help_text="Default: every available source.",
    )
