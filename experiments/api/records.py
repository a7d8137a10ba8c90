"""Synced and recorded data: jobs (with cancel), checkpoints and the operation log."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from experiments import control
from experiments.api.common import (
    ID_RE,
    READ_ERRORS,
    BadGateway,
    Conflict,
    StrictQueryParams,
    errors,
    id_param,
)
from experiments.api.filters import CheckpointFilter, JobFilter, OperationLogFilter
from experiments.api.schema import CancelResultSerializer, ErrorSerializer
from experiments.api.serializers import (
    CheckpointSerializer,
    JobDetailSerializer,
    JobSampleSerializer,
    JobSerializer,
    OperationLogSerializer,
)
from experiments.models import (
    Checkpoint,
    Experiment,
    Job,
    JobSample,
    OperationLog,
)
from syncing import services as door

logger = logging.getLogger(__name__)

#: How long ``follow=true`` waits for SkyPilot to answer before the 200 is committed, so that an
#: unreachable server is still a 502 (the web client's own timeouts end sooner:
#: SKYDECK_LOG_CONNECT_TIMEOUT + SKYDECK_LOG_READ_TIMEOUT; this is only a backstop).
FOLLOW_CONNECT_WAIT_SECONDS = 60.0


class PlainTextRenderer(renderers.BaseRenderer):
    """Lets clients send ``Accept: text/plain`` for the log; errors are still JSON."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context=None):
        return data.encode() if isinstance(data, str) else b""


