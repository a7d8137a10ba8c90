"""Compare (/compare, /api/compare/): the diff of config, flags and state, exact values, the
2..20 limits, unknown names, only-differences, the page, the API, and constant query counts."""

from __future__ import annotations

import re

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments import compare
from experiments.compare import MISSING, comparison, format_value, parse_refs
from experiments.models import Experiment, Job

pytestmark = pytest.mark.django_db


def rows_by_field(result) -> dict[str, compare.Row]:
    return {row.field: row for row in result.rows}


@pytest.fixture
def trio(make_experiment, make_job, make_checkpoint):
    a = make_experiment(
        "lr-a", flags={"trainer.lr": 0.001, "batch": 131072, "seed": 1}, nodes=1, gpus=8,
        accelerator="H100", base_command="uv run ./tools/train.py", git_ref="main",
        tags=["sweep"],
    )  # fmt: skip
    b = make_experiment(
        "lr-b", flags={"trainer.lr": 0.01, "batch": 131072, "seed": 1, "warmup": True},
        nodes=1, gpus=8, accelerator="H100", base_command="uv run ./tools/train.py",
        git_ref="main", tags=["sweep"],
    )  # fmt: skip
    c = make_experiment(
        "lr-c", flags={"trainer.lr": 0.1, "batch": 131072, "seed": 1}, nodes=2, gpus=8,
        accelerator="H100", base_command="uv run ./tools/train.py", git_ref="main",
        tags=["sweep"],
    )  # fmt: skip
    make_job(501, "lr-a", status="FAILED", failure_reason="CUDA out of memory on 10.0.0.1",
             failure_signature="FAILED: CUDA out of memory on <ip>")  # fmt: skip
    make_job(502, "lr-b", status="RUNNING")
    make_checkpoint(b, 7)
    make_checkpoint(b, 12)
    Experiment.objects.refresh_current_state()  # as the job syncer does
    for e in (a, b, c):
        e.refresh_from_db()
    return a, b, c


def test_config_flags_and_state_rows_mark_what_differs(trio):
    result = comparison(["lr-a", "lr-b", "lr-c"])
    assert [e.name for e in result.experiments] == ["lr-a", "lr-b", "lr-c"]
    rows = rows_by_field(result)
    assert rows["flags.trainer.lr"].values == ["0.001", "0.01", "0.1"]
    assert rows["flags.trainer.lr"].differs and rows["flags.trainer.lr"].kind == "flag"
    assert rows["flags.batch"].values == ["131072"] * 3 and not rows["flags.batch"].differs
    # a flag one of them does not set: the dash, and it differs
    assert rows["flags.warmup"].values == [MISSING, "true", MISSING]
    assert rows["flags.warmup"].differs and rows["flags.warmup"].present == [False, True, False]
    # the union of flag keys, sorted, between the config and the state rows
    kinds = [r.kind for r in result.rows]
    assert kinds == sorted(kinds, key=["config", "flag", "status"].index)
    assert [r.field for r in result.rows if r.kind == "flag"] == [
        "flags.batch", "flags.seed", "flags.trainer.lr", "flags.warmup"
    ]  # fmt: skip
    assert rows["nodes"].values == ["1", "1", "2"] and rows["nodes"].differs
    assert rows["total_gpus"].values == ["8", "8", "16"] and rows["total_gpus"].differs
    assert rows["gpus"].values == ["8"] * 3 and not rows["gpus"].differs
    assert rows["git_ref"].values == ["main"] * 3 and not rows["git_ref"].differs
    assert rows["tags"].values == ['["sweep"]'] * 3 and not rows["tags"].differs
    assert rows["name"].differs
    assert [r.field for r in result.rows if r.kind == "config"] == [
        f for f, _ in compare.CONFIG_FIELDS
    ]
    # state: latest job, epoch, the last failure's signature
    assert rows["latest_job"].values == ["501", "502", MISSING]
    assert rows["latest_epoch"].values == [MISSING, "12", MISSING]
    assert rows["last_failure"].values == ["FAILED: CUDA out of memory on <ip>", MISSING, MISSING]
    assert rows["current_state"].values == ["FAILED", "RUNNING", "NO_JOB"]
    assert rows["desired_state"].values == ["STOPPED"] * 3 and not rows["desired_state"].differs
    assert result.differences == sum(r.differs for r in result.rows)
    assert all(r.differs for r in result.shown(only_differences=True))
    assert "flags.batch" not in {r.field for r in result.shown(only_differences=True)}


