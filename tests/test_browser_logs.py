"""Headless Chromium opens a job's log from the experiment's expanded job list (issue #8).

SkyPilot is a real local HTTP server (``LogServer`` from test_job_logs) streaming lines slowly and
recording when SkyDeck hangs up. Run with
``.venv/bin/pytest -p no:cacheprovider -m browser tests/test_browser_logs.py``; a failing test
leaves a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import re

import pytest
from browser_support import login
from test_job_logs import LogServer

pytestmark = pytest.mark.browser

AT_BOTTOM = "o => o.scrollHeight - o.scrollTop - o.clientHeight <= 24"
LINES_SHOWN = "o => o.textContent.split('\\n').length"


@pytest.fixture(autouse=True)
def isolated_skypilot(monkeypatch):
    """No real ~/.sky; keep-alives every 0.3 s so a closed tab is noticed within the test."""
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", "/nonexistent/config.yaml")
    monkeypatch.setattr("syncing.joblogs.KEEPALIVE_SECONDS", 0.3)


def log_lines(n: int) -> list[str]:
    lines = ["\x1b[32mStarting job\x1b[0m", '<sky-payload type="rich_status">{}</sky-payload>']
    lines += ["<b>bold</b> & <script>window.pwned = 1</script>"]
    lines += [f"step {i:04d} loss={1 / (i + 1):.4f}" for i in range(n)]
    return lines


def test_job_log_streams_scrolls_and_stops(page, live_server, alice, settings):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Job

    services.create_experiment("tester", name="bt-log", base_command="python train.py")
    now = timezone.now()
    Job.objects.create(
        id=4242,
        experiment_id="bt-log",
        job_name="bt-log",
        status="RUNNING",
        submitted_at=now,
        first_seen=now,
        last_seen=now,
    )

    with LogServer(log_lines(3000), interval=0.01) as first, LogServer(log_lines(3)) as second:
        settings.SKYDECK_SKYPILOT_ENDPOINT = first.url
        login(page, live_server)

        # --- open the log from the experiment's expanded job list ----------------------------
        page.locator("#deck tr.exp-row:has(a.exp-name:text-is('bt-log')) a.exp-name").click()
        panels = page.locator("#deck tr.detail-row .panels")
        expect(panels).to_contain_text("4242")
        panels.locator("a.job-log-link").click()
        expect(page).to_have_url(re.compile(r"/jobs/4242/logs$"))
        expect(page.locator("h1")).to_have_text("Log of job 4242")

        viewer = page.locator("[data-log-viewer]")
        out = page.locator("[data-log-output]")
        status = page.locator("[data-log-status]")
        expect(status).to_contain_text("following (job RUNNING)")
        expect(out).to_contain_text("step 0150")
        text = out.inner_text()
        # cleaned (no colours, no control payload) and shown as text, never as markup
        assert text.startswith("Starting job\n<b>bold</b> & <script>window.pwned = 1</script>\n")
        assert "sky-payload" not in text and "\x1b" not in text
        assert out.locator("b, script").count() == 0
        assert page.evaluate("window.pwned") is None

        # --- auto-scroll while at the bottom; paused once the reader scrolls up -----------------
        assert out.evaluate("o => o.scrollHeight > o.clientHeight * 2")
        expect(out).to_contain_text("step 0200")
        assert out.evaluate(AT_BOTTOM)
        out.evaluate("o => { o.scrollTop = 0; }")
        expect(page.locator("[data-log-scroll]")).to_be_visible()
        # new lines must arrive while scrolled up (else staying at the top would prove nothing)
        shown = out.evaluate(LINES_SHOWN)
        page.wait_for_function(
            f"n => ({LINES_SHOWN})(document.querySelector('[data-log-output]')) >= n + 50",
            arg=shown,
        )
        assert out.evaluate("o => o.scrollTop") == 0
        out.evaluate("o => { o.scrollTop = o.scrollHeight; }")
        expect(page.locator("[data-log-scroll]")).to_be_hidden()
        expect(out).to_contain_text("step 0400")
        assert out.evaluate(AT_BOTTOM)

        # --- Stop closes the stream, on SkyPilot too ------------------------------------------
        assert not first.disconnected.is_set()
        page.click("[data-log-stop]")
        expect(status).to_have_text("ended: stopped.")
        expect(viewer).to_have_attribute("data-state", "ended")
        assert first.disconnected.wait(5), "SkyPilot kept streaming after Stop"
        expect(page.locator("[data-log-stop]")).to_have_text("Restart")

        # --- a new tail, then closing the view ends that stream as well -----------------------
        settings.SKYDECK_SKYPILOT_ENDPOINT = second.url
        page.select_option("[data-log-tail]", "50")
        expect(page).to_have_url(re.compile(r"/jobs/4242/logs\?tail=50$"))
        expect(out).to_contain_text("step 0002")
        assert "step 0400" not in out.inner_text()
        expect(status).to_contain_text("following")
        assert second.bodies == [{"job_id": 4242, "follow": True, "tail": 50, "controller": False}]
        page.goto(f"{live_server.url}/jobs")
        assert second.disconnected.wait(5), "closing the view left SkyPilot's stream open"

    assert page.js_errors == []
