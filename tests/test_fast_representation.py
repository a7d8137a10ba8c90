"""The API's read serializers answer exactly what DRF's own per-field path answers
(FastRepresentation is only a faster way to run the same fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework import serializers

from experiments import services
from experiments.api.experiments import experiment_queryset
from experiments.api.records import JobViewSet
from experiments.api.serializers import (
    CheckpointSerializer,
    ExperimentSerializer,
    JobSerializer,
    OperationLogSerializer,
)
from experiments.models import Checkpoint, Experiment, OperationLog

pytestmark = pytest.mark.django_db


def drf(serializer: serializers.Serializer, instance) -> dict:
    """What DRF's Serializer.to_representation answers for the same instance."""
    return dict(serializers.Serializer.to_representation(serializer, instance))


def test_experiments_read_the_same(make_experiment, make_job, make_checkpoint):
    full = make_experiment(
        "full",
        flags={"trainer.lr": 0.001, "n": 131072, "s": "x", "b": True},
        nodes=2,
        gpus=8,
        accelerator="H100",
        base_command="python train.py",
        git_ref="main",
        description="a <b>description</b>",
        tags=["baseline", "lr"],
        desired_state="RUNNING",
    )
    make_experiment("bare")
    group = services.create_group("t", "g")
    services.add_to_group("t", group, [full])
    now = datetime(2026, 12, 1, 10, 30, 15, 123456, tzinfo=UTC)
    make_job(7, "full", submitted_at=now, started_at=now, ended_at=None, recovery_count=2)
    make_checkpoint(full, 120, size=123, last_modified=now)
    Experiment.objects.filter(name="full").update(parked_reason="parked", reconcile_note="note")
    experiments = list(experiment_queryset().order_by("name"))
    many = ExperimentSerializer(experiments, many=True)
    fast = many.data
    child = many.child
    for experiment, answer in zip(experiments, fast, strict=True):
        assert answer == drf(child, experiment)
    assert fast[1]["latest_job"]["started_at"] == "2026-12-01T10:30:15.123456Z"
    assert fast[1]["latest_job"]["ended_at"] is None and fast[0]["latest_job"] is None
    assert fast[1]["flags"]["n"] == 131072 and fast[1]["groups"] == [{"id": group.pk, "name": "g"}]


def test_jobs_checkpoints_and_operations_read_the_same(make_experiment, make_job, make_checkpoint):
    exp = make_experiment("e")
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    make_job(
        1,
        "e",
        status="FAILED",
        failure_reason="CUDA out of memory",
        duration=12.5,
        submitted_at=when,
        ended_at=when + timedelta(hours=1),
        nodes=2,
        user_name="alice",
    )
    make_job(2, None, status="RUNNING", submitted_at=when)
    make_checkpoint(exp, 3, replay_paths=["s3://b/r1", "s3://b/r2"])
    services.set_desired_state("alice", [exp], "RUNNING")
    view = JobViewSet()
    for job in view.get_queryset().order_by("id"):
        serializer = JobSerializer(job)
        assert serializer.data == drf(serializer, job)
    for checkpoint in Checkpoint.objects.select_related("experiment"):
        serializer = CheckpointSerializer(checkpoint)
        assert serializer.data == drf(serializer, checkpoint)
    operation = OperationLog.objects.latest("id")
    serializer = OperationLogSerializer(operation)
    assert serializer.data == drf(serializer, operation)
    assert serializer.data["created_at"].endswith("Z")
