"""/jobs and /operations sort by their columns, /jobs refreshes its table, a log downloads whole.

Sorting is one rule for the page (``?sort=``) and the API (``?ordering=``): the filter sets'
ColumnOrderingFilter. The refresh poll answers 204 when the table it shows is unchanged.
The download reads SkyPilot's ``POST /jobs/logs`` through syncing.services (the double is
``responses``, as in test_job_logs).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fake_skypilot import ENDPOINT
from rest_framework.authtoken.models import Token

from experiments.api.filters import JobFilter, OperationLogFilter
from experiments.models import Job, JobStatus, OperationLog
from syncing import joblogs
from syncing.skypilot import REQUEST_ID_HEADER, SkyPilotClient

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
LOGS_URL = f"{ENDPOINT}/jobs/logs"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def jobs(make_experiment, make_job):
    make_experiment("train")
    make_job(1, name="train", status=JobStatus.SUCCEEDED, user_name="carol", submitted_at=T0)
    make_job(
        2, name="train", status=JobStatus.FAILED, user_name="alice",
        submitted_at=T0 + timedelta(hours=1), recovery_count=3,
    )  # fmt: skip
    make_job(
        3, name="ghost", status=JobStatus.RUNNING, user_name="bob",
        submitted_at=T0 + timedelta(hours=2), recovery_count=1,
    )  # fmt: skip
    make_job(4, name="train", status=JobStatus.PENDING, user_name="alice", submitted_at=T0)


@pytest.fixture
def api(user):
    from django.test import Client

    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.create(user=user).key}"
    return client


def listed(response, key: str = "jobs") -> list[int]:
    return [row.id for row in response.context[key]]


def api_ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def heads(html: str) -> dict[str, tuple[str, str]]:
    """Each sortable column head: data-sort -> (its link's query, its aria-sort or "")."""
    found = {}
    for th in re.findall(r"<th [^>]*>.*?</th>", html):
        link = re.search(r'<a class="sort-link" href="\?([^"]*)" data-sort="([^"]+)"', th)
        if link:
            aria = re.search(r'aria-sort="([a-z]+)"', th)
            found[link.group(2)] = (unescape(link.group(1)), aria.group(1) if aria else "")
    return found


# --- sorting: the page ----------------------------------------------------------------------


def test_jobs_default_order_marks_submitted_descending(web, jobs):
    response = web.get("/jobs")
    assert listed(response) == [3, 2, 4, 1]  # newest submitted first, ties by id descending
    found = heads(response.content.decode())
    assert found["submitted_at"] == ("sort=submitted_at", "descending")
    assert found["id"] == ("sort=id", "")
    assert set(found) == {
        "id", "name", "status", "user", "submitted_at", "started_at", "ended_at", "duration",
        "resources", "recoveries", "failure",
    }  # fmt: skip
    assert "▼" in response.content.decode()


def test_a_header_toggles_ascending_then_descending_and_keeps_the_filters(web, jobs):
    response = web.get("/jobs?sort=id&user=alice&page=1")
    assert listed(response) == [2, 4]
    link, aria = heads(response.content.decode())["id"]
    assert aria == "ascending"
    assert link == "user=alice&sort=-id"  # filters kept, page back to 1, direction flipped
    response = web.get(f"/jobs?{link}")
    assert listed(response) == [4, 2]
    link, aria = heads(response.content.decode())["id"]
    assert aria == "descending" and link == "user=alice&sort=id"
    # another column starts ascending
    assert heads(response.content.decode())["user"] == ("user=alice&sort=user", "")
    # the filter form keeps the sort when it is submitted
    assert '<input type="hidden" name="sort" value="-id">' in response.content.decode()


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("user", [2, 4, 3, 1]),  # alice (2, 4 by id), bob, carol
        ("-user", [1, 3, 4, 2]),  # ties by id in the same direction
        ("recoveries", [1, 4, 3, 2]),
        ("-recoveries", [2, 3, 4, 1]),
        ("status", [2, 4, 3, 1]),  # FAILED, PENDING, RUNNING, SUCCEEDED
        ("name,-id", [3, 4, 2, 1]),  # several keys, as the API's ordering
    ],
)
def test_jobs_sort_by_each_column_with_a_stable_tiebreak(web, api, jobs, sort, expected):
    assert listed(web.get("/jobs", {"sort": sort})) == expected
    # the API's ordering takes the same names and gives the same order
    assert api_ids(api.get("/api/jobs/", {"ordering": sort})) == expected


