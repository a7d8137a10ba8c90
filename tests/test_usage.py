"""GPU-hours and cost (issue 16): the arithmetic, prices (estimates, per cloud, none), the
window, the Usage page with its chart and CSV, the API, the command and the admin's log."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments import services, usage
from experiments.models import AcceleratorPrice, OperationLog

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def job(make_job, job_id, name="exp", *, nodes=1, gpus=8, hours=1.0, accel="H100", cloud="aws",
        user="alice", ended=NOW - timedelta(hours=2), status="SUCCEEDED", **fields):  # fmt: skip
    return make_job(
        job_id,
        name,
        status=status,
        nodes=nodes,
        gpus=gpus,
        accelerator=accel,
        cloud=cloud,
        user_name=user,
        duration=None if hours is None else hours * 3600,
        started_at=None if ended is None else ended - timedelta(hours=hours or 0),
        ended_at=ended,
        **fields,
    )


def rows(report) -> dict[str, dict]:
    return {r.key: r.as_dict() for r in report.rows}


def test_gpu_hours_are_nodes_times_gpus_times_run_time_and_cost_uses_the_price(make_job):
    AcceleratorPrice.objects.all().delete()
    AcceleratorPrice.objects.create(accelerator="H100", usd_per_gpu_hour=Decimal("2.5"))
    AcceleratorPrice.objects.create(accelerator="h100", cloud="GCP", usd_per_gpu_hour=4)
    job(make_job, 1, nodes=2, gpus=8, hours=3)  # 48 GPU-h on aws: the any-cloud price
    job(make_job, 2, nodes=1, gpus=4, hours=0.5, user="bob", cloud="gcp")  # 2 GPU-h at 4
    job(make_job, 3, nodes=1, gpus=8, hours=10, ended=NOW - timedelta(days=30))  # outside
    report = usage.usage("user", NOW - timedelta(days=7), now=NOW)
    assert rows(report) == {
        "alice": {"key": "alice", "jobs": 1, "gpu_hours": 48.0, "cost_usd": 120.0,
                  "unpriced_gpu_hours": 0.0, "unknown_jobs": 0},
        "bob": {"key": "bob", "jobs": 1, "gpu_hours": 2.0, "cost_usd": 8.0,
                "unpriced_gpu_hours": 0.0, "unknown_jobs": 0},
    }  # fmt: skip
    assert report.total.gpu_hours == 50 and report.total.cost_usd == 128
    assert [r.key for r in report.rows] == ["alice", "bob"] and not report.estimated


def test_an_accelerator_without_a_price_is_never_a_zero_cost(make_job):
    AcceleratorPrice.objects.filter(accelerator="H100").update(usd_per_gpu_hour=2)
    job(make_job, 1, hours=1)  # H100: priced (a seeded row, so an estimate)
    job(make_job, 2, hours=2, accel="MI300X")  # no price
    job(make_job, 3, hours=None)  # no run time: unknown
    report = usage.usage("accelerator", NOW - timedelta(days=1), now=NOW)
    got = rows(report)
    assert got["MI300X"]["unpriced_gpu_hours"] == 16 and got["MI300X"]["cost_usd"] == 0
    assert got["H100"]["cost_usd"] == 16 and got["H100"]["unknown_jobs"] == 1
    assert report.unpriced == ["MI300X"] and report.estimated
    assert report.total.unpriced_gpu_hours == 16 and report.total.jobs == 3


def test_a_running_job_counts_up_to_now(make_job):
    job(make_job, 1, hours=1, ended=None, status="RUNNING", last_seen=NOW - timedelta(minutes=30))
    job(make_job, 2, hours=1, ended=None, status="PENDING", nodes=None)
    report = usage.usage("user", NOW - timedelta(days=1), now=NOW)
    # 8 GPUs x (1 h reported at the last sync + 0.5 h since)
    assert report.total.gpu_hours == pytest.approx(12.0) and report.total.jobs == 2
    past = usage.usage("user", NOW - timedelta(days=3), NOW - timedelta(days=1), now=NOW)
    assert past.total.jobs == 0  # a window that ended: the running job is not in it


def test_roll_ups_by_group_experiment_and_cloud(make_job, make_experiment):
    a = make_experiment("a")
    make_experiment("b")
    g = services.create_group("t", "sweeps")
    services.add_to_group("t", g, [a])
    job(make_job, 1, "a", hours=1)
    job(make_job, 2, "b", hours=2, cloud="gcp")
    job(make_job, 3, "ghost", hours=1)
    since = NOW - timedelta(days=1)
    assert {k: v["gpu_hours"] for k, v in rows(usage.usage("group", since, now=NOW)).items()} == {
        "(no group)": 24.0,
        "sweeps": 8.0,
    }
    by_exp = rows(usage.usage("experiment", since, now=NOW))
    assert by_exp["b"]["gpu_hours"] == 16 and set(by_exp) == {"a", "b", "ghost"}
    assert set(rows(usage.usage("cloud", since, now=NOW))) == {"aws", "gcp"}


def test_the_series_stacks_per_day_and_folds_the_rest(make_job):
    for i in range(10):
        ended = NOW - timedelta(days=i % 3, hours=1)
        job(make_job, 100 + i, user=f"u{i}", hours=i + 1, ended=ended)
    since = NOW - timedelta(days=2, hours=2)
    chart = usage.series("user", since, NOW, "day", top=3, now=NOW)
    assert chart.keys == ["u9", "u8", "u7", usage.OTHER]
    assert [s.date().isoformat() for s in chart.starts] == [
        "2026-11-29",
        "2026-11-30",
        "2026-12-01",
    ]
    total = sum(h for s in chart.starts for _, h in chart.stack(s))
    assert total == pytest.approx(sum(8 * (i + 1) for i in range(10)))


def test_a_window_is_checked():
    with pytest.raises(ValueError, match="until: must not be before since"):
        usage.window(NOW.date(), NOW.date() - timedelta(days=1))
    with pytest.raises(ValueError, match=r"bucket: 501 days make 501 bars of a day, more than 400"):
        usage.window(NOW.date() - timedelta(days=500), NOW.date(), "day")
    assert usage.window(NOW.date(), NOW.date())[1] - usage.window(NOW.date(), NOW.date())[0] == (
        timedelta(days=1)
    )


def test_the_usage_page_charts_tables_and_exports(web, make_job):
    today = datetime.now(UTC)
    job(make_job, 1, hours=2, ended=today - timedelta(minutes=5))
    job(make_job, 2, hours=1, user="=cmd()", ended=today - timedelta(minutes=5), accel="MI300X")
    page = web.get("/usage")
    body = page.content.decode()
    assert page.status_code == 200 and '<svg class="usage-chart"' in body
    assert "<title>alice ·" in body and "16.0 GPU-h</title>" in body
    assert "no price" in body and "MI300X" in body and "(estimated prices)" in body
    exported = web.get("/usage", {"format": "csv", "by": "user"})
    assert exported["Content-Type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(exported.content.decode())))
    assert table[0] == [
        "user",
        "jobs",
        "gpu_hours",
        "cost_usd",
        "unpriced_gpu_hours",
        "unknown_jobs",
    ]
    assert table[1][:3] == ["alice", "1", "16.0"] and table[2][0] == "'=cmd()"  # no formula
    assert table[-1][:3] == ["total", "2", "24.0"]


@pytest.mark.parametrize(
    "query, says",
    [
        ({"by": "team"}, "by: Select a valid choice"),
        ({"since": "2026-12-05", "until": "2026-12-01"}, "until: must not be before since"),
        ({"since": "2020-01-01", "until": "2026-01-01"}, "bucket: more than 400"),
        ({"since": "yesterday"}, "since: Enter a valid date"),
        ({"until": "9999-12-31"}, "until: must be before 9999-12-31"),
    ],
)
def test_a_bad_usage_window_is_a_400_that_says_why(web, query, says):
    page = web.get("/usage", query)
    text = page.content.decode()
    assert page.status_code == 400 and says.split(":")[0] in text and says.split(": ")[1] in text
    assert web.get("/usage", {**query, "format": "csv"}).status_code == 400


def test_the_usage_api(api, make_job):
    today = datetime.now(UTC)
    job(make_job, 1, hours=2, ended=today - timedelta(seconds=1))
    answer = api.get("/api/usage/", {"by": "accelerator", "bucket": "day"})
    assert answer.status_code == 200
    data = answer.json()
    assert data["rows"][0]["key"] == "H100" and data["total"]["gpu_hours"] == 16.0
    assert len(data["series"]) == 7 and data["series"][-1]["gpu_hours"] == {"H100": 16.0}
    bad = api.get("/api/usage/", {"by": "team", "color": "red"})
    assert bad.status_code == 400 and "color" in bad.json()
    assert api.get("/api/usage/", {"since": "2026-12-02", "until": "2026-12-01"}).status_code == 400


def test_the_usage_page_costs_the_same_queries_for_many_jobs(web, make_job):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    today = datetime.now(UTC)
    counts = []
    for n in (3, 60):
        for i in range(n):
            job(
                make_job, 1000 * n + i, user=f"u{i % 12}", hours=1, ended=today - timedelta(hours=i)
            )
        with CaptureQueriesContext(connection) as queries:
            assert web.get("/usage").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_skydeck_usage_on_the_command_line(make_job, capsys):
    today = datetime.now(UTC)
    job(make_job, 1, hours=2, ended=today - timedelta(hours=1))
    job(make_job, 2, hours=1, user="bob", ended=today - timedelta(days=3))
    out = io.StringIO()
    call_command("usage", "--since", "7d", "--by", "user", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["user", "jobs", "GPU-hours", "cost", "USD", "no", "price"]
    assert lines[1].split()[:3] == ["alice", "1", "16.0"] and lines[-1].split()[0] == "total"
    out = io.StringIO()
    call_command("usage", "--since", "2d", "--format", "json", stdout=out)
    assert [r["key"] for r in json.loads(out.getvalue())["rows"]] == ["alice"]
    job(make_job, 3, hours=1, user="=cmd()", ended=today - timedelta(hours=2))
    out = io.StringIO()
    call_command("usage", "--since", "2d", "--format", "csv", stdout=out)
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0][0] == "user" and ["'=cmd()", "1", "8.0"] in [r[:3] for r in table]
    with pytest.raises(CommandError, match="since: 'last week' is neither a span"):
        call_command("usage", "--since", "last week")


def test_a_price_change_is_in_the_operation_log_with_its_values(admin_client):
    price = AcceleratorPrice.objects.get(accelerator="H100", cloud="")
    page = admin_client.post(
        f"/admin/experiments/acceleratorprice/{price.pk}/change/",
        {"accelerator": "H100", "cloud": "", "usd_per_gpu_hour": "3.1", "note": "our contract"},
    )
    assert page.status_code == 302
    entry = OperationLog.objects.get(operation="price")
    assert "H100 (any cloud): $4.0000 per GPU-hour -> H100 (any cloud): $3.1000" in entry.message
    duplicate = admin_client.post(
        "/admin/experiments/acceleratorprice/add/",
        {"accelerator": "h100", "cloud": "", "usd_per_gpu_hour": "1"},
    )
    assert duplicate.status_code == 200 and "already exists" in duplicate.content.decode()


def test_the_migration_seeds_estimates_for_common_accelerators(db):
    seeded = dict(AcceleratorPrice.objects.values_list("accelerator", "estimate"))
    assert {"H100", "A100", "L4", "T4"} <= set(seeded) and all(seeded.values())


def test_the_deck_shows_each_experiment_s_gpu_hours_and_each_group_s_total(web, make_job):
    from experiments.models import Experiment

    a = services.create_experiment("t", name="a")
    b = services.create_experiment("t", name="b")
    services.create_experiment("t", name="idle")
    group = services.create_group("t", "g")
    services.add_to_group("t", group, [a, b])
    job(make_job, 1, "a", nodes=2, gpus=8, hours=1.5)  # 24 GPU-h
    job(make_job, 2, "b", nodes=1, gpus=4, hours=0.25)  # 1 GPU-h
    Experiment.objects.refresh_current_state()  # what the job syncer runs for touched names
    assert Experiment.objects.get(name="a").gpu_seconds == 24 * 3600
    body = web.get("/").content.decode()
    cells = re.findall(r'<td class="c-gpuh num">([^<]*)</td>', body)
    assert sorted(cells) == ["1.0", "24.0", "\u2013"]  # idle: no job says its GPU time
    assert "25.0 GPU-h</span>" in body  # the group's header
    answer = web.get(f"/api/experiments/{a.pk}/").json()
    assert answer["gpu_seconds"] == 24 * 3600


def test_the_syncer_and_a_rename_keep_gpu_hours(server, make_experiment):
    from fake_skypilot import job_record

    from experiments.models import Experiment
    from syncing.runner import run_sync

    exp = make_experiment("trainer")
    fresh = make_experiment("fresh")
    server.jobs = [
        job_record(5, "trainer", status="SUCCEEDED", resources="2x[H100:8]", job_duration=1800),
        job_record(6, "ghost", status="SUCCEEDED", resources="1x[L4:1]", job_duration=3600),
    ]
    assert run_sync("skypilot").ok
    assert Experiment.objects.get(pk=exp.pk).gpu_seconds == 16 * 1800
    assert Experiment.objects.get(pk=fresh.pk).gpu_seconds is None
    services.update_experiment("t", Experiment.objects.get(pk=fresh.pk), name="ghost")
    assert Experiment.objects.get(pk=fresh.pk).gpu_seconds == 3600  # the jobs of its new name


@pytest.mark.parametrize(
    "url, query, field, says",
    [
        ("/api/usage/", "until=", "until", "Give a value or leave the parameter out."),
        ("/api/usage/", "by=user&by=group", "by", "Give this parameter once."),
        ("/api/failures/", "days=", "days", "Give a value or leave the parameter out."),
    ],
)
def test_query_parameters_given_empty_or_twice_are_refused(api, url, query, field, says):
    answer = api.get(f"{url}?{query}")
    assert answer.status_code == 400 and answer.json() == {field: [says]}


@pytest.mark.parametrize("by", ["user", "group", "accelerator"])
def test_the_csv_matches_the_api_row_for_row(web, api, make_job, make_experiment, by):
    """The acceptance check: what the export says is what the API says, for the same query."""
    today = datetime.now(UTC)
    group = services.create_group("alice", "vision")
    services.add_to_group("alice", group, [make_experiment("vis")])
    AcceleratorPrice.objects.filter(accelerator="H100").update(usd_per_gpu_hour=Decimal("2.5"))
    for i, (user, accel, hours) in enumerate(
        [("alice", "H100", 1.5), ("bob", "A100", 2), ("bob", "MI300X", 0.25), ("carol", "H100", 3)]
    ):
        job(make_job, 10 + i, "vis" if i % 2 else "exp", user=user, accel=accel, hours=hours,
            ended=today - timedelta(hours=i + 1))  # fmt: skip
    query = {"by": by, "since": (today - timedelta(days=3)).date().isoformat()}
    table = list(
        csv.reader(io.StringIO(web.get("/usage", {**query, "format": "csv"}).content.decode()))
    )
    data = api.get("/api/usage/", query).json()
    fields = table[0][1:]
    expected = [[row["key"], *(str(row[f]) for f in fields)] for row in data["rows"]]
    assert [r[: len(fields) + 1] for r in table[1:-1]] == expected
    assert table[-1][: len(fields) + 1] == ["total", *(str(data["total"][f]) for f in fields)]
    assert len(expected) >= 2
