"""One source per rule (issue 14): what the UI, the admin and the services save, the API accepts.

Every limit lives once (``experiments.validation`` and the model fields); the UI form, the
admin's ModelForm and the API serializers read it from there. So an experiment saved with the
most extreme values the UI or the admin accept survives an API GET -> PUT round trip unchanged,
and a value the API refuses is refused by the forms too, with a form error (never truncated).
The name rule is one function: the same names get the same verdict everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from admin_forms import form_data
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from names import BAD_NAMES, GOOD_NAMES, LONGEST_NAME

from experiments import services
from experiments.api.serializers import (
    DuplicateSerializer,
    ExperimentCreateSerializer,
    ExperimentUpdateSerializer,
    GroupUpdateSerializer,
)
from experiments.forms import ExperimentAdminForm, ExperimentCreateForm, unparse_flag_value
from experiments.models import Experiment, ExperimentGroup, Operation, OperationLog
from experiments.validation import (
    ACCELERATOR_MAX_LENGTH,
    BASE_COMMAND_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    FLAG_KEY_MAX_LENGTH,
    GIT_REF_MAX_LENGTH,
    GPUS_MAX,
    GROUP_NAME_MAX_LENGTH,
    MAX_FLAG_NAMES,
    MAX_FLAG_STRING,
    MAX_TAGS,
    MAX_TOTAL_GPUS,
    NAME_MAX_LENGTH,
    NODES_MAX,
    TAG_MAX_LENGTH,
    TOOL_PATH_MAX_LENGTH,
    is_experiment_name,
)

HX = {"HTTP_HX_REQUEST": "true"}


# --- the most extreme values each part accepts ----------------------------------------------


def fill(pattern: str, length: int) -> str:
    """``pattern`` repeated to exactly ``length`` characters."""
    return (pattern * (length // len(pattern) + 1))[:length]


LONGEST_ACCELERATOR = "H" + fill("100_-x", ACCELERATOR_MAX_LENGTH - 1)
LONGEST_GIT_REF = "feature/" + fill("a@b+c-d_e.f/", GIT_REF_MAX_LENGTH - 9) + "z"
# single lines of unicode and tabs; no surrounding whitespace (forms strip it)
LONGEST_BASE_COMMAND = "uv" + fill("\trun ünï 🚀;'\"$(x)", BASE_COMMAND_MAX_LENGTH - 3) + "x"
LONGEST_TOOL_PATH = "tools/" + fill("träin-🚀/x.py ", TOOL_PATH_MAX_LENGTH - 7) + "y"
#: Every kind of character a description takes: unicode beyond the BMP, newlines, tabs, quotes.
LONGEST_DESCRIPTION = (
    "D" + fill("Ünïcødé 🚀 — 'q' \"dq\" <b>&amp;</b>\n\ttab\n\n", DESCRIPTION_MAX_LENGTH - 2) + "."
)
LONGEST_FLAG_STRING = "s" + fill("é ü 🚀 \t'\"=;$x", MAX_FLAG_STRING - 2) + "e"
LONGEST_FLAG_KEY = fill("trainer.opt_x-", FLAG_KEY_MAX_LENGTH - 1) + "k"
NODES_GPUS = [
    (NODES_MAX, MAX_TOTAL_GPUS // NODES_MAX),  # most nodes, as many GPUs as the total allows
    (MAX_TOTAL_GPUS // GPUS_MAX, GPUS_MAX),  # most GPUs per node
]


def assert_valid_extremes() -> None:
    assert len(LONGEST_NAME) == NAME_MAX_LENGTH and is_experiment_name(LONGEST_NAME)
    assert len(LONGEST_DESCRIPTION) == DESCRIPTION_MAX_LENGTH
    assert len(LONGEST_FLAG_STRING) == MAX_FLAG_STRING
    assert len(LONGEST_FLAG_KEY) == FLAG_KEY_MAX_LENGTH
    assert len(LONGEST_GIT_REF) == GIT_REF_MAX_LENGTH
    assert len(LONGEST_BASE_COMMAND) == BASE_COMMAND_MAX_LENGTH
    assert len(LONGEST_TOOL_PATH) == TOOL_PATH_MAX_LENGTH
    assert len(LONGEST_ACCELERATOR) == ACCELERATOR_MAX_LENGTH


def ui_flags(count: int) -> dict[str, Any]:
    """``count`` flags of every kind the UI's flag rows type."""
    flags: dict[str, Any] = {
        LONGEST_FLAG_KEY: LONGEST_FLAG_STRING,
        "long.2": LONGEST_FLAG_STRING,
        "int": 42,
        "negative": -7,
        "huge_int": int("9" * 300),
        "float": 0.1,
        "tiny": 1e-300,
        "big_float": 1.7976931348623157e308,
        "on": True,
        "off": False,
        "digits_as_text": "42",
        "true_as_text": "true",
        "empty": "",
        "spaces": "  padded  ",
        "unicode": "Grüße 🚀 日本",
        "shell": "a; rm -rf / $(x) `y` 'z'",
    }
    for i in range(count - len(flags)):
        flags[f"sweep.p{i:03d}"] = i if i % 3 else f"v{i}"
    return flags


