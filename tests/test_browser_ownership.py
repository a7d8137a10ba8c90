"""Headless Chromium drives issue 12's UI: Start/Stop confirmations, per-job Cancel, the create
dialog's "already used by" note and the reconciler pill.

SkyPilot is ``StubSkyPilot`` (tests/stub_skypilot.py) over real loopback HTTP: it records every
cancel request SkyDeck sends. Run with
``.venv/bin/pytest -p no:cacheprovider -m browser tests/test_browser_ownership.py``; screenshots
of the dialogs and the pill (light and dark) land in /tmp/shots/, a failing test also leaves one
in ``test-artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import login
from stub_skypilot import StubSkyPilot

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/shots")
X = "\u00d7"  # the multiplication sign of "2 nodes x 8 H100"


@pytest.fixture(autouse=True)
def isolated_skypilot(monkeypatch):
    """No real ~/.sky: the stub is the only SkyPilot SkyDeck can reach."""
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", "/nonexistent/config.yaml")


@pytest.fixture
def stub(settings):
    from fake_skypilot import job_record

    with StubSkyPilot() as stub:
        stub.fake.jobs = [
            job_record(4398, "shared-run", "RUNNING", user_name="dave"),
            job_record(4404, "shared-run", "RUNNING", user_name="alice"),
            job_record(4405, "other-run", "RUNNING", user_name="erin"),
        ]
        settings.SKYDECK_SKYPILOT_ENDPOINT = stub.endpoint
        yield stub


def job(job_id: int, name: str, user: str, status: str = "RUNNING"):
    from django.utils import timezone

    from experiments.models import Job

    now = timezone.now()
    return Job.objects.create(
        id=job_id, experiment_id=name, job_name=name, status=status, user_name=user,
        resources="2x[H100:8]", submitted_at=now, first_seen=now, last_seen=now,
    )  # fmt: skip


def row(page, name: str):
    return page.locator(f"#deck tr.exp-row:has(a.exp-name:text-is('{name}'))")


def shoot(page, name: str, locator=None) -> None:
    """Light and dark screenshots of ``locator`` (or the viewport)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(100)
        target = locator if locator is not None else page
        target.screenshot(path=str(SHOTS / f"{name}-{scheme}.png"))
    page.emulate_media(color_scheme="light")


def test_create_dialog_notes_someone_elses_active_jobs(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments.models import Experiment

    job(4398, "shared.name", "dave")
    job(4399, "shared.name", "dave", status="PENDING")
    login(page, live_server)
    page.click(".toolbar >> text=New experiment")
    dialog = page.locator("#create-dialog")
    expect(dialog).to_contain_text("starts stopped")
    dialog.locator("#id_name").press_sequentially("shared.name", delay=20)
    note = dialog.locator("#name-check")
    expect(note).to_contain_text(
        "2 active jobs by dave already use this name (jobs 4398 (dave), 4399 (dave))"
    )
    expect(note).to_contain_text("will not touch them")
    shoot(page, "create-name-check", dialog)
    dialog.locator("#id_name").fill("free.name")
    dialog.locator("#id_name").press("End")
    page.keyboard.type("2")
    expect(note).to_be_empty()

    # creating over them: the success note says so and offers Adopt
    dialog.locator("#id_name").fill("shared.name")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".created-jobs")).to_contain_text("creating did not touch them")
    exp = Experiment.objects.get(name="shared.name")
    assert exp.desired_state == "STOPPED"
    dialog.locator(".created-jobs a:has-text('Adopt')").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_contain_text(
        "Adopt jobs 4398 (dave), 4399 (dave) as shared.name's current run"
    )
    shoot(page, "adopt-confirm", confirm)
    confirm.locator("button:has-text('Adopt')").click()
    expect(confirm).to_be_hidden()
    exp.refresh_from_db()
    assert exp.desired_state == "RUNNING"
    assert set(exp.launches.values_list("job_id", "status")) == {
        (4398, "ADOPTED"),
        (4399, "ADOPTED"),
    }
    assert page.js_errors == []


