"""UI actions: every change is a POST through the services, logged with the user as actor.

htmx requests get the re-rendered partial back; plain posts get a redirect. Bad input is a 400
with the error shown and nothing changed, never a 500.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from experiments import services
from experiments.forms import parse_flag_value, unparse_flag_value
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentGroup,
    Operation,
    OperationLog,
)

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def client(web):
    """Every request of this file is a logged-in user's."""
    return web


def members(group: ExperimentGroup) -> list[str]:
    return [e.name for e in group.ordered_experiments()]


def last_log() -> OperationLog:
    return OperationLog.objects.order_by("-id").first()


def create_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "new-exp",
        "nodes": "2",
        "gpus": "8",
        "accelerator": "H100",
        "tool_path": "tools/train.py",
        "base_command": "uv run",
        "git_ref": "main",
        "description": "first try",
        "flag_key": ["lr", "steps", "spot", "note", ""],
        "flag_value": ["0.001", "1500", "true", "hello world", ""],
    }
    data.update(overrides)
    return data


# --- flag parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("False", False),
        ("42", 42),
        ("-7", -7),
        ("0.5", 0.5),
        ("1e-4", 1e-4),
        ("hello", "hello"),
        ('"42"', "42"),
        ("a; rm -rf /", "a; rm -rf /"),
        ('{"a": 1}', {"a": 1}),
        ("[1, 2]", [1, 2]),
        ("null", None),
        ("{not json", "{not json"),
    ],
)
def test_parse_flag_value(text, value):
    parsed = parse_flag_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_flag_value_never_raises():
    assert parse_flag_value("1" * 5000) == "1" * 5000
    deep = "[" * 100_000 + "]" * 100_000
    assert parse_flag_value(deep) == deep


@pytest.mark.parametrize("value", [True, 3, 0.25, "text", "42", "true", ""])
def test_unparse_round_trips(value):
    parsed = parse_flag_value(unparse_flag_value(value))
    assert parsed == value and type(parsed) is type(value)


# --- create ---------------------------------------------------------------------------------


def test_create_experiment_htmx(client):
    response = client.post(reverse("experiment_create"), create_data(), **HX)
    assert response.status_code == 200
    assert "refresh-deck" in response["HX-Trigger"]
    assert b"Created <strong>new-exp</strong>" in response.content
    exp = Experiment.objects.get(name="new-exp")
    assert exp.flags == {"lr": 0.001, "steps": 1500, "spot": True, "note": "hello world"}
    assert (exp.nodes, exp.gpus, exp.accelerator, exp.git_ref) == (2, 8, "H100", "main")
    assert exp.desired_state == DesiredState.STOPPED
    log = last_log()
    assert (log.actor, log.operation, log.experiment_name) == ("alice", Operation.CREATE, "new-exp")


def test_create_experiment_plain_post_redirects(client):
    response = client.post(reverse("experiment_create"), create_data(name="plain"))
    assert response.status_code == 302
    assert Experiment.objects.filter(name="plain").exists()
    page = client.get(response["Location"])
    assert b"Created plain." in page.content


def test_create_page_renders(client):
    response = client.get(reverse("experiment_create"))
    assert response.status_code == 200
    assert b'name="flag_key"' in response.content


def test_create_into_group(client):
    group = services.create_group("t", "sweep")
    client.post(reverse("experiment_create"), create_data(group=str(group.pk)), **HX)
    assert members(group) == ["new-exp"]


def test_plus_in_group_header_opens_create_form_for_that_group(client):
    services.create_group("t", "first")
    group = services.create_group("t", "sweep")
    html = client.get("/").content.decode()
    plus = f'href="{reverse("experiment_create")}?group={group.pk}"'
    assert plus in html and f'data-dialog-group="{group.pk}"' in html
    page = client.get(f"{reverse('experiment_create')}?group={group.pk}").content.decode()
    assert f'<option value="{group.pk}" selected>sweep</option>' in page
    # a junk group parameter is ignored, not an error
    junk = client.get(f"{reverse('experiment_create')}?group=x'y")
    assert junk.status_code == 200 and b" selected>" not in junk.content


