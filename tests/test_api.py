"""REST API: experiments (CRUD, actions, flags patch, preconditions, validation) and bulk."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from experiments import launching, services
from experiments.models import DesiredState, Experiment, JobStatus, Operation, OperationLog

pytestmark = pytest.mark.django_db


def raw(client: APIClient, method: str, url: str, body: str, **extra):
    """Send a body exactly as written (for malformed JSON and numbers Python cannot make)."""
    return getattr(client, method)(url, body, content_type="application/json", **extra)


def last_op() -> OperationLog:
    return OperationLog.objects.order_by("-id").first()


# --- list and retrieve ----------------------------------------------------------------------


def test_list_has_latest_job_checkpoint_and_groups(api, make_experiment, make_job, make_checkpoint):
    experiment = make_experiment("alpha", flags={"lr": 0.1})
    make_experiment("beta")
    make_job(501, name="alpha", status=JobStatus.FAILED)
    make_checkpoint(experiment, 3)
    make_checkpoint(experiment, 7)
    group = services.create_group("tester", "sweep")
    services.add_to_group("tester", group, [experiment])

    response = api.get("/api/experiments/")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    alpha = body["results"][0]
    assert alpha["name"] == "alpha"
    assert alpha["flags"] == {"lr": 0.1}
    assert alpha["latest_job"]["id"] == 501
    assert alpha["latest_job"]["status"] == "FAILED"
    assert alpha["latest_checkpoint"]["epoch"] == 7
    assert alpha["groups"] == [{"id": group.pk, "name": "sweep"}]
    assert alpha["has_active_job"] is False
    beta = body["results"][1]
    assert beta["latest_job"] is None and beta["latest_checkpoint"] is None


def test_list_filters(api, make_experiment, make_job):
    a = make_experiment("sweep-a", starred=True, desired_state="RUNNING")
    make_experiment("sweep-b", description="baseline run")
    c = make_experiment("other")
    make_job(601, name="other", status=JobStatus.RUNNING)
    Experiment.objects.refresh_current_state()
    group = services.create_group("tester", "g")
    services.add_to_group("tester", group, [a, c])

    def names(query: str) -> list[str]:
        response = api.get(f"/api/experiments/?{query}")
        assert response.status_code == 200, response.json()
        return [e["name"] for e in response.json()["results"]]

    assert names("name=SWEEP") == ["sweep-a", "sweep-b"]
    assert names("q=baseline") == ["sweep-b"]
    assert names("starred=true") == ["sweep-a"]
    assert names("starred=false") == ["other", "sweep-b"]
    assert names("desired_state=RUNNING") == ["sweep-a"]
    assert names("state=RUNNING") == ["other"]
    assert names("state=RUNNING&state=NO_JOB") == ["other", "sweep-a", "sweep-b"]
    assert names(f"group={group.pk}") == ["other", "sweep-a"]
    assert names("ungrouped=true") == ["sweep-b"]
    assert names("ungrouped=false") == ["other", "sweep-a"]
    assert names("has_active_job=true") == ["other"]
    assert names("ordering=-name") == ["sweep-b", "sweep-a", "other"]


@pytest.mark.parametrize(
    "query",
    [
        "starred=maybe",
        "starred=",
        "starred=true&starred=false",
        "desired_state=SOMETIMES",
        "state=NOPE",
        "ordering=flags",
        "group=abc",
        "group=0",
        f"group={2**64}",
        "page_size=0",
        "page_size=1001",
        "page_size=abc",
        "page=abc",
        "page=0",
        "page=³",
        "page_size=³",
        "ordering=,",
        "ordering=name,,created_at",
    ],
)
def test_list_rejects_bad_parameters(api, make_experiment, query):
    make_experiment("alpha")
    response = api.get(f"/api/experiments/?{query}")
    assert response.status_code == 400, response.json()


def test_list_paginates(api, make_experiment):
    for i in range(5):
        make_experiment(f"exp-{i}")
    response = api.get("/api/experiments/?page_size=2&page=2")
    body = response.json()
    assert body["count"] == 5
    assert [e["name"] for e in body["results"]] == ["exp-2", "exp-3"]
    assert "page=3" in body["next"]
    assert api.get("/api/experiments/?page_size=2&page=4").status_code == 404


@pytest.mark.parametrize("count", [3, 30])
def test_list_uses_a_constant_number_of_queries(
    api, make_experiment, make_job, make_checkpoint, django_assert_max_num_queries, count
):
    group = services.create_group("tester", "all")
    experiments = [make_experiment(f"q-{i:02d}", flags={"i": i}) for i in range(count)]
    services.add_to_group("tester", group, experiments)
    for i, experiment in enumerate(experiments):
        make_job(20_000 + i, name=experiment.name)
        make_checkpoint(experiment, 1)
        make_checkpoint(experiment, 2)
    # token, count, page, memberships, latest checkpoints, latest jobs
    with django_assert_max_num_queries(6):
        response = api.get("/api/experiments/")
    assert len(response.json()["results"]) == count
    assert all(
        e["latest_job"] and e["latest_checkpoint"]["epoch"] == 2 for e in response.json()["results"]
    )


def test_retrieve_by_id_and_by_name_with_etag(api, make_experiment):
    experiment = make_experiment("lr.sweep_1")
    by_id = api.get(f"/api/experiments/{experiment.pk}/")
    by_name = api.get("/api/experiments/lr.sweep_1")
    assert by_id.status_code == by_name.status_code == 200
    assert by_id.json() == by_name.json()
    assert by_id["ETag"] == f'"{by_id.json()["updated_at"]}"'


@pytest.mark.parametrize("ref", ["999", "missing", f"{'9' * 19}", "%C2%B3"])
def test_retrieve_unknown_is_404_json(api, ref):
    response = api.get(f"/api/experiments/{ref}/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "detail" in response.json()


# --- create ---------------------------------------------------------------------------------


def test_create(api):
    response = api.post(
        "/api/experiments/",
        {
            "name": "lr-0.1",
            "flags": {"trainer.lr": 0.1, "fast": True, "opt": "adam"},
            "nodes": 2,
            "gpus": 8,
            "accelerator": "H100",
            "base_command": "uv run",
            "tool_path": "./tools/train.py",
            "tags": ["sweep"],
            "starred": True,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "lr-0.1"
    assert body["desired_state"] == "STOPPED"
    assert body["current_state"] == "NO_JOB"
    assert body["flags"] == {"trainer.lr": 0.1, "fast": True, "opt": "adam"}
    assert response["ETag"]
    op = last_op()
    assert (op.actor, op.operation, op.experiment_name) == ("alice", Operation.CREATE, "lr-0.1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "ok", "bogus": 1}, "bogus"),
        ({"name": "ok", "id": 5}, "id"),
        ({"name": "ok", "current_state": "RUNNING"}, "current_state"),
        ({"name": "ok", "flags_patch": {"set": {}}}, "flags_patch"),
        ({}, "name"),
        ({"name": None}, "name"),
        ({"name": 123}, "name"),
        ({"name": ""}, "name"),
        ({"name": "has space"}, "name"),
        ({"name": "a...b"}, "name"),  # SkyPilot allows "a..b" (issue 13), not three separators
        ({"name": "x" * 129}, "name"),
        ({"name": "ok", "nodes": "2"}, "nodes"),
        ({"name": "ok", "nodes": 1.5}, "nodes"),
        ({"name": "ok", "nodes": True}, "nodes"),
        ({"name": "ok", "nodes": 0}, "nodes"),
        ({"name": "ok", "nodes": 10**30}, "nodes"),
        ({"name": "ok", "gpus": -1}, "gpus"),
        ({"name": "ok", "starred": "true"}, "starred"),
        ({"name": "ok", "starred": 1}, "starred"),
        ({"name": "ok", "desired_state": "PAUSED"}, "desired_state"),
        ({"name": "ok", "flags": ["a"]}, "flags"),
        ({"name": "ok", "flags": "lr=1"}, "flags"),
        ({"name": "ok", "flags": None}, "flags"),
        ({"name": "ok", "flags": {"lr": {"nested": 1}}}, "flags"),
        ({"name": "ok", "flags": {"lr": None}}, "flags"),
        ({"name": "ok", "flags": {"lr": [1, 2]}}, "flags"),
        ({"name": "ok", "flags": {"bad key": 1}}, "flags"),
        ({"name": "ok", "flags": {"lr": "a\nb"}}, "flags"),
        ({"name": "ok", "tags": "sweep"}, "tags"),
        ({"name": "ok", "tags": [1]}, "tags"),
        ({"name": "ok", "tags": ["has space"]}, "tags"),
        ({"name": "ok", "accelerator": "H100"}, "gpus"),
        ({"name": "ok", "accelerator": "bad/acc", "gpus": 1}, "accelerator"),
        ({"name": "ok", "git_ref": "a..b"}, "git_ref"),
        ({"name": "ok", "base_command": "a\nb"}, "base_command"),
        ({"name": "ok", "description": "nul\x00char"}, "description"),
        ({"name": "ok", "gpus": 64, "nodes": 1024}, "gpus"),
    ],
)
def test_create_validation_errors_are_400_with_the_field(api, body, field):
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert not Experiment.objects.exists()


def test_create_duplicate_name_is_400(api, make_experiment):
    make_experiment("taken")
    response = api.post("/api/experiments/", {"name": "taken"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        "{bad json",
        '{"name": "ok", "nodes": NaN}',
        '{"name": "ok", "flags": {"lr": Infinity}}',
        "",
    ],
)
def test_malformed_json_is_400(api, body):
    response = raw(api, "post", "/api/experiments/", body)
    assert response.status_code == 400
    assert not Experiment.objects.exists()


def test_unpaired_surrogates_are_400(api):
    response = raw(api, "post", "/api/experiments/", '{"name": "ok", "flags": {"lr": "\\ud800"}}')
    assert response.status_code == 400
    assert "flags" in response.json()


def test_huge_numbers_are_400(api):
    response = raw(api, "post", "/api/experiments/", '{"name": "ok", "flags": {"lr": 1e400}}')
    assert response.status_code == 400
    assert "flags" in response.json()
    response = raw(api, "post", "/api/experiments/", '{"name": "ok", "gpus": 1e400}')
    assert response.status_code == 400
    assert "gpus" in response.json()


@pytest.mark.parametrize("body", ["[]", '"name"', "42", "null"])
def test_non_object_body_is_400(api, body):
    response = raw(api, "post", "/api/experiments/", body)
    assert response.status_code == 400
    assert "non_field_errors" in response.json()


def test_form_data_is_415(api):
    response = api.post("/api/experiments/", {"name": "ok"})  # multipart
    assert response.status_code == 415


def test_options_is_405(api):
    assert api.options("/api/experiments/").status_code == 405


# --- update ---------------------------------------------------------------------------------


def test_patch_flags_patch_sets_and_removes(api, make_experiment):
    make_experiment("e", flags={"lr": 0.1, "warmup": 10, "opt": "adam"})
    response = api.patch(
        "/api/experiments/e/",
        {"flags_patch": {"set": {"lr": 0.2, "new.key": True}, "remove": ["warmup", "absent"]}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["flags"] == {"lr": 0.2, "new.key": True, "opt": "adam"}
    assert Experiment.objects.get(name="e").flags == {"lr": 0.2, "new.key": True, "opt": "adam"}
    op = last_op()
    assert op.operation == Operation.UPDATE
    assert op.message == "lr 0.1 → 0.2, +new.key true, \u2212warmup"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"flags": {}, "flags_patch": {"set": {"a": 1}}}, "flags_patch"),
        ({"flags_patch": {"set": {"a": 1}, "remove": ["a"]}}, "flags_patch"),
        ({"flags_patch": {"add": {"a": 1}}}, "flags_patch"),
        ({"flags_patch": {"set": {"a": {"b": 1}}}}, "flags"),
        ({"flags_patch": {"set": {"a b": 1}}}, "flags"),
        ({"flags_patch": {"set": "a=1"}}, "flags_patch"),
        ({"flags_patch": {"remove": "a"}}, "flags_patch"),
        ({"flags_patch": {"remove": [1]}}, "flags_patch"),
        ({"flags_patch": {"remove": ["not a flag"]}}, "flags_patch"),
        ({"flags_patch": ["a"]}, "flags_patch"),
        ({"nodes": 0}, "nodes"),
        ({"latest_job": None}, "latest_job"),
        ({"updated_at": "yesterday"}, "updated_at"),
    ],
)
def test_patch_validation_errors(api, make_experiment, body, field):
    make_experiment("e", flags={"a": 1})
    response = api.patch("/api/experiments/e/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert Experiment.objects.get(name="e").flags == {"a": 1}


def test_patch_rename_and_desired_state(api, make_experiment, make_job):
    experiment = make_experiment("old")
    response = api.patch(
        f"/api/experiments/{experiment.pk}/",
        {"name": "new", "desired_state": "RUNNING"},
        format="json",
    )
    # an edit never starts anything: the desired state is Start/Stop's, named in the 400
    assert response.status_code == 400
    assert "Start, Stop or Adopt" in response.json()["desired_state"][0]
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"name": "new"}, format="json")
    assert response.status_code == 200
    experiment.refresh_from_db()
    assert (experiment.name, experiment.desired_state) == ("new", "STOPPED")
    assert "renamed from 'old'" in last_op().message
    # once a job carries its name, the name is its identity: refused, Duplicate offered
    make_job(9001, "new", user_name="dave")
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"name": "v2"}, format="json")
    assert response.status_code == 400
    assert "Duplicate" in response.json()["name"][0]
    assert Experiment.objects.get(pk=experiment.pk).name == "new"


def test_patch_nothing_changes_nothing(api, make_experiment):
    experiment = make_experiment("e")
    before = OperationLog.objects.count()
    response = api.patch("/api/experiments/e/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["updated_at"] == api.get("/api/experiments/e/").json()["updated_at"]
    assert OperationLog.objects.count() == before
    experiment.refresh_from_db()


def test_put_needs_name_and_changes_given_fields(api, make_experiment):
    make_experiment("e", gpus=1, accelerator="A10G")
    assert api.put("/api/experiments/e/", {"gpus": 2}, format="json").status_code == 400
    response = api.put("/api/experiments/e/", {"name": "e", "gpus": 2}, format="json")
    assert response.status_code == 200
    assert response.json()["gpus"] == 2
    assert response.json()["accelerator"] == "A10G"


def test_patch_cross_field_rule_from_clean(api, make_experiment):
    make_experiment("e", gpus=1, accelerator="A10G")
    response = api.patch("/api/experiments/e/", {"gpus": 0}, format="json")
    assert response.status_code == 400
    assert response.json() == {"gpus": ["Accelerator A10G is set but GPUs per node is 0."]}


# --- preconditions (409) --------------------------------------------------------------------


def test_if_match_current_value_passes(api, make_experiment):
    make_experiment("e")
    for make_header in (
        lambda r: r["ETag"],
        lambda r: r.json()["updated_at"],
        lambda r: "*",
        lambda r: f"W/{r['ETag']}",
    ):
        header = make_header(api.get("/api/experiments/e/"))
        response = api.patch(
            "/api/experiments/e/", {"description": header}, format="json", HTTP_IF_MATCH=header
        )
        assert response.status_code == 200, (header, response.json())


def test_if_match_stale_is_409_and_writes_nothing(api, make_experiment):
    make_experiment("e")
    stale = api.get("/api/experiments/e/")["ETag"]
    api.patch("/api/experiments/e/", {"description": "someone else"}, format="json")
    before = OperationLog.objects.count()

    response = api.patch(
        "/api/experiments/e/", {"description": "mine"}, format="json", HTTP_IF_MATCH=stale
    )

    assert response.status_code == 409
    body = response.json()
    assert "changed since" in body["detail"]
    assert body["updated_at"] == api.get("/api/experiments/e/").json()["updated_at"]
    assert Experiment.objects.get(name="e").description == "someone else"
    assert OperationLog.objects.count() == before


def test_body_updated_at_stale_is_409(api, make_experiment):
    make_experiment("e")
    read = api.get("/api/experiments/e/").json()["updated_at"]
    assert api.post("/api/experiments/e/start/").status_code == 200
    for method, url, body in [
        ("patch", "/api/experiments/e/", {"nodes": 2, "updated_at": read}),
        ("put", "/api/experiments/e/", {"name": "e", "updated_at": read}),
        ("post", "/api/experiments/e/stop/", {"updated_at": read}),
        ("delete", "/api/experiments/e/", {"updated_at": read}),
    ]:
        response = getattr(api, method)(url, body, format="json")
        assert response.status_code == 409, (method, url)
    assert Experiment.objects.get(name="e").desired_state == "RUNNING"


def test_body_updated_at_current_passes(api, make_experiment):
    make_experiment("e")
    read = api.get("/api/experiments/e/").json()["updated_at"]
    response = api.patch("/api/experiments/e/", {"nodes": 3, "updated_at": read}, format="json")
    assert response.status_code == 200


@pytest.mark.parametrize("header", ["yesterday", '"not a date"', "1, 2"])
def test_malformed_if_match_is_400(api, make_experiment, header):
    make_experiment("e")
    response = api.post("/api/experiments/e/start/", HTTP_IF_MATCH=header)
    assert response.status_code == 400
    assert "If-Match" in response.json()


# --- delete, start, stop, duplicate, launch preview -----------------------------------------


def test_delete(api, make_experiment, make_job):
    make_experiment("e")
    make_job(700, name="e")
    response = api.delete("/api/experiments/e/")
    assert response.status_code == 204
    assert not Experiment.objects.filter(name="e").exists()
    assert last_op().operation == Operation.DELETE
    # its jobs stay, as orphans
    assert api.get("/api/jobs/700/").json()["orphaned"] is True
    assert api.delete("/api/experiments/e/").status_code == 404


def test_start_and_stop(api, make_experiment):
    make_experiment("e")
    response = api.post("/api/experiments/e/start/")
    assert response.status_code == 200
    assert response.json()["desired_state"] == "RUNNING"
    assert last_op().operation == Operation.START
    count = OperationLog.objects.count()
    assert api.post("/api/experiments/e/start").status_code == 200  # no trailing slash
    assert OperationLog.objects.count() == count  # already running: nothing logged
    response = api.post("/api/experiments/e/stop/", {}, format="json")
    assert response.json()["desired_state"] == "STOPPED"
    assert last_op().operation == Operation.STOP
    assert api.post("/api/experiments/e/start/", {"x": 1}, format="json").status_code == 400
    assert api.post("/api/experiments/nope/start/").status_code == 404


def test_duplicate(api, make_experiment):
    experiment = make_experiment("base", flags={"lr": 1}, gpus=8, accelerator="H100")
    services.set_desired_state("tester", [experiment], "RUNNING")
    group = services.create_group("tester", "g")
    services.add_to_group("tester", group, [experiment])

    response = api.post("/api/experiments/base/duplicate/")
    assert response.status_code == 201
    copy = response.json()
    assert copy["name"] == "base.copy"
    assert copy["desired_state"] == "STOPPED"
    assert copy["flags"] == {"lr": 1}
    assert copy["groups"] == [{"id": group.pk, "name": "g"}]

    named = api.post("/api/experiments/base/duplicate/", {"name": "base-2"}, format="json")
    assert named.status_code == 201 and named.json()["name"] == "base-2"
    taken = api.post("/api/experiments/base/duplicate/", {"name": "base-2"}, format="json")
    assert taken.status_code == 400 and "name" in taken.json()
    bad = api.post("/api/experiments/base/duplicate/", {"name": "no spaces"}, format="json")
    assert bad.status_code == 400 and "name" in bad.json()


def test_launch_preview(api, make_experiment):
    experiment = make_experiment(
        "e", flags={"lr": 0.1, "evil": "$(rm -rf /)"}, base_command="uv run", tool_path="train.py"
    )
    response = api.get("/api/experiments/e/launch-preview/")
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True and body["error"] is None
    assert body["command"] == launching.build_command(experiment)
    assert body["task_yaml"] == launching.build_task_yaml(experiment)
    assert "'evil=$(rm -rf /)'" in body["command"]


def test_launch_preview_explains_why_not(api, make_experiment):
    make_experiment("e")
    body = api.get("/api/experiments/e/launch-preview").json()
    assert body["ok"] is False
    assert body["command"] is None and body["task_yaml"] is None
    assert "no command" in body["error"]


def test_read_only_users_read_but_cannot_write(readonly_api, make_experiment):
    make_experiment("e")
    assert readonly_api.get("/api/experiments/").status_code == 200
    assert readonly_api.get("/api/experiments/e/launch-preview/").status_code == 200
    for method, url, body in [
        ("post", "/api/experiments/", {"name": "x"}),
        ("patch", "/api/experiments/e/", {"nodes": 2}),
        ("put", "/api/experiments/e/", {"name": "e"}),
        ("delete", "/api/experiments/e/", None),
        ("post", "/api/experiments/e/start/", None),
        ("post", "/api/experiments/e/stop/", None),
        ("post", "/api/experiments/e/duplicate/", None),
        ("post", "/api/bulk/", {"action": "delete", "experiments": ["e"]}),
    ]:
        response = getattr(readonly_api, method)(url, body, format="json")
        assert response.status_code == 403, (method, url)
        assert "read-only" in response.json()["detail"]
    assert Experiment.objects.get(name="e").desired_state == "STOPPED"
    assert Experiment.objects.count() == 1


# --- bulk -----------------------------------------------------------------------------------


def results(response) -> list[tuple]:
    assert response.status_code == 200, response.json()
    return [(r["ref"], r["result"]) for r in response.json()["results"]]


def test_bulk_set_desired_state_reports_each_item(api, make_experiment):
    a = make_experiment("a")
    make_experiment("b", desired_state="RUNNING")
    stale = api.get("/api/experiments/a/").json()["updated_at"]
    make_experiment("c")
    api.patch("/api/experiments/c/", {"nodes": 2}, format="json")

    response = api.post(
        "/api/bulk/",
        {
            "action": "set_desired_state",
            "desired_state": "RUNNING",
            "experiments": [
                a.pk,
                "b",
                "missing",
                "not a name",
                424242,
                {"experiment": "c", "updated_at": stale},
                "a",
            ],
        },
        format="json",
    )

    assert results(response) == [
        (a.pk, "ok"),
        ("b", "unchanged"),
        ("missing", "not_found"),
        ("not a name", "invalid"),
        (424242, "not_found"),
        ("c", "conflict"),
        ("a", "invalid"),  # listed twice
    ]
    body = response.json()
    assert body["counts"] == {"ok": 1, "unchanged": 1, "not_found": 2, "invalid": 2, "conflict": 1}
    assert body["results"][0]["id"] == a.pk and body["results"][0]["name"] == "a"
    assert Experiment.objects.get(name="a").desired_state == "RUNNING"
    assert Experiment.objects.get(name="c").desired_state == "STOPPED"
    assert OperationLog.objects.filter(operation=Operation.START, experiment_name="a").count() == 1


def test_bulk_item_with_current_updated_at_passes(api, make_experiment):
    make_experiment("a")
    read = api.get("/api/experiments/a/").json()["updated_at"]
    response = api.post(
        "/api/bulk/",
        {"action": "delete", "experiments": [{"experiment": "a", "updated_at": read}]},
        format="json",
    )
    assert results(response) == [("a", "ok")]
    assert not Experiment.objects.exists()


def test_bulk_delete(api, make_experiment):
    make_experiment("a")
    make_experiment("b")
    response = api.post(
        "/api/bulk/", {"action": "delete", "experiments": ["a", "zz"]}, format="json"
    )
    assert results(response) == [("a", "ok"), ("zz", "not_found")]
    assert list(Experiment.objects.values_list("name", flat=True)) == ["b"]


def test_bulk_add_and_move_to_group(api, make_experiment):
    a, b = make_experiment("a"), make_experiment("b")
    old = services.create_group("tester", "old")
    new = services.create_group("tester", "new")
    services.add_to_group("tester", old, [a, b])

    added = api.post(
        "/api/bulk/",
        {"action": "add_to_group", "group": new.pk, "experiments": ["a", "x"]},
        format="json",
    )
    assert results(added) == [("a", "ok"), ("x", "not_found")]
    assert set(a.experiment_groups.values_list("name", flat=True)) == {"old", "new"}
    again = api.post(
        "/api/bulk/",
        {"action": "add_to_group", "group": new.pk, "experiments": ["a"]},
        format="json",
    )
    assert results(again) == [("a", "unchanged")]

    moved = api.post(
        "/api/bulk/",
        {"action": "move_to_group", "group": new.pk, "experiments": ["a", "b"]},
        format="json",
    )
    assert results(moved) == [("a", "ok"), ("b", "ok")]
    assert set(a.experiment_groups.values_list("name", flat=True)) == {"new"}
    assert [e.name for e in new.ordered_experiments()] == ["a", "b"]
    assert old.ordered_experiments() == []


def test_bulk_update_is_validated_per_item(api, make_experiment):
    make_experiment("gpu", gpus=8, accelerator="H100", flags={"lr": 1})
    make_experiment("cpu", flags={"lr": 1})
    make_experiment("same", gpus=8, accelerator="H100", flags={"lr": 2})
    response = api.post(
        "/api/bulk/",
        {
            "action": "update",
            "changes": {"accelerator": "A100", "flags_patch": {"set": {"lr": 2}}},
            "experiments": ["gpu", "cpu", "same"],
        },
        format="json",
    )
    assert results(response)[:2] == [("gpu", "ok"), ("cpu", "invalid")]
    invalid = response.json()["results"][1]
    assert invalid["errors"] == {"gpus": ["Accelerator A100 is set but GPUs per node is 0."]}
    assert Experiment.objects.get(name="gpu").accelerator == "A100"
    assert Experiment.objects.get(name="gpu").flags == {"lr": 2}
    assert Experiment.objects.get(name="cpu").accelerator == ""
    assert Experiment.objects.get(name="cpu").flags == {"lr": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "set_desired_state", "experiments": ["a"]}, "desired_state"),
        ({"action": "add_to_group", "experiments": ["a"]}, "group"),
        ({"action": "update", "experiments": ["a"]}, "changes"),
        ({"action": "update", "experiments": ["a"], "changes": {}}, "changes"),
        ({"action": "update", "experiments": ["a"], "changes": {"name": "b"}}, "changes"),
        ({"action": "delete", "experiments": ["a"], "desired_state": "RUNNING"}, "desired_state"),
        ({"action": "explode", "experiments": ["a"]}, "action"),
        ({"action": "delete", "experiments": []}, "experiments"),
        ({"action": "delete", "experiments": "a"}, "experiments"),
        ({"action": "delete", "experiments": [True]}, "experiments"),
        ({"action": "delete", "experiments": [1.5]}, "experiments"),
        ({"action": "delete", "experiments": [0]}, "experiments"),
        ({"action": "delete", "experiments": [2**64]}, "experiments"),
        ({"action": "delete", "experiments": [None]}, "experiments"),
        ({"action": "delete", "experiments": [{"id": 1}]}, "experiments"),
        (
            {"action": "delete", "experiments": [{"experiment": "a", "updated_at": "x"}]},
            "experiments",
        ),
        ({"action": "delete", "experiments": ["a"] * 1001}, "experiments"),
        ({"action": "add_to_group", "group": 999, "experiments": ["a"]}, "group"),
        ({"action": "update", "experiments": ["zz"], "changes": {"git_ref": "a..b"}}, "changes"),
        ({"action": "update", "experiments": ["a"], "changes": {"flags": {"x": []}}}, "changes"),
        (
            {
                "action": "update",
                "experiments": ["a"],
                "changes": {"flags_patch": {"set": {"x": None}}},
            },
            "changes",
        ),
        ({"action": "delete", "experiments": ["a"], "extra": 1}, "extra"),
        ({"experiments": ["a"]}, "action"),
    ],
)
def test_bulk_malformed_request_is_400_and_changes_nothing(api, make_experiment, body, field):
    make_experiment("a")
    response = api.post("/api/bulk/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert Experiment.objects.filter(name="a", desired_state=DesiredState.STOPPED).exists()


def test_bulk_large_request(api, make_experiment):
    names = [make_experiment(f"n{i}").name for i in range(20)]
    response = api.post(
        "/api/bulk/",
        {"action": "set_desired_state", "desired_state": "RUNNING", "experiments": names},
        format="json",
    )
    assert response.json()["counts"]["ok"] == 20


def test_raw_json_bulk_with_big_ids(api):
    response = raw(
        api, "post", "/api/bulk/", json.dumps({"action": "delete", "experiments": [2**63 - 1]})
    )
    assert results(response) == [(2**63 - 1, "not_found")]


def test_nul_characters_are_a_400_not_a_database_error(api, make_experiment):
    make_experiment("keep")
    body = '{"action": "set_desired_state", "desired_state": "RUNNING", "experiments": ["a\\u0000b", "keep"]}'
    response = raw(api, "post", "/api/bulk/", body)
    from django.db import connection

    if connection.vendor == "postgresql":  # PostgreSQL cannot even compare such a string
        assert response.status_code == 400
        assert "NUL" in response.content.decode()
    else:  # SQLite can: the item is simply not found
        assert response.status_code == 200
        assert response.json()["results"][0]["result"] in ("invalid", "not_found")
    assert api.get("/api/experiments/?name=a%00b").status_code in (200, 400)


def test_dates_the_database_cannot_hold_are_a_400(api):
    response = api.get(
        "/api/operations/?since=0518-07-11T06%3A21%3A24%2B20%3A06&job_id=13157873672"
    )
    assert response.status_code in (200, 400)
    assert response.status_code != 500
