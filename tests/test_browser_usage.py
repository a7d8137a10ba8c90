"""Headless Chromium: the Usage page (issue 16): chart, legend, table, window and CSV."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser


def _job(job_id: int, user: str, days_ago: int, hours: float, gpus: int = 8, accel="H100"):
    from django.utils import timezone

    from experiments.models import Job

    now = timezone.now()
    ended = now - timedelta(days=days_ago, minutes=30)
    Job.objects.create(
        id=job_id,
        experiment_id=f"{user}-run",
        job_name=f"{user}-run",
        status="SUCCEEDED",
        user_name=user,
        nodes=1,
        gpus=gpus,
        accelerator=accel,
        cloud="aws",
        duration=hours * 3600,
        started_at=ended - timedelta(hours=hours),
        ended_at=ended,
        submitted_at=ended - timedelta(hours=hours),
        first_seen=now,
        last_seen=now,
    )


def test_usage_page_charts_the_window_and_exports_it(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments.models import AcceleratorPrice

    # a live server's database is emptied between tests (migration 0012's seeds go too)
    AcceleratorPrice.objects.update_or_create(
        accelerator="H100", cloud="", defaults={"usd_per_gpu_hour": 4, "estimate": True}
    )
    for i, user in enumerate(["alice", "bob", "carol", "dave"]):
        for day in range(0, 10, i + 1):
            _job(100 * i + day, user, day, hours=1 + i + day % 3)
    _job(999, "erin", 1, hours=3, accel="MI300X")

    login(page, live_server)
    page.click("nav.mainnav a:has-text('Usage')")
    expect(page).to_have_url(re.compile(r"/usage$"))
    chart = page.locator("svg.usage-chart")
    expect(chart).to_be_visible()
    expect(page.locator(".usage-legend span")).to_have_count(5)
    rows = page.locator("table.usage tbody tr")
    expect(rows.first.locator("td").first).to_have_text("alice")
    expect(page.locator(".usage-totals")).to_contain_text("GPU-hours with no price (MI300X)")
    if os.environ.get("SKYDECK_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            page.screenshot(path=str(ARTIFACTS / f"usage-{scheme}.png"), full_page=True)
        page.emulate_media(color_scheme="light")
    days = chart.locator("text.x")
    expect(days.first).to_have_text(re.compile(r"\d{4}-\d{2}-\d{2}"))

    page.get_by_role("link", name="Last 30 days").click()
    expect(page).to_have_url(re.compile(r"since="))
    page.select_option("select[name=by]", "accelerator")
    page.click("button:has-text('Show')")
    expect(rows).to_have_count(2)
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("accelerator,jobs,gpu_hours")
    assert page.js_errors == []