def test_group_commands_are_plain_text_in_member_order(client, make_experiment):
    group = services.create_group("t", "sweep")
    second = make_experiment("b-run", base_command="uv run", tool_path="train.py", flags={"lr": 2})
    first = make_experiment(
        "a-run", base_command="uv run", tool_path="train.py", flags={"note": "a; rm -rf /"}
    )
    broken = make_experiment("no-cmd")
    services.add_to_group("t", group, [second, first, broken])
    make_experiment("outsider", base_command="echo")
    url = reverse("group_commands", args=[group.pk])
    assert url in client.get("/").content.decode()
    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response.content.decode().splitlines() == [
        "uv run train.py run=b-run lr=2",
        "uv run train.py run=a-run 'note=a; rm -rf /'",
        "# no-cmd has no command: set its base command and/or tool path",
    ]
    assert client.post(url).status_code == 405
    assert client.get(reverse("group_commands", args=[9999])).status_code == 404


def test_group_commands_need_login(make_experiment):
    group = services.create_group("t", "sweep")
    response = Client().get(reverse("group_commands", args=[group.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "foo (copy)"}, "is not allowed"),
        ({"name": ""}, "This field is required"),
        ({"nodes": "0"}, "greater than or equal to 1"),
        ({"nodes": "many"}, "Enter a whole number"),
        ({"flag_key": ["nested"], "flag_value": ['{"a": 1}']}, "nested values are not allowed"),
        ({"flag_key": ["bad key!"], "flag_value": ["1"]}, "is not allowed"),
        ({"flag_key": ["a", "a"], "flag_value": ["1", "2"]}, "listed twice"),
        ({"flag_key": [""], "flag_value": ["orphan value"]}, "has no flag name"),
        ({"flag_key": ["big"], "flag_value": ["1e999"]}, "must be a finite number"),
        ({"flag_key": ["ctl"], "flag_value": ["a\x01b"]}, "control characters"),
        ({"nodes": "9" * 30}, "less than or equal to 1024"),
        ({"git_ref": "bad..ref"}, "is not valid"),
        ({"gpus": "0", "accelerator": "H100"}, "GPUs per node is 0"),
    ],
)
def test_create_errors_inline_and_nothing_created(client, overrides, message):
    before = Experiment.objects.count()
    response = client.post(reverse("experiment_create"), create_data(**overrides), **HX)
    assert response.status_code == 400
    assert message in response.content.decode().replace("&#x27;", "'")
    assert Experiment.objects.count() == before
    assert not OperationLog.objects.exists()


def test_create_shows_every_error_at_once(client, make_experiment):
    make_experiment("taken")
    data = create_data(name="taken", nodes="0", flag_key=["nested"], flag_value=['{"a": 1}'])
    response = client.post(reverse("experiment_create"), data, **HX)
    html = response.content.decode()
    assert response.status_code == 400
    assert "already exists" in html
    assert "greater than or equal to 1" in html
    assert "nested values are not allowed" in html
    assert Experiment.objects.count() == 1


