"""Headless Chromium: /jobs sorts by its headers and refreshes itself; the log view finds,
wraps and downloads.

Run with ``.venv/bin/pytest -p no:cacheprovider -m browser tests/test_browser_jobs.py``.
Screenshots: test-artifacts/jobs-*.png. SkyPilot's log is ``LogServer`` (test_job_logs): a
real loopback HTTP server.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from browser_support import ARTIFACTS, login
from test_job_logs import LogServer

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def isolated_skypilot(monkeypatch):
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", "/nonexistent/config.yaml")


def seed_jobs() -> None:
    from django.utils import timezone

    from experiments import services
    from experiments.models import Job

    services.create_experiment("tester", name="bt-jobs", base_command="python train.py")
    now = timezone.now()
    for i, (status, user) in enumerate(
        [("RUNNING", "carol"), ("SUCCEEDED", "alice"), ("FAILED", "bob"), ("PENDING", "dave")]
    ):
        Job.objects.create(
            id=7001 + i,
            experiment_id="bt-jobs",
            job_name="bt-jobs",
            status=status,
            user_name=user,
            submitted_at=now - timedelta(minutes=10 * i),
            first_seen=now,
            last_seen=now,
            nodes=1 + i,
            gpus=8,
            resources=f"{1 + i}x[H100:8]",
            recovery_count=i,
        )


def label(status: str) -> re.Pattern:
    """A status as the row's badge reads it (lower case)."""
    return re.compile(rf"\b{status}\b", re.IGNORECASE)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"jobs-{name}.png"), full_page=True)


def test_jobs_sort_by_clicking_a_header_twice(page, live_server, alice):
    from playwright.sync_api import expect

    seed_jobs()
    login(page, live_server)
    page.goto(f"{live_server.url}/jobs")
    submitted = page.locator("th:has(a[data-sort='submitted_at'])")
    expect(submitted).to_have_attribute("aria-sort", "descending")  # the default order

    page.locator("a[data-sort='user']").click()
    expect(page).to_have_url(re.compile(r"/jobs\?sort=user$"))
    user_head = page.locator("th:has(a[data-sort='user'])")
    expect(user_head).to_have_attribute("aria-sort", "ascending")
    expect(page.locator("#jobs-live tbody .job-user")).to_have_text(
        ["alice", "bob", "carol", "dave"]
    )
    # keyboard: the head is a link, focus it and press Enter
    page.locator("a[data-sort='user']").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/jobs\?sort=-user$"))
    expect(page.locator("th:has(a[data-sort='user'])")).to_have_attribute("aria-sort", "descending")
    expect(page.locator("th:has(a[data-sort='user']) .sort-arrow")).to_have_text("▼")
    expect(page.locator("#jobs-live tbody .job-user")).to_have_text(
        ["dave", "carol", "bob", "alice"]
    )
    assert page.locator("th[aria-sort]").count() == 1
    shot(page, "sorted")
    page.emulate_media(color_scheme="dark")
    shot(page, "sorted-dark")
    page.emulate_media(color_scheme="light")

    # an unknown column: said on the page, default order kept
    page.goto(f"{live_server.url}/jobs?sort=colour")
    expect(page.locator(".sort-notice")).to_contain_text('Unknown sort column "colour"')
    expect(page.locator("th:has(a[data-sort='submitted_at'])")).to_have_attribute(
        "aria-sort", "descending"
    )
    assert page.js_errors == []


def test_jobs_refresh_themselves_without_touching_what_is_typed(page, live_server, alice, settings):
    from playwright.sync_api import expect

    from experiments.models import Job

    settings.SKYDECK_LIST_REFRESH_SECONDS = 1
    seed_jobs()
    login(page, live_server)
    page.goto(f"{live_server.url}/jobs?sort=id")
    status = page.locator("[data-live-status]")
    expect(status).to_contain_text(re.compile(r"updated \d\d:\d\d:\d\d"))
    row = page.locator("#jobs-live tbody tr").first
    expect(row).to_contain_text(label("RUNNING"))

    # typing in the filters pauses the refresh, and says so
    search = page.locator("form.filters input[name='q']")
    search.click()
    search.type("bt-j")
    Job.objects.filter(pk=7001).update(status="SUCCEEDED")
    expect(status).to_have_text("paused: editing the filters", timeout=5000)
    page.wait_for_timeout(1500)
    expect(row).to_contain_text(label("RUNNING"))  # not swapped while paused
    shot(page, "paused")

    # focus leaves the form: the next poll shows the new status; the typed text stays
    page.locator("h1").click()
    expect(row).to_contain_text(label("SUCCEEDED"), timeout=5000)
    expect(search).to_have_value("bt-j")
    expect(status).to_contain_text("updated")
    shot(page, "refreshed")

    # a swap keeps keyboard focus on the same link of the new table
    page.locator("#jobs-live a[href='/jobs/7004/logs']").focus()
    Job.objects.filter(pk=7004).update(status="RUNNING")
    expect(page.locator("#jobs-live tbody tr").nth(3)).to_contain_text(
        label("RUNNING"), timeout=5000
    )
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/jobs/7004/logs"
    assert page.evaluate("document.getElementById('jobs-live').contains(document.activeElement)")

    # selected text holds the table still
    page.locator("#jobs-live tbody tr").nth(1).locator(".job-user").select_text()
    Job.objects.filter(pk=7002).update(status="FAILED")
    expect(status).to_have_text("paused: text is selected", timeout=5000)
    expect(page.locator("#jobs-live tbody tr").nth(1)).to_contain_text(label("SUCCEEDED"))
    page.evaluate("window.getSelection().removeAllRanges()")
    expect(page.locator("#jobs-live tbody tr").nth(1)).to_contain_text(
        label("FAILED"), timeout=5000
    )

    # auto-refresh off: remembered across a reload, and nothing changes by itself
    page.locator("[data-live-toggle]").uncheck()
    expect(status).to_have_text("auto-refresh off")
    page.reload()
    expect(page.locator("[data-live-toggle]")).not_to_be_checked()
    Job.objects.filter(pk=7003).update(status="CANCELLED")
    page.wait_for_timeout(2000)
    expect(page.locator("#jobs-live tbody tr").nth(2)).not_to_contain_text(label("CANCELLED"))
    page.locator("[data-live-toggle]").check()
    expect(page.locator("#jobs-live tbody tr").nth(2)).to_contain_text(
        label("CANCELLED"), timeout=5000
    )
    assert page.js_errors == []


