"""Config history: every configuration change from any door is a numbered revision with values."""

from __future__ import annotations

import pytest
from admin_forms import form_data
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from test_ui_conflicts import form_data as editor_data

from experiments import revisions, services
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentRevision,
    Launch,
    Operation,
    OperationLog,
    RevisionSource,
)

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def revs(experiment: Experiment) -> list[ExperimentRevision]:
    return list(ExperimentRevision.objects.filter(experiment=experiment).order_by("number"))


def last_op(operation: str = Operation.UPDATE) -> OperationLog:
    return OperationLog.objects.filter(operation=operation).order_by("-id").first()


def legacy(name: str = "old", **fields) -> Experiment:
    """An experiment made before revisions were kept (no revision row)."""
    fields.setdefault("flags", {"trainer.lr": 0.001})
    return Experiment.objects.create(name=name, **fields)


# --- the domain module ------------------------------------------------------------------------


def test_values_are_formatted_exactly():
    assert revisions.format_value(7) == "7"
    assert revisions.format_value(10**20) == "100000000000000000000"
    assert revisions.format_value(0.1 + 0.2) == "0.30000000000000004"
    assert revisions.format_value(1e-05) == "1e-05"
    assert revisions.format_value(True) == "true" and revisions.format_value(None) == "null"
    assert revisions.format_value(["a", "b"]) == '["a","b"]'
    assert revisions.format_value("") == "''"


def test_change_text_shows_values_and_flags_per_key():
    changes = {
        "flags": [
            {"trainer.lr": 0.001, "old.key": 1, "same": 2},
            {"trainer.lr": 0.003, "trainer.seed": 7, "same": 2},
        ],
        "nodes": [1, 2],
    }
    assert revisions.change_text(changes) == (
        "trainer.lr 0.001 → 0.003, +trainer.seed 7, \u2212old.key, nodes 1 → 2"
    )


def test_long_values_are_shortened_with_an_ellipsis():
    old, new = "uv run ./tools/train.py " + "a" * 80, "python train.py " + "b" * 80
    text = revisions.change_text({"base_command": [old, new]})
    before, after = text.removeprefix("base_command ").split(" → ")
    assert before.endswith("…") and after.endswith("…")
    assert len(before) == revisions.VALUE_MAX and before.startswith("uv run ./tools/train.py")
    assert after.startswith("python train.py")


def test_diff_fields_and_flags_key_by_key():
    a = {"nodes": 1, "flags": {"lr": 0.1, "gone": True, "same": 1}, "git_ref": "main"}
    b = {"nodes": 2, "flags": {"lr": 0.2, "new": "x", "same": 1}, "git_ref": "main"}
    found = [(d.label, d.kind, d.old_text, d.new_text) for d in revisions.diff(a, b)]
    assert found == [
        ("gone", "removed", "true", ""),
        ("lr", "changed", "0.1", "0.2"),
        ("new", "added", "", "x"),
        ("nodes", "changed", "1", "2"),
    ]
    assert revisions.diff(a, a) == []
    # an int and a float of the same value differ as stored
    assert [d.kind for d in revisions.diff({"flags": {"x": 1}}, {"flags": {"x": 1.0}})] == [
        "changed"
    ]


# --- the services -----------------------------------------------------------------------------


def test_create_is_revision_1_with_every_field(make_experiment):
    experiment = make_experiment("r", nodes=2, flags={"lr": 0.1}, tags=["a"])
    (first,) = revs(experiment)
    assert (first.number, first.actor, first.source) == (1, "tester", RevisionSource.UI)
    assert first.config == revisions.snapshot(experiment)
    assert first.changes["nodes"] == [None, 2] and first.changes["flags"] == [None, {"lr": 0.1}]
    assert set(first.config) == set(revisions.CONFIG_FIELDS)
    assert "starred" not in first.config and "desired_state" not in first.config
    assert revisions.revision_text(first) == "created"