def test_edit_shows_every_error_at_once_and_changes_nothing(client, make_experiment):
    exp = make_experiment("both", nodes=2)
    response = client.post(
        reverse("experiment_edit", args=[exp.pk]),
        edit_data(exp, name="bad name", nodes="x", git_ref="a..b"),
        **HX,
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "is not allowed" in html and "Enter a whole number" in html and "is not valid" in html
    exp.refresh_from_db()
    assert (exp.name, exp.nodes, exp.git_ref) == ("both", 2, "")


def test_create_duplicate_name(client, make_experiment):
    make_experiment("taken")
    response = client.post(reverse("experiment_create"), create_data(name="taken"), **HX)
    assert response.status_code == 400
    assert b"already exists" in response.content
    assert Experiment.objects.filter(name="taken").count() == 1


def test_create_errors_without_htmx_render_the_page(client):
    response = client.post(reverse("experiment_create"), create_data(name="foo (copy)"))
    assert response.status_code == 400
    assert b"<html" in response.content and b"is not allowed" in response.content


# --- edit -----------------------------------------------------------------------------------


def edit_data(exp: Experiment, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": exp.name,
        "nodes": str(exp.nodes),
        "gpus": str(exp.gpus),
        "accelerator": exp.accelerator,
        "tool_path": exp.tool_path,
        "base_command": exp.base_command,
        "git_ref": exp.git_ref,
        "description": exp.description,
        "flag_key": list(exp.flags),
        "flag_value": [unparse_flag_value(v) for v in exp.flags.values()],
    }
    data.update(overrides)
    return data


def test_edit_saves_fields_and_flags(client, make_experiment):
    exp = make_experiment("editme", flags={"lr": 0.1, "old": 1})
    data = edit_data(
        exp,
        name="edited",
        nodes="4",
        description="now longer",
        flag_key=["lr", "batch", "flag.on"],
        flag_value=["0.2", "64", "false"],
    )
    response = client.post(reverse("experiment_edit", args=[exp.pk]), data, **HX)
    assert response.status_code == 200
    assert b"Saved." in response.content
    assert "refresh-deck" in response["HX-Trigger"]
    exp.refresh_from_db()
    assert exp.name == "edited" and exp.nodes == 4 and exp.description == "now longer"
    assert exp.flags == {"lr": 0.2, "batch": 64, "flag.on": False}
    log = last_log()
    assert log.actor == "alice" and log.operation == Operation.UPDATE
    assert "renamed from 'editme'" in log.message


def test_edit_without_changes_logs_nothing(client, make_experiment):
    exp = make_experiment("same", flags={"a": 1})
    before = OperationLog.objects.count()
    response = client.post(reverse("experiment_edit", args=[exp.pk]), edit_data(exp), **HX)
    assert response.status_code == 200
    assert OperationLog.objects.count() == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "has space"}, "is not allowed"),
        ({"nodes": "0"}, "greater than or equal to 1"),
        ({"flag_key": ["x"], "flag_value": ["[1, 2]"]}, "nested values are not allowed"),
        ({"flag_key": ["x"], "flag_value": ["null"]}, "null value"),
        ({"accelerator": "bad accel"}, "is not a valid name"),
    ],
)
def test_edit_errors_inline_and_nothing_changes(client, make_experiment, overrides, message):
    exp = make_experiment("stable", flags={"a": 1}, nodes=2)
    before = OperationLog.objects.count()
    response = client.post(
        reverse("experiment_edit", args=[exp.pk]), edit_data(exp, **overrides), **HX
    )
    assert response.status_code == 400
    assert message in response.content.decode().replace("&#x27;", "'")
    assert b"Not saved" in response.content
    exp.refresh_from_db()
    assert exp.name == "stable" and exp.nodes == 2 and exp.flags == {"a": 1}
    assert OperationLog.objects.count() == before


def test_edit_rename_to_taken_name(client, make_experiment):
    make_experiment("other")
    exp = make_experiment("mine")
    response = client.post(
        reverse("experiment_edit", args=[exp.pk]), edit_data(exp, name="other"), **HX
    )
    assert response.status_code == 400
    assert b"already exists" in response.content
    exp.refresh_from_db()
    assert exp.name == "mine"