def tags(count: int = MAX_TAGS) -> list[str]:
    return [f"t{i:03d}:" + fill("a.b_c-d:", TAG_MAX_LENGTH - 5) for i in range(count)]


# --- the round trip ---------------------------------------------------------------------------


def writable_body(got: dict[str, Any]) -> dict[str, Any]:
    """What a client PUTs back: the GET answer without the keys the update does not take
    (read-only ones and desired_state, which only Start/Stop change); updated_at stays, as the
    precondition."""
    writable = {n for n, f in ExperimentUpdateSerializer().fields.items() if not f.read_only}
    body = {k: v for k, v in got.items() if k in writable}
    assert set(got) - set(body) >= {"id", "desired_state", "current_state", "created_at"}
    return body


def assert_round_trip(api, experiment: Experiment) -> dict[str, Any]:
    """GET the experiment, PUT that back: 200, and nothing changed (answer, row, audit trail)."""
    url = f"/api/experiments/{experiment.pk}/"
    first = api.get(url)
    assert first.status_code == 200
    got = first.json()
    stored = {f: getattr(experiment, f) for f in services.EDITABLE_FIELDS}
    assert {f: got[f] for f in services.EDITABLE_FIELDS} == stored
    updates = OperationLog.objects.filter(operation=Operation.UPDATE).count()

    put = api.put(url, writable_body(got), format="json")

    assert put.status_code == 200, put.json()
    assert put.json() == got
    assert api.get(url).json() == got
    experiment.refresh_from_db()
    assert {f: getattr(experiment, f) for f in services.EDITABLE_FIELDS} == stored
    assert OperationLog.objects.filter(operation=Operation.UPDATE).count() == updates
    return got


def ui_data(name: str, flags: dict[str, Any], **fields: Any) -> dict[str, Any]:
    data = {
        "name": name,
        "nodes": "1",
        "gpus": "0",
        "accelerator": "",
        "tool_path": "",
        "base_command": "",
        "git_ref": "",
        "description": "",
        "flag_key": list(flags),
        "flag_value": [unparse_flag_value(v) for v in flags.values()],
    }
    data.update({k: str(v) for k, v in fields.items()})
    return data


@pytest.fixture
def admin_add(admin_client: Client):
    """POST the admin's add form (as rendered, plus the given fields)."""

    def post(model: str = "experiment", **fields: Any):
        url = reverse(f"admin:experiments_{model}_add")
        data = form_data(admin_client.get(url))
        data.update(fields)
        return admin_client.post(url, data)

    return post


def test_the_extremes_are_valid():
    assert_valid_extremes()


@pytest.mark.parametrize(("nodes", "gpus"), NODES_GPUS)
def test_ui_created_extremes_survive_a_round_trip(web, api, nodes, gpus):
    # the UI's limit on flag rows is the request's field count (DATA_UPLOAD_MAX_NUMBER_FIELDS,
    # 1000 fields: two per row), not a rule: 450 rows stay below it
    flags = ui_flags(450)
    data = ui_data(
        LONGEST_NAME,
        flags,
        nodes=nodes,
        gpus=gpus,
        accelerator=LONGEST_ACCELERATOR,
        tool_path=LONGEST_TOOL_PATH,
        base_command=LONGEST_BASE_COMMAND,
        git_ref=LONGEST_GIT_REF,
        # browsers post newlines as CRLF: stored, and counted for the limit, as LF
        description=LONGEST_DESCRIPTION.replace("\n", "\r\n"),
    )

    response = web.post(reverse("experiment_create"), data, **HX)

    assert response.status_code == 200, response.context["form"].errors
    experiment = Experiment.objects.get(name=LONGEST_NAME)
    assert experiment.description == LONGEST_DESCRIPTION  # all of it, nothing truncated
    assert experiment.flags == flags
    assert (experiment.nodes, experiment.gpus) == (nodes, gpus)
    assert experiment.base_command == LONGEST_BASE_COMMAND
    assert experiment.tool_path == LONGEST_TOOL_PATH
    assert_round_trip(api, experiment)


