"""The UI works under its Content-Security-Policy (issue #13): headless Chromium walks every kind
of page — login, deck with an open row and a confirm dialog, create, jobs, operations, the admin's
index, list, form and backup page, the API docs — and Chromium reports no refused script, style or
eval (the ``page`` fixture fails any browser test that has one). htmx's polls run without eval:
they are held back while the tab is hidden and resume when it is shown again.
"""

from __future__ import annotations

import re

import pytest
from browser_support import login

pytestmark = pytest.mark.browser


def _csp_of(response) -> str:
    return response.headers.get("content-security-policy", "")


def test_every_kind_of_page_runs_under_the_policy(page, live_server, alice):
    from django.contrib.auth.models import User
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Job

    exp = services.create_experiment("t", name="csp-run", base_command="python train.py", gpus=2)
    from django.utils import timezone

    now = timezone.now()
    Job.objects.create(
        id=41, experiment_id="csp-run", job_name="csp-run", status="FAILED",
        submitted_at=now, first_seen=now, last_seen=now,
    )  # fmt: skip
    User.objects.create_superuser("root", password="root-pass-123")

    first = page.goto(f"{live_server.url}/accounts/login/")
    assert "script-src 'self'" in _csp_of(first)
    login(page, live_server)

    # the deck: open a row (htmx GET), then Start's confirm dialog (htmx GET into a <dialog>)
    row = page.locator("#deck tr.exp-row", has_text="csp-run")
    row.locator("a.exp-name").click()
    expect(page.locator("#deck tr.detail-row form.editor")).to_be_visible()
    page.locator("#deck tr.detail-row .panels").wait_for()
    row.locator("button.state-btn:has-text('Start')").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_contain_text("2 GPUs")
    confirm.locator("button:has-text('Back')").click()
    expect(confirm).to_be_hidden()

    for path in ["/experiments/new", "/jobs", "/operations"]:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert _csp_of(response), path

    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "root-pass-123")
    page.click("input[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.locator("#backup-module")).to_be_visible()
    for path in [
        "/admin/experiments/experiment/",
        f"/admin/experiments/experiment/{exp.pk}/change/",
        "/admin/backup/",
        "/api/docs/",
    ]:
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert _csp_of(response), path
        page.wait_for_load_state("networkidle")
    expect(page.locator("body")).to_contain_text("SkyDeck API")
    assert page.js_errors == []
    assert page.csp_violations == []


def test_polls_pause_while_the_tab_is_hidden(page, live_server, alice):
    """The panels' 5 s poll (gated in skydeck.js, not by an eval'd hx-trigger filter)."""
    from playwright.sync_api import expect

    from experiments import services

    services.create_experiment("t", name="csp-poll", base_command="run")
    login(page, live_server)
    page.locator("#deck tr.exp-row", has_text="csp-poll").locator("a.exp-name").click()
    expect(page.locator("#deck tr.detail-row .panels")).to_be_visible()

    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/panels" in r.url else None)
    page.wait_for_timeout(5_600)
    assert polls, "the panels did not poll while the tab was visible"

    page.evaluate(
        "Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'})"
    )
    polls.clear()
    page.wait_for_timeout(5_600)
    assert polls == [], "the panels polled while the tab was hidden"

    page.evaluate("delete document.visibilityState")  # back to the real (visible) state
    page.wait_for_timeout(5_600)
    assert polls, "the panels did not resume polling once the tab was shown"
    assert page.js_errors == []