def test_edit_plain_post_redirects_to_detail(client, make_experiment):
    exp = make_experiment("plain-edit")
    response = client.post(
        reverse("experiment_edit", args=[exp.pk]), edit_data(exp, description="x")
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("experiment_detail", args=[exp.pk])
    errors = client.post(reverse("experiment_edit", args=[exp.pk]), edit_data(exp, nodes="0"))
    assert errors.status_code == 400 and b"<html" in errors.content


def test_edit_reset_returns_saved_editor(client, make_experiment):
    exp = make_experiment("reset", flags={"k": "v"})
    response = client.get(reverse("experiment_edit", args=[exp.pk]), **HX)
    assert response.status_code == 200
    assert b'value="k"' in response.content


# --- single-experiment actions ----------------------------------------------------------------


def test_start_and_stop(client, make_experiment):
    exp = make_experiment("runner")
    url = reverse("experiment_desired", args=[exp.pk])
    # without confirmed=1 (the row button) the answer is the confirmation, in the dialog
    response = client.post(url, {"state": "RUNNING"}, **HX)
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#confirm-dialog"
    assert b"Start runner?" in response.content
    exp.refresh_from_db()
    assert exp.desired_state == DesiredState.STOPPED
    response = client.post(url, {"state": "RUNNING", "confirmed": "1"}, **HX)
    assert response.status_code == 200
    # only the changed cells come back, swapped in place out of band
    assert response["HX-Reswap"] == "none"
    html = response.content.decode()
    assert "→ RUNNING" in html and 'id="deck"' not in html
    assert f"outerHTML:#deck tr[data-exp-id='{exp.pk}'] > td.c-state" in html
    assert 'id="status" class="status" hx-swap-oob="true"' in html
    assert "1 with desired state RUNNING" in html
    exp.refresh_from_db()
    assert exp.desired_state == DesiredState.RUNNING
    assert (last_log().actor, last_log().operation) == ("alice", Operation.START)
    client.post(url, {"state": "STOPPED", "confirmed": "1"}, **HX)
    exp.refresh_from_db()
    assert exp.desired_state == DesiredState.STOPPED
    assert last_log().operation == Operation.STOP


def test_bad_desired_state_is_an_error(client, make_experiment):
    exp = make_experiment("bad-state")
    response = client.post(reverse("experiment_desired", args=[exp.pk]), {"state": "FLY"}, **HX)
    assert response.status_code == 400
    assert b"Unknown desired state" in response.content
    exp.refresh_from_db()
    assert exp.desired_state == DesiredState.STOPPED


def test_plain_post_redirects_back_with_filter(client, make_experiment):
    exp = make_experiment("plain-start")
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "RUNNING", "q": "plain", "confirmed": "1"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/?q=plain"


def test_htmx_action_keeps_the_filter_of_the_page(client, make_experiment):
    exp = make_experiment("kept-one")
    make_experiment("other-one")
    response = client.post(
        reverse("experiment_duplicate", args=[exp.pk]),
        {},
        HTTP_HX_CURRENT_URL="http://testserver/?q=kept",
        **HX,
    )
    html = response.content.decode()
    assert "kept-one.copy" in html and "other-one" not in html


def test_star_toggles(client, make_experiment):
    exp = make_experiment("shiny")
    response = client.post(reverse("experiment_star", args=[exp.pk]), {"starred": "1"}, **HX)
    assert 'aria-pressed="true"' in response.content.decode()
    exp.refresh_from_db()
    assert exp.starred
    client.post(reverse("experiment_star", args=[exp.pk]), {}, **HX)
    exp.refresh_from_db()
    assert not exp.starred


def test_duplicate_places_copy_in_groups(client, make_experiment):
    group = services.create_group("t", "g")
    a, b = make_experiment("a", flags={"x": 1}), make_experiment("b")
    services.add_to_group("t", group, [a, b])
    services.set_desired_state("t", [a], DesiredState.RUNNING)
    response = client.post(reverse("experiment_duplicate", args=[a.pk]), {}, **HX)
    assert response.status_code == 200
    assert b"Duplicated a as a.copy" in response.content
    copy = Experiment.objects.get(name="a.copy")
    assert copy.flags == {"x": 1} and copy.desired_state == DesiredState.STOPPED
    assert members(group) == ["a", "a.copy", "b"]
    assert (last_log().actor, last_log().operation) == ("alice", Operation.DUPLICATE)


def test_delete_confirm_page_then_delete(client, make_experiment, make_job):
    exp = make_experiment("doomed")
    make_job(name="doomed")
    page = client.get(reverse("experiment_delete", args=[exp.pk]))
    assert page.status_code == 200 and b"Delete doomed?" in page.content
    assert Experiment.objects.filter(pk=exp.pk).exists()
    response = client.post(reverse("experiment_delete", args=[exp.pk]))
    assert response.status_code == 302
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert (last_log().actor, last_log().operation, last_log().experiment_name) == (
        "alice",
        Operation.DELETE,
        "doomed",
    )


def test_delete_htmx_returns_deck(client, make_experiment):
    exp = make_experiment("gone-htmx")
    response = client.post(reverse("experiment_delete", args=[exp.pk]), {}, **HX)
    assert response.status_code == 200
    assert b"Deleted gone-htmx." in response.content
    assert not Experiment.objects.filter(pk=exp.pk).exists()


def test_unknown_experiment_is_404(client):
    assert client.post(reverse("experiment_star", args=[999]), {}, **HX).status_code == 404
    assert client.get(reverse("experiment_detail", args=[999])).status_code == 404


def test_get_on_post_only_actions_is_405(client, make_experiment):
    exp = make_experiment("get-me")
    assert client.get(reverse("experiment_star", args=[exp.pk])).status_code == 405
    assert client.get(reverse("bulk_action")).status_code == 405


# --- bulk -----------------------------------------------------------------------------------


def bulk(client: Client, action: str, exps: list[Experiment], **extra: Any):
    data = {"action": action, "ids": [str(e.pk) for e in exps], "confirmed": "1", **extra}
    return client.post(reverse("bulk_action"), data, **HX)


def test_bulk_start_stop(client, make_experiment):
    a, b, c = make_experiment("b1"), make_experiment("b2"), make_experiment("b3")
    response = bulk(client, "start", [a, b])
    assert response.status_code == 200 and b"Started 2 experiments: " in response.content
    assert response.content.decode().count("→ RUNNING") == 2
    assert set(Experiment.objects.desired_running().values_list("name", flat=True)) == {"b1", "b2"}
    bulk(client, "stop", [a, b, c])
    assert not Experiment.objects.desired_running().exists()
    assert OperationLog.objects.filter(actor="alice", operation=Operation.STOP).count() == 2


def test_bulk_duplicate(client, make_experiment):
    a, b = make_experiment("d1"), make_experiment("d2")
    bulk(client, "duplicate", [a, b])
    assert set(Experiment.objects.values_list("name", flat=True)) == {
        "d1",
        "d2",
        "d1.copy",
        "d2.copy",
    }


def test_bulk_group_membership(client, make_experiment):
    g1 = services.create_group("t", "g1")
    g2 = services.create_group("t", "g2")
    a, b, c = make_experiment("m1"), make_experiment("m2"), make_experiment("m3")
    bulk(client, "add", [a, b], group=str(g1.pk))
    assert members(g1) == ["m1", "m2"]
    bulk(client, "add", [a, c], group=str(g2.pk))
    assert members(g2) == ["m1", "m3"]
    response = bulk(client, "move", [a], group=str(g1.pk))
    assert b"Moved 0 experiments to g1." in response.content  # already there; left g2
    assert members(g2) == ["m3"]
    bulk(client, "move", [c], group=str(g1.pk))
    assert members(g1) == ["m1", "m2", "m3"] and members(g2) == []
    bulk(client, "remove", [b], group=str(g1.pk))
    assert members(g1) == ["m1", "m3"]
    assert OperationLog.objects.filter(actor="alice", operation=Operation.GROUP_MOVE).exists()


def test_bulk_delete(client, make_experiment):
    a, b, keep = make_experiment("x1"), make_experiment("x2"), make_experiment("x3")
    response = bulk(client, "delete", [a, b])
    assert b"Deleted 2 experiments." in response.content
    assert list(Experiment.objects.values_list("name", flat=True)) == ["x3"]
    assert keep.pk


def test_bulk_delete_without_htmx_asks_first(client, make_experiment):
    a = make_experiment("ask1")
    response = client.post(reverse("bulk_action"), {"action": "delete", "ids": [str(a.pk)]})
    assert response.status_code == 200
    assert b"Delete 1 experiment?" in response.content and b"ask1" in response.content
    assert Experiment.objects.filter(pk=a.pk).exists()
    response = client.post(
        reverse("bulk_action"), {"action": "delete", "ids": [str(a.pk)], "confirmed": "1"}
    )
    assert response.status_code == 302
    assert not Experiment.objects.filter(pk=a.pk).exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"action": "start"}, b"Select at least one experiment"),
        ({"action": "start", "ids": ["abc"]}, b"Select at least one experiment"),
        ({"action": "explode", "ids": ["1"]}, b"Unknown action"),
        ({"action": "move", "ids": ["1"]}, b"Choose a group"),
        ({"action": "add", "ids": ["1"], "group": "zzz"}, b"Choose a group"),
        ({"action": "add", "ids": ["1"], "group": "999"}, b"Choose a group"),
    ],
)
def test_bulk_bad_input(client, make_experiment, data, message):
    exp = make_experiment("bulk-bad")
    data = {**data, "ids": [str(exp.pk) if i == "1" else i for i in data.get("ids", [])]}
    before = OperationLog.objects.count()
    response = client.post(reverse("bulk_action"), data, **HX)
    assert response.status_code == 400
    assert message in response.content
    assert OperationLog.objects.count() == before


