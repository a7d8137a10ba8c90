"""Property-based run of the whole OpenAPI schema against a live server (schemathesis).

Every operation gets generated requests, valid and invalid; the run fails on any 5xx, on any
answer that breaks the schema (status code, content type, body, headers), on an invalid request
that is accepted and on a valid one that is refused. Deterministic (derandomized) and bounded.

The one refusal of schema-valid input allowed is a model rule no schema can express (see
schemathesis.toml): only on the operations that file names, and only with the messages in
MODEL_RULES.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import schemathesis
from django.contrib.auth.models import User
from fake_skypilot import FakeSkyPilot
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case, unsupported_method

from experiments import services

# fuzz: generated requests against a live server (.ci/run runs it: -m slow)
pytestmark = pytest.mark.slow

# Bounded and deterministic by default; SKYDECK_FUZZ_EXAMPLES=200 SKYDECK_FUZZ_RANDOM=1 explores more.
MAX_EXAMPLES = int(os.environ.get("SKYDECK_FUZZ_EXAMPLES", "20"))
DERANDOMIZE = os.environ.get("SKYDECK_FUZZ_RANDOM", "") != "1"


@pytest.fixture
def api_token(db, make_experiment, make_job, make_checkpoint):
    user = User.objects.create_user("fuzzer")
    token = Token.objects.create(user=user).key
    # a little of everything, so generated ids sometimes hit real rows
    first = make_experiment("baseline", flags={"lr": 0.1}, base_command="python train.py")
    second = make_experiment("fuzz-b", gpus=8, accelerator="H100", tool_path="tools/run.py")
    group = services.create_group("tester", "fuzz group", flags=["lr"])
    services.add_to_group("tester", group, [first, second])
    make_job(1, name="baseline")
    make_job(2, name="gone", status="FAILED")
    make_checkpoint(first, 1)
    return token


@pytest.fixture
def skypilot(live_server, server: FakeSkyPilot) -> FakeSkyPilot:
    """The SkyPilot double for cancels; requests to the live server itself pass through."""
    server.rsps.add_passthru(live_server.url)
    return server


def _load_schema() -> dict:
    """The schema /api/schema/ serves, generated in-process (as its JSON rendering).

    Loaded at import rather than fetched from the live server: schemathesis' lazy
    ``from_fixture`` loader breaks on pytest 9 (``Function._nodeid``).
    """
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


CONFIG_PATH = Path(__file__).resolve().parent.parent / "schemathesis.toml"
CONFIG = SchemathesisConfig.from_path(CONFIG_PATH)
schema = schemathesis.openapi.from_dict(_load_schema(), config=CONFIG)

# The model rules (full_clean() and the services) that refuse schema-valid input with a 400: they
# depend on other rows or combine fields, which OpenAPI cannot express. Per operation: field ->
# the messages allowed there. schemathesis.toml lets these operations answer 400 to valid input;
# model_rules_only below then fails the run on any other 400 from them.
_TAKEN = r"^Experiment (group )?with this Name already exists\.$"
_GPUS = (
    r"^(More than 4096 GPUs in total is not plausible\.|"
    r"Accelerator \S+ is set but GPUs per node is 0\.)$"
)
_EXPERIMENT_RULES = {"name": _TAKEN, "gpus": _GPUS}
_NO_SUCH = r"^No such experiment: .+\.$"  # an id or name in the body that names no experiment
_NO_REVISION = r"^\S+ has no revision [0-9]+\.$"
MODEL_RULES: dict[str, dict[str, str]] = {
    "POST /api/experiments/": _EXPERIMENT_RULES,
    # also: the stored row takes part in the cross-field rules; a name its jobs carry stays
    "PUT /api/experiments/{id_or_name}/": {
        **_EXPERIMENT_RULES,
        "name": rf"{_TAKEN}|^\S+ cannot be renamed: its name is the SkyPilot job name",
    },
    "PATCH /api/experiments/{id_or_name}/": {
        **_EXPERIMENT_RULES,
        "name": rf"{_TAKEN}|^\S+ cannot be renamed: its name is the SkyPilot job name",
    },
    "POST /api/experiments/{id_or_name}/duplicate/": {"name": _TAKEN},
    "POST /api/experiments/{id_or_name}/adopt/": {"experiment": r"^Nothing to adopt: "},
    # config history: a revision number the experiment does not have (yet)
    "GET /api/experiments/{id_or_name}/revisions/diff/": {"a": _NO_REVISION, "b": _NO_REVISION},
    "POST /api/experiments/{id_or_name}/revisions/{number}/restore/": {"number": _NO_REVISION},
    # fork: no flag for the URI given while SKYDECK_FORK_FLAG is unset; a checkpoint gone from S3
    "POST /api/checkpoints/{id}/fork/": {
        **_EXPERIMENT_RULES,
        "flag_key": r"^Name the flag that receives the checkpoint's URI ",
        "checkpoint": r"^Epoch [0-9]+ of \S+ is marked missing ",
    },
    # compare: how many, and which exist
    "GET /api/compare/": {
        "non_field_errors": r"^Compare 2 to 20 experiments \([0-9]+ were given\)\.$",
        "e": _NO_SUCH,
        "ids": r"^No experiments? with ids? [0-9, ]+\.$",
    },
    # sweeps: the value specs are strings and lists the schema cannot parse; the two group
    # fields exclude each other; each planned item meets the experiment rules
    "POST /api/sweeps/": {
        **_EXPERIMENT_RULES,
        "axes": r".",
        "mode": r"^zip needs ",
        "name_template": r"^(Unknown placeholder|The template )",
        "new_group": r"^(Give group or new_group, not both\.|" + _TAKEN[1:] + ")",
        "group": r"^(Give group or new_group, not both\.|No group with id [0-9]+\.)",
        "base": r"^No experiment [0-9]+\.$",
        "items": r".",
        "fields": r".",
    },
    "POST /api/groups/": {"name": _TAKEN},
    "PUT /api/groups/{id}/": {"name": _TAKEN},
    "PATCH /api/groups/{id}/": {"name": _TAKEN},
    # a permutation of the current groups / members
    "POST /api/groups/reorder/": {"order": r"^The new order must list every group exactly once"},
    "POST /api/groups/{id}/members/": {"experiments": _NO_SUCH},
    "POST /api/groups/{id}/members/remove/": {"experiments": _NO_SUCH},
    "POST /api/groups/{id}/members/order/": {
        "experiments": _NO_SUCH,
        "order": r"^The new order must list every experiment of the group exactly once",
    },
    "POST /api/bulk/": {"group": r"^No group with id [0-9]+\.$"},
    "POST /api/sync/": {"sources": r"^Not available here: "},  # a syncer not installed here
    # dates the schema can only call dates: their order, and a window of at most 400 bars
    "GET /api/usage/": {
        "until": r"^must (not be before since|be before 9999-12-31)\.$",
        "bucket": r"^[0-9]+ days make [0-9]+ bars of a (day|week|month), more than 400; ",
    },
}


def _messages(errors) -> list[str]:
    if isinstance(errors, dict):
        return [m for value in errors.values() for m in _messages(value)]
    if isinstance(errors, list):
        return [m for value in errors for m in _messages(value)]
    return [str(errors)]


def model_rules_only(ctx, response, case) -> None:
    """A 400 to schema-valid input names only model rules of MODEL_RULES (else: the schema is
    looser than the server there, and must be fixed)."""
    meta = case.meta
    if (
        case.operation.label not in MODEL_RULES  # there, schemathesis itself refuses any 400
        or response.status_code != 400
        or meta is None
        or not meta.generation.mode.is_positive
        or is_unexpected_http_status_case(case)
    ):
        return
    rules = MODEL_RULES[case.operation.label]
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AssertionError(f"Schema-valid request refused: {response.text[:500]}")
    unexplained = {
        field: errors
        for field, errors in body.items()
        if field not in rules
        or not all(re.search(rules[field], message) for message in _messages(errors))
    }
    if unexplained:
        raise AssertionError(
            "Schema-valid request refused, and not by a model rule the schema cannot express "
            f"(tighten the schema): {json.dumps(unexplained)[:1000]}"
        )


@schema.parametrize()
@pytest.mark.django_db(transaction=True, reset_sequences=True)  # ids from 1: the schema's examples
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=DERANDOMIZE,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, live_server, api_token, skypilot):
    excluded = []
    if case.operation.path == "/api/health":
        # /api/health is a plain Django view (experiments.views) outside the API: Django's CSRF
        # middleware answers unknown unsafe methods (QUERY) with 403 before require_GET's 405.
        excluded.append(unsupported_method)
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Token {api_token}"},
        excluded_checks=excluded,
        additional_checks=[model_rules_only],
    )


def test_model_rules_cover_exactly_the_operations_allowed_a_400():
    """schemathesis.toml and MODEL_RULES name the same operations, each one in the schema."""
    config = tomllib.loads(CONFIG_PATH.read_text())
    (allowed,) = [
        entry
        for entry in config["operations"]
        if "400" in entry["checks"]["positive_data_acceptance"]["expected-statuses"]
    ]
    assert set(allowed["include-name"]) == set(MODEL_RULES)
    labels = {operation.label for operation in (r.ok() for r in schema.get_all_operations())}
    assert set(MODEL_RULES) <= labels