def test_stop_lists_the_jobs_and_cancels_exactly_those(page, live_server, alice, stub):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment, Launch

    exp = services.create_experiment("t", name="shared-run", nodes=2, gpus=8, accelerator="H100")
    services.create_experiment("t", name="other-run")
    services.create_experiment("t", name="fresh-run", nodes=4, gpus=8, accelerator="H100")
    services.set_desired_state("t", [exp], "RUNNING")
    job(4398, "shared-run", "dave")
    job(4404, "shared-run", "alice")
    Launch.objects.create(experiment=exp, experiment_name=exp.name, status="LISTED", job_id=4404)
    job(4405, "other-run", "erin")
    login(page, live_server)

    row(page, "shared-run").locator("button.state-btn:has-text('Stop')").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_be_visible()
    expect(confirm.locator("h2")).to_have_text("Stop shared-run?")
    lines = confirm.locator(".confirm-lines li")
    expect(lines).to_have_count(2)
    expect(lines.nth(0)).to_contain_text("cancels job 4398 (dave) — not launched by SkyDeck")
    expect(lines.nth(1)).to_contain_text("cancels job 4404 (alice) — launched by SkyDeck")
    expect(confirm.locator("button[autofocus]")).to_be_focused()
    shoot(page, "stop-confirm", confirm)
    assert stub.fake.cancel_bodies == []

    # Escape dismisses it: nothing happened
    page.keyboard.press("Escape")
    expect(confirm).to_be_hidden()
    assert Experiment.objects.get(name="shared-run").desired_state == "RUNNING"

    row(page, "shared-run").locator("button.state-btn:has-text('Stop')").click()
    expect(confirm).to_be_visible()
    confirm.locator("button:has-text('Stop and cancel 2 jobs')").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text(
        "Stopped shared-run: cancelled jobs 4398 (dave), 4404 (alice)."
    )
    assert Experiment.objects.get(name="shared-run").desired_state == "STOPPED"
    assert stub.fake.cancel_bodies == [{"job_ids": [4398, 4404]}]  # not erin's 4405

    # bulk Start: one summary with the GPUs it requests
    for name in ("shared-run", "other-run", "fresh-run"):
        row(page, name).locator('input[name="ids"]').check()
    page.click("#bulk-form button:has-text('Start')")
    expect(confirm.locator(".confirm-summary")).to_have_text(
        f"Start 3 experiments: 4 nodes {X} 8 H100 = 32 GPUs (1 of 3 launch; 2 wait for active jobs "
        "SkyDeck did not launch)"
    )
    expect(confirm).to_contain_text(f"fresh-run: 4 nodes {X} 8 H100 = 32 GPUs")
    expect(confirm).to_contain_text("other-run: does not launch")
    shoot(page, "bulk-start-confirm", confirm)
    confirm.locator("button:has-text('Back')").click()
    expect(confirm).to_be_hidden()

    # without JavaScript the same confirmation is a page of its own (GET of the same URL)
    page.goto(f"{live_server.url}/experiments/{exp.pk}/desired?state=RUNNING")
    expect(page.locator("h1")).to_have_text("Start shared-run?")
    shoot(page, "start-page", page.locator("main"))
    assert page.js_errors == []


