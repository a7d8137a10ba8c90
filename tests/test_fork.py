"""Fork from a checkpoint: the service, the page, the lineage display and the API."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from experiments import services
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentGroupMember,
    Operation,
    OperationLog,
)

pytestmark = pytest.mark.django_db

FLAG = "trainer.initial_policy.uri"


@pytest.fixture
def parent(make_experiment):
    return make_experiment(
        "arena.base",
        flags={"trainer.lr": 0.001, "seed": 1},
        nodes=2,
        gpus=8,
        accelerator="H100",
        base_command="uv run",
        tool_path="tools/train.py",
        git_ref="main",
        description="the baseline",
        tags=["baseline"],
    )


@pytest.fixture
def ckpt(parent, make_checkpoint):
    return make_checkpoint(parent, 120)


@pytest.fixture
def fork_flag(settings):
    settings.SKYDECK_FORK_FLAG = FLAG


# --- the service ----------------------------------------------------------------------------


def test_fork_copies_the_configuration_sets_the_uri_and_records_the_lineage(
    parent, ckpt, fork_flag
):
    services.update_experiment("tester", parent, starred=True)
    child = services.fork_experiment("alice", ckpt)
    child.refresh_from_db()
    assert child.name == "arena.base.from120"
    assert child.flags == {"trainer.lr": 0.001, "seed": 1, FLAG: ckpt.model_path}
    for field in ("nodes", "gpus", "accelerator", "base_command", "tool_path", "git_ref"):
        assert getattr(child, field) == getattr(parent, field), field
    assert child.description == "the baseline" and child.tags == ["baseline"]
    assert child.starred is False
    assert child.desired_state == DesiredState.STOPPED
    assert (child.parent_id, child.parent_name) == (parent.pk, "arena.base")
    assert child.parent_checkpoint_id == ckpt.pk
    assert (child.parent_epoch, child.parent_uri) == (120, ckpt.model_path)
    # the parent is untouched
    parent.refresh_from_db()
    assert FLAG not in parent.flags and parent.forks.get() == child


def test_edits_apply_and_the_uri_wins_over_an_edited_flag(parent, ckpt, fork_flag):
    child = services.fork_experiment(
        "alice",
        ckpt,
        name="arena.lr2",
        changes={"flags": {"trainer.lr": 0.002, FLAG: "s3://else/x"}, "nodes": 4},
    )
    assert child.name == "arena.lr2" and child.nodes == 4
    assert child.flags == {"trainer.lr": 0.002, FLAG: ckpt.model_path}
    assert child.gpus == 8  # not edited: the parent's


def test_the_flag_key_given_beats_the_setting(parent, ckpt, fork_flag):
    child = services.fork_experiment("alice", ckpt, flag_key="policy.init")
    assert child.flags["policy.init"] == ckpt.model_path and FLAG not in child.flags


def test_without_setting_the_flag_key_is_required(parent, ckpt, settings):
    settings.SKYDECK_FORK_FLAG = ""
    with pytest.raises(ValidationError) as info:
        services.fork_experiment("alice", ckpt)
    assert "SKYDECK_FORK_FLAG" in info.value.message_dict["flag_key"][0]
    child = services.fork_experiment("alice", ckpt, flag_key="asked.uri")
    assert child.flags["asked.uri"] == ckpt.model_path
    assert Experiment.objects.count() == 2


def test_a_bad_flag_key_is_refused_by_the_flag_name_rule(parent, ckpt):
    with pytest.raises(ValidationError) as info:
        services.fork_experiment("alice", ckpt, flag_key="bad key!")
    assert "not allowed" in info.value.message_dict["flag_key"][0]
    assert not Experiment.objects.filter(parent=parent).exists()


def test_refused_changes_and_a_missing_checkpoint_create_nothing(
    parent, make_checkpoint, fork_flag
):
    present = make_checkpoint(parent, 10)
    for changes, field in (
        ({"starred": True}, "starred"),
        ({"name": "x.y"}, "name"),
        ({"desired_state": "RUNNING"}, "desired_state"),
        ({"parent_name": "fake"}, "parent_name"),
    ):
        with pytest.raises(ValidationError) as info:
            services.fork_experiment("alice", present, changes=changes)
        assert field in info.value.message_dict
    gone = make_checkpoint(parent, 11, missing=True)
    with pytest.raises(ValidationError) as info:
        services.fork_experiment("alice", gone)
    assert "marked missing" in info.value.message_dict["checkpoint"][0]
    with pytest.raises(ValidationError) as info:
        services.fork_experiment("alice", present, changes={"nodes": 0})
    assert "nodes" in info.value.message_dict
    assert Experiment.objects.count() == 1


def test_default_names_are_the_next_free_and_valid(parent, ckpt, fork_flag):
    first = services.fork_experiment("alice", ckpt)
    second = services.fork_experiment("alice", ckpt)
    assert (first.name, second.name) == ("arena.base.from120", "arena.base.from120-2")
    long_name = "a" * 120 + "_b"
    assert services.next_fork_name(long_name, 123456, set()) == "a" * 117 + ".from123456"
    assert len(services.next_fork_name("x" * 128, 5, {"x" * 122 + ".from5"})) <= 128


def test_read_only_users_cannot_fork(parent, ckpt, fork_flag):
    from django.contrib.auth.models import Group, User

    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    with pytest.raises(PermissionDenied):
        services.fork_experiment(viewer, ckpt)


def test_the_fork_sits_right_after_its_parent_in_each_group(
    parent, ckpt, make_experiment, fork_flag
):
    before, after = make_experiment("before"), make_experiment("after")
    group = services.create_group("tester", "g")
    services.add_to_group("tester", group, [before, parent, after])
    other = services.create_group("tester", "other")
    services.add_to_group("tester", other, [parent])
    child = services.fork_experiment("alice", ckpt)
    order = list(
        ExperimentGroupMember.objects.filter(group=group)
        .order_by("order")
        .values_list("experiment__name", flat=True)
    )
    assert order == ["before", "arena.base", child.name, "after"]
    assert list(
        ExperimentGroupMember.objects.filter(group=other)
        .order_by("order")
        .values_list("experiment__name", flat=True)
    ) == ["arena.base", child.name]


def test_the_operation_log_says_where_it_came_from(parent, ckpt, fork_flag):
    child = services.fork_experiment("alice", ckpt)
    row = OperationLog.objects.get(operation=Operation.FORK)
    assert row.experiment_id == child.pk and row.actor == "alice"
    assert row.message.startswith(f"forked from arena.base @ epoch 120 ({ckpt.model_path})")


def test_deleting_the_parent_keeps_the_childs_record_of_it(parent, ckpt, fork_flag, web):
    child = services.fork_experiment("alice", ckpt)
    services.delete_experiments("tester", [parent])
    child.refresh_from_db()
    assert child.parent_id is None and child.parent_checkpoint_id is None
    assert (child.parent_name, child.parent_epoch) == ("arena.base", 120)
    assert child.parent_uri == ckpt.model_path
    html = web.get(f"/experiments/{child.pk}/").content.decode()
    assert "forked from" in html and "arena.base" in html and "(deleted)" in html
    assert 'href="/experiments/' + str(parent.pk) not in html


# --- the page -------------------------------------------------------------------------------


def test_every_present_checkpoint_row_links_to_its_fork_page(parent, ckpt, make_checkpoint, web):
    gone = make_checkpoint(parent, 7, missing=True)
    html = web.get(f"/experiments/{parent.pk}/").content.decode()
    assert f'href="/checkpoints/{ckpt.pk}/fork"' in html
    assert f'href="/checkpoints/{gone.pk}/fork"' not in html
    assert "Fork from here" in html


def test_the_fork_form_is_prefilled_from_the_parent(parent, ckpt, fork_flag, web):
    response = web.get(f"/checkpoints/{ckpt.pk}/fork")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="arena.base.from120"' in html
    assert f'value="{FLAG}"' in html and ckpt.model_path in html
    assert 'value="trainer.lr"' in html and 'value="0.001"' in html
    assert 'value="tools/train.py"' in html


def test_without_setting_the_form_asks_for_the_flag(parent, ckpt, settings, web):
    settings.SKYDECK_FORK_FLAG = ""
    html = web.get(f"/checkpoints/{ckpt.pk}/fork").content.decode()
    assert "SKYDECK_FORK_FLAG</code> is not set" in html
    data = _post_data(name="arena.asked")
    response = web.post(f"/checkpoints/{ckpt.pk}/fork", data)
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()
    assert not Experiment.objects.filter(name="arena.asked").exists()
    response = web.post(f"/checkpoints/{ckpt.pk}/fork", {**data, "uri_flag": "my.uri"})
    assert response.status_code == 302
    assert Experiment.objects.get(name="arena.asked").flags["my.uri"] == ckpt.model_path


def _post_data(**overrides):
    data = {
        "name": "arena.lr2",
        "nodes": "2",
        "gpus": "8",
        "accelerator": "H100",
        "tool_path": "tools/train.py",
        "base_command": "uv run",
        "git_ref": "main",
        "description": "",
        "flag_key": ["trainer.lr", "seed"],
        "flag_value": ["0.002", "1"],
    }
    data.update(overrides)
    return data


def test_posting_the_form_creates_the_fork_and_lands_on_it(parent, ckpt, fork_flag, web):
    response = web.post(f"/checkpoints/{ckpt.pk}/fork", _post_data(), follow=True)
    child = Experiment.objects.get(name="arena.lr2")
    assert response.redirect_chain[-1][0] == f"/experiments/{child.pk}/"
    html = response.content.decode()
    assert "Forked arena.base @ epoch 120 as arena.lr2" in html
    assert "forked from" in html and f'href="/experiments/{parent.pk}/"' in html
    assert "@ epoch 120" in html
    assert child.flags == {"trainer.lr": 0.002, "seed": 1, FLAG: ckpt.model_path}
    assert child.parent_id == parent.pk
    parent_html = web.get(f"/experiments/{parent.pk}/").content.decode()
    assert "forks: 1" in parent_html and f'href="/experiments/{child.pk}/"' in parent_html


def test_form_errors_create_nothing(parent, ckpt, fork_flag, web, make_experiment):
    make_experiment("taken")
    for data, text in (
        (_post_data(name="taken"), "already exists"),
        (_post_data(name="bad name!"), "name"),
        (_post_data(nodes="0"), "greater than or equal to 1"),
        (_post_data(uri_flag="bad key!"), "not allowed"),
        (_post_data(flag_key=["a", "a"], flag_value=["1", "2"]), "listed twice"),
    ):
        response = web.post(f"/checkpoints/{ckpt.pk}/fork", data)
        assert response.status_code == 400, data
        assert text in response.content.decode(), text
    assert not Experiment.objects.filter(parent=parent).exists()


def test_a_missing_checkpoint_is_refused_on_the_page(parent, make_checkpoint, fork_flag, web):
    gone = make_checkpoint(parent, 3, missing=True)
    assert "cannot be forked" in web.get(f"/checkpoints/{gone.pk}/fork").content.decode()
    response = web.post(f"/checkpoints/{gone.pk}/fork", _post_data())
    assert response.status_code == 400 and "marked missing" in response.content.decode()
    assert not Experiment.objects.filter(parent=parent).exists()


def test_the_page_needs_a_login_and_an_existing_checkpoint(ckpt, client, web):
    response = client.get(f"/checkpoints/{ckpt.pk}/fork")
    assert response.status_code == 302 and "/login" in response["Location"]
    assert web.get("/checkpoints/999999/fork").status_code == 404


def test_the_expanded_row_shows_the_lineage_too(parent, ckpt, fork_flag, web):
    child = services.fork_experiment("alice", ckpt)
    html = web.get(f"/experiments/{child.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "forked from" in html and "@ epoch 120" in html
    html = web.get(f"/experiments/{parent.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "forks: 1" in html


def test_the_detail_page_costs_the_same_with_0_or_5_forks(parent, ckpt, fork_flag, web):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    web.get(f"/experiments/{parent.pk}/")  # warm the session and caches
    counts = []
    for forks in (0, 5):
        for _ in range(forks):
            services.fork_experiment("alice", ckpt)
        for pk in (parent.pk, Experiment.objects.order_by("-pk").first().pk):
            with CaptureQueriesContext(connection) as queries:
                response = web.get(f"/experiments/{pk}/")
            assert response.status_code == 200
            counts.append(len(queries))
        assert ("forks: 5" in web.get(f"/experiments/{parent.pk}/").content.decode()) == bool(forks)
    # parent with 0 and 5 forks cost the same; so does the child (a fork) and the parent
    assert counts[0] == counts[2], counts
    assert counts[3] <= counts[2], counts


# --- the API --------------------------------------------------------------------------------


def test_api_fork_answers_201_with_the_lineage(api, parent, ckpt, fork_flag):
    response = api.post(
        f"/api/checkpoints/{ckpt.pk}/fork/",
        {"name": "arena.api", "changes": {"flags_patch": {"set": {"seed": 2}}, "gpus": 4}},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "arena.api" and body["gpus"] == 4
    assert body["flags"] == {"trainer.lr": 0.001, "seed": 2, FLAG: ckpt.model_path}
    assert body["parent"] == parent.pk and body["parent_name"] == "arena.base"
    assert (body["parent_epoch"], body["parent_uri"]) == (120, ckpt.model_path)
    assert body["desired_state"] == "STOPPED" and body["forks"] == [] and body["forks_count"] == 0
    got = api.get(f"/api/experiments/{parent.pk}/").json()
    assert got["forks"] == [{"id": body["id"], "name": "arena.api", "parent_epoch": 120}]
    assert got["forks_count"] == 1 and got["parent"] is None and got["parent_name"] is None


def test_api_fork_defaults_and_asked_flag(api, parent, ckpt, settings):
    settings.SKYDECK_FORK_FLAG = ""
    response = api.post(f"/api/checkpoints/{ckpt.pk}/fork/", {}, format="json")
    assert response.status_code == 400
    assert "SKYDECK_FORK_FLAG" in response.json()["flag_key"][0]
    response = api.post(f"/api/checkpoints/{ckpt.pk}/fork", {"flag_key": "init.uri"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "arena.base.from120"
    assert response.json()["flags"]["init.uri"] == ckpt.model_path


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"nmae": "x"}, ["nmae"]),
        ({"changes": {"starred": True}}, ["changes", "starred"]),
        ({"changes": {"bogus": 1}}, ["changes", "bogus"]),
        ({"changes": {"name": "x.y"}}, ["changes", "name"]),
        ({"changes": {"desired_state": "RUNNING"}}, ["changes", "desired_state"]),
        ({"changes": {"nodes": "2"}}, ["changes", "nodes"]),
        ({"changes": {"nodes": 0}}, ["changes", "nodes"]),
        ({"name": "bad name!"}, ["name"]),
        ({"name": 12}, ["name"]),
        ({"flag_key": "bad key!"}, ["flag_key"]),
        ({"changes": {"gpus": 0}}, ["gpus"]),  # accelerator without GPUs: the model's rule
    ],
)
def test_api_fork_400s_name_the_field(api, parent, ckpt, fork_flag, body, path):
    response = api.post(f"/api/checkpoints/{ckpt.pk}/fork/", body, format="json")
    assert response.status_code == 400, response.content
    node = response.json()
    for key in path:
        assert key in node, (path, response.json())
        node = node[key]
    assert not Experiment.objects.filter(parent=parent).exists()


def test_api_fork_missing_unknown_and_read_only(
    api, readonly_api, parent, ckpt, make_checkpoint, fork_flag
):
    gone = make_checkpoint(parent, 5, missing=True)
    response = api.post(f"/api/checkpoints/{gone.pk}/fork/", {}, format="json")
    assert response.status_code == 400 and "checkpoint" in response.json()
    assert api.post("/api/checkpoints/999999/fork/", {}, format="json").status_code == 404
    response = api.post(f"/api/checkpoints/{ckpt.pk}/fork/?x=1", {}, format="json")
    assert response.status_code == 400 and "x" in response.json()
    assert api.get(f"/api/checkpoints/{ckpt.pk}/fork/").status_code == 405
    assert (
        readonly_api.post(f"/api/checkpoints/{ckpt.pk}/fork/", {}, format="json").status_code == 403
    )
    assert not Experiment.objects.filter(parent=parent).exists()


def test_api_list_shows_lineage_with_a_constant_number_of_queries(
    api, make_experiment, make_checkpoint, fork_flag, django_assert_max_num_queries
):
    answers = {}
    for count in (3, 30):
        Experiment.objects.all().delete()
        parents = [make_experiment(f"p{count}-{i:02d}") for i in range(count)]
        for p in parents:
            services.fork_experiment("alice", make_checkpoint(p, 1))
        # token, count, page, memberships, latest checkpoints, latest jobs
        with django_assert_max_num_queries(6):
            response = api.get("/api/experiments/?page_size=100")
        results = response.json()["results"]
        assert len(results) == 2 * count
        answers[count] = results
    by_name = {e["name"]: e for e in answers[30]}
    assert by_name["p30-00"]["forks_count"] == 1 and by_name["p30-00"]["parent"] is None
    child = by_name["p30-00.from1"]
    assert child["parent"] == by_name["p30-00"]["id"] and child["parent_name"] == "p30-00"
    assert child["parent_epoch"] == 1 and child["forks_count"] == 0
    assert "forks" not in child  # the list says how many; one experiment lists them
