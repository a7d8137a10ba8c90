"""Headless Chromium: the Failures page, its window and its link to a bucket's jobs (issue 16)."""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from browser_support import ARTIFACTS, login

from experiments import triage

pytestmark = pytest.mark.browser


def _failed(job_id: int, name: str, reason: str, status: str = "FAILED", days_ago: float = 1):
    from django.utils import timezone

    from experiments.models import Job

    now = timezone.now()
    Job.objects.create(
        id=job_id,
        experiment_id=name,
        job_name=name,
        status=status,
        user_name="alice" if job_id % 2 else "bob",
        failure_reason=reason,
        failure_signature=triage.signature(status, reason),
        submitted_at=now - timedelta(days=days_ago),
        ended_at=now - timedelta(days=days_ago) + timedelta(hours=1),
        first_seen=now,
        last_seen=now,
    )


def test_failures_page_buckets_and_links_to_the_jobs(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services

    services.create_experiment("tester", name="lr-sweep.a", base_command="python train.py")
    for i in range(4):
        _failed(
            10 + i,
            "lr-sweep.a" if i % 2 else f"lr-sweep.b{i}",
            f"CUDA out of memory. Tried to allocate {i + 1}.50 GiB (GPU {i}; 79.15 GiB total "
            f"capacity) on node 10.0.{i}.7",
        )
    _failed(20, "data-prep", "OSError: [Errno 28] No space left on device: '/data/shard-7.bin'")
    _failed(
        21,
        "prov",
        "Failed to provision all possible launchable resources: 8x H100:8",
        "FAILED_NO_RESOURCE",
    )
    _failed(30, "old", "an old failure", days_ago=20)

    login(page, live_server)
    page.click("nav.mainnav a:has-text('Failures')")
    expect(page).to_have_url(re.compile(r"/failures$"))
    rows = page.locator("table.failures tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first.locator("code")).to_contain_text(
        "FAILED: CUDA out of memory. Tried to allocate <size>"
    )
    expect(page.locator(".page-head")).to_contain_text("6 failed jobs")
    if os.environ.get("SKYDECK_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "failures.png"), full_page=True)

    page.select_option("select[name=days]", "30")
    page.click("button:has-text('Show')")
    expect(rows).to_have_count(4)
    expect(page).to_have_url(re.compile(r"/failures\?days=30$"))

    rows.first.locator("td.num a").click()
    expect(page).to_have_url(re.compile(r"/jobs\?failure_signature=FAILED%3A"))
    expect(page.locator("a[href^='/jobs/'][href$='/logs']")).to_have_count(4)
    assert page.js_errors == []


def test_stop_all_of_a_bucket_confirms_in_the_dialog_and_stops_its_experiments(
    page, live_server, alice
):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment

    made = [
        services.create_experiment("tester", name=n, nodes=1, gpus=8, accelerator="H100")
        for n in ("sweep.a", "sweep.b", "steady")
    ]
    services.set_desired_state("tester", made, "RUNNING")
    _failed(10, "sweep.a", "NCCL watchdog timeout after 600000 ms on 10.0.0.7")
    _failed(11, "sweep.b", "NCCL watchdog timeout after 1800000 ms on 10.0.0.9")
    _failed(12, "steady", "disk quota exceeded")

    login(page, live_server)
    page.goto(f"{live_server.url}/failures")
    row = page.locator("table.failures tbody tr", has_text="NCCL watchdog timeout")
    row.get_by_role("link", name=re.compile("Stop all 2 experiments")).click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-title")).to_have_text("Stop 2 experiments?")
    expect(dialog).to_contain_text("sweep.a")
    expect(dialog).not_to_contain_text("steady")
    if os.environ.get("SKYDECK_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "failures-stop-all.png"), full_page=True)
    dialog.get_by_role("button", name="Stop").click()
    expect(page).to_have_url(re.compile(r"/failures$"))
    expect(page.locator(".messages")).to_contain_text("Stopped 2 experiments")
    states = dict(Experiment.objects.values_list("name", "desired_state"))
    assert states == {"sweep.a": "STOPPED", "sweep.b": "STOPPED", "steady": "RUNNING"}
    assert page.js_errors == []
