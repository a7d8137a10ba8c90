"""Two browsers edit one experiment (issue 13 item 5): the second save shows the conflict.

Run with ``.venv/bin/python -m pytest -m browser tests/test_browser_conflicts.py``; leaves a
screenshot of the conflict in /tmp/shots/conflict.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_support import login
from django.urls import reverse

pytestmark = pytest.mark.browser

SHOTS = Path("/tmp/shots")


def test_two_browsers_edit_one_experiment(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment, OperationLog

    exp = services.create_experiment(
        "tester", name="shared-exp", nodes=2, gpus=8, accelerator="H100", flags={"lr": 0.1}
    )
    url = f"{live_server.url}{reverse('experiment_detail', args=[exp.pk])}"
    other_context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    other = other_context.new_page()
    other.set_default_timeout(10_000)
    try:
        login(page, live_server)
        login(other, live_server)
        page.goto(url)
        other.goto(url)
        first = page.locator("form.editor")
        second = other.locator("form.editor")
        expect(first).to_be_visible()
        expect(second).to_be_visible()

        # the first browser saves nodes and a flag
        first.locator("#id_nodes").fill("4")
        first.locator('input[name="flag_value"]').first.fill("0.5")
        first.locator("button:has-text('Save')").click()
        expect(first.locator(".notice.success")).to_have_text("Saved.")
        assert Experiment.objects.get(pk=exp.pk).nodes == 4

        # the second, loaded before that save, changes nodes too (and the description)
        second.locator("#id_nodes").fill("16")
        second.locator("#id_description").fill("a note from the second browser")
        logs = OperationLog.objects.count()
        second.locator("button:has-text('Save')").click()
        conflict = other.locator("form.editor [data-conflict]")
        expect(conflict).to_be_visible()
        expect(conflict).to_contain_text("last saved by alice")
        row = conflict.locator('tr[data-conflict-field="nodes"]')
        expect(row.locator("[data-saved]")).to_have_text("4")
        expect(row.locator("[data-yours]")).to_have_text("16")
        expect(other.locator("form.editor #id_nodes")).to_have_value("16")
        expect(other.locator("form.editor #id_description")).to_have_value(
            "a note from the second browser"
        )
        # the flag it did not touch shows what the first browser saved
        expect(other.locator('form.editor input[name="flag_value"]').first).to_have_value("0.5")
        SHOTS.mkdir(parents=True, exist_ok=True)
        other.locator("form.editor").screenshot(path=str(SHOTS / "conflict.png"))
        saved = Experiment.objects.get(pk=exp.pk)
        assert saved.nodes == 4 and saved.description == "" and saved.flags == {"lr": 0.5}
        assert OperationLog.objects.count() == logs

        # saving again is the deliberate overwrite; nothing of the first browser is reverted
        other.locator("form.editor button:has-text('Save')").click()
        expect(other.locator("form.editor .notice.success")).to_have_text("Saved.")
        saved = Experiment.objects.get(pk=exp.pk)
        assert saved.nodes == 16 and saved.flags == {"lr": 0.5}
        assert saved.description == "a note from the second browser"
        assert not page.js_errors
    finally:
        other_context.close()
