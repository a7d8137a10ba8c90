"""Query-string filters of the API lists (django-filter: bad values answer 400).

Each filter maps to one queryset method or lookup, so a filtered list still costs a constant
number of queries. ``ordering`` takes a field name, ``-`` in front for descending; ties are
broken by id so pages never overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import django_filters as df
from django import forms
from django.db.models import QuerySet
from django_filters.filters import BaseCSVFilter
from drf_spectacular.utils import extend_schema_field

from experiments.api.fields import MAX_ID
from experiments.models import (
    CURRENT_STATE_CHOICES,
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    Job,
    JobStatus,
    Operation,
    OperationLog,
)

MAX_INT64 = 2**63 - 1


class UtcIsoDateTimeField(df.fields.IsoDateTimeField):
    """An ISO 8601 time, turned into UTC before it reaches the database.

    PostgreSQL refuses offsets beyond ±15:59 that ISO 8601 allows (+17:34 is valid). A time in
    year 1 or 9999 may leave datetime's range once converted: it is then the first or last
    representable instant, which selects exactly the same rows (nothing is stored before or
    after those).
    """

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            edge = datetime.min if parsed.year == datetime.min.year else datetime.max
            return edge.replace(tzinfo=UTC)


class UtcDateTimeFilter(df.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class StrictBooleanField(forms.NullBooleanField):
    """``true`` / ``false`` (any case); anything else is an error, not "no filter"."""

    widget = forms.TextInput  # NullBooleanSelect would turn unknown values into "no filter"

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).lower()
        if text in {"true", "false"}:
            return text == "true"
        raise forms.ValidationError("Use true or false.", code="invalid")

    def validate(self, value) -> None:
        return None


class DocumentedFilter:
    """A filter whose schema is ``schema_field`` (what its form field takes), not inferred.

    drf-spectacular infers a filter's type from the model field, which fails for ``method=``
    filters (any string) and knows nothing of the form field's limits. Set per instance with
    ``extend_schema_field``, so each parameter keeps its own help_text as description.
    """

    schema_field: ClassVar[dict[str, Any]]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        help_text = self.extra.get("help_text")
        schema = {**self.schema_field, **({"description": help_text} if help_text else {})}
        extend_schema_field(schema)(self)


class TextFilter(DocumentedFilter, df.CharFilter):
    """Free text; empty means no filter. Django's form CharField refuses NUL characters."""

    schema_field = {"type": "string", "pattern": "^[^\\u0000]*$"}


class BooleanFilter(DocumentedFilter, df.BooleanFilter):
    field_class = StrictBooleanField
    schema_field = {"type": "boolean"}


class IdFilter(DocumentedFilter, df.NumberFilter):
    """A positive 64-bit integer (no decimals, nothing the database could overflow on)."""

    field_class = forms.IntegerField
    schema_field = {"type": "integer", "minimum": 1, "maximum": MAX_ID}

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class Int64Filter(DocumentedFilter, df.NumberFilter):
    field_class = forms.IntegerField
    schema_field = {"type": "integer", "minimum": -MAX_INT64, "maximum": MAX_INT64}

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("min_value", -MAX_INT64)
        kwargs.setdefault("max_value", MAX_INT64)
        super().__init__(*args, **kwargs)


