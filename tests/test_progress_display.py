"""Issue 16 in the UI: a running experiment's progress and loss sparkline in the deck, stalled and
"recovered N times" badges (deck and /jobs), the detail page's metric charts, and the Failures
page's log excerpt. Rows are made directly (the sampler that fills them is tested elsewhere)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from experiments import dashboard, deckchanges, services, triage
from experiments.models import Experiment, Job, JobSample, JobStatus

HTMX_DECK = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "deck"}
HX = {"HTTP_HX_REQUEST": "true"}
XSS = '<script>alert("x")</script> & <b>bold</b>'
XSS_ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;"


def running(make_experiment, make_job, name, *, progress=None, samples=(), **job_fields):
    """An experiment whose latest job runs, with ``progress`` and one JobSample per entry of
    ``samples`` (each a metrics dict; steps 10, 20, ...)."""
    exp = make_experiment(name)
    job_fields.setdefault("status", JobStatus.RUNNING)
    job = make_job(name=name, progress=progress, **job_fields)
    start = timezone.now() - timedelta(hours=1)
    JobSample.objects.bulk_create(
        JobSample(
            job=job,
            taken_at=start + timedelta(minutes=i),
            step=10 * (i + 1),
            total=5000,
            metrics=metrics,
        )
        for i, metrics in enumerate(samples)
    )
    return exp, job


def row_html(html: str, name: str) -> str:
    """The deck row of experiment ``name``."""
    at = html.index(f">{name}</a>")
    return html[html.rindex("<tr ", 0, at) : html.index("</tr>", at)]


def points(svg_html: str) -> list[tuple[float, float]]:
    found = re.search(r'<polyline points="([^"]*)"', svg_html)
    assert found, svg_html
    return [tuple(map(float, p.split(","))) for p in found.group(1).split()]


# --- the text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "text"),
    [
        ({"step": 568, "total": 5000, "epoch": 3, "metrics": {}}, "568 / 5,000 \u00b7 11 %"),
        ({"step": 4999, "total": 5000}, "4,999 / 5,000 \u00b7 99 %"),  # never rounded to 100
        ({"step": 20, "total": 5000}, "20 / 5,000 \u00b7 0.4 %"),
        ({"step": 568, "total": None, "epoch": None}, "step 568"),
        ({"step": None, "total": None, "epoch": 3}, "epoch 3"),
        ({"step": None, "total": None, "epoch": None, "metrics": {"loss": 1.0}}, ""),
        (None, ""),
        ({"step": "568", "total": True}, ""),  # not numbers: nothing, not an error
    ],
)
def test_progress_text(progress, text):
    assert dashboard.progress_text(progress)[0] == text


def test_the_sparkline_metric_is_loss_else_a_loss_else_none():
    assert dashboard.spark_metric(["acc", "train/loss", "loss"]) == "loss"
    assert dashboard.spark_metric(["acc", "val/loss", "train/loss"]) == "train/loss"
    assert dashboard.spark_metric(["acc", "val_Loss"]) == "val_Loss"
    assert dashboard.spark_metric(["acc", "lr"]) is None


# --- the deck ----------------------------------------------------------------------------------


def test_a_running_experiment_shows_progress_and_a_loss_sparkline(web, make_experiment, make_job):
    losses = [2.5, 2.0, 1.8, 1.5, 1.4, 1.2, 1.1, 1.05, 1.0, 0.9]
    running(
        make_experiment,
        make_job,
        "train-a",
        progress={"step": 568, "total": 5000, "epoch": 3, "metrics": {"loss": 0.9, "lr": 1e-4}},
        samples=[{"loss": v, "lr": 1e-4} for v in losses],
    )
    html = web.get("/").content.decode()
    assert '<th class="c-progress"' in html
    row = row_html(html, "train-a")
    cell = re.search(r'<td class="c-progress">(.*?)</td>', row).group(1)
    assert ">568 / 5,000 \u00b7 11 %</span>" in cell
    assert 'title="Step 568 of 5,000 (11.36 %), epoch 3"' in cell
    svg = re.search(r"<svg class=\"spark\".*?</svg>", cell).group(0)
    line = points(svg)
    assert len(line) == len(losses)
    assert [x for x, _ in line] == sorted(x for x, _ in line)  # oldest first, left to right
    ys = [y for _, y in line]
    assert ys.index(min(ys)) == 0 and ys.index(max(ys)) == len(ys) - 1  # the loss falls
    assert 'aria-label="loss: 2.5 \u2192 0.9 over the last 10 samples (min 0.9, max 2.5)"' in svg


def test_a_long_run_is_thinned_to_a_few_points_ending_at_the_last(web, make_experiment, make_job):
    values = [{"train/loss": 10.0 - i / 100} for i in range(500)]
    running(
        make_experiment,
        make_job,
        "long-run",
        progress={"step": 5000, "total": 5000, "metrics": {"train/loss": 5.01}},
        samples=values,
    )
    row = row_html(web.get("/").content.decode(), "long-run")
    line = points(row)
    assert 2 <= len(line) <= dashboard.SPARK_POINTS
    assert "train/loss: " in row and "\u2192 5.01 over the last" in row  # ends at the newest


def test_no_sparkline_without_a_loss_and_no_progress_unless_running(web, make_experiment, make_job):
    running(
        make_experiment,
        make_job,
        "no-loss",
        progress={"step": 3, "total": None, "metrics": {"acc": 0.5}},
        samples=[{"acc": 0.1}, {"acc": 0.5}],
    )
    exp = make_experiment("finished")
    make_job(
        name="finished", status=JobStatus.SUCCEEDED, progress={"step": 9, "total": 9}, stalled="x"
    )
    Experiment.objects.refresh_current_state()
    html = web.get("/").content.decode()
    row = row_html(html, "no-loss")
    assert ">step 3</span>" in row and "<svg" not in row
    done = row_html(html, exp.name)
    assert '<td class="c-progress"><span class="muted">\u2013</span></td>' in done
    assert "stalled" not in done  # a finished job is not stalled, whatever the column says


def test_the_stalled_badge_says_why_escaped(web, make_experiment, make_job):
    running(
        make_experiment,
        make_job,
        "stuck",
        progress={"step": 5, "total": 10},
        stalled=f"no log progress for 1 h 12 min {XSS}",
    )
    row = row_html(web.get("/").content.decode(), "stuck")
    badge = re.search(r'<span class="badge tone-stall"[^>]*>.*?</span></span>', row).group(0)
    assert f'title="Stalled: no log progress for 1 h 12 min {XSS_ESCAPED}"' in badge
    assert f'<span class="sr-only">: no log progress for 1 h 12 min {XSS_ESCAPED}</span>' in badge
    assert ">stalled<" in badge
    assert "<script>" not in row and "<b>bold" not in row
    assert row.index("tone-stall") < row.index('class="btn tiny state-btn"')  # beside the state


@pytest.mark.parametrize(("recoveries", "shown"), [(3, False), (4, True)])
def test_a_job_recovered_more_than_the_limit_is_flagged(
    web, make_experiment, make_job, settings, recoveries, shown
):
    settings.SKYDECK_MAX_RECOVERIES = 3
    running(make_experiment, make_job, "flaky", recovery_count=recoveries)
    row = row_html(web.get("/").content.decode(), "flaky")
    assert (f">recovered {recoveries}\u00d7</span>" in row) is shown
    if shown:
        assert "more than SKYDECK_MAX_RECOVERIES (3)" in row


def test_sparklines_cost_one_query_for_all_rows(web, make_experiment, make_job):
    """The deck with running rows that have progress and samples costs at most one query more
    than the same deck without, and the same for 3 such rows as for 12."""
    group = services.create_group("t", "runs")

    def deck_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert web.get("/").status_code == 200
        return len(queries)

    def add(count: int, progress: bool) -> None:
        for _ in range(count):
            index = Experiment.objects.count()
            exp, _job = running(
                make_experiment,
                make_job,
                f"q-{index:03d}",
                progress={"step": 5, "total": 10, "metrics": {"loss": 1.0}} if progress else None,
                samples=[{"loss": 2.0}, {"loss": 1.0}] if progress else [],
            )
            services.add_to_group("t", group, [exp])

    add(3, progress=False)
    plain = deck_queries()
    Job.objects.all().delete()
    Experiment.objects.all().delete()
    add(3, progress=True)
    with_three = deck_queries()
    add(9, progress=True)
    html = web.get("/").content.decode()
    assert html.count('<svg class="spark"') == 12
    assert with_three == deck_queries()  # 12 rows: the same
    assert plain <= with_three <= plain + 1
    with CaptureQueriesContext(connection) as queries:
        web.get("/")
    assert sum("job_samples" in q["sql"] for q in queries.captured_queries) == 1


def test_a_poll_updates_a_row_whose_progress_changed(web, make_experiment, make_job):
    group = services.create_group("t", "watched")
    exp, job = running(
        make_experiment,
        make_job,
        "moving",
        progress={"step": 100, "total": 1000, "metrics": {"loss": 2.0}},
        samples=[{"loss": 3.0}, {"loss": 2.0}],
    )
    other = make_experiment("still")
    services.add_to_group("t", group, [exp, other])
    first = web.get("/", **HTMX_DECK).content.decode()
    version = re.search(r'data-version="([^"]+)"', first).group(1)
    layout = re.search(rf'data-key="{group.pk}" data-built data-layout="(\w+)"', first).group(1)
    # what the sampler does: the job's new reading, and the experiment logged as changed
    Job.objects.filter(pk=job.pk).update(
        progress={"step": 600, "total": 1000, "metrics": {"loss": 1.0}}
    )
    JobSample.objects.create(job=job, taken_at=timezone.now(), step=600, metrics={"loss": 1.0})
    deckchanges.record_experiments([exp.name])
    response = web.get("/", {"v": version, "shown": f"{group.pk}:2:{layout},u:0"}, **HTMX_DECK)
    html = response.content.decode()
    assert "<section" not in html  # the row alone, in place
    rows = re.findall(r'<template><tr id="row-\d+-(\d+)" class="exp-row[^"]*" hx-swap-oob', html)
    assert rows == [str(exp.pk)]
    row = row_html(html, "moving")
    assert ">600 / 1,000 \u00b7 60 %</span>" in row
    assert len(points(row)) == 3


def test_the_layout_fingerprint_names_the_fixed_columns(monkeypatch):
    """A browser showing rows of an older set of columns (before Progress) gets whole sections."""
    before = dashboard.layout_fingerprint([], [])
    monkeypatch.setattr(
        dashboard, "FIXED_COLUMNS", [c for c in dashboard.FIXED_COLUMNS if c != "progress"]
    )
    assert dashboard.layout_fingerprint([], []) != before


def test_the_empty_row_spans_every_column(web):
    group = services.create_group("t", "empty")
    html = web.get("/").content.decode()
    section = html[html.index(f'id="group-{group.pk}"') :]
    section = section[: section.index("</section>")]
    heads = len(re.findall(r"<th ", section[: section.index("</thead>")]))
    assert f'<td colspan="{heads}">' in section


# --- /jobs --------------------------------------------------------------------------------------


def test_jobs_page_flags_stalled_and_recovered_jobs(web, make_job, settings):
    settings.SKYDECK_MAX_RECOVERIES = 3
    make_job(501, "stuck-job", status=JobStatus.RUNNING, stalled=XSS)
    make_job(502, "flaky-job", status=JobStatus.RECOVERING, recovery_count=7)
    make_job(503, "calm-job", status=JobStatus.RUNNING, recovery_count=3, stalled="")
    html = web.get("/jobs").content.decode()

    def job_row(job_id: int) -> str:
        at = html.index(f'<span class="job-id">{job_id}</span>')
        return html[html.rindex("<tr>", 0, at) : html.index("</tr>", at)]

    stuck = job_row(501)
    assert f'title="Stalled: {XSS_ESCAPED}"' in stuck and ">stalled<" in stuck
    assert "<script>" not in html
    assert ">recovered 7\u00d7</span>" in job_row(502)
    calm = job_row(503)
    assert "stalled" not in calm and "recovered" not in calm


# --- the detail page ----------------------------------------------------------------------------


def test_detail_page_charts_every_parsed_metric(web, make_experiment, make_job):
    exp, job = running(
        make_experiment,
        make_job,
        "charted",
        progress={"step": 40, "total": 5000, "metrics": {"loss": 1.25, "lr": 0.0003}},
        samples=[
            {"loss": 4.0, "lr": 0.0003},
            {"loss": 2.5, "lr": 0.0003},
            {"loss": 1.5},
            {"loss": 1.2345678912, "lr": 0.0003, XSS: 1.0},
        ],
        stalled="no log progress for 1 h 12 min",
        progress_at=timezone.now(),
    )
    html = web.get(reverse("experiment_detail", args=[exp.pk])).content.decode()
    panel = html[html.index('class="panel progress-panel"') :]
    panel = panel[: panel.index("</section>")]
    assert f"job {job.id}" in panel and "40 / 5,000 \u00b7 0.8 %" in panel
    assert "no log progress for 1 h 12 min" in panel and "tone-stall" in panel
    assert "4 samples" in panel
    charts = re.findall(r'<figure class="metric-chart">.*?</figure>', panel)
    assert len(charts) == 3  # loss, lr and the hostile name
    loss = next(c for c in charts if 'title="loss"' in c)
    assert '<span class="metric-last" title="The last value">1.2345678912</span>' in loss
    assert re.search(r'class="end y-max"[^>]*>4</text>', loss)
    assert re.search(r'class="end y-min"[^>]*>1.23457</text>', loss)
    assert re.search(r'class="x-min"[^>]*>10</text>', loss)  # the first and last step
    assert re.search(r'class="end x-max"[^>]*>40</text>', loss)
    assert len(points(loss)) == 4
    assert len(points(next(c for c in charts if 'title="lr"' in c))) == 3  # where it was read
    assert XSS_ESCAPED in panel and "<script>" not in panel
    # the polled panels say the same
    polled = web.get(reverse("experiment_panels", args=[exp.pk]), **HX).content.decode()
    assert polled.count('<figure class="metric-chart">') == 3


def test_detail_page_without_samples_names_the_sampler_settings(web, make_experiment, make_job):
    exp, _job = running(make_experiment, make_job, "quiet")
    html = web.get(reverse("experiment_detail", args=[exp.pk])).content.decode()
    assert "No progress parsed from this job's log yet" in html
    for name in ("SKYDECK_SAMPLE_INTERVAL", "SKYDECK_SAMPLE_LINES", "SKYDECK_SAMPLE_MAX_JOBS"):
        assert f"<code>{name}</code>" in html
    assert '<figure class="metric-chart">' not in html


# --- the Failures page ----------------------------------------------------------------------------


def failed(make_job, job_id, name, reason, log_tail):
    return make_job(
        job_id,
        name,
        status="FAILED",
        failure_reason=reason,
        failure_signature=triage.signature("FAILED", reason),
        submitted_at=timezone.now() - timedelta(days=1),
        log_tail=log_tail,
    )


def test_failures_page_shows_the_examples_last_log_lines_escaped(web, make_job):
    lines = [f"line {i}" for i in range(40)] + [f"RuntimeError: {XSS}", "", ""]
    failed(make_job, 71, "oom-a", "CUDA out of memory", "\n".join(lines))
    failed(make_job, 72, "other", "disk full", None)
    html = web.get("/failures").content.decode()
    excerpts = re.findall(r'<pre class="log-excerpt"[^>]*><span>(.*?)</span></pre>', html, re.S)
    assert len(excerpts) == 1  # the bucket whose example has no log tail shows none
    shown = excerpts[0].split("\n")
    assert len(shown) == 15
    assert shown[0] == "line 26" and shown[-1] == f"RuntimeError: {XSS_ESCAPED}"
    assert f"log: <code>RuntimeError: {XSS_ESCAPED}" in html  # the last line, in the summary
    assert "<script>" not in html


def test_detail_page_charts_a_chosen_job(web, make_experiment, make_job):
    exp, old = running(
        make_experiment,
        make_job,
        "rerun",
        progress={"step": 20, "total": 100, "metrics": {"loss": 2.0}},
        samples=[{"loss": 3.0}, {"loss": 2.0}],
        status=JobStatus.FAILED,
        submitted_at=timezone.now() - timedelta(days=1),
    )
    new = make_job(name="rerun", progress={"step": 5, "total": 100, "metrics": {"acc": 0.1}})
    JobSample.objects.create(job=new, taken_at=timezone.now(), step=5, metrics={"acc": 0.1})
    url = reverse("experiment_detail", args=[exp.pk])
    latest = web.get(url).content.decode()
    assert f"job {new.id} (the latest)" in latest and 'title="acc"' in latest
    assert f'href="{url}?job={old.id}">{old.id}</a>' in latest
    chosen = web.get(url, {"job": old.id}).content.decode()
    assert f"job {old.id}</span>" in chosen and 'title="loss"' in chosen
    assert 'title="acc"' not in chosen
    assert f'hx-get="{reverse("experiment_panels", args=[exp.pk])}?job={old.id}"' in chosen
    polled = web.get(reverse("experiment_panels", args=[exp.pk]), {"job": old.id}, **HX)
    assert 'title="loss"' in polled.content.decode()
    # another experiment's job, or junk: the latest job's
    assert 'title="acc"' in web.get(url, {"job": "x"}).content.decode()
