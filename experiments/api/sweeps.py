"""``POST /api/sweeps/``: a sweep in one call (thin: ``experiments.sweeps`` plans and creates).

``dry_run`` answers the plan (200); otherwise every experiment is created (201, one result per
item) or none is (400 naming the items and what is wrong with each).
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import sweeps, validation
from experiments.api.common import StrictQueryParams, errors, experiment_filter
from experiments.api.fields import (
    ExperimentRefField,
    IdField,
    StrictBooleanField,
    StrictCharField,
    StrictSerializer,
)
from experiments.api.serializers import ExperimentFieldsSerializer
from experiments.models import Experiment, ExperimentGroup


class SweepFieldsSerializer(ExperimentFieldsSerializer):
    """The base configuration of a blank sweep, or what differs from ``base``'s."""

    refused_fields = {
        **ExperimentFieldsSerializer.refused_fields,
        "starred": "A sweep's experiments start unstarred: star them afterwards.",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = "The names' {base} (default: base's name)."


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": 'a list "0.1, 0.3" or a range "1..8 x4 [log]"'},
            {
                "type": "array",
                "items": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
            },
        ]
    }
)
class AxisSpecField(serializers.JSONField):
    """One axis: a text spec or a JSON list of values."""


class SweepSerializer(StrictSerializer):
    """A sweep: a base (an experiment, or ``fields``), its axes, how they combine, the names'
    template and the target group. Unknown keys are refused (400), never ignored."""

    base = ExperimentRefField(
        required=False, allow_null=True, help_text="The experiment to copy (id or name)."
    )
    fields = SweepFieldsSerializer(required=False)
    axes = serializers.DictField(
        child=AxisSpecField(),
        allow_empty=False,
        help_text="Flag name -> values: a list, or a range such as 1e-4..1e-2 x3 log.",
    )
    mode = serializers.ChoiceField(choices=[(m, m) for m in sweeps.MODES], default="grid")
    name_template = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=validation.NAME_MAX_LENGTH,
        help_text=f"Default {sweeps.DEFAULT_TEMPLATE}.",
    )
    group = IdField(required=False, help_text="An existing group to add them to.")
    new_group = StrictCharField(
        required=False,
        max_length=validation.GROUP_NAME_MAX_LENGTH,
        help_text="A new group's name (default: '<base> sweep').",
    )
    dry_run = StrictBooleanField(required=False, default=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("base") is None and not (attrs.get("fields") or {}).get("name"):
            raise serializers.ValidationError(
                {"fields": ["Without a base experiment, give fields with at least a name."]}
            )
        if "group" in attrs and attrs.get("new_group"):
            raise serializers.ValidationError({"new_group": ["Give group or new_group, not both."]})
        return attrs


class SweepItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    values = serializers.DictField(help_text="The swept flags' values.")
    flags = serializers.DictField(help_text="All its flags.")
    nodes = serializers.IntegerField()
    gpus_per_node = serializers.IntegerField()
    gpus = serializers.IntegerField(help_text="nodes x GPUs: what a Start requests.")
    notes = serializers.ListField(child=serializers.CharField())
    errors = serializers.DictField(allow_null=True)


class SweepPlanSerializer(serializers.Serializer):
    base = serializers.CharField()
    keys = serializers.ListField(child=serializers.CharField())
    mode = serializers.CharField()
    name_template = serializers.CharField()
    count = serializers.IntegerField()
    nodes = serializers.IntegerField()
    gpus = serializers.IntegerField(help_text="GPUs if all are started.")
    gpus_each = serializers.IntegerField(allow_null=True)
    summary = serializers.CharField()
    valid = serializers.BooleanField()
    items = SweepItemSerializer(many=True)


class SweepCreatedItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.CharField(help_text="Its page in the web UI.")
    values = serializers.DictField()


class SweepGroupSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    flags = serializers.ListField(child=serializers.CharField())


class SweepCreatedSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    summary = serializers.CharField()
    group = SweepGroupSerializer()
    items = SweepCreatedItemSerializer(many=True)


def _base(ref: Any) -> Experiment | None:
    if ref is None:
        return None
    experiment = Experiment.objects.filter(**experiment_filter(str(ref.raw))).first()
    if experiment is None:
        raise exceptions.ValidationError({"base": [f"No experiment {ref.raw!r}."]})
    return experiment


class SweepView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Create a sweep",
        description="Experiments from one configuration (a base experiment's, or `fields`), one "
        "per combination of the axes' values: `grid` (every combination) or `zip` (the n-th "
        'of each). An axis is a list (`[32, 64]` or `"0.1, 0.3"`) or a range (`1..8 x4`, '
        f"`1e-4..1e-2 x3 log`, `1..8 step 2`); at most {sweeps.MAX_SWEEP_ITEMS} experiments. "
        "Names follow `name_template` (default `{base}.{key}{value}`, the key part repeated "
        "per flag), made valid and unique. `dry_run` answers the plan (200); otherwise all are "
        "created, STOPPED, into `group` or a new group `new_group` whose flag columns are the "
        "swept flags (201), or none is (400 listing each item's problem).",
        request=SweepSerializer,
        responses={
            200: SweepPlanSerializer,
            201: SweepCreatedSerializer,
            **errors(400, 403, 415),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = SweepSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        base = _base(data.get("base"))
        fields: dict[str, Any] = sweeps.base_fields_of(base) if base is not None else {}
        fields.update(data.get("fields") or {})
        group = None
        if "group" in data:
            group = ExperimentGroup.objects.filter(pk=data["group"]).first()
            if group is None:
                raise exceptions.ValidationError({"group": [f"No group with id {data['group']}."]})
        # a ValidationError (axes, mode, name_template, items) is the handler's 400
        plan = sweeps.plan(fields, data["axes"], data["mode"], data.get("name_template", ""))
        if data["dry_run"]:
            return Response(SweepPlanSerializer(plan.as_dict()).data)
        result = sweeps.create_sweep(
            request.user, plan, group=group, new_group_name=data.get("new_group")
        )
        answer = {
            "count": plan.count,
            "summary": plan.summary(),
            "group": {
                "id": result.group.pk,
                "name": result.group.name,
                "flags": list(result.group.flags),
            },
            "items": [
                {
                    "index": item.index,
                    "id": experiment.pk,
                    "name": experiment.name,
                    "url": request.build_absolute_uri(
                        reverse("experiment_detail", args=[experiment.pk])
                    ),
                    "values": item.values,
                }
                for item, experiment in zip(plan.items, result.experiments, strict=True)
            ],
        }
        return Response(SweepCreatedSerializer(answer).data, status=status.HTTP_201_CREATED)
