"""``GET /api/compare/?e=a,b,c``: the comparison the ``/compare`` page shows, as JSON.

The rows are experiments.compare's, so the API and the page agree on every value and on what
differs. Bad input (1 or more than 20 experiments, unknown names or ids) is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import compare
from experiments.api.common import StrictQueryParams, StrictQuerySerializer, errors


class CompareQuerySerializer(StrictQuerySerializer):
    only_differences = serializers.BooleanField(required=False, default=False)


class ComparedExperimentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    url = serializers.CharField(help_text="Its page in the web UI.")


class CompareRowSerializer(serializers.Serializer):
    field = serializers.CharField(
        help_text='"nodes", "flags.<flag name>", "current_state", ...: the row\'s key.'
    )
    label = serializers.CharField(help_text="What the page calls it.")
    kind = serializers.ChoiceField(choices=list(compare.KINDS))
    values = serializers.ListField(
        child=serializers.CharField(),
        help_text="One per experiment, in their order, exactly as written (ints in full, "
        f'floats round-trip, true/false, compact JSON); "{compare.MISSING}" for a flag not set.',
    )
    differs = serializers.BooleanField()


class ComparisonSerializer(serializers.Serializer):
    experiments = ComparedExperimentSerializer(many=True)
    rows = CompareRowSerializer(many=True)
    differences = serializers.IntegerField(help_text="Rows whose values differ (of all rows).")


class CompareView(StrictQueryParams, APIView):
    extra_query_params = ("e", "ids", "only_differences")

    @extend_schema(
        summary="Compare experiments",
        description=f"{compare.MIN_EXPERIMENTS} to {compare.MAX_EXPERIMENTS} experiments side by "
        "side, in the order given: a row per config field, per flag any of them sets (sorted; "
        f'"{compare.MISSING}" where one does not, which counts as a difference) and per state '
        "(current and desired state, latest epoch, GPU-hours, last failure, latest job), each "
        "with its values and whether they differ. Name them with `e` (names, comma-separated, "
        "repeatable) and/or `ids`; `only_differences=true` leaves out the equal rows.",
        parameters=[
            OpenApiParameter(
                "e", OpenApiTypes.STR, many=True, description="Names, comma-separated."
            ),
            OpenApiParameter(
                "ids",
                {"type": "string", "pattern": r"^\s*([0-9]+\s*(,\s*[0-9]*\s*)*)?$"},
                many=True,
                description="Ids, comma-separated.",
            ),
            CompareQuerySerializer,
        ],
        responses={200: ComparisonSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        query = CompareQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        refs = compare.parse_refs(
            request.query_params.getlist("e"), request.query_params.getlist("ids")
        )
        result = compare.comparison(refs)  # a ValidationError is the handler's 400
        answer: dict[str, Any] = {
            "experiments": [
                {
                    "id": e.pk,
                    "name": e.name,
                    "url": request.build_absolute_uri(reverse("experiment_detail", args=[e.pk])),
                }
                for e in result.experiments
            ],
            "rows": [
                row.as_dict() for row in result.shown(query.validated_data["only_differences"])
            ],
            "differences": result.differences,
        }
        return Response(ComparisonSerializer(answer).data)