def test_bulk_plain_post_redirects_with_message(client, make_experiment):
    exp = make_experiment("bulk-plain")
    response = client.post(
        reverse("bulk_action"), {"action": "start", "ids": [str(exp.pk)]}, follow=True
    )
    # without JavaScript, Start asks first (nothing changed yet)
    assert (
        b"Start bulk-plain?" in response.content
        and b'name="confirmed" value="1"' in response.content
    )
    assert not Experiment.objects.desired_running().exists()
    response = client.post(
        reverse("bulk_action"),
        {"action": "start", "ids": [str(exp.pk)], "confirmed": "1"},
        follow=True,
    )
    assert response.status_code == 200
    assert b"Started bulk-plain: " in response.content


# --- groups ---------------------------------------------------------------------------------


def test_group_create_htmx_and_duplicate_name(client):
    response = client.post(reverse("group_create"), {"name": "sweep"}, **HX)
    assert response.status_code == 200
    assert "refresh-deck" in response["HX-Trigger"]
    assert ExperimentGroup.objects.filter(name="sweep").exists()
    assert (last_log().actor, last_log().operation) == ("alice", Operation.GROUP_CREATE)
    response = client.post(reverse("group_create"), {"name": "sweep"}, **HX)
    assert response.status_code == 400
    assert b"already exists" in response.content
    assert ExperimentGroup.objects.count() == 1
    response = client.post(reverse("group_create"), {"name": ""}, **HX)
    assert response.status_code == 400


