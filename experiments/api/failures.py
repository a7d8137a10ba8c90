"""``GET /api/failures/``: the Failures page's buckets, for scripts.

Acting on a bucket is the bulk endpoint's ``set_desired_state`` over the bucket's ``experiments``
(with ``dry_run`` first, as the page's confirmation): one door for every Stop and Start.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.api.common import StrictQueryParams, StrictQuerySerializer, errors
from experiments.models import Job
from experiments.triage import DEFAULT_FAILURE_WINDOW, FAILURE_WINDOWS

SIGNATURE_MAX_LENGTH = Job._meta.get_field("failure_signature").max_length


class FailureWindowSerializer(StrictQuerySerializer):
    days = serializers.ChoiceField(
        choices=FAILURE_WINDOWS, required=False, default=DEFAULT_FAILURE_WINDOW
    )
    signature = serializers.CharField(
        required=False, max_length=SIGNATURE_MAX_LENGTH, trim_whitespace=False
    )


class FailureExampleSerializer(serializers.Serializer):
    job_id = serializers.IntegerField()
    job_name = serializers.CharField(allow_null=True)
    experiment = serializers.CharField(allow_null=True, help_text="The job's experiment name.")
    failure_reason = serializers.CharField()


class FailureBucketSerializer(serializers.Serializer):
    signature = serializers.CharField(help_text="Status and the masked reason (or log cause).")
    jobs = serializers.IntegerField()
    experiment_count = serializers.IntegerField(help_text="Distinct experiment names, orphans too.")
    users = serializers.IntegerField()
    first = serializers.DateTimeField(help_text="The first job's submission in the window.")
    last = serializers.DateTimeField(help_text="The last job's submission in the window.")
    example = FailureExampleSerializer(allow_null=True, help_text="The bucket's newest job.")
    experiments = serializers.ListField(
        child=serializers.CharField(),
        help_text="The experiments (names) with a failed job in this bucket: what a Stop all or "
        "Retry all acts on (POST /api/bulk/ set_desired_state).",
    )


class FailureReportSerializer(serializers.Serializer):
    days = serializers.IntegerField()
    since = serializers.DateTimeField()
    buckets = FailureBucketSerializer(many=True)


def _bucket(bucket: dict[str, Any]) -> dict[str, Any]:
    job = bucket["example"]
    example = None
    if job is not None:
        example = {
            "job_id": job.id,
            "job_name": job.job_name,
            "experiment": job.experiment_id,
            "failure_reason": job.failure_reason,
        }
    return {
        "signature": bucket["failure_signature"],
        "jobs": bucket["jobs"],
        "experiment_count": bucket["experiments"],
        "users": bucket["users"],
        "first": bucket["first"],
        "last": bucket["last"],
        "example": example,
        "experiments": bucket["names"],
    }


class FailuresView(StrictQueryParams, APIView):
    extra_query_params = ("days", "signature")

    @extend_schema(
        summary="Failure buckets",
        description="Failed jobs submitted in the last `days` days (1, 7, 30 or 90; default 7), "
        "grouped by failure signature, most jobs first; `signature` answers only that bucket. "
        "To stop or retry a bucket's experiments, POST its `experiments` to /api/bulk/ with "
        '`{"action": "set_desired_state", "desired_state": "STOPPED"}` (or RUNNING), '
        "`dry_run` true first to see the plan.",
        parameters=[
            OpenApiParameter("days", OpenApiTypes.INT, enum=list(FAILURE_WINDOWS)),
            OpenApiParameter("signature", OpenApiTypes.STR),
        ],
        responses={200: FailureReportSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        window = FailureWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        days = window.validated_data["days"]
        since = timezone.now() - timedelta(days=days)
        buckets = Job.objects.failure_buckets(since, window.validated_data.get("signature"))
        report = {"days": days, "since": since, "buckets": [_bucket(b) for b in buckets]}
        return Response(FailureReportSerializer(report).data)