def test_log_view_finds_wraps_and_downloads(page, live_server, alice, settings, tmp_path):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Job

    services.create_experiment("tester", name="bt-log", base_command="python train.py")
    now = timezone.now()
    Job.objects.create(
        id=4343,
        experiment_id="bt-log",
        job_name="bt-log",
        status="SUCCEEDED",
        submitted_at=now,
        first_seen=now,
        last_seen=now,
    )
    long = "x" * 400
    lines = [f"step {i:04d} loss={1 / (i + 1):.4f}" for i in range(300)]
    lines[10] += " warning: slow " + long
    lines[150] += " WARNING again"
    lines[290] += " warning last"
    with LogServer(lines, finish=True) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.url
        login(page, live_server)
        page.goto(f"{live_server.url}/jobs/4343/logs")
        out = page.locator("[data-log-output]")
        expect(out).to_contain_text("step 0299")
        count = page.locator("[data-log-count]")

        # find: "/" focuses the box, matches are counted, Enter / Shift+Enter and n / N move
        out.click()
        page.keyboard.press("/")
        search = page.locator("[data-log-search]")
        expect(search).to_be_focused()
        page.keyboard.type("warning")
        expect(count).to_have_text("1/3")  # any case
        highlighted = page.evaluate("CSS.highlights.get('log-match').size")
        assert highlighted == 3
        page.keyboard.press("Enter")
        expect(count).to_have_text("2/3")
        current = page.evaluate(
            "[...CSS.highlights.get('log-current')][0].startContainer.data"
            ".slice([...CSS.highlights.get('log-current')][0].startOffset).split('\\n')[0]"
        )
        assert current == "WARNING again"
        # the current match is scrolled into the log's view
        in_view = page.evaluate(
            """() => { const r = [...CSS.highlights.get('log-current')][0].getBoundingClientRect();
                      const o = document.querySelector('[data-log-output]').getBoundingClientRect();
                      return r.top >= o.top && r.bottom <= o.bottom; }"""
        )
        assert in_view
        page.keyboard.press("Shift+Enter")
        expect(count).to_have_text("1/3")
        page.keyboard.press("Shift+Enter")
        expect(count).to_have_text("3/3")  # wraps around
        out.focus()
        page.keyboard.press("n")
        expect(count).to_have_text("1/3")
        page.keyboard.press("N")
        expect(count).to_have_text("3/3")
        shot(page, "log-find")
        page.emulate_media(color_scheme="dark")
        shot(page, "log-find-dark")
        page.emulate_media(color_scheme="light")

        # wrap: on by default; off makes the long line scroll sideways, and is remembered
        wrap = page.locator("[data-log-wrap]")
        expect(wrap).to_be_checked()
        assert page.evaluate("o => getComputedStyle(o).whiteSpace", out.element_handle()) == (
            "pre-wrap"
        )
        wrap.uncheck()
        assert page.evaluate("o => getComputedStyle(o).whiteSpace", out.element_handle()) == "pre"
        assert page.evaluate("o => o.scrollWidth > o.clientWidth", out.element_handle())
        shot(page, "log-nowrap")

        search.fill("no such text")
        expect(count).to_have_text("0/0")

        # download: the whole log as a file
        with page.expect_download() as info:
            page.locator("[data-log-download]").click()
        download = info.value
        assert download.suggested_filename == "bt-log-4343.log"
        saved = tmp_path / "log.txt"
        download.save_as(saved)
        assert Path(saved).read_text() == "".join(line + "\n" for line in lines)
        assert server.bodies[-1] == {
            "job_id": 4343,
            "follow": False,
            "tail": None,
            "controller": False,
        }

        page.reload()
        expect(page.locator("[data-log-wrap]")).not_to_be_checked()
    assert page.js_errors == []