class ServiceUnavailable(exceptions.APIException):
    """503; with ``wait`` (seconds) DRF's handler adds ``Retry-After``."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Too busy: try again later."
    default_code = "unavailable"

    def __init__(self, detail: str | None = None, *, wait: int | None = None) -> None:
        super().__init__(detail)
        self.wait = wait


def _json_errors(*codes: int) -> dict[Any, OpenApiResponse]:
    """Error answers of an operation whose success is not JSON: errors are always JSON."""
    known = [code for code in codes if code != 503]
    documented: dict[Any, OpenApiResponse] = {
        (code, "application/json"): response for code, response in errors(*known).items()
    }
    if 503 in codes:
        documented[(503, "application/json")] = OpenApiResponse(
            ErrorSerializer,
            description="Every follow slot of this server process is taken "
            "(SKYDECK_LOG_STREAMS_MAX).",
        )
    return documented


def list_and_get_schema(
    serializer: type,
    list_summary: str,
    description: str,
    get_summary: str,
    noun: str,
    detail: type | None = None,
) -> Any:
    """The schema of a read-only record list and its rows by id (``detail``: a row's own
    serializer, when it says more than the list's)."""
    return extend_schema_view(
        list=extend_schema(
            summary=list_summary,
            description=description,
            responses={200: serializer(many=True), **errors(*READ_ERRORS)},
        ),
        retrieve=extend_schema(
            summary=get_summary,
            parameters=[id_param(noun)],
            responses={200: detail or serializer, **errors(404)},
        ),
    )


class ById:
    """Rows looked up by their numeric id (``/api/<records>/<id>/``); a JSON 404 says ``missing``."""

    lookup_value_regex = ID_RE
    lookup_url_kwarg = "id"
    missing = "No such record."

    def get_object(self) -> Any:
        row = self.get_queryset().filter(pk=int(self.kwargs["id"])).first()  # type: ignore[attr-defined]
        if row is None:
            raise exceptions.NotFound(self.missing)
        return row


#: What a job's log takes in its query string (the schema's and ``StrictQueryParams``' list).
LOG_PARAMETERS = [
    OpenApiParameter(
        "tail",
        {"type": "integer", "minimum": 1, "maximum": door.MAX_TAIL},
        OpenApiParameter.QUERY,
        required=False,
        description=f"How many of the last lines (default {door.DEFAULT_TAIL}).",
        examples=[OpenApiExample("tail", value=100)],
    ),
    OpenApiParameter(
        "follow",
        OpenApiTypes.BOOL,
        OpenApiParameter.QUERY,
        required=False,
        description="Keep streaming new lines while the job is active (default false). "
        "A finished job's log is complete: it is never followed.",
    ),
]


@list_and_get_schema(
    JobSerializer,
    "List jobs",
    "SkyPilot managed jobs as last synced (all users), newest first.",
    "Get a job",
    "SkyPilot job",
    detail=JobDetailSerializer,
)
class JobViewSet(ById, StrictQueryParams, viewsets.ReadOnlyModelViewSet):
    serializer_class = JobSerializer
    filterset_class = JobFilter
    missing = "No such job."

    def get_queryset(self) -> QuerySet:
        jobs = Job.objects.annotate(
            api_orphaned=~Exists(Experiment.objects.filter(name=OuterRef("experiment_id"))),
            api_owned=control.owned_exists(),
        )
        # a failed job's log tail is kilobytes: only a job's own answer carries it
        return jobs if getattr(self, "action", None) == "retrieve" else jobs.defer("log_tail")

    def get_serializer_class(self) -> type:
        return JobDetailSerializer if getattr(self, "action", None) == "retrieve" else JobSerializer

    @extend_schema(
        summary="A job's progress samples",
        description="What the log sampler read from a running job's log over time, oldest "
        "first: step, total, epoch and metrics at each reading. Bounded per job "
        "(SKYDECK_SAMPLES_PER_JOB; older readings are thinned), so never paginated.",
        parameters=[id_param("SkyPilot job")],
        request=None,
        responses={200: JobSampleSerializer(many=True), **errors(404)},
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def samples(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        job_id = int(self.kwargs["id"])
        if not Job.objects.filter(pk=job_id).exists():
            raise exceptions.NotFound(self.missing)
        rows = JobSample.objects.filter(job_id=job_id).order_by("taken_at", "id")
        return Response(JobSampleSerializer(rows, many=True).data)

    @extend_schema(
        summary="Cancel a job",
        description="Asks the SkyPilot API server to cancel the job and waits until it has "
        "taken the request; the job's status changes at the next sync. The outcome is written "
        "to the operation log. A job already finished (as last synced) is a 409; a SkyPilot "
        "failure is a 502 with its message. If the job's experiment is still desired RUNNING "
        "the reconciler will launch it again: stop the experiment instead to end it for good.",
        parameters=[id_param("SkyPilot job")],
        request=None,
        responses={202: CancelResultSerializer, **errors(403, 404, 409, 502)},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # No transaction here: the call to SkyPilot may take long and must not hold a lock.
        job = self.get_object()
        if not job.is_active:
            raise Conflict(f"Job {job.id} is already {job.status} (as last synced).")
        try:
            warning = door.cancel_job(request.user, job)
        except door.CancelFailed as exc:
            raise BadGateway(str(exc)) from exc
        return Response(
            {
                "job_id": job.id,
                "detail": f"SkyPilot accepted the cancellation of job {job.id}.",
                "warning": warning,
            },
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        summary="A job's log",
        description="The last `tail` lines of the job's log from the SkyPilot API server as "
        "plain text, with control lines and colour codes removed. With `follow=true` and an "
        "active job the answer streams until the job ends or the client disconnects (which "
        "stops the stream on SkyPilot too); if it breaks off, the last line starts with "
        "`# skydeck:`. Only jobs SkyDeck has synced are known (404 otherwise; also 404 when "
        "SkyPilot's jobs controller does not know the job). A SkyPilot failure is a 502 with "
        "its message; too many log reads at once (tails too) a 503 with `Retry-After`.",
        parameters=[
            id_param("SkyPilot job"),
            *LOG_PARAMETERS,
            OpenApiParameter("format", exclude=True),  # the answer's type does not vary
        ],
        request=None,
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="The log, one line per line."
            ),
            **_json_errors(400, 404, 502, 503),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        renderer_classes=[renderers.JSONRenderer, PlainTextRenderer],
        filter_backends=[],
        pagination_class=None,
        extra_query_params=tuple(parameter.name for parameter in LOG_PARAMETERS),
    )
    def logs(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            follow = door.parse_follow(request.query_params.get("follow"))
            log_plan = door.log_plan(
                int(self.kwargs["id"]), request.query_params.get("tail"), follow=bool(follow)
            )
        except door.UnknownJob as exc:
            raise exceptions.NotFound(str(exc)) from None
        except door.JobLogError as exc:
            field, _, message = str(exc).partition(": ")
            raise exceptions.ValidationError({field: [message]}) from None
        try:
            if not log_plan.follow:
                text = door.log_tail_text(log_plan)  # SkyPilotError -> 502 (exception handler)
                return HttpResponse(text, content_type="text/plain; charset=utf-8")
            stream = door.open_log_stream(log_plan)
        except door.NoLog as exc:
            raise exceptions.NotFound(str(exc)) from None
        except door.TooManyStreams as exc:
            raise ServiceUnavailable(str(exc), wait=exc.retry_after) from None
        stream.wait_settled(FOLLOW_CONNECT_WAIT_SECONDS)
        if stream.error is not None:
            stream.close()
            raise stream.error
        return door.log_response(stream, request.META, events=False)

    def handle_exception(self, exc: Exception) -> Response:
        # The log is text, but its errors are JSON whatever the client accepts.
        response = super().handle_exception(exc)
        if self.action == "logs":
            self.request.accepted_renderer = renderers.JSONRenderer()
            self.request.accepted_media_type = "application/json"
        return response


@list_and_get_schema(
    CheckpointSerializer,
    "List checkpoints",
    "Checkpoints found under each experiment's S3 prefix.",
    "Get a checkpoint",
    "checkpoint",
)
class CheckpointViewSet(ById, StrictQueryParams, viewsets.ReadOnlyModelViewSet):
    serializer_class = CheckpointSerializer
    filterset_class = CheckpointFilter
    queryset = Checkpoint.objects.select_related("experiment").order_by(
        "experiment__name", "-epoch"
    )
    missing = "No such checkpoint."


@list_and_get_schema(
    OperationLogSerializer,
    "List the operation log",
    "Who changed what, when, and whether it worked; newest first.",
    "Get one operation log entry",
    "log entry",
)
class OperationLogViewSet(ById, StrictQueryParams, viewsets.ReadOnlyModelViewSet):
    serializer_class = OperationLogSerializer
    filterset_class = OperationLogFilter
    queryset = OperationLog.objects.all()
    missing = "No such log entry."
