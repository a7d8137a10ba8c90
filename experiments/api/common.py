"""Pieces every API view shares: errors, pagination, strict queries, preconditions, lookups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError, IntegrityError
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from experiments.api.fields import MAX_ID, NON_FIELD, ExperimentRef, is_digits
from experiments.api.schema import ConflictSerializer, ErrorSerializer
from experiments.models import Experiment
from experiments.validation import NAME_MAX_LENGTH, NAME_RE
from skydeck_site.storage import is_storage_full, storage_full_response
from syncing.services import SkyPilotError

# --- errors ---------------------------------------------------------------------------------


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object changed since you read it: reload it and try again."
    default_code = "conflict"


class BadGateway(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The SkyPilot API server failed."
    default_code = "bad_gateway"


def validation_detail(exc: DjangoValidationError) -> dict[str, Any]:
    """Django's ``ValidationError`` as DRF's ``{field: [messages]}``."""
    if hasattr(exc, "error_dict"):
        return {
            (NON_FIELD if field == "__all__" else field): messages
            for field, messages in exc.message_dict.items()
        }
    return {NON_FIELD: exc.messages}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The one place domain errors become HTTP answers.

    * ``django.core.exceptions.ValidationError`` (the model's ``clean()`` via the services) -> 400
      with field errors;
    * ``SkyPilotError`` -> 502 with its message (one line, never secrets);
    * ``IntegrityError`` (a unique name taken by a concurrent request) -> 409;
    * ``DataError`` (a value the database cannot compare or store, such as a NUL character in a
      query parameter or a date out of its range) -> 400.
    """

    if is_storage_full(exc):
        return storage_full_response(context["request"])
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(validation_detail(exc))
    elif isinstance(exc, SkyPilotError):
        exc = BadGateway(f"SkyPilot API server: {exc}")
    elif isinstance(exc, IntegrityError):
        exc = Conflict("The change collides with a concurrent one (e.g. a name just taken).")
    elif isinstance(exc, DataError):
        exc = exceptions.ValidationError(
            {
                "non_field_errors": [
                    "A value is out of range or holds a character (NUL) that cannot be stored."
                ]
            }
        )
    return drf_exception_handler(exc, context)


# --- pagination -----------------------------------------------------------------------------