def test_group_create_plain_post(client):
    response = client.post(reverse("group_create"), {"name": "plain-group"}, follow=True)
    assert b"Created group plain-group." in response.content


def test_group_rename(client):
    group = services.create_group("t", "old")
    services.create_group("t", "taken")
    response = client.post(reverse("group_rename", args=[group.pk]), {"name": "new"}, **HX)
    assert response.status_code == 200 and b">new</h2>" in response.content
    group.refresh_from_db()
    assert group.name == "new"
    response = client.post(reverse("group_rename", args=[group.pk]), {"name": "taken"}, **HX)
    assert response.status_code == 400 and b"not renamed" in response.content
    response = client.post(reverse("group_rename", args=[group.pk]), {"name": " "}, **HX)
    assert response.status_code == 400
    group.refresh_from_db()
    assert group.name == "new"


def test_group_collapse_persists(client, make_experiment):
    group = services.create_group("t", "fold")
    services.add_to_group("t", group, [make_experiment("inside")])
    client.post(reverse("group_collapse", args=[group.pk]), {"collapsed": "1"}, **HX)
    group.refresh_from_db()
    assert group.collapsed
    assert b"inside" not in client.get("/").content
    client.post(reverse("group_collapse", args=[group.pk]), {"collapsed": "0"}, **HX)
    group.refresh_from_db()
    assert not group.collapsed
    client.post(reverse("group_collapse", args=[group.pk]), {}, **HX)  # toggle
    group.refresh_from_db()
    assert group.collapsed


def test_group_delete_keeps_experiments(client, make_experiment):
    group = services.create_group("t", "bye")
    exp = make_experiment("survivor")
    services.add_to_group("t", group, [exp])
    page = client.get(reverse("group_delete", args=[group.pk]))
    assert b"Delete group bye?" in page.content and b"survivor" in page.content
    response = client.post(reverse("group_delete", args=[group.pk]), {}, **HX)
    assert response.status_code == 200
    assert not ExperimentGroup.objects.exists()
    assert Experiment.objects.filter(name="survivor").exists()
    assert (last_log().actor, last_log().operation) == ("alice", Operation.GROUP_DELETE)


def test_group_move_up_and_down(client):
    a, b, c = (services.create_group("t", n) for n in ("ga", "gb", "gc"))
    client.post(reverse("group_move", args=[c.pk]), {"direction": "up"}, **HX)
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == ["ga", "gc", "gb"]
    client.post(reverse("group_move", args=[a.pk]), {"direction": "down"}, **HX)
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == ["gc", "ga", "gb"]
    client.post(reverse("group_move", args=[c.pk]), {"direction": "up"}, **HX)  # already first
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == ["gc", "ga", "gb"]
    response = client.post(reverse("group_move", args=[b.pk]), {"direction": "sideways"}, **HX)
    assert response.status_code == 400
    assert OperationLog.objects.filter(actor="alice", operation=Operation.GROUP_REORDER).exists()


def test_member_move(client, make_experiment):
    group = services.create_group("t", "ordered")
    exps = [make_experiment(n) for n in ("one", "two", "three")]
    services.add_to_group("t", group, exps)
    client.post(reverse("member_move", args=[group.pk, exps[2].pk]), {"direction": "up"}, **HX)
    assert members(group) == ["one", "three", "two"]
    client.post(reverse("member_move", args=[group.pk, exps[0].pk]), {"direction": "down"}, **HX)
    assert members(group) == ["three", "one", "two"]
    outsider = make_experiment("outsider")
    response = client.post(
        reverse("member_move", args=[group.pk, outsider.pk]), {"direction": "up"}, **HX
    )
    assert response.status_code == 400 and b"is not in group" in response.content
    assert (
        OperationLog.objects.filter(actor="alice", operation=Operation.GROUP_REORDER).count() == 2
    )
