"""Query strings are as strict as bodies, and the UI lists filter as the API does (issue 14).

* Every API operation answers 400 to a query parameter it does not take, naming it (a misspelled
  ``?stauts=FAILED`` used to list every job); what it takes is what the schema documents.
* /jobs and /operations filter through the API's filter sets: ``user=alice`` is exact on both
  (never "malice"), the search box is ``q`` (substring) on both. A bad value is an error on the
  page (400, nothing listed), never a 500; an unknown parameter is ignored and named.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import URLPattern, resolve, reverse
from django.utils.html import escape
from rest_framework.test import APIClient

from experiments import services
from experiments.api.common import UNKNOWN_QUERY_PARAMETER, StrictQueryParams
from experiments.models import JobStatus, OperationLog

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FORMAT = "format"  # DRF's ?format= override, accepted everywhere (not in the schema)


@pytest.fixture(scope="module")
def schema() -> dict:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated, renderer_context={}))


@pytest.fixture
def rows(make_experiment, make_job, make_checkpoint):
    """A little of every list: jobs of alice, malice and bob, a group, a checkpoint, a log."""
    exp = make_experiment("train")
    group = services.create_group("tester", "team")
    services.add_to_group("tester", group, [exp])
    make_checkpoint(exp, 3)
    make_job(1, name="train", status=JobStatus.SUCCEEDED, user_name="alice", submitted_at=T0)
    make_job(
        2,
        name="train",
        status=JobStatus.FAILED,
        user_name="malice",
        submitted_at=T0 + timedelta(hours=1),
    )
    make_job(
        3,
        name="ghost",
        status=JobStatus.FAILED_SETUP,
        user_name="bob",
        submitted_at=T0 + timedelta(hours=2),
    )
    make_job(4, name="alice-run", status=JobStatus.RUNNING, user_name="carol", submitted_at=T0)
    services.record("alice", "update", experiment=exp, message="renamed")
    services.record("malice", "update", experiment=exp, message="alice was here")
    return {"experiment": exp, "group": group}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def page_ids(response, key: str = "jobs") -> set[int]:
    return {row.id for row in response.context[key]}


def unknown(known: list[str]) -> list[str]:
    return [UNKNOWN_QUERY_PARAMETER.format(known=", ".join(sorted({*known, FORMAT})))]


PAGINATION = ["page", "page_size"]
#: Every API list and what it takes: its filter set's filters and the paginator's parameters.
LISTS = {
    "/api/experiments/": [
        *PAGINATION,
        "name",
        "q",
        "tag",
        "state",
        "desired_state",
        "group",
        "ungrouped",
        "starred",
        "has_active_job",
        "ordering",
    ],
    "/api/groups/": [*PAGINATION, "name"],
    "/api/jobs/": [
        *PAGINATION,
        "experiment",
        "name",
        "q",
        "status",
        "failed",
        "failure_signature",
        "active",
        "orphaned",
        "user",
        "submitted_after",
        "submitted_before",
        "ordering",
    ],
    "/api/checkpoints/": [
        *PAGINATION,
        "experiment",
        "experiment_id",
        "epoch_min",
        "epoch_max",
        "latest",
        "missing",
        "ordering",
    ],
    "/api/operations/": [
        *PAGINATION,
        "experiment",
        "actor",
        "q",
        "operation",
        "success",
        "job_id",
        "since",
        "until",
        "ordering",
    ],
}
#: Known parameters with a value each list takes (the answer must be a 200).
KNOWN_QUERIES = {
    "/api/experiments/": "name=tra&q=train&tag=x&state=NO_JOB&desired_state=STOPPED&ungrouped=false"
    "&starred=false&has_active_job=false&ordering=-name&page=1&page_size=5&format=json",
    "/api/groups/": "name=te&page=1&page_size=5&format=json",
    "/api/jobs/": "experiment=train&name=tr&q=a&status=FAILED&failed=true&failure_signature=x&active=false"
    "&orphaned=false&user=malice&submitted_after=2026-01-01T00:00:00Z"
    "&submitted_before=2027-01-01T00:00:00Z&ordering=-id&page=1&page_size=5&format=json",
    "/api/checkpoints/": "experiment=train&epoch_min=0&epoch_max=10&latest=true&missing=false"
    "&ordering=epoch&page=1&page_size=5&format=json",
    "/api/operations/": "experiment=train&actor=alice&q=ren&operation=update&success=true"
    "&since=2020-01-01T00:00:00Z&until=2100-01-01T00:00:00Z&ordering=-created_at"
    "&page=1&page_size=5&format=json",
}


# --- the API: unknown query parameters are a 400 naming them --------------------------------


def test_a_misspelled_filter_no_longer_lists_every_job(api, rows):
    response = api.get("/api/jobs/?stauts=FAILED")
    assert response.status_code == 400
    assert response.json() == {"stauts": unknown(LISTS["/api/jobs/"])}
    assert "results" not in response.json()
    assert ids(api.get("/api/jobs/?status=FAILED")) == [2]


def test_the_exact_400_body(api, rows):
    assert api.get("/api/jobs/?stauts=FAILED").json() == {
        "stauts": [
            "Unknown query parameter. Known: active, experiment, failed, failure_signature, format, name, "
            "ordering, orphaned, page, page_size, q, status, submitted_after, "
            "submitted_before, user."
        ]
    }


@pytest.mark.parametrize("path", sorted(LISTS))
def test_every_list_refuses_an_unknown_parameter_naming_it(api, rows, path):
    response = api.get(f"{path}?bogus=1")
    assert response.status_code == 400
    assert response.json() == {"bogus": unknown(LISTS[path])}


@pytest.mark.parametrize("path", sorted(LISTS))
def test_every_list_names_each_unknown_parameter_even_next_to_known_ones(api, rows, path):
    response = api.get(f"{path}?stauts=FAILED&page=1&limit=5&limit=6&=x")
    assert response.status_code == 400
    assert set(response.json()) == {"stauts", "limit", ""}
    assert all(messages == unknown(LISTS[path]) for messages in response.json().values())


@pytest.mark.parametrize("path", sorted(LISTS))
def test_every_list_still_takes_its_known_parameters(api, rows, path):
    assert api.get(f"{path}?{KNOWN_QUERIES[path]}").status_code == 200
    known = set(re.findall(r"(?:^|&)([a-z_]+)=", KNOWN_QUERIES[path]))
    assert known == {*LISTS[path], FORMAT} - {"group", "experiment_id", "job_id"}


def test_known_filters_still_filter(api, rows):
    assert ids(api.get("/api/jobs/?user=alice")) == [1]
    assert ids(api.get("/api/jobs/?q=alice&ordering=id")) == [1, 2, 4]  # name or user
    assert ids(api.get("/api/jobs/?failed=true")) == [3, 2]
    assert ids(api.get("/api/jobs/?failed=false&ordering=id")) == [1, 4]
    assert ids(api.get("/api/jobs/?page_size=1&page=2")) == [2]
    operations = api.get("/api/operations/?actor=alice").json()["results"]
    assert [op["actor"] for op in operations] == ["alice"]
    searched = api.get("/api/operations/?q=alice&operation=update").json()["results"]
    assert sorted(op["actor"] for op in searched) == ["alice", "malice"]


def test_bad_values_of_known_parameters_are_still_400s(api, rows):
    for query in ["failed=maybe", "q=a%00b", "status=FAILED_ANY", "failed=", "failed=1"]:
        response = api.get(f"/api/jobs/?{query}")
        assert response.status_code == 400, query
        assert set(response.json()) == {query.split("=")[0]}


def test_detail_operations_and_other_views_refuse_unknown_parameters(api, rows):
    exp, group = rows["experiment"], rows["group"]
    paths = [
        "/api/jobs/1/",
        f"/api/experiments/{exp.name}/",
        f"/api/experiments/{exp.pk}/launch-preview/",
        f"/api/groups/{group.pk}/",
        f"/api/checkpoints/{exp.checkpoints.get().pk}/",
        f"/api/operations/{OperationLog.objects.first().pk}/",
        "/api/meta/",
        "/api/sync/",
    ]
    for path in paths:
        assert api.get(path).status_code == 200, path
        assert api.get(f"{path}?format=json").status_code == 200, path
        response = api.get(f"{path}?page=2")  # pagination is a list's, not a detail's
        assert response.status_code == 400, path
        assert response.json() == {"page": unknown([])}


def test_writes_refuse_unknown_parameters_before_acting(api, rows):
    exp = rows["experiment"]
    response = api.post(
        "/api/bulk/?dry=1",
        {"action": "delete", "experiments": [exp.name]},
        format="json",
    )
    assert response.status_code == 400 and set(response.json()) == {"dry"}
    response = api.delete(f"/api/experiments/{exp.pk}/?force=true")
    assert response.status_code == 400 and set(response.json()) == {"force"}
    assert type(exp).objects.filter(pk=exp.pk).exists()


def test_the_log_declares_what_it_reads(api, rows):
    response = api.get("/api/jobs/99/logs/?tail=5&follow=false")
    assert response.status_code == 404  # tail and follow are known: the job is not
    response = api.get("/api/jobs/99/logs/?tail=5&lines=3")
    assert response.status_code == 400
    assert response.json() == {"lines": unknown(["tail", "follow"])}


def test_login_comes_first_and_an_unserved_method_stays_405(api, rows):
    assert APIClient().get("/api/jobs/?stauts=FAILED").status_code == 401
    assert api.options("/api/jobs/?stauts=FAILED").status_code == 405
    assert api.generic("TRACE", "/api/jobs/?stauts=FAILED").status_code == 405
    assert api.put("/api/jobs/?stauts=FAILED", {}, format="json").status_code == 405


# --- the rule and the schema agree ----------------------------------------------------------


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        if path == "/api/health":  # a plain Django view, outside the API
            continue
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield path, method, operation


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _known(path: str, method: str) -> set[str]:
    """What ``StrictQueryParams`` lets through for this operation (the view, as routed)."""
    func = resolve(_concrete(path)).func
    view = func.cls(**func.initkwargs)
    actions = getattr(func, "actions", None)
    if actions:
        view.action_map = actions
        view.action = actions.get(method)
    return view.known_query_params()


def test_each_operation_takes_exactly_the_query_parameters_its_schema_documents(schema):
    checked = 0
    for path, method, operation in _operations(schema):
        documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert _known(path, method) - {FORMAT} == documented, f"{method.upper()} {path}"
        checked += 1
    assert checked > 30


def test_each_operation_documents_the_400(schema):
    for path, method, operation in _operations(schema):
        assert "400" in operation["responses"], f"{method.upper()} {path}"
        assert "query parameter" in operation["responses"]["400"]["description"]


def test_every_operation_refuses_an_unknown_parameter(api, rows, schema):
    for path, method, _ in _operations(schema):
        url = _concrete(path) + "?bogus=1"
        response = getattr(api, method)(url, {}, format="json") if method != "get" else api.get(url)
        assert response.status_code == 400, f"{method.upper()} {path}: {response.content[:200]}"
        assert list(response.json()) == ["bogus"], f"{method.upper()} {path}"


def test_every_api_view_is_strict():
    from rest_framework.views import APIView

    from experiments.api import urls

    views = [
        pattern.callback.cls
        for pattern in urls.urlpatterns
        if isinstance(pattern, URLPattern) and hasattr(pattern.callback, "cls")
    ]
    api_views = [cls for cls in views if issubclass(cls, APIView)]
    lax = {
        cls.__name__
        for cls in api_views
        if not issubclass(cls, StrictQueryParams) and cls.__name__ != "SpectacularAPIView"
    }
    assert len(api_views) >= 8 and lax == set()


# --- the UI lists filter through the same filter sets ---------------------------------------


def test_user_means_the_same_on_the_jobs_page_and_the_api(web, api, rows):
    assert page_ids(web.get("/jobs?user=alice")) == set(ids(api.get("/api/jobs/?user=alice")))
    assert page_ids(web.get("/jobs?user=alice")) == {1}  # not malice's
    assert (
        page_ids(web.get("/jobs?q=alice"))
        == set(ids(api.get("/api/jobs/?q=alice")))
        == {
            1,
            2,
            4,
        }
    )
    for query in ["experiment=train", "failed=true", "status=FAILED_SETUP", "orphaned=true"]:
        assert page_ids(web.get(f"/jobs?{query}")) == set(ids(api.get(f"/api/jobs/?{query}")))


def test_actor_means_the_same_on_the_operations_page_and_the_api(web, api, rows):
    def on_page(query: str) -> list[str]:
        response = web.get(f"/operations?{query}")
        assert response.status_code == 200
        return sorted(op.actor for op in response.context["operations"])

    def on_api(query: str) -> list[str]:
        response = api.get(f"/api/operations/?{query}")
        assert response.status_code == 200
        return sorted(op["actor"] for op in response.json()["results"])

    assert on_page("actor=alice") == on_api("actor=alice") == ["alice"]  # not malice
    for query in ["q=alice&operation=update", "experiment=train&operation=update"]:
        assert on_page(query) == on_api(query) == ["alice", "malice"]
    assert on_page("experiment=trai") == on_api("experiment=trai") == []  # exact


def test_the_search_box_is_q_and_the_checkboxes_send_true(web, rows):
    html = web.get("/jobs?q=ali&failed=true").content.decode()
    assert 'name="q" value="ali"' in html
    assert 'name="failed" value="true" checked' in html
    html = web.get("/operations?success=false").content.decode()
    assert 'name="success" value="false" checked' in html


def test_an_empty_form_field_means_no_filter(web, rows):
    response = web.get("/jobs?q=&status=&user=&experiment=")
    assert response.status_code == 200 and page_ids(response) == {1, 2, 3, 4}
    everything = list(web.get("/operations").context["operations"])
    response = web.get("/operations?q=&experiment=&actor=&operation=")
    assert response.status_code == 200 and list(response.context["operations"]) == everything


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/jobs?submitted_after=yesterday", "submitted_after"),
        ("/jobs?status=DANCING", "status"),
        ("/jobs?status=FAILED_ANY", "status"),  # the old "any failure" option: failed=true now
        ("/jobs?active=1", "active"),  # the old checkbox value: true now
        ("/jobs?user=a%00b", "user"),
        ("/jobs?ordering=user_name", "ordering"),
        ("/jobs?user=alice&user=bob", "user"),
        ("/operations?job_id=abc", "job_id"),
        ("/operations?job_id=99999999999999999999", "job_id"),
        ("/operations?operation=dance", "operation"),
        ("/operations?since=2026-13-01", "since"),
        ("/operations?success=no", "success"),
    ],
)
def test_a_bad_value_is_an_error_on_the_page_never_a_500(web, rows, url, param):
    response = web.get(url)
    assert response.status_code == 400
    html = response.content.decode()
    assert re.search(rf'<p class="notice error" role="alert">{param}: [^<]+</p>', html), html
    assert "Fix the filters above" in html
    key = "jobs" if url.startswith("/jobs") else "operations"
    assert list(response.context[key]) == []
    assert '<form method="get" class="filters"' in html  # the form is there to fix it


def test_an_unknown_parameter_on_a_page_is_ignored_and_named(web, rows):
    response = web.get("/jobs?stauts=FAILED&utm_source=chat&page=1")
    assert response.status_code == 200
    assert page_ids(response) == {1, 2, 3, 4}
    html = response.content.decode()
    assert escape("Not a filter of this page, ignored: stauts, utm_source.") in html
    response = web.get("/operations?failed=1")  # the old checkbox: success=false now
    assert response.status_code == 200
    assert "ignored: failed." in response.content.decode()
    assert "ignored" not in web.get("/jobs?page=2").content.decode()


@pytest.mark.parametrize(
    "query", ["?user=alice&failed=false&q=a&ordering=-id&page=1", "?status=DANCING"]
)
def test_filtered_pages_keep_their_query_count(web, rows, query, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):  # as the unfiltered page (test_ui_pages)
        web.get(reverse("jobs") + query)
    with django_assert_max_num_queries(6):
        web.get(reverse("operations") + query.replace("failed=false", "success=true"))
