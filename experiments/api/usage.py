"""``GET /api/usage/``: GPU-hours and cost over a window, as the Usage page shows them."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import usage
from experiments.api.common import StrictQueryParams, StrictQuerySerializer, errors


class UsageQuerySerializer(StrictQuerySerializer):
    by = serializers.ChoiceField(choices=list(usage.DIMENSIONS), required=False, default="user")
    since = serializers.DateField(required=False, help_text="First day (UTC); default: 6 days ago.")
    until = serializers.DateField(required=False, help_text="Last day (UTC, inclusive); today.")
    bucket = serializers.ChoiceField(choices=list(usage.BUCKETS), required=False, default="day")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        since, until = usage.default_dates(data.get("since"), data.get("until"))
        try:
            data["start"], data["end"] = usage.window(since, until, data["bucket"])
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            raise serializers.ValidationError({field: [message]}) from None
        data["since"], data["until"] = since, until
        return data


class UsageRowSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The user, experiment, group, accelerator or cloud.")
    jobs = serializers.IntegerField()
    gpu_hours = serializers.FloatField(help_text="Nodes x GPUs per node x run time, in hours.")
    cost_usd = serializers.FloatField(help_text="Of the priced GPU-hours only.")
    unpriced_gpu_hours = serializers.FloatField(
        help_text="GPU-hours of accelerators with no price."
    )
    unknown_jobs = serializers.IntegerField(help_text="Jobs that do not say GPUs or run time.")


class UsagePointSerializer(serializers.Serializer):
    start = serializers.DateTimeField(help_text="The bucket's first moment (UTC).")
    gpu_hours = serializers.DictField(child=serializers.FloatField(), help_text="Per key.")


class UsageSerializer(serializers.Serializer):
    by = serializers.CharField()
    since = serializers.DateField()
    until = serializers.DateField()
    rows = UsageRowSerializer(many=True)
    total = UsageRowSerializer()
    unpriced_accelerators = serializers.ListField(child=serializers.CharField())
    estimated = serializers.BooleanField(help_text="Some cost uses a seeded estimate price.")
    bucket = serializers.CharField()
    series = UsagePointSerializer(many=True, help_text="GPU-hours per bucket, largest keys.")


class UsageView(StrictQueryParams, APIView):
    extra_query_params = ("by", "since", "until", "bucket")

    @extend_schema(
        summary="GPU-hours and cost",
        description="GPU-hours (nodes x GPUs per node x run time) and cost (x the accelerator's "
        "price, see the admin's Accelerator prices) of the jobs that ended between `since` and "
        "`until` (dates, UTC, inclusive; running jobs count up to now), by user, experiment, "
        "group, accelerator or cloud, largest first, with a total and a series per `bucket`. "
        "GPU-hours of an accelerator with no price are `unpriced_gpu_hours`, never a zero cost.",
        parameters=[UsageQuerySerializer],
        responses={200: UsageSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        report = usage.usage(data["by"], data["start"], data["end"])
        chart = usage.series(data["by"], data["start"], data["end"], data["bucket"])
        answer = {
            "by": report.by,
            "since": data["since"],
            "until": data["until"],
            "rows": [row.as_dict() for row in report.rows],
            "total": report.total.as_dict(),
            "unpriced_accelerators": report.unpriced,
            "estimated": report.estimated,
            "bucket": chart.bucket,
            "series": [
                {"start": start, "gpu_hours": {k: round(h, 3) for k, h in chart.stack(start)}}
                for start in chart.starts
            ],
        }
        return Response(UsageSerializer(answer).data)