def test_ui_created_empty_optional_fields_survive_a_round_trip(web, api):
    response = web.post(reverse("experiment_create"), ui_data("bare", {}), **HX)
    assert response.status_code == 200, response.context["form"].errors
    got = assert_round_trip(api, Experiment.objects.get(name="bare"))
    assert (got["flags"], got["tags"], got["description"], got["accelerator"]) == ({}, [], "", "")


def test_ui_edited_extremes_survive_a_round_trip(web, api, make_experiment):
    experiment = make_experiment("editable", tags=tags())
    data = ui_data(
        "editable",
        ui_flags(450),
        nodes=NODES_MAX,
        gpus=MAX_TOTAL_GPUS // NODES_MAX,
        accelerator=LONGEST_ACCELERATOR,
        git_ref=LONGEST_GIT_REF,
        description=LONGEST_DESCRIPTION,
    )
    data.update(ExperimentCreateForm.version_fields(experiment))

    response = web.post(reverse("experiment_edit", args=[experiment.pk]), data, **HX)

    assert response.status_code == 200, response.context["form"].errors
    experiment.refresh_from_db()
    assert experiment.description == LONGEST_DESCRIPTION and len(experiment.flags) == 450
    assert_round_trip(api, experiment)


def test_admin_created_extremes_survive_a_round_trip(admin_add, api):
    # the admin's JSON boxes take any number of flags (no rule limits their count) and tags up
    # to MAX_TAGS; JSON also takes what the UI's rows cannot type, such as a big float
    flags = ui_flags(1500)
    flags["negative_zero"] = -0.0
    response = admin_add(
        name=LONGEST_NAME,
        starred="on",
        description=LONGEST_DESCRIPTION.replace("\n", "\r\n"),
        tags=json.dumps(tags(), ensure_ascii=False),
        nodes=NODES_MAX,
        gpus=MAX_TOTAL_GPUS // NODES_MAX,
        accelerator=LONGEST_ACCELERATOR,
        base_command=LONGEST_BASE_COMMAND,
        tool_path=LONGEST_TOOL_PATH,
        git_ref=LONGEST_GIT_REF,
        flags=json.dumps(flags, ensure_ascii=False),
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    experiment = Experiment.objects.get(name=LONGEST_NAME)
    assert experiment.description == LONGEST_DESCRIPTION
    assert experiment.tags == tags() and experiment.flags == flags and experiment.starred
    assert_round_trip(api, experiment)


def test_admin_created_empty_optional_fields_survive_a_round_trip(admin_add, api):
    response = admin_add(name="bare", flags="", tags="", description="")
    assert response.status_code == 302, response.context["adminform"].form.errors
    got = assert_round_trip(api, Experiment.objects.get(name="bare"))
    assert (got["flags"], got["tags"], got["description"]) == ({}, [], "")


def test_service_created_extremes_survive_a_round_trip(api):
    experiment = services.create_experiment(
        "tester",
        name=LONGEST_NAME,
        flags=ui_flags(3000),
        nodes=MAX_TOTAL_GPUS // GPUS_MAX,
        gpus=GPUS_MAX,
        accelerator=LONGEST_ACCELERATOR,
        base_command=LONGEST_BASE_COMMAND,
        tool_path=LONGEST_TOOL_PATH,
        git_ref=LONGEST_GIT_REF,
        # the services (and the API) keep CRLF and surrounding whitespace as given
        description="\r\n" + LONGEST_DESCRIPTION[2:],
        tags=tags(),
        starred=True,
    )
    assert_round_trip(api, experiment)


def test_admin_created_group_extremes_survive_a_round_trip(admin_add, api):
    columns = [f"c{i:04d}." + fill("x", FLAG_KEY_MAX_LENGTH - 6) for i in range(MAX_FLAG_NAMES)]
    name = "G " + fill("Grüße 🚀\t'\"", GROUP_NAME_MAX_LENGTH - 3) + "!"
    response = admin_add("experimentgroup", name=name, flags=json.dumps(columns), collapsed="on")
    assert response.status_code == 302, response.context["adminform"].form.errors
    group = ExperimentGroup.objects.get()
    assert (group.name, group.flags) == (name, columns)

    url = f"/api/groups/{group.pk}/"
    got = api.get(url).json()
    writable = {n for n, f in GroupUpdateSerializer().fields.items() if not f.read_only}
    put = api.put(url, {k: v for k, v in got.items() if k in writable}, format="json")
    assert put.status_code == 200, put.json()
    again = api.get(url).json()
    assert again.pop("updated_at") >= got.pop("updated_at")  # a group save always touches it
    assert again == got


# --- the converse: what the API refuses, the forms refuse (with an error, never truncated) ----


def too_long_flags() -> dict[str, Any]:
    return {"k": "x" * (MAX_FLAG_STRING + 1)}


#: field -> a value the API refuses, and the field whose error says so
REFUSED: list[tuple[str, Any, str]] = [
    ("name", "x" * (NAME_MAX_LENGTH + 1), "name"),
    ("nodes", NODES_MAX + 1, "nodes"),
    ("nodes", 0, "nodes"),
    ("gpus", GPUS_MAX + 1, "gpus"),
    ("gpus", -1, "gpus"),
    ("accelerator", "H" * (ACCELERATOR_MAX_LENGTH + 1), "accelerator"),
    ("git_ref", "g" * (GIT_REF_MAX_LENGTH + 1), "git_ref"),
    ("base_command", "b" * (BASE_COMMAND_MAX_LENGTH + 1), "base_command"),
    ("tool_path", "t" * (TOOL_PATH_MAX_LENGTH + 1), "tool_path"),
    ("description", "d" * (DESCRIPTION_MAX_LENGTH + 1), "description"),
    ("description", "nul\x00char", "description"),
    ("flags", too_long_flags(), "flags"),
    ("flags", {"k" * (FLAG_KEY_MAX_LENGTH + 1): 1}, "flags"),
    ("flags", {"text": "two\nlines"}, "flags"),
]
IDS = [f"{field}-{i}" for i, (field, _, _) in enumerate(REFUSED)]


def api_refuses(api, body: dict[str, Any], field: str) -> None:
    # sent as ASCII JSON: a lone surrogate is a "\ud800" escape, as a client would send it
    body = json.dumps({"name": "conv", "gpus": 1, **body})
    response = api.post("/api/experiments/", body, content_type="application/json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()


@pytest.mark.parametrize(("field", "value", "error_field"), REFUSED, ids=IDS)
def test_what_the_api_refuses_the_ui_form_refuses(web, api, field, value, error_field):
    api_refuses(api, {field: value}, error_field)
    if field == "flags":
        data = ui_data("conv", value, gpus=1)
    else:
        data = ui_data("conv", {}, gpus=1)
        data[field] = str(value)

    response = web.post(reverse("experiment_create"), data, **HX)

    assert response.status_code == 400
    assert response.context["form"].errors[error_field]
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(("field", "value", "error_field"), REFUSED, ids=IDS)
def test_what_the_api_refuses_the_admin_refuses(admin_add, api, field, value, error_field):
    api_refuses(api, {field: value}, error_field)
    if field == "flags":
        value = json.dumps(value)

    response = admin_add(**{"name": "conv", "gpus": 1, field: value})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[error_field]
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tags", tags(MAX_TAGS + 1)),  # the UI has no tags: the admin and the services set them
        ("tags", ["t" * (TAG_MAX_LENGTH + 1)]),
        ("tags", [""]),
        ("flags", {"k": "\ud800"}),  # a JSON escape the admin's JSON box decodes
        ("nodes", NODES_MAX),  # with gpus 8: more than MAX_TOTAL_GPUS in total
    ],
)
def test_what_the_api_refuses_the_admin_and_services_refuse(admin_add, api, field, value):
    error_field = "gpus" if field == "nodes" else field
    extra = {"gpus": 8} if field == "nodes" else {}
    api_refuses(api, {field: value, **extra}, error_field)
    with pytest.raises(ValidationError) as refused:
        services.create_experiment("tester", name="conv", **{field: value, **extra})
    assert error_field in refused.value.error_dict

    form_value = json.dumps(value) if field in {"tags", "flags"} else value
    response = admin_add(name="conv", **{field: form_value, **extra})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[error_field]
    assert not Experiment.objects.exists()


