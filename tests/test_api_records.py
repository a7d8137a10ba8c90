"""REST API: jobs (list, filters, cancel), checkpoints and the operation log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from experiments import services
from experiments.models import Experiment, JobStatus, Operation, OperationLog
from syncing.skypilot import RequestFailed, SkyPilotClient

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def jobs(make_experiment, make_job):
    make_experiment("train")
    return [
        make_job(1, name="train", status=JobStatus.SUCCEEDED, user_name="alice", submitted_at=T0),
        make_job(
            2,
            name="train",
            status=JobStatus.RUNNING,
            user_name="bob",
            submitted_at=T0 + timedelta(hours=1),
        ),
        make_job(
            3,
            name="ghost",
            status=JobStatus.PENDING,
            user_name="alice",
            submitted_at=T0 + timedelta(hours=2),
        ),
        make_job(4, name=None, status=JobStatus.FAILED, submitted_at=T0 + timedelta(hours=3)),
    ]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


# --- jobs -----------------------------------------------------------------------------------


def test_jobs_list_and_filters(api, jobs):
    assert ids(api.get("/api/jobs/")) == [4, 3, 2, 1]  # newest first
    assert ids(api.get("/api/jobs/?experiment=train")) == [2, 1]
    assert ids(api.get("/api/jobs/?name=GHO")) == [3]
    assert ids(api.get("/api/jobs/?status=RUNNING&status=FAILED")) == [4, 2]
    assert ids(api.get("/api/jobs/?active=true")) == [3, 2]
    assert ids(api.get("/api/jobs/?active=false")) == [4, 1]
    assert ids(api.get("/api/jobs/?orphaned=true")) == [4, 3]
    assert ids(api.get("/api/jobs/?orphaned=false")) == [2, 1]
    assert ids(api.get("/api/jobs/?user=alice")) == [3, 1]
    after = (T0 + timedelta(minutes=30)).isoformat().replace("+00:00", "Z")
    before = (T0 + timedelta(hours=2)).isoformat()
    assert ids(api.get("/api/jobs/", {"submitted_after": after, "submitted_before": before})) == [2]
    assert ids(api.get("/api/jobs/?ordering=id")) == [1, 2, 3, 4]
    job = api.get("/api/jobs/?experiment=train").json()["results"][0]
    assert job["experiment"] == "train" and job["orphaned"] is False and job["active"] is True
    assert "raw" not in job


@pytest.mark.parametrize(
    "query",
    [
        "status=DANCING",
        "active=sometimes",
        "orphaned=",
        "submitted_after=yesterday",
        "submitted_before=",
        "ordering=user_name",
        "page_size=-1",
    ],
)
def test_jobs_bad_filters_are_400(api, jobs, query):
    assert api.get(f"/api/jobs/?{query}").status_code == 400


def test_job_retrieve(api, jobs):
    response = api.get("/api/jobs/3/")
    assert response.status_code == 200
    assert response.json()["orphaned"] is True and response.json()["experiment"] == "ghost"
    assert api.get("/api/jobs/99/").status_code == 404
    assert api.get("/api/jobs/-1/").status_code == 404


@pytest.mark.parametrize("count", [3, 40])
def test_jobs_list_uses_a_constant_number_of_queries(
    api, make_experiment, make_job, django_assert_max_num_queries, count
):
    make_experiment("train")
    for i in range(count):
        make_job(100 + i, name="train" if i % 2 else f"orphan-{i}")
    with django_assert_max_num_queries(3):  # token, count, page
        assert len(ids(api.get("/api/jobs/"))) == count


def test_cancel_goes_through_skypilot_and_is_logged(api, jobs, server, make_experiment):
    response = api.post("/api/jobs/2/cancel/")
    assert response.status_code == 202, response.json()
    assert server.cancel_bodies == [{"job_ids": [2]}]
    body = response.json()
    assert body["job_id"] == 2 and body["warning"] == ""
    op = OperationLog.objects.get(operation=Operation.CANCEL)
    assert (op.actor, op.job_id, op.success, op.experiment_name) == ("alice", 2, True, "train")
    assert op.experiment.name == "train"


def test_cancel_warns_when_the_experiment_will_be_relaunched(api, jobs, server):
    services.set_desired_state("tester", Experiment.objects.filter(name="train"), "RUNNING")
    response = api.post("/api/jobs/2/cancel")
    assert response.status_code == 202
    assert "reconciler will launch it again" in response.json()["warning"]


def test_cancel_of_an_orphan(api, jobs, server):
    assert api.post("/api/jobs/3/cancel/").status_code == 202
    assert server.cancel_bodies == [{"job_ids": [3]}]
    op = OperationLog.objects.get(operation=Operation.CANCEL)
    assert op.experiment is None and op.experiment_name == "ghost"


def test_cancel_failure_is_502_with_the_message_and_logged(api, jobs, server, monkeypatch):
    def refuse(self, job_ids):
        raise RequestFailed("ClusterNotUpError", "the jobs controller is not up")

    monkeypatch.setattr(SkyPilotClient, "cancel", refuse)
    response = api.post("/api/jobs/2/cancel/")
    assert response.status_code == 502
    assert "ClusterNotUpError: the jobs controller is not up" in response.json()["detail"]
    op = OperationLog.objects.get(operation=Operation.CANCEL)
    assert op.success is False and "ClusterNotUpError" in op.message


def test_cancel_unreachable_server_is_502(api, jobs, settings, monkeypatch):
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    response = api.post("/api/jobs/2/cancel/")
    assert response.status_code == 502
    assert "127.0.0.1:9" in response.json()["detail"]


def test_cancel_finished_or_unknown_job(api, jobs, server):
    finished = api.post("/api/jobs/1/cancel/")
    assert finished.status_code == 409
    assert "already SUCCEEDED" in finished.json()["detail"]
    assert api.post("/api/jobs/99/cancel/").status_code == 404
    assert server.cancel_bodies == []
    assert not OperationLog.objects.filter(operation=Operation.CANCEL).exists()


def test_read_only_cannot_cancel(readonly_api, jobs, server):
    assert readonly_api.get("/api/jobs/2/").status_code == 200
    assert readonly_api.post("/api/jobs/2/cancel/").status_code == 403
    assert server.cancel_bodies == []


@pytest.mark.django_db(transaction=True)
def test_cancel_runs_outside_any_transaction(api, jobs, monkeypatch):
    seen = []
    monkeypatch.setattr(
        SkyPilotClient, "cancel", lambda self, job_ids: seen.append(connection.in_atomic_block)
    )
    assert api.post("/api/jobs/2/cancel/").status_code == 202
    assert seen == [False]


# --- checkpoints ----------------------------------------------------------------------------


@pytest.fixture
def checkpoints(make_experiment, make_checkpoint):
    a, b = make_experiment("a"), make_experiment("b")
    return {
        "a1": make_checkpoint(a, 1),
        "a5": make_checkpoint(a, 5),
        "a9": make_checkpoint(a, 9, missing=True),
        "b2": make_checkpoint(b, 2, size=100),
    }


def test_checkpoints_list_and_filters(api, checkpoints):
    c = {k: v.pk for k, v in checkpoints.items()}
    assert ids(api.get("/api/checkpoints/")) == [c["a9"], c["a5"], c["a1"], c["b2"]]
    assert ids(api.get("/api/checkpoints/?experiment=b")) == [c["b2"]]
    exp_a = checkpoints["a1"].experiment_id
    assert ids(api.get(f"/api/checkpoints/?experiment_id={exp_a}&epoch_min=2")) == [
        c["a9"],
        c["a5"],
    ]
    assert ids(api.get("/api/checkpoints/?epoch_max=2")) == [c["a1"], c["b2"]]
    assert ids(api.get("/api/checkpoints/?latest=true")) == [c["a5"], c["b2"]]
    assert ids(api.get("/api/checkpoints/?missing=true")) == [c["a9"]]
    assert ids(api.get("/api/checkpoints/?ordering=epoch")) == [c["a1"], c["b2"], c["a5"], c["a9"]]
    one = api.get(f"/api/checkpoints/{c['b2']}/").json()
    assert one["experiment_name"] == "b" and one["epoch"] == 2 and one["size"] == 100
    assert one["model_path"] == "s3://softmax-public/policies/b/b:v2.mpt"
    assert api.get("/api/checkpoints/999/").status_code == 404


@pytest.mark.parametrize(
    "query",
    ["epoch_min=1.5", "epoch_min=x", f"epoch_max={2**64}", "latest=1x", "experiment_id=0"],
)
def test_checkpoints_bad_filters_are_400(api, checkpoints, query):
    assert api.get(f"/api/checkpoints/?{query}").status_code == 400


@pytest.mark.parametrize("count", [2, 20])
def test_checkpoints_list_uses_a_constant_number_of_queries(
    api, make_experiment, make_checkpoint, django_assert_max_num_queries, count
):
    for i in range(count):
        make_checkpoint(make_experiment(f"c{i}"), i)
    with django_assert_max_num_queries(3):
        assert len(ids(api.get("/api/checkpoints/?latest=true"))) == count


# --- operation log --------------------------------------------------------------------------


def test_operations_list_and_filters(api, make_experiment):
    experiment = make_experiment("e")
    services.set_desired_state("bob", [experiment], "RUNNING")
    services.record("reconciler", Operation.LAUNCH, experiment=experiment, job_id=7, success=False)
    services.record("sync", Operation.SYNC, message="pass")

    everything = api.get("/api/operations/").json()["results"]
    assert [o["operation"] for o in everything] == ["sync", "launch", "start", "create"]
    assert [o["operation"] for o in api.get("/api/operations/?experiment=e").json()["results"]] == [
        "launch",
        "start",
        "create",
    ]
    assert [o["actor"] for o in api.get("/api/operations/?actor=bob").json()["results"]] == ["bob"]
    assert api.get("/api/operations/?operation=launch&operation=sync").json()["count"] == 2
    assert api.get("/api/operations/?success=false").json()["results"][0]["job_id"] == 7
    assert api.get("/api/operations/?job_id=7").json()["count"] == 1
    assert api.get("/api/operations/?since=2000-01-01T00:00:00Z").json()["count"] == 4
    assert api.get("/api/operations/?until=2000-01-01T00:00:00Z").json()["count"] == 0
    first = everything[-1]
    assert api.get(f"/api/operations/{first['id']}/").json() == first
    assert api.get("/api/operations/99999/").status_code == 404
    for bad in ("operation=explode", "success=perhaps", "since=soon", "job_id=x"):
        assert api.get(f"/api/operations/?{bad}").status_code == 400


@pytest.mark.parametrize("count", [2, 30])
def test_operations_list_uses_a_constant_number_of_queries(
    api, make_experiment, django_assert_max_num_queries, count
):
    for i in range(count):
        make_experiment(f"o{i}")
    with django_assert_max_num_queries(3):
        assert api.get("/api/operations/").json()["count"] == count


@pytest.mark.parametrize(
    "query",
    [
        "/api/jobs/?submitted_after=0102-09-02T04:51:11.62%2B17:34",  # PostgreSQL: > ±15:59
        "/api/operations/?since=3418-11-23T15:24:52.7-19:59",
        "/api/operations/?since=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "/api/operations/?until=9999-12-31T23:00:00-05:00",  # after year 9999 in UTC
    ],
)
def test_time_filters_take_every_iso_offset_on_every_database(query):
    OperationLog.objects.create(actor="t", operation="create", experiment_name="x", success=True)
    client = APIClient()
    client.force_authenticate(User.objects.create_user("times"))
    response = client.get(query)
    assert response.status_code == 200, response.content
    everything = "since=0001" in query or "until=9999" in query
    assert response.json()["count"] == (1 if everything else 0)