def test_update_stores_old_and_new_and_logs_values(make_experiment):
    experiment = make_experiment("u", flags={"trainer.lr": 0.001, "old.key": 1})
    services.update_experiment(
        "bob", experiment, nodes=2, flags={"trainer.lr": 0.003, "trainer.seed": 7}
    )
    second = revs(experiment)[-1]
    assert (second.number, second.actor) == (2, "bob")
    assert second.changes == {
        "flags": [{"trainer.lr": 0.001, "old.key": 1}, {"trainer.lr": 0.003, "trainer.seed": 7}],
        "nodes": [1, 2],
    }
    assert second.config["nodes"] == 2
    assert last_op().message == (
        "trainer.lr 0.001 → 0.003, +trainer.seed 7, \u2212old.key, nodes 1 → 2"
    )


def test_a_rename_keeps_its_words(make_experiment):
    experiment = make_experiment("before")
    services.update_experiment("bob", experiment, name="after", nodes=3)
    assert last_op().message == "renamed from 'before', nodes 1 → 3"
    assert revs(experiment)[-1].changes["name"] == ["before", "after"]


def test_starring_alone_is_no_revision(make_experiment):
    experiment = make_experiment("s")
    services.update_experiment("bob", experiment, starred=True)
    assert len(revs(experiment)) == 1
    assert last_op().message == "starred"
    services.update_experiment("bob", experiment, starred=False, nodes=4)
    assert len(revs(experiment)) == 2 and "starred" not in revs(experiment)[-1].changes
    assert last_op().message == "nodes 1 → 4, unstarred"


def test_no_change_is_no_revision(make_experiment):
    experiment = make_experiment("n", nodes=2)
    services.update_experiment("bob", experiment, nodes=2)
    assert len(revs(experiment)) == 1


def test_an_experiment_without_revisions_gets_revision_1_as_found(db):
    experiment = legacy(nodes=1)
    services.update_experiment("bob", experiment, nodes=2)
    first, second = revs(experiment)
    assert first.config["nodes"] == 1 and first.changes == {}
    assert first.actor == revisions.FOUND_ACTOR and revisions.is_as_found(first)
    assert second.config["nodes"] == 2 and second.changes == {"nodes": [1, 2]}


def test_duplicate_is_revision_1_of_the_copy(make_experiment):
    experiment = make_experiment("orig", flags={"lr": 0.5})
    copy = services.duplicate_experiment("bob", experiment)
    (first,) = revs(copy)
    assert first.source == RevisionSource.DUPLICATE and first.config["flags"] == {"lr": 0.5}
    assert first.config["name"] == copy.name


def test_the_ui_editor_records_source_ui(web, make_experiment):
    experiment = make_experiment("ui", flags={"trainer.lr": 0.001})
    data = editor_data(
        web.get(reverse("experiment_edit", args=[experiment.pk]), **HX).content.decode()
    )
    data["flag_value"] = ["0.003"]
    response = web.post(reverse("experiment_edit", args=[experiment.pk]), data, **HX)
    assert response.status_code == 200
    latest = revs(experiment)[-1]
    assert (latest.number, latest.source, latest.actor) == (2, RevisionSource.UI, "alice")
    assert last_op().message == "trainer.lr 0.001 → 0.003"