class StrictFilterSet(df.FilterSet):
    """Typed parameters are strict: an empty value (?starred=) or a repeated single-value
    parameter (?starred=true&starred=false) is an error, never silently "no filter"."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, filter_ in self.filters.items():
            if name not in self.data or name in self.form.errors:
                continue
            values = self.data.getlist(name) if hasattr(self.data, "getlist") else []
            multiple = isinstance(filter_, df.MultipleChoiceFilter)
            if len(values) > 1 and not multiple:
                self.form.add_error(name, "Give this parameter once.")
                valid = False
            elif not isinstance(filter_, TextFilter) and any(value == "" for value in values):
                self.form.add_error(name, "Give a value or leave the parameter out.")
                valid = False
            elif isinstance(filter_, BaseCSVFilter) and any(
                part == "" for value in values for part in value.split(",")
            ):
                self.form.add_error(name, "Separate the values with single commas.")
                valid = False
        return valid


class StableOrderingFilter(df.OrderingFilter):
    """Ordering that always ends with the primary key (stable pagination)."""

    def filter(self, qs: QuerySet, value):
        qs = super().filter(qs, value)
        if value:
            qs = qs.order_by(*qs.query.order_by, "pk")
        return qs


class ColumnOrderingFilter(df.OrderingFilter):
    """Ordering by a list's column names (the /jobs and /operations headers and the API alike).

    ``columns`` maps each name to the fields it sorts by. Ties are broken by id in the direction
    of the last key, so ``-submitted_at`` reads the index (submitted_at DESC, id DESC) with no
    sort step, and pages never overlap.
    """

    def __init__(self, *args: Any, columns: dict[str, tuple[str, ...]], **kwargs: Any) -> None:
        self.columns = columns
        kwargs["fields"] = tuple((name, name) for name in columns)
        super().__init__(*args, **kwargs)

    def order_by(self, value: list[str]) -> list[str]:
        """The ``order_by`` fields of validated sort keys (``-`` in front: descending)."""
        ordering: list[str] = []
        for param in value:
            descending = param.startswith("-")
            for field in self.columns[param.removeprefix("-")]:
                ordering.append(f"-{field}" if descending else field)
        if ordering and not {"id", "-id", "pk", "-pk"} & set(ordering):
            ordering.append("-id" if value[-1].startswith("-") else "id")
        return ordering

    def filter(self, qs: QuerySet, value: Any) -> QuerySet:
        if not value:
            return qs
        return qs.order_by(*self.order_by([v for v in value if v]))


#: The columns /jobs and /api/jobs/?ordering= sort by (the page's headers use these names).
JOB_SORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "name": ("job_name",),
    "status": ("status",),
    "user": ("user_name",),
    "submitted_at": ("submitted_at",),
    "started_at": ("started_at",),
    "ended_at": ("ended_at",),
    "duration": ("duration",),
    "resources": ("nodes", "gpus", "accelerator"),
    "recoveries": ("recovery_count",),
    "failure": ("failure_reason",),
}
#: The columns /operations and /api/operations/?ordering= sort by.
OPERATION_SORT_COLUMNS: dict[str, tuple[str, ...]] = {
    "created_at": ("created_at",),
    "actor": ("actor",),
    "operation": ("operation",),
    "experiment": ("experiment_name",),
    "job_id": ("job_id",),
    "success": ("success",),
    "id": ("id",),
}


class ExperimentFilter(StrictFilterSet):
    name = TextFilter(
        field_name="name", lookup_expr="icontains", help_text="Part of the name (any case)."
    )
    q = TextFilter(
        method="filter_search",
        help_text="The deck's filter box: search name, description, states, flag names and "
        "values; tag:NAME tokens must all be tags of it (a sort: token is ignored here: use "
        "ordering).",
    )
    tag = TextFilter(method="filter_tag", help_text="Only experiments with this tag (exact).")
    state = df.MultipleChoiceFilter(
        field_name="current_state",
        choices=CURRENT_STATE_CHOICES,
        help_text="Current state (the latest job's status, or NO_JOB); repeat for several.",
    )
    desired_state = df.ChoiceFilter(choices=DesiredState.choices)
    group = IdFilter(
        field_name="group_memberships__group", help_text="Only members of this group (id)."
    )
    ungrouped = BooleanFilter(method="filter_ungrouped", help_text="In no group at all.")
    starred = BooleanFilter()
    has_active_job = BooleanFilter(help_text="A job of this experiment is not finished.")
    ordering = StableOrderingFilter(
        fields=(
            ("name", "name"),
            ("created_at", "created_at"),
            ("updated_at", "updated_at"),
            ("desired_state", "desired_state"),
            ("current_state", "current_state"),
            ("latest_job_submitted_at", "latest_submitted_at"),
            ("latest_epoch", "latest_epoch"),
        ),
        help_text="Sort key; prefix with - for descending. Default: name.",
    )

    class Meta:
        model = Experiment
        fields: list[str] = []

    def filter_search(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.search(value)

    def filter_tag(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.with_tag(value) if value else qs

    def filter_ungrouped(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.ungrouped() if value else qs.filter(group_memberships__isnull=False).distinct()


class GroupFilter(StrictFilterSet):
    name = TextFilter(lookup_expr="icontains", help_text="Part of the name (any case).")

    class Meta:
        model = ExperimentGroup
        fields: list[str] = []


class JobFilter(StrictFilterSet):
    experiment = TextFilter(field_name="experiment_id", help_text="Exact experiment (= job) name.")
    name = TextFilter(
        field_name="job_name", lookup_expr="icontains", help_text="Part of the job name."
    )
    q = TextFilter(
        method="filter_search", help_text="Part of the job name or of the user name (any case)."
    )
    status = df.MultipleChoiceFilter(choices=JobStatus.choices, help_text="Repeat for several.")
    failed = BooleanFilter(
        method="filter_failed", help_text="Ended in any failure status (FAILED, FAILED_SETUP, ...)."
    )
    active = BooleanFilter(method="filter_active", help_text="Not finished yet.")
    orphaned = BooleanFilter(method="filter_orphaned", help_text="No experiment has its name.")
    user = TextFilter(field_name="user_name", help_text="SkyPilot user name (exact).")
    failure_signature = TextFilter(
        help_text="Exact failure signature (a bucket of /failures): jobs that failed that way."
    )
    submitted_after = UtcDateTimeFilter(
        field_name="submitted_at", lookup_expr="gte", help_text="Submitted at or after (ISO 8601)."
    )
    submitted_before = UtcDateTimeFilter(
        field_name="submitted_at", lookup_expr="lt", help_text="Submitted before (ISO 8601)."
    )
    ordering = ColumnOrderingFilter(
        columns=JOB_SORT_COLUMNS,
        help_text="Sort key (a column of /jobs); prefix with - for descending; ties by id. "
        "Default: newest submitted first.",
    )

    class Meta:
        model = Job
        fields: list[str] = []

    def filter_search(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.search(value or "")

    def filter_failed(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.failed() if value else qs.exclude(status__in=JobStatus.failed())

    def filter_active(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.active() if value else qs.exclude(status__in=JobStatus.active())

    def filter_orphaned(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return qs
        return qs.orphaned() if value else qs.attached()


class CheckpointFilter(StrictFilterSet):
    experiment = TextFilter(field_name="experiment__name", help_text="Exact experiment name.")
    experiment_id = IdFilter(field_name="experiment_id", help_text="Experiment id.")
    epoch_min = Int64Filter(field_name="epoch", lookup_expr="gte", help_text="Epoch at least.")
    epoch_max = Int64Filter(field_name="epoch", lookup_expr="lte", help_text="Epoch at most.")
    latest = BooleanFilter(
        method="filter_latest", help_text="true: only the newest present checkpoint of each."
    )
    missing = BooleanFilter(help_text="Not found in S3 at the last sync.")
    ordering = StableOrderingFilter(
        fields=(
            ("epoch", "epoch"),
            ("last_modified", "last_modified"),
            ("synced_at", "synced_at"),
            ("size", "size"),
        ),
        help_text="Sort key; prefix with - for descending. Default: experiment, newest epoch.",
    )

    class Meta:
        model = Checkpoint
        fields: list[str] = []

    def filter_latest(self, qs: QuerySet, name: str, value: bool | None) -> QuerySet:
        return qs.latest_per_experiment() if value else qs


class OperationLogFilter(StrictFilterSet):
    experiment = TextFilter(field_name="experiment_name", help_text="Exact experiment name.")
    actor = TextFilter(help_text="User name, reconciler or sync (exact).")
    q = TextFilter(
        method="filter_search",
        help_text="Part of the experiment name, the actor or the message (any case).",
    )
    operation = df.MultipleChoiceFilter(choices=Operation.choices, help_text="Repeat for several.")
    success = BooleanFilter()
    job_id = IdFilter(field_name="job_id")
    since = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")
    ordering = ColumnOrderingFilter(
        columns=OPERATION_SORT_COLUMNS,
        help_text="Sort key (a column of /operations); prefix with - for descending; ties by "
        "id. Default: newest first.",
    )

    class Meta:
        model = OperationLog
        fields: list[str] = []

    def filter_search(self, qs: QuerySet, name: str, value: str) -> QuerySet:
        return qs.search(value or "")
