"""Sweeps: axis specs, grid and zip, names, all-or-nothing creation, the group, the operation log,
and the page, the API and ``skydeck sweep`` as doors onto the same functions."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments import services, sweeps
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentGroup,
    Operation,
    OperationLog,
)
from experiments.validation import NAME_MAX_LENGTH, is_experiment_name

pytestmark = pytest.mark.django_db


def values(spec, key="trainer.lr"):
    return list(sweeps.parse_axis(key, spec).values)


def messages_of(exc: pytest.ExceptionInfo) -> str:
    return " ".join(exc.value.messages)


@pytest.fixture
def base(make_experiment):
    return make_experiment(
        "base",
        nodes=2,
        gpus=4,
        accelerator="H100",
        base_command="uv run",
        tool_path="tools/train.py",
        flags={"trainer.lr": 0.1, "seed": 1},
        tags=["arena"],
    )


# --- parsing ----------------------------------------------------------------------------------


def test_a_log_range_has_both_ends_and_shortest_floats():
    assert values("1e-4..1e-2 x3 log") == [0.0001, 0.001, 0.01]
    assert [sweeps.value_text(v) for v in values("1e-4..1e-2 x3 log")] == [
        "0.0001",
        "0.001",
        "0.01",
    ]
    assert values("1..1000 x4 log") == [1, 10, 100, 1000]  # int ends, whole values: ints
    assert all(type(v) is int for v in values("1..1000 x4 log"))


def test_a_linear_range_is_evenly_spaced_and_ints_only_when_the_step_is_whole():
    assert values("1..7 x4") == [1, 3, 5, 7] and all(type(v) is int for v in values("1..7 x4"))
    assert values("0..1 x5") == [0.0, 0.25, 0.5, 0.75, 1.0]
    eight = values("1..8 x4")
    assert eight[0] == 1.0 and eight[-1] == 8.0 and all(type(v) is float for v in eight)
    assert values("0.1..0.3 x3") == [0.1, 0.2, 0.3]  # no 0.30000000000000004


def test_a_stepped_range_and_lists():
    assert values("1..8 step 2") == [1, 3, 5, 7]
    assert values("0.1..0.5 step 0.1") == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert values("8..2 step -3") == [8, 5, 2]
    assert values('0.1, 0.3, 1, true, adam, "7"') == [0.1, 0.3, 1, True, "adam", "7"]
    assert values([32, 64]) == [32, 64]


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("1..8 x0", "x0: a range needs at least 2 values"),
        ("0..1 x3 log", "a log range needs positive ends"),
        ("-1..1 x3 log", "a log range needs positive ends"),
        ("1..8", "say how many values"),
        ("1..1000 x201", "201 values; a sweep makes at most 200"),
        ("1..8 step 0", "the step must be a non-zero number"),
        ("1..8 step -1", "never gets from 1 to 8"),
        ("a,,b", "an empty value"),
        ("1, 1", "listed twice"),
        ("", "give its values"),
        ("[1]", "nested values are not allowed"),
    ],
)
def test_bad_specs_name_the_key(spec, says):
    with pytest.raises(ValidationError) as exc:
        sweeps.parse_axis("trainer.lr", spec)
    assert messages_of(exc).startswith("trainer.lr: ") and says in messages_of(exc)


def test_bad_keys_and_several_bad_axes_are_all_reported():
    with pytest.raises(ValidationError) as exc:
        sweeps.parse_axes([("bad key", "1,2"), ("ok", "1..8 x0"), ("ok2", "1,2")])
    errors = exc.value.message_dict["axes"]
    assert len(errors) == 2 and errors[0].startswith("bad key: ") and errors[1].startswith("ok: ")
    with pytest.raises(ValidationError, match="Add at least one flag"):
        sweeps.parse_axes({})


# --- grid, zip, names ---------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_and_zip_pairs(base):
    fields = sweeps.base_fields_of(base)
    grid = sweeps.plan(fields, {"trainer.lr": "1e-4..1e-2 x3 log", "bs": [32, 64]}, "grid")
    assert grid.count == 6
    assert [i.name for i in grid.items[:2]] == ["base.lr0.0001.bs32", "base.lr0.0001.bs64"]
    assert grid.items[0].fields["flags"] == {"trainer.lr": 0.0001, "seed": 1, "bs": 32}
    assert grid.items[0].values == {"trainer.lr": 0.0001, "bs": 32}
    zipped = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2", "bs": [32, 64]}, "zip")
    assert [i.values for i in zipped.items] == [
        {"trainer.lr": 0.1, "bs": 32},
        {"trainer.lr": 0.2, "bs": 64},
    ]
    with pytest.raises(ValidationError) as exc:
        sweeps.plan(fields, {"trainer.lr": "0.1, 0.2, 0.3", "bs": [32, 64]}, "zip")
    assert "trainer.lr has 3, bs has 2" in exc.value.message_dict["mode"][0]


def test_the_grid_is_capped(base):
    with pytest.raises(ValidationError) as exc:
        sweeps.plan(sweeps.base_fields_of(base), {"a": "1..20 x20", "b": "1..11 x11"})
    assert "20 \u00d7 11 = 220 experiments; a sweep makes at most 200" in exc.value.messages[0]


def test_totals_are_what_start_would_request(base):
    plan = sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "0.1, 0.2, 0.3"})
    assert (plan.nodes, plan.gpus, plan.gpus_each) == (6, 24, 8)
    assert plan.summary() == "3 experiments, 8 GPUs each, 24 GPUs if all started"
    assert plan.items[0].shape() == "2 nodes \u00d7 4 H100 = 8 GPUs"


def test_names_are_made_valid_and_unique(base, make_experiment):
    make_experiment("base.lr0.2")
    make_experiment("base.lr0.2.2")
    fields = sweeps.base_fields_of(base)
    plan = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2", "opt": "a b/c, x"}, "zip")
    names = [i.name for i in plan.items]
    assert names == ["base.lr0.1.opta-b-c", "base.lr0.2.optx"]
    clash = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2"})
    assert [i.name for i in clash.items] == ["base.lr0.1", "base.lr0.2.3"]
    assert clash.items[1].notes == ["base.lr0.2: name taken \u2192 renamed base.lr0.2.3"]
    # within the sweep too: a template without the values
    same = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2, 0.3"}, template="{base}-run")
    assert [i.name for i in same.items] == ["base-run", "base-run.2", "base-run.3"]
    assert "same name as another item" in same.items[1].notes[0]
    long = sweeps.plan({**fields, "name": "x" * NAME_MAX_LENGTH}, {"trainer.lr": "0.1, 0.2"})
    assert all(is_experiment_name(i.name) for i in long.items)
    assert len({i.name for i in long.items}) == 2
    with pytest.raises(ValidationError) as exc:
        sweeps.plan(fields, {"trainer.lr": "0.1"}, template="{base}.{lr}")
    assert "Unknown placeholder {lr}" in exc.value.message_dict["name_template"][0]
    indexed = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2"}, template="{base}-{i}")
    assert [i.name for i in indexed.items] == ["base-1", "base-2"]


# --- creating -----------------------------------------------------------------------------------


def test_create_sweep_makes_stopped_experiments_in_a_new_group_with_the_swept_columns(base):
    plan = sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "1e-4..1e-2 x3 log", "bs": [32]})
    result = sweeps.create_sweep("alice", plan)
    assert result.group.name == "base sweep" and result.group.flags == ["trainer.lr", "bs"]
    created = list(result.group.ordered_experiments())
    assert [e.name for e in created] == [
        "base.lr0.0001.bs32",
        "base.lr0.001.bs32",
        "base.lr0.01.bs32",
    ]
    assert all(e.desired_state == DesiredState.STOPPED for e in created)
    assert created[0].flags == {"trainer.lr": 0.0001, "seed": 1, "bs": 32}
    assert (created[0].nodes, created[0].gpus, created[0].tool_path) == (2, 4, "tools/train.py")
    assert created[0].tags == ["arena"]
    sweep_rows = OperationLog.objects.filter(operation=Operation.SWEEP)
    assert sweep_rows.count() == 1
    assert sweep_rows.get().message == (
        "sweep of base: 3 experiments (grid over trainer.lr, bs) into group base sweep"
    )
    # a second sweep of the same base: names renamed, the default group name numbered
    again = sweeps.create_sweep(
        "alice", sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "1e-4", "bs": "32"})
    )
    assert again.group.name == "base sweep 2"
    assert again.experiments[0].name == "base.lr0.0001.bs32.2"


def test_an_existing_group_gains_the_swept_columns(base):
    chosen = services.create_group("alice", "mine", flags=["seed"])
    automatic = services.create_group("alice", "auto", flags=[])
    plan = sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "0.5, 0.6"})
    sweeps.create_sweep("alice", plan, group=chosen)
    chosen.refresh_from_db()
    assert chosen.flags == ["seed", "trainer.lr"]
    assert chosen.memberships.count() == 2
    plan = sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "0.7"})
    sweeps.create_sweep("alice", plan, group=automatic)
    automatic.refresh_from_db()
    assert automatic.flags == []  # automatic columns already show every flag
    with pytest.raises(ValidationError, match="already exists"):
        sweeps.create_sweep(
            "alice", sweeps.plan(sweeps.base_fields_of(base), {"x": "1"}), new_group_name="mine"
        )


def test_all_or_nothing(base):
    fields = {**sweeps.base_fields_of(base), "name": "blank", "gpus": 0, "accelerator": "H100"}
    plan = sweeps.plan(fields, {"trainer.lr": "0.1, 0.2"})
    assert not plan.valid and plan.items[0].errors["gpus"]
    before = (
        Experiment.objects.count(),
        ExperimentGroup.objects.count(),
        OperationLog.objects.count(),
    )
    with pytest.raises(ValidationError) as exc:
        sweeps.create_sweep("alice", plan)
    assert exc.value.message_dict["items"][0].startswith("#1 blank.lr0.1: gpus: ")
    # an item the database refuses at create time (its name taken meanwhile) undoes the rest
    good = sweeps.plan(sweeps.base_fields_of(base), {"trainer.lr": "0.3, 0.4"})
    services.create_experiment("bob", name="base.lr0.4")
    with pytest.raises(ValidationError) as exc:
        sweeps.create_sweep("alice", good)
    assert "#2 base.lr0.4: name:" in exc.value.message_dict["items"][0]
    assert not Experiment.objects.filter(name="base.lr0.3").exists()
    after = (
        Experiment.objects.count() - 1,
        ExperimentGroup.objects.count(),
        OperationLog.objects.count() - 1,
    )
    assert after == before


def test_read_only_users_cannot_sweep(base):
    from django.contrib.auth.models import Group, User

    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    with pytest.raises(PermissionDenied):
        sweeps.create_sweep(viewer, sweeps.plan(sweeps.base_fields_of(base), {"x": "1, 2"}))
    assert Experiment.objects.count() == 1


# --- the page -----------------------------------------------------------------------------------


def form_data(base, **extra):
    data = {
        "from": base.pk,
        "name": base.name,
        "nodes": base.nodes,
        "gpus": base.gpus,
        "accelerator": base.accelerator,
        "base_command": base.base_command,
        "tool_path": base.tool_path,
        "flag_key": list(base.flags),
        "flag_value": [str(v) for v in base.flags.values()],
        "axis_key": ["trainer.lr", ""],
        "axis_spec": ["1e-4..1e-2 x3 log", ""],
        "mode": "grid",
        "name_template": "",
        "new_group": "",
    }
    data.update(extra)
    return data


def test_the_page_from_an_experiment_is_prefilled(web, base):
    page = web.get(f"/sweeps/new?from={base.pk}").content.decode()
    assert f'name="from" value="{base.pk}"' in page
    assert 'value="base sweep"' in page and 'value="uv run"' in page
    assert 'name="axis_key"' in page and "{base}.{key}{value}" in page
    blank = web.get("/sweeps/new")
    assert blank.status_code == 200 and "New sweep" in blank.content.decode()
    assert web.get("/sweeps/new?from=999999").status_code == 404


def test_entry_links(web, base):
    assert (
        f'href="/sweeps/new?from={base.pk}"' in web.get(f"/experiments/{base.pk}/").content.decode()
    )
    assert 'href="/sweeps/new">New sweep</a>' in web.get("/").content.decode()
    expanded = web.get(f"/experiments/{base.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "data-collapse-detail" in expanded  # the deck's expanded row
    assert f'href="/sweeps/new?from={base.pk}">Sweep…</a>' in expanded


def test_preview_lists_the_items_and_creates_nothing(web, base, make_experiment):
    make_experiment("base.lr0.001")
    answer = web.post("/sweeps/new", form_data(base, preview="1"), HTTP_HX_REQUEST="true")
    page = answer.content.decode()
    assert answer.status_code == 200 and page.startswith("<form")  # the partial
    assert "3 experiments, 8 GPUs each, 24 GPUs if all started" in page
    assert page.count('class="sweep-item') == 3
    assert "base.lr0.001: name taken \u2192 renamed base.lr0.001.2" in page
    assert Experiment.objects.count() == 2


def test_create_redirects_to_the_deck_and_the_group_shows(web, base):
    answer = web.post("/sweeps/new", form_data(base, new_group="lr sweep"))
    assert answer.status_code == 302 and answer["Location"] == "/"
    group = ExperimentGroup.objects.get(name="lr sweep")
    assert group.flags == ["trainer.lr"] and group.memberships.count() == 3
    deck = web.get("/").content.decode()
    assert "lr sweep" in deck and "Created 3 experiments in group lr sweep" in deck


def test_form_errors_create_nothing(web, base):
    answer = web.post("/sweeps/new", form_data(base, axis_spec=["1..8 x0", ""], name="bad name"))
    page = answer.content.decode()
    assert answer.status_code == 400
    assert "trainer.lr: x0: a range needs at least 2 values" in page
    assert "is not allowed" in page  # the name rule
    zipped = web.post(
        "/sweeps/new",
        form_data(base, axis_key=["a", "b"], axis_spec=["1,2", "1,2,3"], mode="zip"),
    )
    assert zipped.status_code == 400 and "zip needs the same number" in zipped.content.decode()
    both = web.post(
        "/sweeps/new", form_data(base, group=services.create_group("t", "g").pk, new_group="x")
    )
    assert both.status_code == 400 and "not both" in both.content.decode()
    assert Experiment.objects.count() == 1


def test_the_preview_costs_the_same_for_3_and_30_items(web, base, make_experiment):
    counts = {}
    for count in (3, 30):
        for i in range(len(counts) * 3, count):  # as many other experiments and groups too
            services.create_group("t", f"group-{i}")
            make_experiment(f"other-{i}")
        data = form_data(base, axis_spec=[f"1..{count} x{count}", ""], preview="1")
        web.post("/sweeps/new", data, HTTP_HX_REQUEST="true")  # warm the session
        with CaptureQueriesContext(connection) as queries:
            answer = web.post("/sweeps/new", data, HTTP_HX_REQUEST="true")
        assert answer.content.decode().count('class="sweep-item') == count
        counts[count] = len(queries)
    assert counts[3] == counts[30] <= 5, counts


# --- the API ------------------------------------------------------------------------------------


def test_api_dry_run_answers_the_plan(api, base):
    body = {
        "base": "base",
        "axes": {"trainer.lr": "1e-4..1e-2 x3 log", "bs": [32, 64]},
        "dry_run": True,
    }
    answer = api.post("/api/sweeps/", body, format="json")
    assert answer.status_code == 200, answer.json()
    plan = answer.json()
    assert plan["count"] == 6 and plan["gpus"] == 48 and plan["keys"] == ["trainer.lr", "bs"]
    assert plan["items"][0]["name"] == "base.lr0.0001.bs32"
    assert plan["items"][0]["flags"] == {"trainer.lr": 0.0001, "seed": 1, "bs": 32}
    assert plan["items"][0]["gpus"] == 8 and plan["items"][0]["notes"] == []
    assert Experiment.objects.count() == 1


def test_api_creates_with_per_item_results(api, base):
    group = services.create_group("t", "target", flags=["seed"])
    body = {"base": base.pk, "axes": {"trainer.lr": [0.5, 0.6]}, "group": group.pk}
    answer = api.post("/api/sweeps", body, format="json")
    assert answer.status_code == 201, answer.json()
    data = answer.json()
    assert data["group"] == {"id": group.pk, "name": "target", "flags": ["seed", "trainer.lr"]}
    assert [i["name"] for i in data["items"]] == ["base.lr0.5", "base.lr0.6"]
    first = Experiment.objects.get(name="base.lr0.5")
    assert data["items"][0]["id"] == first.pk
    assert data["items"][0]["url"].endswith(f"/experiments/{first.pk}/")


def test_api_blank_sweep_with_fields(api, db):
    body = {
        "fields": {
            "name": "fresh",
            "nodes": 1,
            "gpus": 8,
            "accelerator": "H100",
            "flags": {"a": 1},
        },
        "axes": {"b": "1..3 x3"},
        "new_group": "fresh runs",
    }
    answer = api.post("/api/sweeps/", body, format="json")
    assert answer.status_code == 201, answer.json()
    assert [
        e.flags for e in ExperimentGroup.objects.get(name="fresh runs").ordered_experiments()
    ] == [
        {"a": 1, "b": 1},
        {"a": 1, "b": 2},
        {"a": 1, "b": 3},
    ]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"base": "base", "axes": {"x": "1,2"}, "colour": "red"}, "colour", "Unknown field."),
        (
            {"base": "base", "axes": {"x": "1,2"}, "fields": {"starred": True}},
            "fields",
            "unstarred",
        ),
        ({"base": "nope", "axes": {"x": "1,2"}}, "base", "No experiment 'nope'"),
        ({"axes": {"x": "1,2"}}, "fields", "give fields with at least a name"),
        ({"base": "base", "axes": {"x": "1..8 x0"}}, "axes", "x: x0"),
        ({"base": "base", "axes": {}}, "axes", ""),
        ({"base": "base", "axes": {"x": "1,2"}, "mode": "spiral"}, "mode", ""),
        ({"base": "base", "axes": {"x": "1,2"}, "group": 99999}, "group", "No group"),
        (
            {"base": "base", "axes": {"x": "1,2"}, "group": 1, "new_group": "n"},
            "new_group",
            "not both",
        ),
        (
            {"base": "base", "axes": {"x": "1"}, "name_template": "{nope}"},
            "name_template",
            "Unknown placeholder",
        ),
        ({"base": "base", "axes": {"x": "1"}, "fields": {"gpus": 0}}, "items", "#1 base.x1: gpus:"),
    ],
)
def test_api_bad_requests_are_400_naming_the_field(api, base, body, field, says):
    answer = api.post("/api/sweeps/", body, format="json")
    assert answer.status_code == 400, answer.json()
    errors = answer.json()
    assert field in errors, errors
    assert says in str(errors[field])
    assert Experiment.objects.count() == 1


def test_api_read_only_is_403(readonly_api, base):
    answer = readonly_api.post("/api/sweeps/", {"base": "base", "axes": {"x": "1"}}, format="json")
    assert answer.status_code == 403
    assert Experiment.objects.count() == 1


def test_api_needs_a_login(client, base):
    assert client.post("/api/sweeps/", {}, content_type="application/json").status_code in (
        401,
        403,
    )


# --- the command --------------------------------------------------------------------------------


def run(*args):
    from io import StringIO

    out, err = StringIO(), StringIO()
    call_command("sweep", *args, stdout=out, stderr=err)
    return out.getvalue()


def test_command_dry_run_prints_the_plan(base):
    out = run("base", "--axis", "trainer.lr=1e-4..1e-2 x3 log", "--axis", "bs=32,64", "--dry-run")
    lines = out.splitlines()
    assert lines[0].split() == ["#", "name", "trainer.lr", "bs", "nodes", "x", "GPUs", "notes"]
    assert lines[1].split()[:4] == ["1", "base.lr0.0001.bs32", "0.0001", "32"]
    assert "6 experiments, 8 GPUs each, 48 GPUs if all started" in out
    assert "dry run: nothing created" in out and Experiment.objects.count() == 1


def test_command_creates_into_a_group(base):
    out = run(
        "base",
        "--axis",
        "bs=32,64",
        "--zip",
        "--new-group",
        "bs sweep",
        "--template",
        "{base}-bs{value}",
    )
    assert "created 2 experiments (stopped) in group bs sweep" in out
    group = ExperimentGroup.objects.get(name="bs sweep")
    assert [e.name for e in group.ordered_experiments()] == ["base-bs32", "base-bs64"]
    assert OperationLog.objects.get(operation=Operation.SWEEP).actor == "command"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["nope", "--axis", "x=1"], "no experiment 'nope'"),
        (["base"], "give at least one --axis"),
        (["base", "--axis", "x"], "write KEY=VALUES"),
        (["base", "--axis", "x=1..8 x0"], "axes: x: x0"),
        (["base", "--axis", "x=1", "--group", "missing"], "no group 'missing'"),
    ],
)
def test_command_errors_are_one_line(base, args, says):
    with pytest.raises(CommandError) as exc:
        run(*args)
    assert says in str(exc.value) and "\n" not in str(exc.value)
    assert Experiment.objects.count() == 1


def test_command_exits_1_with_one_line_on_stderr(base, capsys):
    from experiments.management.commands.sweep import Command

    assert Experiment.objects.count() == 1
    with pytest.raises(SystemExit) as exc:
        Command().run_from_argv(["skydeck", "sweep", "base", "--axis", "x=1..8 x0"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "CommandError: axes: x: x0: a range needs at least 2 values (x2); list one value as it is."
    ]


def test_huge_ranges_are_refused_without_computing_them():
    with pytest.raises(ValidationError, match="over a million values"):
        sweeps.parse_axis("k", "-1e308..1e308 step 1e-308")
    with pytest.raises(ValidationError, match="over a million values"):
        sweeps.parse_axis("k", "1..1e308 step 1")
    with pytest.raises(ValidationError, match="must be a finite number"):
        sweeps.parse_axis("k", "-1e308..1e308 x3")
    assert len(values("1..200 step 1")) == 200


def test_the_page_needs_a_login_and_a_writer(client, base):
    from django.contrib.auth.models import Group, User

    answer = client.get(f"/sweeps/new?from={base.pk}")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    client.force_login(viewer)
    assert client.post("/sweeps/new", form_data(base, preview="1")).status_code == 200
    assert client.post("/sweeps/new", form_data(base)).status_code == 403
    assert Experiment.objects.count() == 1