def test_what_the_group_api_refuses_the_admin_and_ui_refuse(admin_add, api, web):
    too_many = [f"c{i}" for i in range(MAX_FLAG_NAMES + 1)]
    response = api.post("/api/groups/", {"name": "g", "flags": too_many}, format="json")
    assert response.status_code == 400 and "flags" in response.json()
    response = admin_add("experimentgroup", name="g", flags=json.dumps(too_many))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["flags"]

    long_name = "g" * (GROUP_NAME_MAX_LENGTH + 1)
    response = api.post("/api/groups/", {"name": long_name}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    response = admin_add("experimentgroup", name=long_name)
    assert response.context["adminform"].form.errors["name"]
    response = web.post(reverse("group_create"), {"name": long_name}, **HX)
    assert response.status_code == 400 and response.context["group_form"].errors["name"]
    assert not ExperimentGroup.objects.exists()


# --- the name rule is one function ----------------------------------------------------------


def _model_accepts(name: str) -> bool:
    try:
        Experiment(name=name).full_clean()
    except ValidationError as exc:
        assert set(exc.error_dict) == {"name"}
        return False
    return True


def _ui_form_accepts(name: str) -> bool:
    form = ExperimentCreateForm({"name": name, "nodes": "1", "gpus": "0"})
    if form.is_valid():
        return True
    assert set(form.errors) == {"name"}, form.errors
    return False


def _admin_form_accepts(name: str) -> bool:
    form = ExperimentAdminForm({"name": name, "nodes": "1", "gpus": "0", "flags": "", "tags": ""})
    if form.is_valid():
        return True
    assert set(form.errors) == {"name"}, form.errors
    return False


def _serializers_accept(name: str) -> bool:
    verdicts = set()
    for serializer in (
        ExperimentCreateSerializer(data={"name": name}),
        ExperimentUpdateSerializer(data={"name": name}),
        DuplicateSerializer(data={"name": name}),
    ):
        ok = serializer.is_valid()
        assert ok or set(serializer.errors) == {"name"}, serializer.errors
        verdicts.add(ok)
    assert len(verdicts) == 1
    return verdicts.pop()


@pytest.mark.django_db
@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES)
def test_one_name_rule_everywhere(name):
    expected = name in GOOD_NAMES
    assert is_experiment_name(name) == expected
    assert _model_accepts(name) == expected
    assert _ui_form_accepts(name) == expected
    assert _admin_form_accepts(name) == expected
    assert _serializers_accept(name) == expected


