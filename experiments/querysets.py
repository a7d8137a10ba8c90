"""Query building blocks the UI, admin and API share, each a constant number of queries."""

from __future__ import annotations

import json
from datetime import datetime

from django.apps import apps
from django.db import models
from django.db.models import Exists, OuterRef, Q, Subquery, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce

from experiments import deckquery
from experiments.choices import NO_JOB, JobStatus


def _job_model():
    return apps.get_model("experiments", "Job")


def _active_statuses() -> list[str]:
    return JobStatus.active()


#: A job's GPU-seconds in SQL: nodes x GPUs per node x SkyPilot's run time (NULL when a job does
#: not say one of them; SUM skips those). experiments.usage rolls the same expression up.
GPU_SECONDS = models.ExpressionWrapper(
    models.F("nodes") * models.F("gpus") * models.F("duration"), output_field=models.FloatField()
)


class ExperimentQuerySet(models.QuerySet):
    def with_latest(self) -> ExperimentQuerySet:
        """Annotate each experiment with its latest job and latest checkpoint epoch (no N+1).

        ``Experiment.objects.with_latest()`` is served from a copy built once (ExperimentManager)
        whose annotations are SQL compiled once (``precompiled``): building and compiling these
        subqueries cost several ms a request, ten times more than running them.
        """
        Job = _job_model()
        Checkpoint = apps.get_model("experiments", "Checkpoint")
        latest = Job.objects.filter(experiment_id=OuterRef("name")).order_by(
            models.F("submitted_at").desc(nulls_last=True), "-id"
        )
        return self.annotate(
            latest_job_id=Subquery(latest.values("id")[:1]),
            latest_job_status=Subquery(latest.values("status")[:1]),
            latest_job_submitted_at=Subquery(latest.values("submitted_at")[:1]),
            latest_job_started_at=Subquery(latest.values("started_at")[:1]),
            latest_job_ended_at=Subquery(latest.values("ended_at")[:1]),
            latest_job_failure_signature=Subquery(latest.values("failure_signature")[:1]),
            # the log sampler's reading of it (the deck's progress cell, stalled badge)
            latest_job_progress=Subquery(latest.values("progress")[:1]),
            latest_job_stalled=Subquery(latest.values("stalled")[:1]),
            latest_job_recovery_count=Subquery(latest.values("recovery_count")[:1]),
            # ORDER BY ... LIMIT 1, not MAX(): this form seeks checkpoints_latest_idx
            latest_epoch=Subquery(
                Checkpoint.objects.filter(experiment_id=OuterRef("pk"), missing=False)
                .order_by("-epoch")
                .values("epoch")[:1]
            ),
            has_active_job=Exists(
                Job.objects.filter(experiment_id=OuterRef("name"), status__in=_active_statuses())
            ),
            # ... one SkyDeck answers for (only those does the reconciler ever cancel)
            has_owned_active_job=Exists(
                Job.objects.filter(
                    experiment_id=OuterRef("name"), status__in=_active_statuses()
                ).filter(
                    Exists(
                        apps.get_model("experiments", "Launch").objects.filter(
                            job_id=OuterRef("id"), experiment__name=OuterRef("experiment_id")
                        )
                    )
                )
            ),
        )

    def refresh_current_state(self) -> int:
        """Set ``current_state`` from each experiment's latest job and ``gpu_seconds`` from all
        of its jobs, in one UPDATE (the job syncer, a create and a rename call it)."""
        Job = _job_model()
        mine = Job.objects.filter(experiment_id=OuterRef("name"))
        latest = mine.order_by(models.F("submitted_at").desc(nulls_last=True), "-id")
        used = mine.order_by().values("experiment_id").annotate(s=models.Sum(GPU_SECONDS))
        return self.update(
            current_state=Coalesce(Subquery(latest.values("status")[:1]), Value(NO_JOB)),
            gpu_seconds=Subquery(used.values("s")[:1]),
        )

    def desired_running(self) -> ExperimentQuerySet:
        return self.filter(desired_state="RUNNING")

    def ungrouped(self) -> ExperimentQuerySet:
        return self.filter(group_memberships__isnull=True)

    def search(self, text: str) -> ExperimentQuerySet:
        """The deck's filter box (experiments.deckquery): every ``tag:NAME`` must be one of its
        tags; the rest matches name, description, states, or flag names and values, case-
        insensitively; a ``sort:`` token sorts, it does not filter."""
        query = deckquery.parse(text)
        found = self
        for tag in query.tags:
            found = found.with_tag(tag)
        if not query.text:
            return found
        text = query.text
        return found.filter(
            Q(name__icontains=text)
            | Q(description__icontains=text)
            | Q(current_state__iexact=text)
            | Q(desired_state__iexact=text)
            | Q(flags__icontains=text)
        )

    def with_tag(self, tag: str) -> ExperimentQuerySet:
        """Experiments carrying ``tag`` (exactly, ignoring case). Tags are a JSON list of
        validated names (no quotes), so the quoted name in the stored text is that element, on
        SQLite and PostgreSQL alike (``contains`` on a JSON list is not available on SQLite)."""
        return self.filter(tags__icontains=json.dumps(tag))


class ExperimentManager(models.Manager.from_queryset(ExperimentQuerySet)):
    """``with_latest()`` on all experiments is cloned from one queryset built per database.

    Cloning shares the resolved subqueries, which compiling only reads: the same pattern as a
    DRF view's class-level ``queryset``, which every request clones with ``.all()``.
    """

    _with_latest: dict[str, ExperimentQuerySet]

    def __init__(self) -> None:
        super().__init__()
        self._with_latest = {}

    def with_latest(self) -> ExperimentQuerySet:
        base = self.get_queryset()
        built = self._with_latest.get(base.db)
        if built is None:
            built = self._with_latest[base.db] = precompiled(base.with_latest())
        return built.all()