def test_api_and_bulk_record_their_source(api, make_experiment):
    response = api.post(
        "/api/experiments/", {"name": "via-api", "flags": {"lr": 0.1}}, format="json"
    )
    assert response.status_code == 201
    experiment = Experiment.objects.get(name="via-api")
    assert revs(experiment)[0].source == RevisionSource.API
    response = api.patch(
        "/api/experiments/via-api/", {"flags_patch": {"set": {"lr": 0.2}}}, format="json"
    )
    assert response.status_code == 200
    assert revs(experiment)[-1].source == RevisionSource.API
    assert last_op().message == "lr 0.1 → 0.2"
    response = api.post(
        "/api/bulk/",
        {"action": "update", "changes": {"nodes": 3}, "experiments": ["via-api"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    latest = revs(experiment)[-1]
    assert (latest.number, latest.source, latest.changes) == (3, "bulk", {"nodes": [1, 3]})


def test_admin_records_source_admin(admin_client: Client, make_experiment):
    experiment = make_experiment("adm")
    change = reverse("admin:experiments_experiment_change", args=[experiment.pk])
    data = form_data(admin_client.get(change))
    data.update(nodes=5)
    assert admin_client.post(change, data).status_code == 302
    latest = revs(experiment)[-1]
    assert (latest.source, latest.changes) == (RevisionSource.ADMIN, {"nodes": [1, 5]})
    add = reverse("admin:experiments_experiment_add")
    data = form_data(admin_client.get(add))
    data.update(name="adm-new", flags="{}", tags="[]", nodes=1, gpus=0)
    assert admin_client.post(add, data).status_code == 302
    assert revs(Experiment.objects.get(name="adm-new"))[0].source == RevisionSource.ADMIN


def test_restore_is_a_new_revision_that_never_renames_or_launches(make_experiment):
    experiment = make_experiment("rest", nodes=1, flags={"trainer.lr": 0.001})
    services.update_experiment("bob", experiment, flags={"trainer.lr": 0.003}, nodes=2)
    services.update_experiment("bob", experiment, name="rest2")
    services.set_desired_state("bob", [experiment], DesiredState.RUNNING)
    new = services.restore_revision("carol", experiment, 1)
    experiment.refresh_from_db()
    assert (new.number, new.restored_from, new.source) == (4, 1, RevisionSource.RESTORE)
    assert experiment.flags == {"trainer.lr": 0.001} and experiment.nodes == 1
    assert experiment.name == "rest2"  # a restore never renames
    assert experiment.desired_state == DesiredState.RUNNING  # nor starts or stops
    assert not Launch.objects.exists()
    log = last_op(Operation.REVERT)
    assert log.actor == "carol"
    assert log.message == "restored r1: trainer.lr 0.003 → 0.001, nodes 2 → 1"
    assert revisions.revision_text(new).startswith("restored r1: trainer.lr 0.003 → 0.001")


def test_restore_of_what_is_saved_stores_nothing(make_experiment):
    experiment = make_experiment("same")
    assert services.restore_revision("bob", experiment, 1) is None
    assert len(revs(experiment)) == 1
    assert not OperationLog.objects.filter(operation=Operation.REVERT).exists()


def test_restore_of_an_unknown_revision_is_a_validation_error(make_experiment):
    from django.core.exceptions import ValidationError

    experiment = make_experiment("unk")
    with pytest.raises(ValidationError, match="no revision 9"):
        services.restore_revision("bob", experiment, 9)


def test_read_only_users_cannot_restore(make_experiment):
    from django.core.exceptions import PermissionDenied

    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    experiment = make_experiment("ro", nodes=1)
    services.update_experiment("bob", experiment, nodes=2)
    with pytest.raises(PermissionDenied):
        services.restore_revision(viewer, experiment, 1)
    assert Experiment.objects.get(pk=experiment.pk).nodes == 2


# --- launches record their revision -------------------------------------------------------------


def _launch(server, experiment: Experiment) -> Launch:
    from django.utils import timezone

    from experiments.models import SyncState
    from syncing import reconciler

    services.set_desired_state("alice", [experiment], DesiredState.RUNNING)
    now = timezone.now()
    SyncState.objects.update_or_create(
        source="skypilot", defaults={"last_attempt_at": now, "last_success_at": now}
    )
    reconciler.reconcile()
    return Launch.objects.get(experiment=experiment)


def test_a_launch_records_the_latest_revision(server, make_experiment):
    experiment = make_experiment("l", base_command="uv run", tool_path="./t.py", nodes=1)
    services.update_experiment("bob", experiment, nodes=2)
    launch = _launch(server, experiment)
    assert launch.revision.number == 2 and launch.revision.config["nodes"] == 2


def test_a_launch_of_an_experiment_without_revisions_records_revision_1_as_found(server):
    experiment = legacy("legacy", base_command="uv run", tool_path="./t.py")
    launch = _launch(server, experiment)
    assert launch.revision.number == 1 and revisions.is_as_found(launch.revision)


def test_job_rows_and_the_log_page_link_the_config_they_ran(web, make_experiment, make_job):
    experiment = make_experiment("exp", nodes=1)
    services.update_experiment("bob", experiment, nodes=2)
    revision = revs(experiment)[-1]
    make_job(41, "exp")
    make_job(42, "exp")
    Launch.objects.create(
        experiment=experiment, experiment_name="exp", status="LISTED", job_id=42, revision=revision
    )
    html = web.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    link = f'href="{reverse("experiment_history", args=[experiment.pk])}?b=2"'
    assert html.count(link) == 1 and "config r2" in html
    log_page = web.get(reverse("job_log", args=[42])).content.decode()
    assert link in log_page and "config r2" in log_page
    assert "config r" not in web.get(reverse("job_log", args=[41])).content.decode()


def test_the_job_table_costs_the_same_with_more_launched_jobs(
    web, make_experiment, make_job, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    experiment = make_experiment("exp")
    revision = revs(experiment)[0]
    counts = []
    for n in (3, 12):
        for i in range(len(Launch.objects.all()), n):
            make_job(100 + i, "exp")
            Launch.objects.create(
                experiment=experiment,
                experiment_name="exp",
                status="LISTED",
                job_id=100 + i,
                revision=revision,
            )
        with CaptureQueriesContext(connection) as queries:
            html = web.get(reverse("experiment_panels", args=[experiment.pk])).content.decode()
        assert html.count("config r1") == n
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- the history page ---------------------------------------------------------------------------


def _with_revisions(make_experiment, count: int, name: str) -> Experiment:
    experiment = make_experiment(name, flags={"lr": 0})
    for i in range(1, count):
        services.update_experiment("bob", experiment, flags={"lr": i})
    return experiment


def test_history_lists_newest_first_and_diffs_the_latest_by_default(web, make_experiment):
    experiment = make_experiment("h", flags={"trainer.lr": 0.001})
    services.update_experiment("bob", experiment, flags={"trainer.lr": 0.003, "seed": 7})
    url = reverse("experiment_history", args=[experiment.pk])
    html = web.get(url).content.decode()
    assert html.index('id="r2"') < html.index('id="r1"')
    assert "r1 → r2" in html
    assert "0.001" in html and "0.003" in html and "hist-added" in html
    assert "Restore this revision" in html and "<html" in html
    partial = web.get(url, {"a": 2, "b": 1}, **HX).content.decode()
    assert "<html" not in partial and "r2 → r1" in partial and "hist-removed" in partial


def test_history_refuses_bad_numbers_and_unknown_parameters(web, make_experiment):
    experiment = make_experiment("bad")
    url = reverse("experiment_history", args=[experiment.pk])
    for query in ({"a": "9"}, {"b": "x"}, {"c": "1"}):
        response = web.get(url, query)
        assert response.status_code == 400
        assert 'class="notice error"' in response.content.decode()


def test_the_history_page_costs_the_same_with_3_and_30_revisions(web, make_experiment):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for count, name in ((3, "few"), (30, "many")):
        experiment = _with_revisions(make_experiment, count, name)
        url = reverse("experiment_history", args=[experiment.pk])
        with CaptureQueriesContext(connection) as queries:
            html = web.get(url).content.decode()
        assert html.count('<tr id="r') == count
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_restore_from_the_page(web, make_experiment):
    experiment = make_experiment("p", flags={"trainer.lr": 0.001})
    services.update_experiment("bob", experiment, flags={"trainer.lr": 0.003})
    url = reverse("experiment_restore", args=[experiment.pk, 1])
    response = web.post(url, **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Restored r1 of p as r3." in html and 'id="r3"' in html
    experiment.refresh_from_db()
    assert experiment.flags == {"trainer.lr": 0.001}
    again = web.post(url, **HX).content.decode()
    assert "r1 is what is saved already" in again and len(revs(experiment)) == 3
    assert web.post(reverse("experiment_restore", args=[experiment.pk, 9])).status_code == 302
    assert web.get(url).status_code == 405


def test_restore_needs_a_login_and_a_writer(client, make_experiment):
    experiment = make_experiment("w", nodes=1)
    services.update_experiment("bob", experiment, nodes=2)
    url = reverse("experiment_restore", args=[experiment.pk, 1])
    assert client.post(url).status_code == 302  # to the login page
    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    page = client.get(reverse("experiment_history", args=[experiment.pk])).content.decode()
    assert "Restore this revision" not in page
    assert Experiment.objects.get(pk=experiment.pk).nodes == 2


def test_the_detail_page_links_its_history(web, make_experiment):
    experiment = make_experiment("d")
    html = web.get(reverse("experiment_detail", args=[experiment.pk])).content.decode()
    assert f'href="{reverse("experiment_history", args=[experiment.pk])}"' in html


# --- the API ------------------------------------------------------------------------------------


def test_api_lists_revisions_newest_first(api, make_experiment):
    experiment = make_experiment("a1", flags={"lr": 0.1})
    services.update_experiment("bob", experiment, flags={"lr": 0.2})
    body = api.get(f"/api/experiments/{experiment.pk}/revisions/").json()
    assert body["count"] == 2
    assert [r["number"] for r in body["results"]] == [2, 1]
    assert body["results"][0]["text"] == "lr 0.1 → 0.2"
    assert body["results"][0]["changes"] == {"flags": [{"lr": 0.1}, {"lr": 0.2}]}
    one = api.get("/api/experiments/a1/revisions/1/").json()
    assert one["config"]["flags"] == {"lr": 0.1} and one["source"] == "ui"
    assert api.get("/api/experiments/a1/revisions/7/").status_code == 404
    assert api.get("/api/experiments/nope/revisions/").status_code == 404


def test_api_diff(api, make_experiment):
    experiment = make_experiment("a2", flags={"lr": 0.1, "x": 1})
    services.update_experiment("bob", experiment, flags={"lr": 0.2}, nodes=2)
    body = api.get("/api/experiments/a2/revisions/diff/").json()
    assert (body["a"], body["b"]) == (1, 2)
    assert [
        (d["key"] or d["field"], d["kind"], d["old"], d["new"]) for d in body["differences"]
    ] == [
        ("lr", "changed", 0.1, 0.2),
        ("x", "removed", 1, None),
        ("nodes", "changed", 1, 2),
    ]
    reverse_diff = api.get("/api/experiments/a2/revisions/diff/", {"a": 2, "b": 1}).json()
    assert {d["kind"] for d in reverse_diff["differences"]} == {"changed", "added"}
    response = api.get("/api/experiments/a2/revisions/diff/", {"a": 5})
    assert response.status_code == 400 and "a" in response.json()
    response = api.get("/api/experiments/a2/revisions/diff/", {"c": 1})
    assert response.status_code == 400 and "c" in response.json()
    assert api.get("/api/experiments/a2/revisions/diff/", {"b": "x"}).status_code == 400


def test_api_restore(api, readonly_api, make_experiment):
    experiment = make_experiment("a3", flags={"lr": 0.1})
    services.update_experiment("bob", experiment, flags={"lr": 0.2})
    assert readonly_api.post("/api/experiments/a3/revisions/1/restore/").status_code == 403
    response = api.post("/api/experiments/a3/revisions/1/restore/", {}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["restored"] is True and body["revision"]["number"] == 3
    assert body["revision"]["restored_from"] == 1 and body["revision"]["source"] == "restore"
    assert Experiment.objects.get(pk=experiment.pk).flags == {"lr": 0.1}
    again = api.post("/api/experiments/a3/revisions/1/restore/", {}, format="json").json()
    assert again["restored"] is False and again["revision"] is None
    response = api.post("/api/experiments/a3/revisions/9/restore/", {}, format="json")
    assert response.status_code == 400 and "number" in response.json()
    response = api.post("/api/experiments/a3/revisions/1/restore/", {"x": 1}, format="json")
    assert response.status_code == 400 and "x" in response.json()


def test_api_list_costs_the_same_with_3_and_30_revisions(api, make_experiment):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = []
    for count, name in ((3, "few"), (30, "many")):
        experiment = _with_revisions(make_experiment, count, name)
        with CaptureQueriesContext(connection) as queries:
            body = api.get(f"/api/experiments/{experiment.pk}/revisions/").json()
        assert body["count"] == count
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_schema_documents_the_revision_endpoints(api):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    base = "/api/experiments/{id_or_name}/revisions"
    assert "get" in paths[f"{base}/"] or "get" in paths[base]


def test_history_of_an_experiment_made_before_revisions(web, db):
    experiment = legacy("before-history")
    response = web.get(reverse("experiment_history", args=[experiment.pk]))
    assert response.status_code == 200 and "No revision yet" in response.content.decode()


def test_a_restore_refused_answers_400_with_the_reason_in_the_partial(web, make_experiment):
    experiment = make_experiment("refused")
    response = web.post(reverse("experiment_restore", args=[experiment.pk, 7]), **HX)
    assert response.status_code == 400
    assert "Nothing restored: number: refused has no revision 7." in response.content.decode()
