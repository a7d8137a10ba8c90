"""Headless Chromium: Compare from the deck's bulk bar, the highlighted lr row, the switch.

Screenshots land in test-artifacts/compare-*.png (light and dark).
"""

from __future__ import annotations

import re

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser


def row(page, name: str):
    return page.locator(f"#deck tr.exp-row:has(a.exp-name:text-is('{name}'))")


def _shots(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.screenshot(path=str(ARTIFACTS / f"compare-{name}-{scheme}.png"), full_page=True)
    page.emulate_media(color_scheme="light")


def test_compare_the_selected_rows_and_show_only_differences(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services

    common = {"nodes": 1, "gpus": 8, "accelerator": "H100", "base_command": "uv run train.py"}
    for name, lr in (("cmp-a", 0.001), ("cmp-b", 0.01), ("cmp-c", 0.1)):
        services.create_experiment(
            "t", name=name, flags={"trainer.lr": lr, "batch": 131072}, git_ref="main", **common
        )
    services.create_experiment("t", name="cmp-other", flags={"trainer.lr": 1.0}, **common)

    login(page, live_server)
    compare = page.locator("#bulk-form button:has-text('Compare')")
    row(page, "cmp-a").locator('input[name="ids"]').check()
    expect(compare).to_be_disabled()
    expect(compare).to_have_attribute("title", re.compile("Select 2 to 20"))
    row(page, "cmp-b").locator('input[name="ids"]').check()
    row(page, "cmp-c").locator('input[name="ids"]').check()
    expect(compare).to_be_enabled()
    expect(compare).to_have_attribute("title", re.compile("Compare the 3 selected"))
    _shots(page, "deck")
    compare.click()

    expect(page).to_have_url(re.compile(r"/compare\?e=cmp-a,cmp-b,cmp-c$"))
    table = page.locator("table.cmp-table")
    heads = table.locator("thead th.cmp-exp a")
    expect(heads).to_have_text(["cmp-a", "cmp-b", "cmp-c"])
    lr = table.locator('tr[data-field="flags.trainer.lr"]')
    expect(lr).to_have_class(re.compile(r"\bcmp-differs\b"))
    expect(lr.locator("td")).to_have_text(["0.001", "0.01", "0.1"])
    batch = table.locator('tr[data-field="flags.batch"]')
    expect(batch.locator("td")).to_have_text(["131072"] * 3)
    expect(batch).not_to_have_class(re.compile(r"\bcmp-differs\b"))
    # the highlight is visible: the differing row's cells are not the plain surface colour
    colours = page.evaluate(
        """() => [
          getComputedStyle(document.querySelector('tr[data-field="flags.trainer.lr"] td')).backgroundColor,
          getComputedStyle(document.querySelector('tr[data-field="flags.batch"] td')).backgroundColor,
        ]"""
    )
    assert colours[0] != colours[1]
    # the first column stays put while the table scrolls sideways
    position = page.evaluate(
        "getComputedStyle(document.querySelector('tr[data-field=\"flags.batch\"] th')).position"
    )
    assert position == "sticky"
    _shots(page, "all")

    page.get_by_role("switch", name="Only differences").click()
    expect(page).to_have_url(re.compile(r"[?&]diff=1(&|$)"))
    expect(page.get_by_role("switch", name="Only differences")).to_have_attribute(
        "aria-checked", "true"
    )
    expect(table.locator('tr[data-field="flags.trainer.lr"]')).to_be_visible()
    expect(table.locator('tr[data-field="flags.batch"]')).to_have_count(0)
    expect(table.locator('tr[data-field="git_ref"]')).to_have_count(0)
    expect(page.locator("#cmp-summary")).to_contain_text("only those shown")
    _shots(page, "differences")

    page.get_by_role("switch", name="Only differences").click()
    expect(page).not_to_have_url(re.compile("diff=1"))
    expect(table.locator('tr[data-field="flags.batch"]')).to_have_count(1)
    assert page.js_errors == []


def test_a_bad_comparison_is_a_clear_message(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services

    services.create_experiment("t", name="lonely")
    login(page, live_server)
    answer = page.goto(f"{live_server.url}/compare?e=lonely,missing-one")
    assert answer.status == 400
    expect(page.locator(".notice[role=alert]")).to_have_text("No such experiment: missing-one.")
    _shots(page, "error")


def test_a_wide_comparison_keeps_the_field_column_in_view(page, live_server, alice):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment, Job

    now = timezone.now()
    names = []
    for i in range(8):
        e = services.create_experiment(
            "t", name=f"wide-{i}", nodes=1 + i % 2, gpus=8, accelerator="H100",
            base_command="uv run ./tools/train.py --config configs/long/path/to/a/config.yaml",
            flags={"trainer.lr": 0.001 * (i + 1), "trainer.batch_size": 131072, f"extra{i}": i},
        )  # fmt: skip
        Job.objects.create(
            id=700 + i, experiment_id=e.name, job_name=e.name, status="FAILED",
            failure_reason="CUDA out of memory. Tried to allocate 2.00 GiB",
            failure_signature="FAILED: CUDA out of memory. Tried to allocate <size>",
            submitted_at=now, first_seen=now, last_seen=now,
        )  # fmt: skip
        names.append(e.name)
    Experiment.objects.refresh_current_state()
    page.set_viewport_size({"width": 900, "height": 900})
    login(page, live_server)
    page.goto(f"{live_server.url}/compare?e={','.join(names)}")
    expect(page.locator("table.cmp-table thead th.cmp-exp")).to_have_count(8)
    failure = page.locator('tr[data-field="last_failure"] td').first
    expect(failure).to_have_text("FAILED: CUDA out of memory. Tried to allocate <size>")
    label = page.locator('tr[data-field="nodes"] th')
    before = label.bounding_box()["x"]
    page.locator(".cmp-wrap").evaluate("el => { el.scrollLeft = 600; }")
    assert page.locator(".cmp-wrap").evaluate("el => el.scrollLeft") > 0
    assert label.bounding_box()["x"] == before
    _shots(page, "wide")
