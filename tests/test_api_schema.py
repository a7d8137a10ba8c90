"""The OpenAPI schema says what the server enforces: its patterns agree with the validators.

Patterns are checked with jsonschema_rs, an ECMA-262 reading (as every JSON Schema validator and
schemathesis do): ``$`` there is the end of the string, so ``"name\\n"`` must not pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from names import BAD_NAMES, GOOD_NAMES, PADDED_NAMES
from rest_framework.exceptions import ValidationError as DRFValidationError

from experiments.api.common import IF_MATCH_PATTERN, _parse_if_match
from experiments.api.fields import MAX_ID, ExperimentRefField, whole_numbers_up_to
from experiments.validation import NAME_MAX_LENGTH, validate_experiment_name, validate_flag_key


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


def _valid(field_schema: dict, value) -> bool:
    return jsonschema_rs.validator_for(field_schema).is_valid(value)


def accepts(check: Callable[[Any], object], value, error: type[Exception]) -> bool:
    """Whether ``check(value)`` lets ``value`` through (does not raise ``error``)."""
    try:
        check(value)
    except error:
        return False
    return True


def _server_accepts_name(name: str) -> bool:
    return accepts(validate_experiment_name, name, ValidationError)


@pytest.mark.parametrize("name", GOOD_NAMES + BAD_NAMES + PADDED_NAMES)
def test_name_pattern_agrees_with_the_validator(schema, name):
    components = schema["components"]["schemas"]
    for component in ("ExperimentCreateRequest", "DuplicateRequest"):
        field = components[component]["properties"]["name"]
        assert field["pattern"].startswith("^") and field["pattern"].endswith("$")
        assert _valid(field, name) == _server_accepts_name(name), (component, name)
    assert _server_accepts_name(name) == (name in GOOD_NAMES)


FLAG_KEYS = ["lr", "trainer.batch_size", "a-b.c_d", "_x.1", "x" * 200, "x" * 201, "", "1a"]
FLAG_KEYS += ["a..b", "a.", "a b", "a\n", "\na"]


@pytest.mark.parametrize("key", FLAG_KEYS)
def test_flag_names_pattern_agrees_with_the_validator(schema, key):
    flags = schema["components"]["schemas"]["ExperimentCreateRequest"]["properties"]["flags"]
    assert _valid(flags, {key: 1}) == accepts(validate_flag_key, key, ValidationError), key


def _ref_accepted(value) -> bool:
    return accepts(ExperimentRefField().to_internal_value, value, DRFValidationError)


@pytest.mark.parametrize(
    "ref",
    [
        "0",
        "000",
        "1",
        "0001",
        str(MAX_ID),
        str(MAX_ID + 1),
        "9" * 19,
        "1" + "0" * 18,
        "baseline",
        "not a name",
        "",
        "x" * (NAME_MAX_LENGTH + 1),
        0,
        1,
        MAX_ID,
        MAX_ID + 1,
    ],
)
def test_experiment_ref_schema_agrees_with_the_field(schema, ref):
    items = schema["components"]["schemas"]["MemberAddRequest"]["properties"]["experiments"]
    assert _valid(items["items"], ref) == _ref_accepted(ref), ref


@settings(max_examples=300, derandomize=True, database=None)
@given(st.integers(min_value=1, max_value=10**20), st.integers(min_value=-5, max_value=10**20))
def test_whole_numbers_up_to(limit, value):
    pattern = {"type": "string", "pattern": f"^{whole_numbers_up_to(limit)}$"}
    assert _valid(pattern, str(value)) == (1 <= value <= limit)
    assert _valid(pattern, str(limit)) and not _valid(pattern, str(limit + 1))


def _if_match_accepted(header: str) -> bool:
    return accepts(_parse_if_match, header, DRFValidationError)


@pytest.mark.slow  # fuzz: 200 generated headers
@settings(max_examples=200, derandomize=True, database=None)
@given(st.from_regex(IF_MATCH_PATTERN.removesuffix("$") + r"\Z"))
def test_every_if_match_the_schema_allows_is_accepted(header):
    if header:  # empty: the view sends no precondition at all
        assert _if_match_accepted(header), header


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("*", True),
        ('"2026-01-01T12:00:00.123456Z"', True),
        ('W/"2026-01-01T12:00:00Z"', True),
        ("2024-02-29T00:00:00+01:00, *", True),
        ("2023-02-29T00:00:00Z", False),  # not a date
        ("2026-04-31T00:00:00Z", False),
        ("yesterday", False),
        ('"not a date"', False),
        ("1, 2", False),
    ],
)
def test_if_match_pattern_agrees_with_the_server(schema, header, accepted):
    parameter = next(
        p
        for p in schema["paths"]["/api/experiments/{id_or_name}/"]["patch"]["parameters"]
        if p["name"] == "If-Match"
    )
    assert _valid(parameter["schema"], header) == accepted == _if_match_accepted(header)


def test_every_api_operation_documents_429_with_retry_after(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            if path == "/api/health":  # a plain Django view: no DRF throttle
                assert "429" not in operation["responses"]
                continue
            throttled = operation["responses"]["429"]
            assert "Retry-After" in throttled["headers"], (method, path)
            assert "application/json" in throttled["content"], (method, path)


def test_health_documents_the_anonymous_answer_and_a_bad_token(schema):
    health = schema["paths"]["/api/health"]["get"]
    assert set(health["responses"]) == {"200", "401", "503"}
    assert "detail" in schema["components"]["schemas"]["Health"]["properties"]
    assert "log in" in health["description"].lower() or "login" in health["description"]


def test_flags_and_flags_patch_exclude_each_other(schema):
    components = schema["components"]["schemas"]
    for name in ("ExperimentUpdateRequest", "PatchedExperimentUpdateRequest"):
        assert "not" in components[name]
        body = {"$ref": f"#/components/schemas/{name}", "components": schema["components"]}
        assert not _valid(body, {"name": "x", "flags": {}, "flags_patch": {}})
        assert _valid(body, {"name": "x", "flags_patch": {"set": {"lr": 1}}})
        assert _valid(body, {"name": "x", "flags": {"lr": 1}})
