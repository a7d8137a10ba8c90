"""Shared fixtures: small factories that go through the real services."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
import responses
from django.utils import timezone
from fake_skypilot import ENDPOINT, FakeSkyPilot

from experiments import services
from experiments.models import Checkpoint, Experiment, Job, JobStatus

_seq = itertools.count(1)


@pytest.fixture
def make_experiment(db):
    def make(name: str | None = None, **fields) -> Experiment:
        return services.create_experiment("tester", name=name or f"exp-{next(_seq)}", **fields)

    return make


@pytest.fixture
def make_job(db):
    def make(job_id: int | None = None, name: str | None = "exp", **fields) -> Job:
        now = timezone.now()
        defaults = {
            "status": JobStatus.RUNNING,
            "job_name": name or "",
            "submitted_at": now - timedelta(minutes=5),
            "first_seen": now,
            "last_seen": now,
        }
        defaults.update(fields)
        return Job.objects.create(id=job_id or next(_seq) + 10_000, experiment_id=name, **defaults)

    return make


@pytest.fixture
def make_checkpoint(db):
    def make(experiment: Experiment, epoch: int, **fields) -> Checkpoint:
        defaults = {
            "model_path": f"s3://softmax-public/policies/{experiment.name}/{experiment.name}:v{epoch}.mpt",
            "policy_version": f"v{epoch}",
            "synced_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
        defaults.update(fields)
        return Checkpoint.objects.create(experiment=experiment, epoch=epoch, **defaults)

    return make


@pytest.fixture
def server(db, settings, monkeypatch):
    """A SkyPilot API server double (the real request protocol) that SkyDeck is pointed at."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setattr("syncing.skypilot.time.sleep", lambda s: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeSkyPilot(rsps)
