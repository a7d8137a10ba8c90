"""API serializers.

Reading uses model serializers over the annotated querysets (no per-row queries). Writing uses
plain, strict serializers: they only check JSON types and sizes (a string is a string, a boolean
a boolean, unknown keys are errors) and hand the values to ``experiments.services``, where the
model's ``full_clean()`` applies the real rules, exactly as for the admin and the UI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers
from rest_framework.settings import api_settings

from experiments import services, validation
from experiments.models import (
    CURRENT_STATE_CHOICES,
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    Job,
    JobStatus,
    OperationLog,
)
from experiments.validation import (
    ACCELERATOR_RE,
    FLAG_KEY_MAX_LENGTH,
    FLAG_KEY_RE,
    GIT_REF_RE,
    NAME_MAX_LENGTH,
    NAME_RE,
    TAG_RE,
)

#: Ids are 64-bit: larger numbers are rejected before they reach the database.
MAX_ID = 2**63 - 1
#: Most experiments one bulk request may name.
MAX_BULK_ITEMS = 1000
NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY


def is_digits(text: str) -> bool:
    """Only 0-9 (``str.isdigit`` also accepts characters such as "³" that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _has_lone_surrogate(value: Any) -> bool:
    """Lone UTF-16 surrogates (valid in JSON escapes) cannot be stored in UTF-8 or jsonb."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, Mapping):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_lone_surrogate(v) for v in value)
    return False


class SchemaPattern(RegexValidator):
    """Documents a pattern in the OpenAPI schema without enforcing it here.

    The model's validators (run by the services' ``full_clean()``) stay the one place the rule
    is checked, with their own messages; the pattern lets clients and generators know it.
    """

    def __call__(self, value: Any) -> None:
        return None


def _whole(regex: re.Pattern[str], *, blank: bool = False, prefix: str = "") -> str:
    """A validator's (unanchored, ``fullmatch``) regex as a JSON Schema pattern.

    JSON Schema patterns are ECMA-262 regexes, where ``$`` (without the m flag) matches only at
    the very end: ``^(?:...)$`` there is the full match the validators do in Python.
    """
    body = f"(?:{regex.pattern})"
    return f"^{prefix}{body}{'?' if blank else ''}$"


def whole_numbers_up_to(limit: int) -> str:
    """A regex (unanchored) for the whole numbers 1 to ``limit``, without leading zeros."""
    digits = str(limit)
    parts = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            rest = len(digits) - i - 1
            parts.append(f"{digits[:i]}[{low}-{high}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


NAME_PATTERN = SchemaPattern(_whole(NAME_RE, prefix="(?![0-9]+$)"))
ACCELERATOR_PATTERN = SchemaPattern(_whole(ACCELERATOR_RE, blank=True))
GIT_REF_PATTERN = SchemaPattern(
    _whole(GIT_REF_RE, blank=True, prefix=r"(?!.*\.\.)(?!.*(\.|/|\.lock)$)")
)
TAG_PATTERN = SchemaPattern(_whole(TAG_RE))
FLAG_KEY_PATTERN = SchemaPattern(_whole(FLAG_KEY_RE))
SINGLE_LINE_PATTERN = SchemaPattern(r"^[^\x00-\x08\x0a-\x1f]*$")


class UniqueListField(serializers.ListField):
    """A list whose items may not repeat (the model refuses repeats); the schema says
    ``uniqueItems`` (``UniqueListFieldExtension``)."""


class UniqueListFieldExtension(OpenApiSerializerFieldExtension):
    target_class = UniqueListField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "uniqueItems": True}


# --- strict scalar fields -------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else (DRF's CharField would turn 12 into "12")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false`` only (DRF's BooleanField also takes "yes", 1, "on", ...)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (no strings, floats or booleans)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class IdField(StrictIntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


#: A flag name (``validate_flag_key``): FLAG_KEY_RE, 1 to FLAG_KEY_MAX_LENGTH characters.
FLAG_NAME_PATTERN = _whole(FLAG_KEY_RE, prefix=rf"(?![\s\S]{{{FLAG_KEY_MAX_LENGTH + 1}}})")
FLAG_VALUE_SCHEMA = {
    "oneOf": [
        {
            "type": "string",
            "maxLength": validation.MAX_FLAG_STRING,
            "pattern": SINGLE_LINE_PATTERN.regex.pattern,
        },
        {"type": "number"},
        {"type": "boolean"},
    ],
    "description": "A string, number or boolean.",
}


@extend_schema_field(
    {
        "type": "object",
        # Names as validate_flag_key takes them. OpenAPI 3.0 (JSON Schema draft 4) has no
        # propertyNames: a name is allowed by matching the one patternProperties key.
        "patternProperties": {FLAG_NAME_PATTERN: FLAG_VALUE_SCHEMA},
        "additionalProperties": False,
        "description": "Flag name -> value; names are dotted (trainer.batch_size), values are "
        "strings, numbers or booleans.",
    }
)
class FlagsField(serializers.Field):
    """A JSON object of flags; the model's validators judge names and values."""

    default_error_messages = {
        "invalid": "Flags must be an object of name: value pairs.",
        "surrogate": "Flags must not contain unpaired surrogate characters.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        if _has_lone_surrogate(data):
            self.fail("surrogate")
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


class ExperimentRef:
    """An experiment named in a request by id or by name."""

    __slots__ = ("id", "name", "raw")

    def __init__(self, raw: int | str) -> None:
        self.raw = raw
        self.id: int | None = None
        self.name: str | None = None
        if isinstance(raw, int):
            self.id = raw
        elif is_digits(raw):
            self.id = int(raw)
        else:
            self.name = raw

    @property
    def key(self) -> tuple[str, Any]:
        return ("id", self.id) if self.id is not None else ("name", self.name)

    def __repr__(self) -> str:
        return f"ExperimentRef({self.raw!r})"


#: An experiment named in a request body, as ``ExperimentRefField`` takes it: an integer id, or a
#: string of 1 to 128 characters: digits only are an id (1 to MAX_ID, leading zeros allowed),
#: anything else is a name. A name that breaks the naming rule is not refused here: it names no
#: experiment (the bulk answer reports it per item as invalid, the group calls as no such one).
EXPERIMENT_REF_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
EXPERIMENT_REF_STRING_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": NAME_MAX_LENGTH,
    "pattern": rf"^(?:[\s\S]*[^0-9][\s\S]*|0*{whole_numbers_up_to(MAX_ID)})$",
}
EXPERIMENT_REF_SCHEMA = {
    "oneOf": [
        {**EXPERIMENT_REF_ID_SCHEMA, "description": "id"},
        {**EXPERIMENT_REF_STRING_SCHEMA, "description": "name (or an id as digits)"},
    ]
}


