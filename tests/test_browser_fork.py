"""Headless Chromium: Fork from here on a checkpoint row, edit a flag, create, and see the
lineage on both sides ("forked from X @ epoch 120", "forks: 1")."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser

FLAG = "trainer.initial_policy.uri"


def _seed() -> tuple[int, str]:
    from experiments import services
    from experiments.models import Checkpoint

    parent = services.create_experiment(
        "t",
        name="arena.base",
        flags={"trainer.lr": 0.001, "seed": 1},
        nodes=2,
        gpus=8,
        accelerator="H100",
        base_command="uv run",
        tool_path="tools/train.py",
    )
    uri = ""
    for epoch in (40, 80, 120):
        path = f"s3://softmax-public/policies/arena.base/arena.base:v{epoch}.mpt"
        Checkpoint.objects.create(
            experiment=parent,
            epoch=epoch,
            model_path=path,
            policy_version=f"v{epoch}",
            size=123_456_789,
            last_modified=datetime(2026, 12, 1, tzinfo=UTC),
            synced_at=datetime(2026, 12, 1, tzinfo=UTC),
        )
        if epoch == 120:
            uri = path
    return parent.pk, uri


def test_fork_from_a_checkpoint_row_and_see_the_lineage(page, live_server, alice, settings):
    from playwright.sync_api import expect

    from experiments.models import Experiment

    settings.SKYDECK_FORK_FLAG = FLAG
    parent_pk, uri = _seed()
    ARTIFACTS.mkdir(exist_ok=True)
    login(page, live_server)
    page.goto(f"{live_server.url}/experiments/{parent_pk}/")
    row = page.locator("tr", has=page.locator("td.num", has_text=re.compile(r"^120$")))
    row.get_by_role("link", name="Fork from here").click()
    expect(page).to_have_url(re.compile(r"/checkpoints/\d+/fork$"))
    expect(page.locator("h1")).to_have_text("Fork arena.base @ epoch 120")
    expect(page.locator("#fork-uri")).to_have_text(uri)
    expect(page.locator("#id_name")).to_have_value("arena.base.from120")
    expect(page.locator("#id_uri_flag")).to_have_value(FLAG)
    page.screenshot(path=str(ARTIFACTS / "fork-form.png"), full_page=True)

    lr = page.locator(".flag-row", has=page.locator('input[value="trainer.lr"]'))
    lr.locator('input[name="flag_value"]').fill("0.002")
    page.fill("#id_name", "arena.lr2")
    page.get_by_role("button", name="Create fork").click()

    child = Experiment.objects.get(name="arena.lr2")
    expect(page).to_have_url(re.compile(rf"/experiments/{child.pk}/$"))
    lineage = page.locator("[data-lineage]")
    expect(lineage).to_contain_text("forked from arena.base @ epoch 120")
    expect(lineage.get_by_role("link", name="arena.base")).to_have_attribute(
        "href", f"/experiments/{parent_pk}/"
    )
    expect(page.locator(".notice.success")).to_contain_text("as arena.lr2")
    flag_row = page.locator(".flag-row", has=page.locator(f'input[value="{FLAG}"]'))
    expect(flag_row.locator('input[name="flag_value"]')).to_have_value(uri)
    assert child.flags == {"trainer.lr": 0.002, "seed": 1, FLAG: uri}
    assert child.desired_state == "STOPPED"
    page.screenshot(path=str(ARTIFACTS / "fork-child.png"), full_page=True)

    lineage.get_by_role("link", name="arena.base").click()
    expect(page).to_have_url(re.compile(rf"/experiments/{parent_pk}/$"))
    forks = page.locator("[data-lineage] .lineage-forks")
    expect(forks.locator("summary")).to_have_text("forks: 1")
    forks.locator("summary").click()
    expect(forks.get_by_role("link", name="arena.lr2")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "fork-parent.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS / "fork-parent-dark.png"), full_page=True)
    assert page.js_errors == []