def test_the_api_name_ordering_works_on_the_page_and_marks_its_head(web, jobs):
    response = web.get("/jobs?ordering=-user")
    assert listed(response) == [1, 3, 4, 2]
    found = heads(response.content.decode())
    assert found["user"] == ("sort=user", "descending")
    assert found["submitted_at"][1] == ""


def test_an_unknown_sort_column_is_named_and_the_default_order_kept(web, jobs):
    response = web.get("/jobs?sort=-colour")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'Unknown sort column "colour"; sorted by submitted, newest first.' in unescape(html)
    assert listed(response) == [3, 2, 4, 1]
    assert "Not a filter of this page" not in html  # sort is the page's own, not ignored
    assert "unknown sort" not in web.get("/jobs?sort=-id").content.decode().lower()


def test_the_api_refuses_an_unknown_ordering_with_a_field_message(api, jobs):
    response = api.get("/api/jobs/?ordering=colour")
    assert response.status_code == 400
    assert list(response.json()) == ["ordering"]
    assert api.get("/api/operations/?ordering=colour").status_code == 400


@pytest.fixture
def operations(db):
    rows = [
        ("carol", "update", "b-exp", True),
        ("alice", "stop", "a-exp", False),
        ("bob", "create", "c-exp", True),
    ]
    made = []
    for i, (actor, operation, name, success) in enumerate(rows):
        op = OperationLog.objects.create(
            actor=actor, operation=operation, experiment_name=name, success=success
        )
        OperationLog.objects.filter(pk=op.pk).update(created_at=T0 + timedelta(minutes=i))
        made.append(op.pk)
    return made


@pytest.mark.parametrize(
    ("sort", "order"),
    [
        ("", [2, 1, 0]),
        ("actor", [1, 2, 0]),
        ("-actor", [0, 2, 1]),
        ("operation", [2, 1, 0]),
        ("experiment", [1, 0, 2]),
        ("success", [1, 0, 2]),
        ("created_at", [0, 1, 2]),
    ],
)
def test_operations_sort_by_their_columns_as_the_api(web, api, operations, sort, order):
    expected = [operations[i] for i in order]
    response = web.get("/operations", {"sort": sort} if sort else {})
    assert listed(response, "operations") == expected
    query = {"ordering": sort} if sort else {}
    assert api_ids(api.get("/api/operations/", query)) == expected


def test_operations_heads_and_unknown_sort(web, operations):
    html = web.get("/operations").content.decode()
    found = heads(html)
    assert found["created_at"] == ("sort=created_at", "descending")
    assert set(found) == {"created_at", "actor", "operation", "experiment", "job_id", "success"}
    assert "Message</th>" in html  # not sortable: a plain head
    html = web.get("/operations?sort=actor&actor=alice").content.decode()
    assert heads(html)["actor"] == ("actor=alice&sort=-actor", "ascending")
    response = web.get("/operations?sort=when")
    text = unescape(response.content.decode())
    assert 'Unknown sort column "when"; sorted by time, newest first.' in text


# --- cost: constant queries, and the default sorts read their index --------------------------


def _queries(web, path: str, **extra) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = web.get(path, **extra)
    assert response.status_code in {200, 204}
    return len(ctx.captured_queries)


def _seed(make_job, count: int) -> None:
    for i in range(count):
        make_job(
            500 + i, name="train" if i % 2 else f"orphan-{i}", user_name=f"u{i % 3}",
            submitted_at=T0 + timedelta(minutes=i),
        )  # fmt: skip
        OperationLog.objects.create(actor=f"u{i % 3}", operation="update", experiment_name="x")


@pytest.mark.parametrize("path", ["/jobs?sort=-user", "/jobs?sort=resources&q=u", "/jobs"])
def test_sorted_job_pages_cost_the_same_for_3_and_30_jobs(web, make_experiment, make_job, path):
    make_experiment("train")
    _seed(make_job, 3)
    few = _queries(web, path)
    _seed_more = [make_job(900 + i, name="train", submitted_at=T0) for i in range(27)]
    assert len(_seed_more) == 27
    assert _queries(web, path) == few
    assert few <= 6  # as the unsorted page (test_query_params)