def test_gpu_hours_and_a_failure_without_a_signature(make_experiment, make_job):
    make_experiment("g1")
    make_experiment("g2")
    Experiment.objects.filter(name="g1").update(gpu_seconds=3600 * 1234.5)
    make_job(601, "g2", status="FAILED_SETUP", failure_reason="setup exited 2")
    make_job(600, "g2", status="FAILED", failure_reason="older", failure_signature="FAILED: old")
    rows = rows_by_field(comparison(["g1", "g2"]))
    assert rows["gpu_hours"].values == ["1,234.5", MISSING]
    # the newest failed job (by submission) of each, its signature else its reason
    assert rows["last_failure"].values[1] in ("setup exited 2", "FAILED: old")
    Job.objects.filter(pk=600).update(submitted_at=Job.objects.get(pk=601).submitted_at)
    rows = rows_by_field(comparison(["g1", "g2"]))
    assert rows["last_failure"].values[1] == "setup exited 2"  # same time: the higher id


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (131072, "131072"),
        (1000, "1000"),
        (1024, "1024"),
        (10**12, "1000000000000"),
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (3.0, "3.0"),
        (0.30000000000000004, "0.30000000000000004"),
        (True, "true"),
        (False, "false"),
        ("lr=1e-3", "lr=1e-3"),
        ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
        (["x", "y"], '["x","y"]'),
    ],
)
def test_values_are_formatted_exactly(value, text):
    assert format_value(value) == text


def test_an_int_and_a_float_or_a_bool_of_the_same_number_differ(make_experiment):
    make_experiment("n1", flags={"x": 1, "y": 1000, "z": True})
    make_experiment("n2", flags={"x": 1.0, "y": 1000, "z": 1})
    rows = rows_by_field(comparison(["n1", "n2"]))
    assert rows["flags.x"].values == ["1", "1.0"] and rows["flags.x"].differs
    assert rows["flags.y"].values == ["1000", "1000"] and not rows["flags.y"].differs
    assert rows["flags.z"].values == ["true", "1"] and rows["flags.z"].differs


def test_limits_unknown_names_duplicates_and_order(make_experiment):
    names = [make_experiment(f"e{i:02d}").name for i in range(21)]
    with pytest.raises(ValidationError, match="Compare 2 to 20 experiments"):
        comparison(names[:1])
    with pytest.raises(ValidationError, match=r"Compare 2 to 20 experiments \(21 were given\)"):
        comparison(names)
    assert len(comparison(names[:20]).experiments) == 20
    with pytest.raises(ValidationError) as exc:
        comparison(["e00", "nope", "e01", "gone"])
    assert exc.value.message_dict == {"e": ["No such experiment: nope, gone."]}
    # duplicates collapse (also a name and its own id); the order is the one given
    e03 = names[3]
    pk = Experiment.objects.get(name=e03).pk
    result = comparison(parse_refs([f"e05,{e03},e05", "e01"], [str(pk)]))
    assert [e.name for e in result.experiments] == ["e05", e03, "e01"]
    with pytest.raises(ValidationError, match="2 to 20"):
        comparison(parse_refs(["e05,e05"], []))
    with pytest.raises(ValidationError) as exc:
        comparison(["e00", "bad\x00name", "x" * 500])
    assert exc.value.message_dict == {"e": [f"No such experiment: bad\x00name, {'x' * 500}."]}
    with pytest.raises(ValidationError) as exc:
        parse_refs([], ["1,x,-2"])
    assert "ids" in exc.value.message_dict and "'x'" in exc.value.message_dict["ids"][0]


def test_the_page_shows_columns_highlights_and_only_differences(web, trio):
    c = trio[2]
    answer = web.get("/compare", {"e": "lr-a,lr-b,lr-c"})
    assert answer.status_code == 200
    html = answer.content.decode()
    for e in trio:
        assert f'href="/experiments/{e.pk}/">{e.name}</a>' in html
    row = re.search(
        r'<tr class="cmp-row([^"]*)" data-field="flags.trainer.lr">(.*?)</tr>', html, re.S
    )
    assert row.group(1) == " cmp-differs"
    assert [v for v in ("0.001", "0.01", "0.1") if f">{v}</td>" in row.group(2)] == [
        "0.001", "0.01", "0.1"
    ]  # fmt: skip
    same = re.search(r'<tr class="cmp-row([^"]*)" data-field="flags.batch">', html)
    assert same.group(1) == ""
    differences = comparison(["lr-a", "lr-b", "lr-c"]).differences
    assert f"<strong>{differences}</strong> of" in html
    assert 'href="?e=lr-a,lr-b,lr-c&amp;diff=1"' in html  # the switch is a shareable link
    only = web.get("/compare", {"e": "lr-a,lr-b,lr-c", "diff": "1"}).content.decode()
    assert 'data-field="flags.trainer.lr"' in only and 'data-field="flags.batch"' not in only
    assert 'aria-checked="true"' in only and 'href="?e=lr-a,lr-b,lr-c"' in only
    # e= repeated and ids= name the same comparison
    again = web.get("/compare", {"e": ["lr-a", "lr-b"], "ids": str(c.pk)})
    assert again.status_code == 200 and html.count("cmp-exp") == again.content.decode().count(
        "cmp-exp"
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"e": "lr-a"}, "Compare 2 to 20 experiments (1 was given)."),
        ({}, "Compare 2 to 20 experiments (0 were given)."),
        ({"e": "lr-a,nope"}, "No such experiment: nope."),
        ({"ids": "abc"}, "Experiment ids are positive integers, not &#x27;abc&#x27;."),
        ({"e": ",".join(f"x{i}" for i in range(21))}, "(21 were given)"),
    ],
)
def test_bad_input_is_a_400_page_with_its_message(web, trio, query, message):
    answer = web.get("/compare", query)
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert 'role="alert"' in answer.content.decode()