@pytest.mark.parametrize("name", ["a b", "a...b", "1", "-a", "é"])
def test_a_refused_name_has_the_same_message_everywhere(db, name):
    with pytest.raises(ValidationError) as model:
        Experiment(name=name).full_clean()
    messages = model.value.message_dict["name"]
    ui = ExperimentCreateForm({"name": name, "nodes": "1", "gpus": "0"})
    ui.is_valid()
    admin = ExperimentAdminForm({"name": name, "nodes": "1", "gpus": "0"})
    admin.is_valid()
    api = ExperimentCreateSerializer(data={"name": name})
    api.is_valid()
    assert ui.errors["name"] == admin.errors["name"] == messages
    assert [str(m) for m in api.errors["name"]] == messages


@pytest.mark.django_db
@pytest.mark.parametrize("padded", [" a", "a ", "\ta", "a\n", " a\r\n"])
def test_forms_strip_the_whitespace_around_a_name_the_api_refuses(padded):
    """The one intended difference: a form (UI and admin, as every Django text field) drops
    the whitespace around what was typed, so the name saved is "a"; the API takes a name as
    sent, and refuses this one. Either way no name with such whitespace is ever stored."""
    assert not is_experiment_name(padded) and not _serializers_accept(padded)
    ui = ExperimentCreateForm({"name": padded, "nodes": "1", "gpus": "0"})
    admin = ExperimentAdminForm({"name": padded, "nodes": "1", "gpus": "0"})
    assert ui.is_valid() and ui.cleaned_data["name"] == "a"
    assert admin.is_valid() and admin.cleaned_data["name"] == "a"


@pytest.mark.django_db
def test_large_float_flags_stay_floats_in_the_database():
    """jsonb keeps numbers as numeric: 1e+20 would come back as an int without FlagsEncoder."""
    flags = {"big": 1e20, "max": 1.7976931348623157e308, "tiny": 1e-300, "text": "1e+20", "n": 7}
    experiment = services.create_experiment("tester", name="floats", flags=flags)
    stored = Experiment.objects.get(pk=experiment.pk).flags
    assert stored == flags
    assert {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in flags.items()}
