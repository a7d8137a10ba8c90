"""``Experiment.objects.with_latest()`` runs the latest-job/epoch annotations as SQL compiled
once (experiments/querysets.py ``precompiled``): every value, type and filter must equal the
ORM form's, on SQLite and on PostgreSQL (the suite's PostgreSQL run)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from experiments.choices import JobStatus
from experiments.models import Experiment, Launch

ANNOTATIONS = [
    "latest_job_id",
    "latest_job_status",
    "latest_job_submitted_at",
    "latest_job_started_at",
    "latest_job_ended_at",
    "latest_job_failure_signature",
    "latest_job_progress",
    "latest_job_stalled",
    "latest_job_recovery_count",
    "latest_epoch",
    "has_active_job",
    "has_owned_active_job",
]


def testprecompiled_annotations_equal_the_orm_ones(make_experiment, make_job, make_checkpoint):
    now = timezone.now()
    a, b, c = (make_experiment(n) for n in ("pre-a", "pre-b", "pre-c"))
    make_job(1, "pre-a", status=JobStatus.FAILED, submitted_at=now - timedelta(hours=2),
             ended_at=now - timedelta(hours=1), failure_signature="oom", recovery_count=2)  # fmt: skip
    owned = make_job(2, "pre-a", status=JobStatus.RUNNING, submitted_at=now - timedelta(minutes=3),
                     started_at=now - timedelta(minutes=2), stalled=True)  # fmt: skip
    Launch.objects.create(experiment=a, job_id=owned.id, token="t-1")
    make_job(3, "pre-b", status=JobStatus.SUCCEEDED, submitted_at=now - timedelta(days=1))
    make_checkpoint(a, 7)
    make_checkpoint(a, 12)
    make_checkpoint(b, 3, missing=True)
    orm = {e.name: e for e in Experiment.objects.get_queryset().with_latest()}
    fast = {e.name: e for e in Experiment.objects.with_latest()}
    assert set(orm) == set(fast) == {"pre-a", "pre-b", "pre-c"}
    for name, expected in orm.items():
        for field in ANNOTATIONS:
            got, want = getattr(fast[name], field), getattr(expected, field)
            assert got == want and type(got) is type(want), (name, field, got, want)
    assert fast["pre-a"].latest_epoch == 12 and fast["pre-b"].latest_epoch is None
    assert fast["pre-a"].has_owned_active_job is True and fast["pre-c"].latest_job_id is None
    # filters and ordering on the annotations still work, in one query
    with CaptureQueriesContext(connection) as queries:
        failed = list(Experiment.objects.with_latest().filter(latest_job_status="RUNNING"))
        ordered = [
            e.name
            for e in Experiment.objects.with_latest().order_by(
                F("latest_epoch").desc(nulls_last=True), "name"
            )
        ]
    assert [e.name for e in failed] == ["pre-a"]
    assert ordered[0] == "pre-a"
    assert len(queries) == 2
    assert c.pk  # made, with no job: every annotation None or False above
