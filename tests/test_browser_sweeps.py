"""Headless Chromium drives a sweep end to end: from an experiment open Sweep, add trainer.lr
``1e-4..1e-2 x3 log``, Preview (3 rows, the GPU total), Create, the deck's new group (3 STOPPED
rows under an ``lr`` column), then bulk Start through the confirmation with the GPUs it requests.

Run with ``.venv/bin/pytest -p no:cacheprovider -m browser tests/test_browser_sweeps.py``;
screenshots land in ``test-artifacts/sweep-*.png``.
"""

from __future__ import annotations

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser

X = "\u00d7"


@pytest.fixture(autouse=True)
def isolated_skypilot(monkeypatch):
    """No real ~/.sky: nothing here may reach a SkyPilot server."""
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", "/nonexistent/config.yaml")


def shoot(page, name: str, locator=None) -> None:
    """Light and dark screenshots of ``locator`` (or the page)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_timeout(100)
        path = str(ARTIFACTS / f"sweep-{name}-{scheme}.png")
        if locator is None:  # the whole page, from its top: the sticky header stays on top
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=path, full_page=True)
        else:
            locator.screenshot(path=path)
    page.emulate_media(color_scheme="light")


def test_sweep_preview_create_and_bulk_start(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment

    base = services.create_experiment(
        "t",
        name="base",
        nodes=1,
        gpus=8,
        accelerator="H100",
        base_command="uv run ./tools/train.py",
        flags={"trainer.lr": 0.1, "seed": 1},
    )
    services.create_experiment("t", name="base.lr0.01")  # taken: the sweep's third is renamed
    login(page, live_server)
    page.goto(f"{live_server.url}/experiments/{base.pk}/")
    page.click("a:has-text('Sweep…')")
    expect(page.locator("h1")).to_have_text("Sweep base")

    form = page.locator("#sweep-form")
    axes = form.locator("fieldset.sweep-axes")
    axes.locator('input[name="axis_key"]').first.fill("trainer.lr")
    axes.locator('input[name="axis_spec"]').first.fill("1e-4..1e-2 x3 log")
    axes.locator("button:has-text('+ Add flag')").click()  # a second, empty row: ignored
    expect(axes.locator('input[name="axis_key"]')).to_have_count(2)
    expect(form.locator("#id_new_group")).to_have_value("base sweep")

    form.locator("button:has-text('Preview')").click()
    preview = page.locator("#sweep-preview")
    expect(preview.locator("tr.sweep-item")).to_have_count(3)
    expect(preview.locator("[data-sweep-total]")).to_have_text(
        "3 experiments, 8 GPUs each, 24 GPUs if all started"
    )
    expect(preview.locator("tr.sweep-item").first).to_contain_text("base.lr0.0001")
    expect(preview.locator("tr.sweep-item").first).to_contain_text(f"1 node {X} 8 H100 = 8 GPUs")
    expect(preview.locator("tr.sweep-item").nth(2)).to_contain_text(
        "base.lr0.01: name taken \u2192 renamed base.lr0.01.2"
    )
    assert Experiment.objects.count() == 2  # a preview creates nothing
    shoot(page, "preview")

    page.locator("#sweep-form button:has-text('Create')").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.locator("#messages")).to_contain_text("Created 3 experiments in group base sweep")
    section = page.locator("section.group", has_text="base sweep")
    rows = section.locator("tr.exp-row")
    expect(rows).to_have_count(3)
    expect(section.locator("th.c-flag", has_text="lr").first).to_be_visible()
    for name in ("base.lr0.0001", "base.lr0.001", "base.lr0.01.2"):
        assert Experiment.objects.get(name=name).desired_state == "STOPPED"
    shoot(page, "deck", section)

    for i in range(3):
        rows.nth(i).locator('input[name="ids"]').check()
    page.click("#bulk-form button:has-text('Start')")
    confirm = page.locator("#confirm-dialog")
    expect(confirm.locator(".confirm-summary")).to_have_text(
        f"Start 3 experiments: 3 nodes {X} 8 H100 = 24 GPUs"
    )
    expect(confirm).to_contain_text(f"base.lr0.001: 1 node {X} 8 H100 = 8 GPUs")
    shoot(page, "start-confirm", confirm)
    confirm.locator("form[data-confirm-form] button[type=submit]").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Started 3 experiments")
    for name in ("base.lr0.0001", "base.lr0.001", "base.lr0.01.2"):
        assert Experiment.objects.get(name=name).desired_state == "RUNNING"
    for name in ("base", "base.lr0.01"):
        assert Experiment.objects.get(name=name).desired_state == "STOPPED"
    assert page.js_errors == []


def test_sweep_errors_show_on_the_form(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments.models import Experiment

    login(page, live_server)
    page.click("a:has-text('New sweep')")
    expect(page.locator("h1")).to_have_text("New sweep")
    page.fill("#id_name", "fresh")
    page.fill('input[name="axis_key"]', "trainer.lr")
    page.fill('input[name="axis_spec"]', "0..1 x3 log")
    page.locator("#sweep-form button:has-text('Preview')").click()
    expect(page.locator("#sweep-form .sweep-axes .errorlist")).to_contain_text(
        "trainer.lr: a log range needs positive ends"
    )
    shoot(page, "errors")
    assert Experiment.objects.count() == 0
    assert page.js_errors == []
