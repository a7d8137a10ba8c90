"""Headless Chromium: a running experiment's progress and loss sparkline in the deck, the
stalled and recoveries badges, and the detail page's metric charts (issue 16)."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser


def _seed() -> tuple[int, int]:
    """A running experiment with 30 samples of loss and lr, and a stalled, much recovered one."""
    from django.utils import timezone

    from experiments import services
    from experiments.models import Experiment, Job, JobSample

    now = timezone.now()
    ids = []
    for job_id, name, fields in [
        (801, "train-7b", {"progress": {"step": 568, "total": 5000, "epoch": 3}}),
        (
            802,
            "train-stuck",
            {
                "progress": {"step": 90, "total": 1000},
                "stalled": "no log progress for 1 h 12 min",
                "recovery_count": 5,
            },
        ),
    ]:
        exp = services.create_experiment("t", name=name, gpus=8, accelerator="H100")
        ids.append(exp.pk)
        job = Job.objects.create(
            id=job_id,
            experiment_id=name,
            job_name=name,
            status="RUNNING",
            submitted_at=now - timedelta(hours=2),
            started_at=now - timedelta(hours=2),
            first_seen=now,
            last_seen=now,
            progress_at=now,
            progress_advanced_at=now - timedelta(minutes=3),
            **fields,
        )
        JobSample.objects.bulk_create(
            JobSample(
                job=job,
                taken_at=now - timedelta(minutes=60 - i * 2),
                step=20 * (i + 1),
                total=5000,
                metrics={"loss": round(3.0 * 0.93**i + 0.02 * (i % 3), 4), "lr": 3e-4},
            )
            for i in range(30)
        )
    Experiment.objects.refresh_current_state()
    return ids[0], ids[1]


def _shoot(page, name: str) -> None:
    if os.environ.get("SKYDECK_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.screenshot(path=str(ARTIFACTS / f"{name}-{scheme}.png"), full_page=True)
        page.emulate_media(color_scheme="light")


def test_deck_shows_progress_and_sparkline_and_detail_charts(page, live_server, alice):
    from playwright.sync_api import expect

    train, stuck = _seed()
    login(page, live_server)
    row = page.locator(f"tr.exp-row[data-exp-id='{train}']")
    cell = row.locator("td.c-progress")
    expect(cell).to_contain_text("568 / 5,000 \u00b7 11 %")
    spark = cell.locator("svg.spark")
    expect(spark).to_be_visible()
    box = spark.bounding_box()
    assert box and 55 <= box["width"] <= 65 and 12 <= box["height"] <= 16
    assert len(spark.locator("polyline").get_attribute("points").split()) == 30
    expect(spark).to_have_attribute("aria-label", re.compile(r"^loss: 3 \u2192 .* 30 samples"))

    other = page.locator(f"tr.exp-row[data-exp-id='{stuck}']")
    badge = other.locator(".tone-stall")
    expect(badge).to_be_visible()
    expect(badge).to_have_attribute("title", "Stalled: no log progress for 1 h 12 min")
    expect(other.locator(".badge-recovered")).to_have_text("recovered 5\u00d7")
    # the reason is in the badge's accessible text too, not only its tooltip
    assert "no log progress" in badge.inner_text() or "no log progress" in (
        badge.locator(".sr-only").text_content() or ""
    )
    _shoot(page, "progress-deck")

    page.goto(f"{live_server.url}/experiments/{train}/")
    panel = page.locator(".progress-panel")
    expect(panel).to_contain_text("568 / 5,000 \u00b7 11 %")
    charts = panel.locator("figure.metric-chart")
    expect(charts).to_have_count(2)
    loss = charts.filter(has=page.locator(".metric-name", has_text="loss"))
    expect(loss.locator(".metric-last")).to_have_text(re.compile(r"^0\.\d+$"))
    expect(loss.locator("text.y-max")).to_have_text("3")
    expect(loss.locator("text.x-min")).to_have_text("20")
    expect(loss.locator("text.x-max")).to_have_text("600")
    chart_box = loss.locator("svg").bounding_box()
    assert chart_box and chart_box["width"] > 150 and chart_box["height"] > 40
    _shoot(page, "progress-detail")


def test_failures_page_shows_the_examples_log_excerpt(page, live_server, alice):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import triage
    from experiments.models import Job

    now = timezone.now()
    reason = "Job failed with return code list: [1]"
    tail = "\n".join(
        [f"step {i}: loss 1.{i:02d} " + "tokens/s=81234.5 " * 12 for i in range(30)]
        + ["Traceback (most recent call last):", '  File "train.py", line 9, in <module>']
        + ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB"]
    )
    Job.objects.create(
        id=901,
        experiment_id="oom-run",
        job_name="oom-run",
        status="FAILED",
        failure_reason=reason,
        failure_signature=triage.signature("FAILED", reason),
        submitted_at=now - timedelta(hours=3),
        first_seen=now,
        last_seen=now,
        log_tail=tail,
    )
    login(page, live_server)
    page.goto(f"{live_server.url}/failures")
    summary = page.locator("details.log-excerpt-wrap > summary")
    expect(summary).to_contain_text("torch.OutOfMemoryError: CUDA out of memory")
    excerpt = page.locator("pre.log-excerpt")
    expect(excerpt).to_be_hidden()  # folded: the table stays dense
    summary.click()
    expect(excerpt).to_be_visible()
    text = excerpt.inner_text()
    assert text.splitlines()[0].startswith("step 18: loss 1.18 ") and len(text.splitlines()) == 15
    box = excerpt.bounding_box()
    assert box and box["height"] <= 18 * 16 + 2  # max-height 18rem: it scrolls beyond
    # lines long enough to wrap past the box: it opens at its end, where the error is
    assert excerpt.evaluate("el => el.scrollHeight > el.clientHeight")
    assert excerpt.evaluate(
        """el => {
            const range = document.createRange();
            range.selectNodeContents(el.firstElementChild);
            const rects = range.getClientRects(), box = el.getBoundingClientRect();
            const last = rects[rects.length - 1];
            return last.bottom <= box.bottom + 1 && last.top >= box.top;
        }"""
    )
    _shoot(page, "progress-failures")