@extend_schema_field(
    {**EXPERIMENT_REF_SCHEMA, "description": "An experiment id (integer) or name (string)."}
)
class ExperimentRefField(serializers.Field):
    default_error_messages = {
        "invalid": "Name an experiment by id (an integer) or name (a string).",
        "range": f"Experiment ids are between 1 and {MAX_ID}.",
        "length": f"Experiment names are 1 to {NAME_MAX_LENGTH} characters long.",
    }

    def to_internal_value(self, data: Any) -> ExperimentRef:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) and not 1 <= data <= MAX_ID:
            self.fail("range")
        if isinstance(data, str):
            if not 1 <= len(data) <= NAME_MAX_LENGTH:
                self.fail("length")
            if is_digits(data) and not 1 <= int(data) <= MAX_ID:
                self.fail("range")
        return ExperimentRef(data)

    def to_representation(self, value: Any) -> Any:
        return value.raw if isinstance(value, ExperimentRef) else value


class StrictSerializerMixin:
    """A JSON object; unknown or read-only keys are rejected (400), never ignored.

    ``refused_fields`` names keys that are not accepted here with the reason why.
    """

    refused_fields: dict[str, str] = {}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {NON_FIELD: [f"Expected a JSON object, got {type(data).__name__}."]},
                code="invalid",
            )
        errors = {}
        for key in data:
            field = self.fields.get(key)  # type: ignore[attr-defined]
            if key in self.refused_fields:
                errors[key] = [self.refused_fields[key]]
            elif field is None:
                errors[key] = ["Unknown field."]
            elif field.read_only:
                errors[key] = ["This field is read-only."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


# --- reading --------------------------------------------------------------------------------


class GroupRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class LatestJobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id",
            "status",
            "submitted_at",
            "started_at",
            "ended_at",
            "duration",
            "recovery_count",
            "failure_reason",
            "user_name",
        ]
        read_only_fields = fields


class LatestCheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = ["id", "epoch", "model_path", "policy_version", "size", "last_modified"]
        read_only_fields = fields


class ExperimentListSerializer(serializers.ListSerializer):
    """Loads the latest job of every experiment on the page in one query."""

    def to_representation(self, data: Any) -> list[Any]:
        items = list(data.all() if hasattr(data, "all") else data)
        wanted = [getattr(e, "latest_job_id", None) for e in items]
        jobs = Job.objects.in_bulk([i for i in wanted if i is not None]) if any(wanted) else {}
        for experiment, job_id in zip(items, wanted, strict=True):
            experiment._api_latest_job = jobs.get(job_id) if job_id is not None else None
        return super().to_representation(items)


class ExperimentSerializer(serializers.ModelSerializer):
    flags = FlagsField(read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    current_state = serializers.ChoiceField(choices=CURRENT_STATE_CHOICES, read_only=True)
    has_active_job = serializers.SerializerMethodField()
    groups = serializers.SerializerMethodField()
    latest_job = serializers.SerializerMethodField()
    latest_checkpoint = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        list_serializer_class = ExperimentListSerializer
        fields = [
            "id",
            "name",
            "desired_state",
            "current_state",
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
            "created_at",
            "updated_at",
            "desired_changed_at",
            "parked_reason",
            "reconcile_note",
            "has_active_job",
            "groups",
            "latest_job",
            "latest_checkpoint",
        ]
        read_only_fields = fields

    def get_has_active_job(self, obj: Experiment) -> bool:
        value = getattr(obj, "has_active_job", None)
        if value is None:
            value = obj.jobs.filter(status__in=JobStatus.active()).exists()
        return bool(value)

    @extend_schema_field(GroupRefSerializer(many=True))
    def get_groups(self, obj: Experiment) -> list[dict[str, Any]]:
        memberships = getattr(obj, "api_memberships", None)
        if memberships is None:
            memberships = obj.group_memberships.select_related("group").order_by(
                "group__order", "group_id"
            )
        return [{"id": m.group_id, "name": m.group.name} for m in memberships]

    @extend_schema_field(LatestJobSerializer(allow_null=True))
    def get_latest_job(self, obj: Experiment) -> dict[str, Any] | None:
        if hasattr(obj, "_api_latest_job"):
            job = obj._api_latest_job
        else:
            job_id = getattr(obj, "latest_job_id", None)
            job = Job.objects.filter(pk=job_id).first() if job_id is not None else None
        return self._nested(LatestJobSerializer).to_representation(job) if job is not None else None

    @extend_schema_field(LatestCheckpointSerializer(allow_null=True))
    def get_latest_checkpoint(self, obj: Experiment) -> dict[str, Any] | None:
        latest = getattr(obj, "api_latest_checkpoints", None)
        if latest is None:
            latest = list(obj.checkpoints.filter(missing=False).order_by("-epoch")[:1])
        return (
            self._nested(LatestCheckpointSerializer).to_representation(latest[0])
            if latest
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


class JobSerializer(serializers.ModelSerializer):
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
            "nodes",
            "gpus",
            "accelerator",
            "resources",
            "user_name",
            "workspace",
            "infra",
            "cloud",
            "region",
            "submitted_at",
            "started_at",
            "ended_at",
            "duration",
            "recovery_count",
            "failure_reason",
            "details",
            "first_seen",
            "last_seen",
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
            from experiments.control import owned_exists

            value = Job.objects.filter(pk=obj.pk).filter(owned_exists()).exists()
        return bool(value)


class CheckpointSerializer(serializers.ModelSerializer):
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


class OperationLogSerializer(serializers.ModelSerializer):
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
        max_length=1000,
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
    """The fields a user sets (``services.EDITABLE_FIELDS``); the model validates the values."""

    refused_fields = {"desired_state": services.DESIRED_STATE_MESSAGE}

    name = StrictCharField(
        max_length=NAME_MAX_LENGTH,
        validators=[NAME_PATTERN],
        help_text="Also the SkyPilot job name and the S3 folder name.",
    )
    flags = FlagsField(required=False)
    nodes = StrictIntegerField(min_value=1, max_value=1024, required=False)
    gpus = StrictIntegerField(min_value=0, max_value=64, required=False, help_text="GPUs per node.")
    accelerator = StrictCharField(
        max_length=64, allow_blank=True, required=False, validators=[ACCELERATOR_PATTERN]
    )
    base_command = StrictCharField(
        max_length=500, allow_blank=True, required=False, validators=[SINGLE_LINE_PATTERN]
    )
    tool_path = StrictCharField(
        max_length=500, allow_blank=True, required=False, validators=[SINGLE_LINE_PATTERN]
    )
    git_ref = StrictCharField(
        max_length=200, allow_blank=True, required=False, validators=[GIT_REF_PATTERN]
    )
    description = StrictCharField(max_length=100_000, allow_blank=True, required=False)
    tags = serializers.ListField(
        child=StrictCharField(max_length=64, validators=[TAG_PATTERN]),
        max_length=200,
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


class ExperimentActionSerializer(ExperimentSerializer):
    """The answer of create, start, stop and adopt: the experiment, plus what was planned."""

    plan = PlanSerializer(read_only=True, allow_null=True)
    notices = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text='E.g. "2 active jobs by dave already use this name (...)": SkyDeck leaves '
        "them alone; adopt them to make them this experiment's run.",
    )

    class Meta(ExperimentSerializer.Meta):
        fields = [*ExperimentSerializer.Meta.fields, "plan", "notices"]
        read_only_fields = fields


class DuplicateSerializer(StrictSerializer):
    name = StrictCharField(
        max_length=NAME_MAX_LENGTH,
        required=False,
        validators=[NAME_PATTERN],
        help_text="Name of the copy; default: <name>.copy, <name>.copy2, ...",
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
        max_length=ExperimentGroup._meta.get_field("name").max_length,
        validators=[SINGLE_LINE_PATTERN],
    )
    flags = UniqueListField(  # validate_flag_key_list: no repeats
        child=StrictCharField(max_length=FLAG_KEY_MAX_LENGTH, validators=[FLAG_KEY_PATTERN]),
        max_length=1000,
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


BULK_ACTIONS = [
    ("set_desired_state", "set_desired_state"),
    ("delete", "delete"),
    ("add_to_group", "add_to_group"),
    ("move_to_group", "move_to_group"),
    ("update", "update"),
]


@extend_schema_field(
    {
        "oneOf": [
            *EXPERIMENT_REF_SCHEMA["oneOf"],
            {
                "type": "object",
                "properties": {
                    "experiment": EXPERIMENT_REF_SCHEMA,
                    "updated_at": {"type": "string", "format": "date-time"},
                },
                "required": ["experiment"],
                "additionalProperties": False,
            },
        ],
        "description": 'An id, a name, or {"experiment": id or name, "updated_at": ...} to '
        "skip it (result conflict) if it changed since you read it.",
    }
)
class BulkItemField(serializers.Field):
    """``5``, ``"name"`` or ``{"experiment": 5, "updated_at": "..."}``."""

    default_error_messages = {
        "invalid": 'Each item is an id, a name, or {{"experiment": ..., "updated_at": ...}}.',
    }

    def to_internal_value(self, data: Any) -> tuple[ExperimentRef, Any]:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - {"experiment", "updated_at"})
            if unknown or "experiment" not in data:
                self.fail("invalid")
            ref = ExperimentRefField().to_internal_value(data["experiment"])
            updated_at = None
            if "updated_at" in data:
                updated_at = serializers.DateTimeField().to_internal_value(data["updated_at"])
            return ref, updated_at
        return ExperimentRefField().to_internal_value(data), None

    def to_representation(self, value: Any) -> Any:
        return value


class BulkSerializer(StrictSerializer):
    dry_run = StrictBooleanField(
        required=False,
        default=False,
        help_text="set_desired_state only: " + DRY_RUN_HELP,
    )
    action = serializers.ChoiceField(
        choices=BULK_ACTIONS,
        help_text="set_desired_state (needs desired_state), delete, add_to_group / "
        "move_to_group (need group; move takes them out of every other group), update "
        "(needs changes).",
    )
    experiments = serializers.ListField(
        child=BulkItemField(), min_length=1, max_length=MAX_BULK_ITEMS
    )
    desired_state = serializers.ChoiceField(choices=DesiredState.choices, required=False)
    group = IdField(required=False, help_text="Target group id.")
    changes = ExperimentChangesSerializer(
        required=False, help_text="Fields to set on every experiment (as in PATCH)."
    )

    NEEDS = {
        "set_desired_state": "desired_state",
        "add_to_group": "group",
        "move_to_group": "group",
        "update": "changes",
    }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        action = attrs["action"]
        needed = self.NEEDS.get(action)
        errors: dict[str, list[str]] = {}
        if needed and needed not in attrs:
            errors[needed] = [f"Required for action {action}."]
        for extra in ("desired_state", "group", "changes"):
            if extra in attrs and extra != needed:
                errors[extra] = [f"Not used by action {action}."]
        if action == "update" and "changes" in attrs and not attrs["changes"]:
            errors["changes"] = ["Name at least one field to change."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


def _bulk_variant(name: str, actions: list[str], extra: dict[str, serializers.Field]):
    """One shape of a bulk request, for the schema (BulkSerializer does the validating)."""
    fields = {
        "action": serializers.ChoiceField(choices=[(a, a) for a in actions]),
        "experiments": serializers.ListField(
            child=BulkItemField(), min_length=1, max_length=MAX_BULK_ITEMS
        ),
        **extra,
    }
    return extend_schema_serializer(component_name=name)(
        type(name + "Serializer", (StrictSerializer,), fields)
    )


BulkSetDesiredStateSerializer = _bulk_variant(
    "BulkSetDesiredState",
    ["set_desired_state"],
    {
        "desired_state": serializers.ChoiceField(choices=DesiredState.choices),
        "dry_run": StrictBooleanField(required=False, help_text=DRY_RUN_HELP),
    },
)
BulkDeleteSerializer = _bulk_variant("BulkDelete", ["delete"], {})
BulkGroupSerializer = _bulk_variant(
    "BulkGroup",
    ["add_to_group", "move_to_group"],
    {"group": IdField(help_text="Target group id.")},
)
BulkUpdateSerializer = _bulk_variant(
    "BulkUpdate",
    ["update"],
    {"changes": ExperimentChangesSerializer(help_text="Fields to set (as in PATCH).")},
)
BULK_VARIANTS = {
    "set_desired_state": BulkSetDesiredStateSerializer,
    "delete": BulkDeleteSerializer,
    "add_to_group": BulkGroupSerializer,
    "move_to_group": BulkGroupSerializer,
    "update": BulkUpdateSerializer,
}

BULK_RESULTS = ["ok", "unchanged", "not_found", "invalid", "conflict"]


class BulkItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in the request.")
    ref = serializers.JSONField(help_text="The id or name as sent.")
    id = serializers.IntegerField(allow_null=True)
    name = serializers.CharField(allow_null=True)
    result = serializers.ChoiceField(
        choices=[(r, r) for r in BULK_RESULTS],
        help_text="ok: done; unchanged: nothing to do; not_found; invalid: refused (see "
        "errors); conflict: changed since the updated_at you sent.",
    )
    detail = serializers.CharField(allow_blank=True)
    errors = serializers.DictField(
        child=serializers.JSONField(), allow_null=True, help_text="Field errors (invalid)."
    )


class BulkResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    counts = serializers.DictField(child=serializers.IntegerField())
    results = BulkItemResultSerializer(many=True)
    plan = PlanSerializer(
        required=False,
        help_text="set_desired_state: what the change requests (GPUs) or cancels, for the "
        "items that are ok (or would be, with dry_run).",
    )


class CancelResultSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    detail = serializers.CharField()
    warning = serializers.CharField(
        allow_blank=True,
        help_text="Set when the experiment is still desired RUNNING (the reconciler will "
        "launch it again).",
    )


class SyncTriggerSerializer(StrictSerializer):
    sources = serializers.ListField(
        child=serializers.ChoiceField(choices=[("skypilot", "skypilot"), ("s3", "s3")]),
        required=False,
        max_length=10,
        help_text="Default: every available source.",
    )


class SyncTaskSerializer(serializers.Serializer):
    source = serializers.CharField()
    task_id = serializers.CharField()


class SyncQueuedSerializer(serializers.Serializer):
    tasks = SyncTaskSerializer(many=True)


class SyncSourceSerializer(serializers.Serializer):
    source = serializers.CharField()
    label = serializers.CharField()
    available = serializers.BooleanField(help_text="False when this syncer is not installed.")
    interval_seconds = serializers.IntegerField()
    stale_after_seconds = serializers.IntegerField()
    last_attempt = serializers.DateTimeField(allow_null=True)
    last_success = serializers.DateTimeField(allow_null=True)
    ok = serializers.BooleanField(allow_null=True, help_text="Whether the last attempt worked.")
    last_error = serializers.CharField(allow_blank=True)
    last_error_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    stale = serializers.BooleanField(help_text="No success within stale_after_seconds.")
    running = serializers.BooleanField(help_text="A pass holds the lease right now.")
    duration_seconds = serializers.FloatField(allow_null=True)
    counts = serializers.DictField(child=serializers.JSONField())


class WorkerSerializer(serializers.Serializer):
    alive = serializers.BooleanField()
    last_task_at = serializers.DateTimeField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    busy = serializers.IntegerField(help_text="Tasks a worker has taken and not finished.")
    queued = serializers.IntegerField(help_text="Tasks waiting for a worker.")
    alive_within_seconds = serializers.IntegerField()


class SyncStatusSerializer(serializers.Serializer):
    sources = SyncSourceSerializer(many=True)
    worker = WorkerSerializer()


class EnumsSerializer(serializers.Serializer):
    desired_states = serializers.ListField(child=serializers.CharField())
    current_states = serializers.ListField(child=serializers.CharField())
    job_statuses = serializers.ListField(child=serializers.CharField())
    active_job_statuses = serializers.ListField(child=serializers.CharField())
    operations = serializers.ListField(child=serializers.CharField())
    sync_sources = serializers.ListField(child=serializers.CharField())
    bulk_actions = serializers.ListField(child=serializers.CharField())


class AuthSchemeSerializer(serializers.Serializer):
    scheme = serializers.CharField()
    description = serializers.CharField()


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    read_only = serializers.BooleanField()


class MetaSerializer(serializers.Serializer):
    version = serializers.CharField(help_text="SkyDeck's version.")
    api_version = serializers.CharField()
    enums = EnumsSerializer()
    auth = AuthSchemeSerializer(many=True)
    read_only_group = serializers.CharField()
    user = MeSerializer()


# --- errors (documentation only) ------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ConflictSerializer(serializers.Serializer):
    detail = serializers.CharField()
    updated_at = serializers.DateTimeField(
        required=False, help_text="The row's current updated_at, when a precondition failed."
    )