def test_cancel_one_job_names_its_user(page, live_server, alice, stub):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import OperationLog

    services.create_experiment("t", name="other-run", base_command="run")
    job(4405, "other-run", "erin")
    job(4300, "other-run", "erin", status="SUCCEEDED")
    login(page, live_server)

    # the expanded row: someone else's active job, marked, with Adopt and Cancel
    row(page, "other-run").locator("a.exp-name").click()
    panels = page.locator("#deck tr.detail-row .panels")
    expect(panels.locator(".adopt-notice")).to_contain_text(
        "1 active job by erin already uses this name (job 4405 (erin))"
    )
    jobs_table = panels.locator("table").first
    expect(jobs_table.locator("tr:has-text('4405') .owner-mark")).to_have_text(
        "not launched by SkyDeck"
    )
    expect(jobs_table.locator("tr:has-text('4300') .job-cancel")).to_have_count(0)
    shoot(page, "panels-adopt-notice", page.locator("#deck tr.detail-row"))
    jobs_table.locator("tr:has-text('4405') .job-cancel").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm.locator("h2")).to_have_text("Cancel job 4405 (erin)?")
    expect(confirm).to_contain_text("It was not launched by SkyDeck.")
    shoot(page, "cancel-confirm", confirm)
    confirm.locator("button:has-text('Cancel job')").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Cancelled job 4405 (erin)")
    assert stub.fake.cancel_bodies == [{"job_ids": [4405]}]
    assert OperationLog.objects.filter(operation="cancel", job_id=4405, actor="alice").exists()

    # on /jobs, the confirmation works the same; the form posts and comes back with a message
    job(4406, "loose-job", "frank")
    page.goto(f"{live_server.url}/jobs?active=true")
    page.locator("tr:has-text('4406') .job-cancel").click()
    expect(confirm).to_contain_text("Cancel job 4406 (frank)?")
    confirm.locator("button:has-text('Cancel job')").click()
    expect(page.locator("#messages")).to_contain_text("Cancelled job 4406 (frank)")
    assert stub.fake.cancel_bodies[-1] == {"job_ids": [4406]}
    shoot(page, "jobs-page", page.locator("main"))
    assert page.js_errors == []


def test_reconciler_pill_dry_run_and_paused(page, live_server, alice, settings):
    from playwright.sync_api import expect

    from experiments import control

    settings.SKYDECK_RECONCILE = "dry-run"
    login(page, live_server)
    pill = page.locator(".pill.reconciler")
    expect(pill).to_have_text("Reconciler: dry-run")
    expect(pill).to_have_attribute(
        "title", "Reconciler dry-run: SKYDECK_RECONCILE is dry-run: it only plans"
    )
    shoot(page, "pill-dry-run", page.locator(".topbar"))

    # a restore pauses it: the pill says so after the next refresh and offers Resume
    control.pause_reconciler("restore", "restored from backup-2026-01-01.json")
    page.evaluate("htmx.trigger(document.body, 'refresh-deck')")
    expect(pill).to_have_text("Reconciler: paused")
    page.locator(".status a:has-text('Resume')").click()
    confirm = page.locator("#confirm-dialog")
    expect(confirm).to_contain_text("Paused since restored from backup-2026-01-01.json")
    shoot(page, "resume-confirm", confirm)
    confirm.locator("button:has-text('Resume')").click()
    expect(pill).to_have_text("Reconciler: dry-run")
    expect(page.locator("#messages")).to_contain_text("Reconciler resumed")
    assert control.reconciler_mode().mode == "dry-run"
    assert page.js_errors == []


def test_a_read_only_account_sees_no_write_controls(page, live_server, alice):
    """The services refuse a read-only user's writes (403); the pages do not offer them."""
    from django.contrib.auth.models import Group
    from playwright.sync_api import expect

    from experiments import services

    alice.groups.add(Group.objects.get_or_create(name="read-only")[0])
    exp = services.create_experiment("t", name="look-only", base_command="run")
    group = services.create_group("t", "sweep")
    services.add_to_group("t", group, [exp])
    job(4500, "look-only", "dave")
    login(page, live_server)
    expect(page.locator(".read-only-badge")).to_be_visible()
    target = row(page, "look-only")
    expect(target).to_be_visible()
    expect(target.locator(".state-btn")).to_be_hidden()
    expect(page.locator(".bulkbar")).to_be_hidden()
    expect(page.locator(".toolbar-actions")).to_be_hidden()
    expect(page.locator(".group-tools")).to_be_hidden()
    target.locator("a.exp-name").click()
    expect(page.locator(".panel-title:has-text('Recent jobs')")).to_be_visible()
    expect(page.locator(".job-cancel")).to_be_hidden()
    expect(page.locator(".editor .form-actions")).to_be_hidden()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "read-only.png"), full_page=False)
    assert page.js_errors == []
