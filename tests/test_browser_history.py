"""Config history in a browser: edit a flag, see the diff in History, restore revision 1.

Run with ``.venv/bin/python -m pytest -m browser tests/test_browser_history.py``; leaves
screenshots in test-artifacts/history-*.png.
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, login
from django.urls import reverse

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_edit_see_the_diff_and_restore(page, live_server, alice, scheme):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment, ExperimentRevision, Job, Launch

    page.emulate_media(color_scheme=scheme)
    exp = services.create_experiment(
        "tester",
        name="lr-sweep",
        nodes=1,
        gpus=8,
        accelerator="H100",
        base_command="uv run ./tools/train.py",
        flags={"trainer.lr": 0.001, "trainer.seed": 7},
    )
    login(page, live_server)
    page.goto(f"{live_server.url}{reverse('experiment_detail', args=[exp.pk])}")
    editor = page.locator("form.editor")
    flag = editor.locator('input[name="flag_value"]').first
    expect(flag).to_have_value("0.001")
    flag.fill("0.003")
    editor.locator("button:has-text('Save')").click()
    expect(editor.locator(".notice.success")).to_have_text("Saved.")
    assert Experiment.objects.get(pk=exp.pk).flags["trainer.lr"] == 0.003

    page.locator("a.history-link").click()
    expect(page.locator("h1")).to_contain_text("Config history")
    row = page.locator(".history-table tr.hist-changed")
    expect(row).to_have_count(1)
    expect(row.locator(".hist-field")).to_contain_text("trainer.lr")
    expect(row.locator(".hist-old")).to_have_text("0.001")
    expect(row.locator(".hist-new")).to_have_text("0.003")
    expect(page.locator("#r2 .message")).to_have_text("trainer.lr 0.001 → 0.003")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"history-diff-{scheme}.png"), full_page=True)

    # any two: r2 against r1 through the picker (htmx swaps the history in place)
    page.locator('.history-pick input[name="a"]').fill("2")
    page.locator('.history-pick input[name="b"]').fill("1")
    page.locator(".history-pick button").click()
    expect(page.locator(".history-diff h2")).to_have_text("r2 → r1")
    expect(page.locator(".history-table tr.hist-changed .hist-new")).to_have_text("0.001")
    assert "a=2" in page.url and "b=1" in page.url

    page.locator("#r1 button:has-text('Restore this revision')").click()
    expect(page.locator(".notice.success")).to_contain_text("Restored r1 of lr-sweep as r3.")
    expect(page.locator("#r3 .message")).to_have_text("restored r1: trainer.lr 0.003 → 0.001")
    expect(page.locator("#r3 .history-actions")).to_contain_text("current")
    page.screenshot(path=str(ARTIFACTS / f"history-restored-{scheme}.png"), full_page=True)
    revision = ExperimentRevision.objects.get(experiment=exp, number=3)
    assert revision.restored_from == 1 and revision.source == "restore"

    # a job launched with r2: its row links the config it ran with
    now = timezone.now()
    Job.objects.create(
        id=4242,
        experiment_id="lr-sweep",
        job_name="lr-sweep",
        status="SUCCEEDED",
        submitted_at=now,
        first_seen=now,
        last_seen=now,
    )
    Launch.objects.create(
        experiment=exp,
        experiment_name="lr-sweep",
        status="LISTED",
        job_id=4242,
        revision=ExperimentRevision.objects.get(experiment=exp, number=2),
    )
    page.locator(".crumbs a", has_text="lr-sweep").click()
    expect(page.locator("form.editor input[name='flag_value']").first).to_have_value("0.001")
    saved = Experiment.objects.get(pk=exp.pk)
    assert saved.desired_state == "STOPPED" and saved.name == "lr-sweep"
    link = page.locator(".recent-jobs a.job-config-link")
    expect(link).to_have_text("config r2")
    page.locator(".recent-jobs").screenshot(path=str(ARTIFACTS / f"history-job-{scheme}.png"))
    link.click()
    expect(page.locator(".history-diff h2")).to_have_text("r1 → r2")
    expect(page.locator("#r2")).to_have_class("is-selected")
    assert not page.js_errors
