"""One hostile list of experiment names, fed to every door (issue 13).

A name is SkyPilot's task name (0.14.1, ``re.fullmatch``) and one S3 path segment, so every door
holds it to SkyPilot's rule, exactly, with full matches: a trailing newline (which ``$`` lets
through) or three separators in a row are refused with a clear message and nothing is written.
The one extra restriction: digits only, which would read as an id in URLs and API references.

Doors: the UI create form and editor, the API (create, rename, bulk references, URL lookups),
the admin add form and ``services.create_experiment``; plus the S3 prefix check and the schema's
patterns. The other single-line fields (git ref, accelerator, flag names, tags, group columns,
group names) are checked for a trailing newline at the API and the services.

The UI and admin forms strip surrounding whitespace before validating (Django's default for
form fields): there ``"abc\\n"`` becomes ``"abc"``, a valid name. That is asserted too, so the
raw hostile value is never stored by any door.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
from admin_forms import form_data
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient
from test_ui_actions import edit_data  # the editor's form data

from experiments import services
from experiments.api.common import EXPERIMENT_LOOKUP_RE
from experiments.api.fields import NAME_PATTERN
from experiments.models import Experiment, ExperimentGroup
from experiments.validation import NAME_RE
from syncing import s3

pytestmark = pytest.mark.django_db

#: SkyPilot 0.14.1, sky/task.py (see /work/shared/docs/skypilot-api.md, "Names SkyPilot accepts")
SKYPILOT_NAME = r"[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*"

HOSTILE = [
    "abc\n",
    "abc\r\n",
    "abc\r",
    "\nabc",
    "a\nb",
    " abc",
    "abc ",
    "a b",
    "a\tb",
    "-abc",
    "abc-",
    ".abc",
    "abc.",
    "_abc",
    "abc_",
    "-x",
    "lr---sweep",
    "a...b",
    "a._-b",
    "a/b",
    "../etc",
    "..",
    ".",
    "a..",
    "..a",
    "",
    "x" * 129,
    "a\x00b",
    "\x00",
    "\u0430bc",  # Cyrillic a
    "\uff41bc",  # fullwidth a
    "abc\u200b",  # zero-width space
    "abc\u2028",  # line separator
    "naïve",
    "é",
    "K" + "\u212a",  # Kelvin sign, K under re.IGNORECASE
    "a;rm -rf ~",
    "a$(id)",
    "a`id`",
    "a|b",
    "a&b",
    "a>b",
    "a*",
    "a?",
    "~a",
    "a\\b",
    "'a'",
    '"a"',
    "a: b",
    "a:b",
    "{a: 1}",
    "[a]",
    "#a",
    "a#b",
    "a%0Ab",
    "123",  # digits only: an id in URLs and references
    "0",
]
VALID = ["1abc", "a.b", "a--b", "a_.b", "A9", "a..b", "9lives", "a-_b", "1.2", "x" * 128]

MESSAGES = (
    "SkyPilot's rule",
    "only digits",
    "limit is 128",
    "at most 128",
    "no more than 128",
    "Name is required",
    "cannot be blank",
    "This field is required",
    "may not be blank",
    "Null characters are not allowed",
)


def ids(values: list[str]) -> list[str]:
    return [ascii(v)[:40] for v in values]


def stripped_by_forms(name: str) -> str | None:
    """The valid name a Django form makes of ``name`` by stripping whitespace, if any."""
    clean = name.strip()
    if clean != name and NAME_RE.fullmatch(clean) and not clean.isdigit():
        return clean
    return None


def assert_clear(messages: list[str]) -> None:
    text = " ".join(str(m) for m in messages)
    assert any(phrase in text for phrase in MESSAGES), text


def names() -> list[str]:
    return sorted(Experiment.objects.values_list("name", flat=True))


# --- the rule itself -------------------------------------------------------------------------


def test_the_lists_are_what_they_say():
    for name in HOSTILE:
        assert not (re.fullmatch(SKYPILOT_NAME, name) and len(name) <= 128 and not name.isdigit())
    for name in VALID:
        assert re.fullmatch(SKYPILOT_NAME, name) and len(name) <= 128, name


def test_name_rule_is_skypilots_with_a_full_match():
    assert NAME_RE.pattern == SKYPILOT_NAME
    assert NAME_RE.fullmatch("abc") and not NAME_RE.fullmatch("abc\n")


@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_schema_pattern_refuses(name):
    # JSON Schema patterns are ECMA-262: there "$" is the end of the string
    schema = {"type": "string", "pattern": NAME_PATTERN.regex.pattern, "maxLength": 128}
    assert not jsonschema_rs.validator_for(schema).is_valid(name)


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_schema_pattern_accepts(name):
    schema = {"type": "string", "pattern": NAME_PATTERN.regex.pattern}
    assert jsonschema_rs.validator_for(schema).is_valid(name)


def test_url_lookup_regex_takes_ids_and_every_valid_name_only():
    lookup = re.compile(rf"experiments/(?P<ref>{EXPERIMENT_LOOKUP_RE})/")
    for name in VALID:
        assert lookup.fullmatch(f"experiments/{name}/"), name
    assert lookup.fullmatch("experiments/123/")  # an id
    assert not lookup.fullmatch("experiments/" + "9" * 19 + "/")  # neither an id nor a name
    for name in HOSTILE:
        if "/" not in name and not name.isdigit():
            assert not lookup.fullmatch(f"experiments/{name}/"), name


# --- services --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_service_refuses(name):
    with pytest.raises(ValidationError) as exc:
        services.create_experiment("tester", name=name)
    assert_clear(exc.value.message_dict["name"])
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_service_accepts(name):
    services.create_experiment("tester", name=name)
    assert names() == [name]


def test_copy_names_stay_valid():
    for name in [*VALID, "a.copy", "a-.copy3", "a" * 124 + "--bc", "a" * 122 + "_.bcdef"]:
        copy = services.next_copy_name(name, set())
        Experiment(name=copy).full_clean()
        assert len(copy) <= 128 and "---" not in copy and copy.endswith(".copy")
    assert services.next_copy_name("a.b", {"a.b.copy"}) == "a.b.copy2"


# --- API -------------------------------------------------------------------------------------


@pytest.fixture
def api(db) -> APIClient:
    user = User.objects.create_user("api-user")
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.slow  # fuzz: the hostile list through a door
@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_api_create_refuses(api, name):
    response = api.post("/api/experiments/", {"name": name}, format="json")
    assert response.status_code == 400, response.content
    assert_clear(response.json()["name"])
    assert not Experiment.objects.exists()


@pytest.mark.slow  # fuzz: the hostile list through a door
@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_api_rename_refuses(api, make_experiment, name):
    experiment = make_experiment("orig")
    response = api.patch(f"/api/experiments/{experiment.pk}/", {"name": name}, format="json")
    assert response.status_code == 400, response.content
    assert_clear(response.json()["name"])
    assert names() == ["orig"]


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_api_accepts_and_addresses_by_name(api, make_experiment, name):
    response = api.post("/api/experiments/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    assert api.get(f"/api/experiments/{name}/").json()["name"] == name
    renamed = api.patch(f"/api/experiments/{name}/", {"name": f"{name[:120]}.r"}, format="json")
    assert renamed.status_code == 200, renamed.content
    assert names() == [f"{name[:120]}.r"]


def test_api_bulk_calls_hostile_names_invalid(api, make_experiment):
    make_experiment("abc")
    refs = ["abc\n", "lr---sweep", "a/b", " abc", "abc "]
    response = api.post(
        "/api/bulk/",
        {"action": "set_desired_state", "desired_state": "RUNNING", "experiments": refs},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert [r["result"] for r in response.json()["results"]] == ["invalid"] * len(refs)
    assert Experiment.objects.get(name="abc").desired_state == "STOPPED"


def test_api_url_with_a_trailing_newline_finds_nothing(api, make_experiment):
    make_experiment("abc")
    assert api.get("/api/experiments/abc%0A/").status_code == 404
    assert api.get("/api/experiments/abc/").status_code == 200


# --- UI --------------------------------------------------------------------------------------

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def ui(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ui-user", password="pw"))
    return client


def create_data(name: str) -> dict[str, Any]:
    return {"name": name, "nodes": "1", "gpus": "0", "flag_key": [""], "flag_value": [""]}


@pytest.mark.slow  # fuzz: the hostile list through a door
@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_ui_create_refuses(ui, name):
    response = ui.post(reverse("experiment_create"), create_data(name), **HX)
    clean = stripped_by_forms(name)
    if clean is not None:  # the form stripped the whitespace: a valid name, never the raw one
        assert names() == [clean]
        return
    assert response.status_code == 400
    assert_clear(response.context["form"].errors["name"])
    assert not Experiment.objects.exists()


@pytest.mark.slow  # fuzz: the hostile list through a door
@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_ui_editor_rename_refuses(ui, make_experiment, name):
    experiment = make_experiment("orig", description="before")
    response = ui.post(
        reverse("experiment_edit", args=[experiment.pk]),
        edit_data(experiment, name=name, description="after"),
        **HX,
    )
    experiment.refresh_from_db()
    clean = stripped_by_forms(name)
    if clean is not None:
        assert experiment.name == clean
        return
    assert response.status_code == 400
    assert_clear(response.context["form"].errors["name"])
    assert (experiment.name, experiment.description) == ("orig", "before")


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_ui_accepts(ui, make_experiment, name):
    response = ui.post(reverse("experiment_create"), create_data(name), **HX)
    assert response.status_code == 200, response.content
    created = Experiment.objects.get(name=name)
    ui.post(
        reverse("experiment_edit", args=[created.pk]),
        edit_data(created, name=f"{name[:120]}.r"),
        **HX,
    )
    assert names() == [f"{name[:120]}.r"]


# --- admin -----------------------------------------------------------------------------------

ADMIN_ADD = "/admin/experiments/experiment/add/"


@pytest.fixture
def add_form(admin_client) -> dict[str, Any]:
    return form_data(admin_client.get(ADMIN_ADD))


@pytest.mark.slow  # fuzz: the hostile list through a door
@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_admin_add_refuses(admin_client, add_form, name):
    response = admin_client.post(ADMIN_ADD, {**add_form, "name": name})
    clean = stripped_by_forms(name)
    if clean is not None:
        assert names() == [clean]
        return
    assert response.status_code == 200
    assert_clear(response.context["adminform"].form.errors["name"])
    assert not Experiment.objects.exists()


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_admin_add_accepts(admin_client, add_form, name):
    response = admin_client.post(ADMIN_ADD, {**add_form, "name": name})
    assert response.status_code == 302
    assert names() == [name]


# --- S3 prefixes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE, ids=ids(HOSTILE))
def test_s3_prefix_check_refuses(name):
    if re.fullmatch(r"[a-zA-Z0-9](?:[-_.a-zA-Z0-9]*[a-zA-Z0-9])?", name) and len(name) <= 128:
        # Safe segments outside today's rule ("lr---sweep", "a...b", "123"): names stored under an
        # older rule keep syncing; every other hostile value is refused before any request.
        assert s3.validate_experiment_name(name) == name
        return
    with pytest.raises(ValueError):
        s3.validate_experiment_name(name)


@pytest.mark.parametrize("name", VALID, ids=ids(VALID))
def test_s3_prefix_check_accepts(name):
    assert s3.S3Client(bucket="b").policy_prefix_for(name) == f"policies/{name}/"


# --- the other single-line fields --------------------------------------------------------------

FIELD_CASES = [
    ({"git_ref": "main\n"}, "git_ref"),
    ({"git_ref": "v1.0\r\n"}, "git_ref"),
    ({"accelerator": "H100\n", "gpus": 1}, "accelerator"),
    ({"flags": {"lr\n": 1}}, "flags"),
    ({"flags": {"trainer.lr\n": 1}}, "flags"),
    ({"tags": ["sweep\n"]}, "tags"),
    ({"base_command": "uv run\n"}, "base_command"),
    ({"tool_path": "tools/train.py\n"}, "tool_path"),
]


@pytest.mark.parametrize(("fields", "field"), FIELD_CASES)
def test_service_refuses_a_trailing_newline(fields, field):
    with pytest.raises(ValidationError) as exc:
        services.create_experiment("tester", name="ok", **fields)
    assert field in exc.value.message_dict
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(("fields", "field"), FIELD_CASES)
def test_api_refuses_a_trailing_newline(api, make_experiment, fields, field):
    response = api.post("/api/experiments/", {"name": "ok", **fields}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Experiment.objects.exists()

    make_experiment("e", flags={"lr": 1})
    response = api.patch("/api/experiments/e/", fields, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_api_flags_patch_refuses_a_trailing_newline(api, make_experiment):
    make_experiment("e", flags={"lr": 1})
    for patch in ({"set": {"lr\n": 2}}, {"remove": ["lr\n"]}):
        response = api.patch("/api/experiments/e/", {"flags_patch": patch}, format="json")
        assert response.status_code == 400, response.content
    assert Experiment.objects.get(name="e").flags == {"lr": 1}


@pytest.mark.parametrize(
    ("name", "flags", "field"),
    [("g", ["lr\n"], "flags"), ("g", ["ok", "a.b\r\n"], "flags"), ("g\n", ["lr"], "name")],
)
def test_group_columns_and_names_refuse_a_trailing_newline(api, name, flags, field):
    with pytest.raises(ValidationError) as exc:
        services.create_group("tester", name, flags=flags)
    assert field in exc.value.message_dict

    response = api.post("/api/groups/", {"name": name, "flags": flags}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()

    group = services.create_group("tester", "fine", flags=["lr"])
    with pytest.raises(ValidationError):
        services.update_group("tester", group, **{field: name if field == "name" else flags})
    response = api.patch(
        f"/api/groups/{group.pk}/", {field: name if field == "name" else flags}, format="json"
    )
    assert response.status_code == 400, response.content
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == ["fine"]
