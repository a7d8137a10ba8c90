"""``POST /api/bulk/``: one action over many experiments, its request variants and results."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from experiments.api.fields import (
    EXPERIMENT_REF_SCHEMA,
    MAX_BULK_ITEMS,
    ExperimentRef,
    ExperimentRefField,
    IdField,
    StrictBooleanField,
    StrictSerializer,
)
from experiments.api.serializers import (
    DRY_RUN_HELP,
    ExperimentChangesSerializer,
    PlanSerializer,
)
from experiments.models import (
    DesiredState,
)

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