def test_sorted_operation_pages_cost_the_same_for_3_and_30_rows(web, make_job):
    _seed(make_job, 3)
    few = _queries(web, "/operations?sort=-actor")
    for i in range(27):
        OperationLog.objects.create(actor=f"v{i}", operation="stop", experiment_name="y")
    assert _queries(web, "/operations?sort=-actor") == few


def test_the_refresh_poll_costs_the_same_for_3_and_30_jobs(web, make_experiment, make_job):
    make_experiment("train")
    _seed(make_job, 3)
    version = web.get("/jobs?sort=id").context["version"]
    few = _queries(web, f"/jobs?sort=id&v={version}", **HTMX)
    for i in range(27):
        make_job(900 + i, name="train", submitted_at=T0)
    version = web.get("/jobs?sort=id").context["version"]
    assert _queries(web, f"/jobs?sort=id&v={version}", **HTMX) == few


def _plan(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


@pytest.mark.parametrize("sort", [None, "-submitted_at"])
def test_the_default_job_sort_reads_its_index_without_a_sort_step(db, sort):
    base = Job.objects.order_by("-submitted_at", "-id")
    qs = JobFilter({"ordering": sort} if sort else {}, queryset=base).qs[:50]
    order_sql = str(qs.query).split("ORDER BY")[1]
    assert '"submitted_at" DESC, "jobs"."id" DESC' in order_sql
    if connection.vendor == "sqlite":
        plan = _plan(qs)
        assert "jobs_submitted_idx" in plan, plan
        assert "TEMP B-TREE" not in plan, plan


def test_the_default_operation_sort_reads_its_index_without_a_sort_step(db):
    qs = OperationLogFilter({"ordering": "-created_at"}, queryset=OperationLog.objects.all()).qs[
        :50
    ]
    assert '"created_at" DESC, "operation_logs"."id" DESC' in str(qs.query)
    if connection.vendor == "sqlite":
        plan = _plan(qs)
        assert "TEMP B-TREE" not in plan, plan


# --- the refresh poll -----------------------------------------------------------------------


def test_the_poll_is_204_while_unchanged_and_the_new_table_when_a_job_changes(web, jobs):
    page = web.get("/jobs?sort=id&user=alice")
    html = page.content.decode()
    version = page.context["version"]
    assert f'data-version="{version}"' in html
    assert 'hx-get="/jobs?sort=id&amp;user=alice"' in html  # the same list: filters and sort
    assert "every 10s" in html
    unchanged = web.get(f"/jobs?sort=id&user=alice&v={version}", **HTMX)
    assert unchanged.status_code == 204 and unchanged.content == b""
    # a sync changes a job's status: the poll gets the new table, and the count out of band
    Job.objects.filter(pk=2).update(status=JobStatus.FAILED_SETUP)
    changed = web.get(f"/jobs?sort=id&user=alice&v={version}", **HTMX)
    assert changed.status_code == 200
    body = changed.content.decode()
    assert body.lstrip().startswith("{") is False and 'id="jobs-live"' in body
    assert "FAILED_SETUP" in body and "<html" not in body
    assert 'id="jobs-count" hx-swap-oob="true"' in body
    assert changed.context["version"] != version
    assert "v=" not in changed.context["next_query"]  # links back to the page, not the poll
    # a row the filter no longer lists changes the table too
    Job.objects.filter(pk=4).update(user_name="zed")
    again = web.get(f"/jobs?sort=id&user=alice&v={changed.context['version']}", **HTMX)
    assert again.status_code == 200 and listed(again) == [2]


def test_relative_times_alone_do_not_change_the_version(web, jobs, monkeypatch):
    first = web.get("/jobs").context["version"]
    from experiments import dashboard

    monkeypatch.setattr(dashboard, "ago", lambda value: "ages ago")
    assert web.get("/jobs").context["version"] == first


def test_the_poll_interval_is_a_setting(web, jobs, settings):
    settings.SKYDECK_LIST_REFRESH_SECONDS = 1
    assert "every 1s" in web.get("/jobs").content.decode()


# --- download the full log ------------------------------------------------------------------


RAW_LOG = (
    "\x1b[1mStarting job 12\x1b[0m\n"
    '<sky-payload type="rich_status">{"msg": "Waiting"}</sky-payload>\n'
    + "".join(f"step {i} loss=0.{i}\n" for i in range(1, 301))
)
CLEAN_LOG = "Starting job 12\n" + "".join(f"step {i} loss=0.{i}\n" for i in range(1, 301))


@pytest.fixture
def skypilot(settings, monkeypatch, no_local_skypilot):
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    settings.SKYDECK_LOG_STREAMS_MAX = 4
    original = SkyPilotClient.from_settings.__func__
    monkeypatch.setattr(
        SkyPilotClient,
        "from_settings",
        classmethod(lambda cls: setattr(c := original(cls), "retries", 0) or c),
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(
            responses.POST, LOGS_URL, body=RAW_LOG.encode(), content_type="text/plain",
            headers={REQUEST_ID_HEADER: "logs-1"},
        )  # fmt: skip
        for path, body in [
            ("/api/status", [{"request_id": "logs-1", "status": "SUCCEEDED"}]),
            ("/api/get", {"request_id": "logs-1", "status": "SUCCEEDED", "return_value": "0"}),
        ]:
            rsps.add(responses.GET, f"{ENDPOINT}{path}", json=body)
        yield rsps
    assert joblogs.slots_in_use() == 0, "a download leaked a log-read slot"


def test_download_returns_the_whole_log_as_a_file(web, make_experiment, make_job, skypilot):
    make_experiment("train")
    make_job(12, name="train", status=JobStatus.SUCCEEDED)
    response = web.get("/jobs/12/logs/download")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="train-12.log"'
    assert b"".join(response.streaming_content).decode() == CLEAN_LOG  # 301 lines, not 200
    sent = [json.loads(c.request.body) for c in skypilot.calls if c.request.url == LOGS_URL]
    assert sent == [{"job_id": 12, "follow": False, "tail": None, "controller": False}]
    response.close()


def test_download_follows_no_running_job_and_names_orphans_safely(web, make_job, skypilot):
    make_job(13, name='we"ird/name', status=JobStatus.RUNNING)
    response = web.get("/jobs/13/logs/download")
    assert response["Content-Disposition"] == 'attachment; filename="we_ird_name-13.log"'
    assert b"".join(response.streaming_content).decode() == CLEAN_LOG
    sent = [json.loads(c.request.body) for c in skypilot.calls if c.request.url == LOGS_URL]
    assert sent[0]["follow"] is False and sent[0]["tail"] is None
    response.close()


def test_the_log_page_links_the_download(web, make_job):
    make_job(12, name="train", status=JobStatus.SUCCEEDED)
    html = web.get("/jobs/12/logs").content.decode()
    assert 'href="/jobs/12/logs/download"' in html and "Download full log" in html
    assert "data-log-search" in html and "data-log-wrap" in html


def test_download_is_503_when_every_log_slot_is_taken(web, make_job, skypilot, settings):
    settings.SKYDECK_LOG_STREAMS_MAX = 1
    make_job(12, name="train", status=JobStatus.SUCCEEDED)
    slot = joblogs.acquire_slot()
    try:
        refused = web.get("/jobs/12/logs/download")
    finally:
        slot.release()
    assert refused.status_code == 503
    assert refused["Retry-After"] == str(joblogs.RETRY_AFTER_SECONDS)
    assert "1 job logs are already being read" in refused.content.decode()


def test_download_says_why_when_skypilot_is_down(web, make_job, settings, no_local_skypilot):
    settings.SKYDECK_SKYPILOT_ENDPOINT = "http://127.0.0.1:9"
    make_job(12, name="train", status=JobStatus.SUCCEEDED)
    response = web.get("/jobs/12/logs/download")
    assert response.status_code == 502
    assert response.content.decode().startswith("SkyPilot is unreachable:")
    assert "Content-Disposition" not in response
    assert joblogs.slots_in_use() == 0


def test_download_needs_a_login_and_a_known_job(client, web, make_job):
    make_job(12, name="train")
    assert client.get("/jobs/12/logs/download").status_code == 302
    assert web.get("/jobs/99/logs/download").status_code == 404