class Pagination(PageNumberPagination):
    """``?page=N`` (from 1; past the end is 404) and ``?page_size=N`` (default 100, 1 to 1000)."""

    page_size_query_param = "page_size"
    max_page_size = 1000
    #: Longer page numbers are refused before the database sees an offset that large.
    max_page_digits = 18

    def get_page_size(self, request) -> int:
        raw = request.query_params.getlist(self.page_size_query_param)
        if not raw:
            return self.page_size
        value = raw[-1]
        if len(raw) > 1 or not is_digits(value) or not 1 <= int(value) <= self.max_page_size:
            raise exceptions.ValidationError(
                {self.page_size_query_param: [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return int(value)

    def get_page_number(self, request, paginator) -> int | str:
        raw = request.query_params.getlist(self.page_query_param)
        if not raw:
            return 1
        value = raw[-1]
        if value in self.last_page_strings:
            return value
        if (
            len(raw) > 1
            or not is_digits(value)
            or len(value) > self.max_page_digits
            or int(value) < 1
        ):
            raise exceptions.ValidationError(
                {self.page_query_param: ["A page number: a whole number from 1."]}
            )
        return int(value)

    def get_schema_operation_parameters(self, view) -> list[dict[str, Any]]:
        return [
            {
                "name": self.page_query_param,
                "required": False,
                "in": "query",
                "description": "Page number, from 1 (a page past the end is a 404).",
                "schema": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 10**self.max_page_digits - 1,
                },
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Results per page (default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]


# --- query parameters -----------------------------------------------------------------------

UNKNOWN_QUERY_PARAMETER = "Unknown query parameter. Known: {known}."


class StrictQueryParams:
    """Mixed into every API view: a query parameter the operation does not take is a 400.

    Bodies are strict (the serializers refuse unknown keys); so are query strings: a misspelled
    filter (``?stauts=FAILED``) must not answer the whole list. The answer names each unknown
    parameter, like a field error: ``{"stauts": ["Unknown query parameter. Known: ..."]}``.

    An operation knows what the schema documents for it, from the same sources: on ``list``
    the filter set's filters and the paginator's parameters; on any operation the parameters it
    reads itself (``extra_query_params``, per action through ``@action(extra_query_params=...)``)
    and DRF's format override (``?format=json``). A method the view does not serve is left to
    its 405.
    """

    #: Query parameters the operation reads itself (besides filters and pagination).
    extra_query_params: tuple[str, ...] = ()

    def known_query_params(self) -> set[str]:
        known = set(self.extra_query_params)
        if self.settings.URL_FORMAT_OVERRIDE:
            known.add(self.settings.URL_FORMAT_OVERRIDE)
        if getattr(self, "action", None) == "list":
            filterset_class = getattr(self, "filterset_class", None)
            if filterset_class is not None and self.filter_backends:
                known.update(filterset_class.base_filters)
            paginator = getattr(self, "paginator", None)
            if paginator is not None:
                known.update(p["name"] for p in paginator.get_schema_operation_parameters(self))
        return known

    def initial(self, request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        method = request.method.lower()
        if method == "options" or not hasattr(self, method):
            return  # answered 405
        known = self.known_query_params()
        unknown = [name for name in request.query_params if name not in known]
        if unknown:
            message = UNKNOWN_QUERY_PARAMETER.format(known=", ".join(sorted(known)))
            raise exceptions.ValidationError({name: [message] for name in unknown})


# --- preconditions --------------------------------------------------------------------------

_ANY = object()


def _parse_if_match(header: str) -> list[Any]:
    values: list[Any] = []
    for raw in header.split(","):
        part = raw.strip()
        if part == "*":
            values.append(_ANY)
            continue
        if part.startswith("W/"):
            part = part[2:]
        part = part.strip().strip('"')
        try:
            when = parse_datetime(part)
        except ValueError:
            when = None
        if when is None:
            raise exceptions.ValidationError(
                {
                    "If-Match": [
                        "Send the updated_at value you read (ISO 8601, optionally quoted), or *."
                    ]
                }
            )
        if timezone.is_naive(when):
            when = timezone.make_aware(when, dt.UTC)
        values.append(when)
    return values


def check_precondition(request, instance: Any, body_value: dt.datetime | None = None) -> None:
    """409 unless the row's ``updated_at`` equals what the client says it read.

    The client may send it as the ``If-Match`` header and/or an ``updated_at`` body field; both
    are optional. Call this with the row locked (``select_for_update`` in a transaction).
    """
    header = request.headers.get("If-Match")
    expected = _parse_if_match(header) if header else []
    current = instance.updated_at
    if expected and not any(value is _ANY or value == current for value in expected):
        raise_conflict(instance)
    if body_value is not None and body_value != current:
        raise_conflict(instance)


def raise_conflict(instance: Any) -> None:
    raise Conflict(
        {
            "detail": f"{type(instance).__name__} {instance} changed since you read it "
            "(updated_at differs): reload it and try again.",
            "updated_at": serializers.DateTimeField().to_representation(instance.updated_at),
        }
    )


def etag(instance: Any) -> str:
    return '"' + serializers.DateTimeField().to_representation(instance.updated_at) + '"'


# --- experiment lookups ---------------------------------------------------------------------

_NAME_CHAR = "[-_.A-Za-z0-9]"
#: An experiment in a URL: its id (digits) or its name (SkyPilot's rule, ``validation.NAME_RE``;
#: at most 128 characters, never digits only). Only negative lookaheads, so the same text serves
#: as Django's URL regex and as the schema's (ECMA) pattern.
EXPERIMENT_LOOKUP_RE = (
    rf"[0-9]{{1,18}}|(?![0-9]+(?!{_NAME_CHAR}))(?!{_NAME_CHAR}{{{NAME_MAX_LENGTH + 1}}})"
    + NAME_RE.pattern
)
ID_RE = r"[0-9]{1,18}"


class ValidatedRetrieveMixin:
    """Shared by the experiment and group viewsets: strict input, and ETags on reads."""

    @staticmethod
    def _validated(serializer_class, request, **kwargs: Any) -> dict[str, Any]:
        serializer = serializer_class(data=request.data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)

    def retrieve(self, request, *args: Any, **kwargs: Any) -> Response:
        instance = self.get_object()
        response = Response(self.get_serializer(instance).data)
        response["ETag"] = etag(instance)
        return response


def experiment_filter(ref: str) -> dict[str, Any]:
    return {"pk": int(ref)} if is_digits(ref) else {"name": ref}


def resolve_refs(refs: Iterable[ExperimentRef]) -> dict[tuple[str, Any], Experiment]:
    """Find experiments by id and by name in (at most) two queries."""
    refs = list(refs)
    ids = {r.id for r in refs if r.id is not None}
    names = {r.name for r in refs if r.name is not None}
    found: dict[tuple[str, Any], Experiment] = {}
    if ids:
        for experiment in Experiment.objects.filter(pk__in=ids):
            found[("id", experiment.pk)] = experiment
    if names:
        for experiment in Experiment.objects.filter(name__in=names):
            found[("name", experiment.name)] = experiment
    return found


def resolve_all(refs: list[ExperimentRef], field: str = "experiments") -> list[Experiment]:
    """Every ref must exist (400 naming the missing ones); order kept."""
    found = resolve_refs(refs)
    missing = [r.raw for r in refs if r.key not in found]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise exceptions.ValidationError({field: [f"No such experiment: {shown}{more}."]})
    return [found[r.key] for r in refs]


# --- schema helpers -------------------------------------------------------------------------

_ERROR_RESPONSES = {
    400: OpenApiResponse(
        OpenApiTypes.OBJECT,
        description="Invalid input: {field: [messages]} (non_field_errors for the whole "
        "request; a query parameter the operation does not take under its own name), or "
        "{detail} for malformed JSON.",
    ),
    401: OpenApiResponse(ErrorSerializer, description="Not logged in: send a token or a session."),
    403: OpenApiResponse(
        ErrorSerializer,
        description='Not allowed: a member of the "read-only" group writing, or a session '
        "write without the CSRF token.",
    ),
    404: OpenApiResponse(ErrorSerializer, description="No such object (or page)."),
    409: OpenApiResponse(
        ConflictSerializer,
        description="Changed since the updated_at you sent (If-Match or body), or a "
        "concurrent change won.",
    ),
    415: OpenApiResponse(ErrorSerializer, description="Send application/json."),
    502: OpenApiResponse(ErrorSerializer, description="The SkyPilot API server failed."),
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented error answers of an operation.

    401 and 400 are always possible: every operation refuses a query parameter it does not
    take (``StrictQueryParams``).
    """
    return {code: _ERROR_RESPONSES[code] for code in sorted({400, 401, *codes})}


READ_ERRORS = (400, 404)
WRITE_ERRORS = (400, 403, 404, 409, 415)

# What ``_parse_if_match`` takes, as an ECMA pattern: a comma-separated list of ``*`` or a
# date-time (ISO 8601, as updated_at and the ETag carry it), each optionally quoted and W/-prefixed.
# Only real calendar dates (Feb 29 in leap years): anything parse_datetime refuses is a 400.
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0001-9999
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,6})?)?"
_OFFSET = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_DATETIME = f"{_DATE}T{_TIME}{_OFFSET}?"
_ENTITY = f'(?:\\*|(?:W/)?(?:"{_DATETIME}"|{_DATETIME}))'
#: The If-Match header's pattern (empty: no precondition, as if it were not sent).
IF_MATCH_PATTERN = rf"^(?:{_ENTITY}(?:[ \t]*,[ \t]*{_ENTITY})*)?$"

IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    pattern=IF_MATCH_PATTERN,
    description="The updated_at value (or ETag) you last read; the write answers 409 if the "
    "object changed since. * matches anything. Several may be given, separated by commas.",
    examples=[OpenApiExample("updated_at", value='"2026-01-01T12:00:00.000000Z"')],
)


def id_param(what: str) -> OpenApiParameter:
    """The ``{id}`` path parameter of one kind of object."""
    return OpenApiParameter(
        "id",
        {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        OpenApiParameter.PATH,
        description=f"The {what}'s id.",
        examples=[OpenApiExample("id", value=1)],
    )


ID_OR_NAME = OpenApiParameter(
    "id_or_name",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    pattern=f"^({EXPERIMENT_LOOKUP_RE})$",
    description="The experiment's id or its name.",
    examples=[
        OpenApiExample("by name", value="baseline"),
        OpenApiExample("by id", value="1"),
    ],
)


class StrictQuerySerializer(serializers.Serializer):
    """A view's own query parameters, as strict as the filter sets' (StrictFilterSet): a typed
    parameter given empty (``?since=``) or any parameter given twice is an error, never
    silently the default."""

    def to_internal_value(self, data: Any) -> Any:
        errors = {}
        for name, field in self.fields.items():
            if name not in data:
                continue
            values = data.getlist(name) if hasattr(data, "getlist") else [data[name]]
            if len(values) > 1:
                errors[name] = ["Give this parameter once."]
            elif values[0] == "" and not isinstance(field, serializers.CharField):
                errors[name] = ["Give a value or leave the parameter out."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)