def test_the_page_and_the_api_need_a_login(client, trio):
    assert client.get("/compare?e=lr-a,lr-b").status_code == 302
    assert client.get("/api/compare/?e=lr-a,lr-b").status_code == 401


def test_the_api_answers_the_same_rows_as_the_domain(api, trio):
    a, b, c = trio
    answer = api.get("/api/compare/", {"e": "lr-a,lr-b,lr-c"})
    assert answer.status_code == 200, answer.content
    data = answer.json()
    result = comparison(["lr-a", "lr-b", "lr-c"])
    assert data["rows"] == [row.as_dict() for row in result.rows]
    assert data["differences"] == result.differences
    assert [(e["id"], e["name"]) for e in data["experiments"]] == [(x.pk, x.name) for x in trio]
    assert data["experiments"][0]["url"].endswith(f"/experiments/{a.pk}/")
    lr = next(r for r in data["rows"] if r["field"] == "flags.trainer.lr")
    assert lr == {"field": "flags.trainer.lr", "label": "trainer.lr", "kind": "flag",
                  "values": ["0.001", "0.01", "0.1"], "differs": True}  # fmt: skip
    only = api.get("/api/compare", {"ids": f"{a.pk},{b.pk},{c.pk}", "only_differences": "true"})
    assert only.status_code == 200
    assert only.json()["rows"] == [r.as_dict() for r in result.rows if r.differs]
    assert only.json()["differences"] == result.differences


@pytest.mark.parametrize(
    ("query", "field", "text"),
    [
        ({"e": "lr-a"}, "non_field_errors", "Compare 2 to 20 experiments (1 was given)."),
        ({"e": "lr-a,nope,nada"}, "e", "No such experiment: nope, nada."),
        ({"ids": "99999"}, "ids", "No experiment with id 99999."),
        ({"e": "lr-a,lr-b", "diff": "1"}, "diff", "Unknown query parameter"),
        ({"e": "lr-a,lr-b", "only_differences": "maybe"}, "only_differences", "valid boolean"),
    ],
)
def test_the_api_refuses_bad_input_with_field_messages(api, trio, query, field, text):
    answer = api.get("/api/compare/", query)
    assert answer.status_code == 400
    assert text in " ".join(answer.json()[field])


def _seed(make_experiment, make_job, make_checkpoint, n: int) -> list[str]:
    names = []
    for i in range(n):
        e = make_experiment(f"q{n}-{i:02d}", flags={"lr": i / 10, f"only{i}": i})
        make_job(n * 1000 + 2 * i, e.name, status="FAILED", failure_reason="boom",
                 failure_signature="FAILED: boom")  # fmt: skip
        make_job(n * 1000 + 2 * i + 1, e.name, status="RUNNING")
        make_checkpoint(e, i + 1)
        names.append(e.name)
    return names


def _count(fetch) -> int:
    with CaptureQueriesContext(connection) as queries:
        answer = fetch()
    assert answer.status_code == 200, answer.content
    return len(queries)


def test_page_and_api_cost_the_same_queries_for_2_and_20(
    web, api, make_experiment, make_job, make_checkpoint
):
    few = _seed(make_experiment, make_job, make_checkpoint, 2)
    many = _seed(make_experiment, make_job, make_checkpoint, 20)
    web.get("/compare", {"e": ",".join(few)})  # warm the session and content types
    page = [_count(lambda n=n: web.get("/compare", {"e": ",".join(n)})) for n in (few, many)]
    assert page[0] == page[1]
    api.get("/api/compare/", {"e": ",".join(few)})
    answers = [
        _count(lambda n=n: api.get("/api/compare/", {"e": ",".join(n)})) for n in (few, many)
    ]
    assert answers[0] == answers[1]
    with CaptureQueriesContext(connection) as queries:
        comparison(many)
    assert len(queries) == 2  # the experiments with their subqueries, the failed jobs