def precompiled(queryset: ExperimentQuerySet) -> ExperimentQuerySet:
    """The same annotations as SQL compiled once (``RawSQL`` with the output field, so values
    convert as before): Django compiled the nine correlated subqueries on every query, ~3 ms
    a request against 0.3 ms to run them. They name the outer table (``experiments``), so
    this queryset is for top-level queries, not for a subquery of another one."""
    compiler = queryset.query.get_compiler(queryset.db)
    raw = {}
    for name, expression in queryset.query.annotations.items():
        sql, params = compiler.compile(expression)
        # S611: the SQL is what Django compiled from the ORM expressions; params stay apart
        raw[name] = RawSQL(sql, tuple(params), output_field=expression.output_field)  # noqa: S611
    return queryset.model._default_manager.get_queryset().using(queryset.db).annotate(**raw)


class JobQuerySet(models.QuerySet):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=_active_statuses())

    def failed(self) -> JobQuerySet:
        """Any FAILED* status (FAILED, FAILED_SETUP, FAILED_NO_RESOURCE, ...)."""
        return self.filter(status__in=JobStatus.failed())

    def failed_since(self, since: datetime, signature: str | None = None) -> JobQuerySet:
        """Signed failed jobs submitted at or after ``since`` (of one bucket, with ``signature``)."""
        jobs = self.exclude(failure_signature="").filter(submitted_at__gte=since)
        return jobs if signature is None else jobs.filter(failure_signature=signature)

    def failure_buckets(self, since: datetime, signature: str | None = None) -> list[dict]:
        """Failed jobs submitted at or after ``since``, grouped by failure signature, most jobs
        first: count, distinct experiments and users, first and last submitted, the newest job
        of each (``example``: id, names, reason) and the experiments it covers (``names``).
        Three queries: one aggregate over the partial index of failed jobs, the examples, the
        names (``bucket_experiments``)."""
        buckets = list(
            self.failed_since(since, signature)
            .values("failure_signature")
            .annotate(
                jobs=models.Count("id"),
                experiments=models.Count("experiment_id", distinct=True),
                users=models.Count("user_name", distinct=True),
                first=models.Min("submitted_at"),
                last=models.Max("submitted_at"),
                example_id=models.Max("id"),
            )
            .order_by("-jobs", "-last", "failure_signature")
        )
        if not buckets:
            return buckets
        examples = self.model.objects.only(
            "id", "job_name", "experiment_id", "failure_reason", "log_tail"
        ).in_bulk([b["example_id"] for b in buckets])
        names = self.bucket_experiments(since, signature)
        for bucket in buckets:
            bucket["example"] = examples.get(bucket["example_id"])  # None: a restore between
            bucket["names"] = names.get(bucket["failure_signature"], [])
        return buckets

    def bucket_experiments(self, since: datetime, signature: str | None = None) -> dict[str, list]:
        """The experiments (names, sorted) with a failed job in each bucket: what the bucket's
        Stop all and Retry all act on. Jobs of no experiment (orphaned) are left out."""
        Experiment = apps.get_model("experiments", "Experiment")
        rows = (
            self.failed_since(since, signature)
            .filter(Exists(Experiment.objects.filter(name=OuterRef("experiment_id"))))
            .values_list("failure_signature", "experiment_id")
            .distinct()
            .order_by("failure_signature", "experiment_id")
        )
        out: dict[str, list] = {}
        for bucket, name in rows:
            out.setdefault(bucket, []).append(name)
        return out

    def search(self, text: str) -> JobQuerySet:
        """Case-insensitive match on the job name or the user name (the ``q`` of both lists)."""
        text = text.strip()
        if not text:
            return self
        return self.filter(Q(job_name__icontains=text) | Q(user_name__icontains=text))

    def orphaned(self) -> JobQuerySet:
        """Jobs whose name matches no experiment (including unnamed jobs)."""
        Experiment = apps.get_model("experiments", "Experiment")
        return self.filter(
            Q(experiment_id__isnull=True)
            | ~Exists(Experiment.objects.filter(name=OuterRef("experiment_id")))
        )

    def attached(self) -> JobQuerySet:
        Experiment = apps.get_model("experiments", "Experiment")
        return self.filter(Exists(Experiment.objects.filter(name=OuterRef("experiment_id"))))


class CheckpointQuerySet(models.QuerySet):
    def present(self) -> CheckpointQuerySet:
        return self.filter(missing=False)

    def latest_per_experiment(self) -> CheckpointQuerySet:
        """Only the highest-epoch checkpoint of each experiment."""
        newest = self.model.objects.filter(
            experiment_id=OuterRef("experiment_id"), epoch__gt=OuterRef("epoch"), missing=False
        )
        return self.filter(missing=False).exclude(Exists(newest))


class OperationLogQuerySet(models.QuerySet):
    def search(self, text: str) -> OperationLogQuerySet:
        """Case-insensitive match on the experiment name, the actor or the message."""
        text = text.strip()
        if not text:
            return self
        return self.filter(
            Q(experiment_name__icontains=text)
            | Q(actor__icontains=text)
            | Q(message__icontains=text)
        )

    def for_experiment(self, experiment) -> OperationLogQuerySet:
        return self.filter(Q(experiment=experiment) | Q(experiment_name=experiment.name))

    def failed(self) -> OperationLogQuerySet:
        return self.filter(success=False)
