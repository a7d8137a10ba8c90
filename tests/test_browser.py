"""Headless Chromium drives the real UI (htmx, the small JS) against pytest-django's live server.

Deselected by default; run with ``.venv/bin/python -m pytest -m browser tests/test_browser.py``.
Debian's chromium is driven by the ``playwright`` package (no browser download), launched as
/work/shared/docs/browser-tests.md describes. A failing test leaves a full-page screenshot in
``test-artifacts/``.
"""

from __future__ import annotations

import re

import pytest
from browser_support import login

pytestmark = pytest.mark.browser


def row(page, name: str):
    return page.locator(f"#deck tr.exp-row:has(a.exp-name:text-is('{name}'))")


def test_dashboard_workflow(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments.models import DesiredState, Experiment, ExperimentGroup, OperationLog

    login(page, live_server)

    # --- create an experiment (first with a bad name: the error shows inline) -----------------
    page.click("text=New experiment")
    dialog = page.locator("#create-dialog")
    expect(dialog).to_be_visible()
    dialog.locator("#id_name").fill("foo (copy)")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".errorlist")).to_contain_text("is not allowed")
    assert not Experiment.objects.exists()
    dialog.locator("#id_name").fill("bt-one")
    dialog.locator("#id_base_command").fill("python")
    dialog.locator("#id_tool_path").fill("train.py")
    dialog.locator('input[name="flag_key"]').first.fill("lr")
    dialog.locator('input[name="flag_value"]').first.fill("0.001")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".notice.success")).to_contain_text("Created bt-one")
    dialog.locator("button:has-text('Close')").click()
    expect(row(page, "bt-one")).to_be_visible()
    assert Experiment.objects.get(name="bt-one").flags == {"lr": 0.001}

    # --- expand the row and edit its flags ----------------------------------------------------
    row(page, "bt-one").locator("a.exp-name").click()
    editor = page.locator("#deck tr.detail-row form.editor")
    expect(editor).to_be_visible()
    expect(page.locator("#deck tr.detail-row .panels")).to_contain_text(
        "python train.py run=bt-one"
    )
    editor.locator('input[name="flag_value"]').first.fill("0.002")
    editor.locator("button:has-text('+ Add flag')").click()
    editor.locator('input[name="flag_key"]').last.fill("batch")
    editor.locator('input[name="flag_value"]').last.fill("64")
    expect(editor.locator("[data-kind]").last).to_have_text("int")
    editor.locator("button:has-text('Save')").click()
    expect(page.locator("#deck tr.detail-row form.editor .notice.success")).to_have_text("Saved.")
    assert Experiment.objects.get(name="bt-one").flags == {"lr": 0.002, "batch": 64}
    # the preview follows the saved configuration; the open editor survives the deck refresh
    expect(page.locator("#deck tr.detail-row .panels")).to_contain_text("batch=64")
    expect(page.locator("#deck tr.detail-row form.editor")).to_be_visible()

    # --- duplicate it -----------------------------------------------------------------------
    page.locator("#deck tr.detail-row button:has-text('Duplicate')").click()
    expect(row(page, "bt-one.copy")).to_be_visible()
    assert Experiment.objects.get(name="bt-one.copy").flags == {"lr": 0.002, "batch": 64}
    page.locator("#deck tr.detail-row button:has-text('Close')").click()
    expect(page.locator("#deck tr.detail-row")).to_have_count(0)

    # --- start both (each confirms first; the desired state shows while no job runs) ----------
    confirm = page.locator("#confirm-dialog")
    row(page, "bt-one").locator("button.state-btn:has-text('Start')").click()
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Start bt-one: 1 CPU node = 0 GPUs")
    assert not Experiment.objects.desired_running().exists()
    confirm.locator("button:has-text('Start')").click()
    expect(confirm).to_be_hidden()
    expect(row(page, "bt-one").locator(".desired")).to_have_text("→ RUNNING")
    expect(page.locator("#messages")).to_contain_text("Started bt-one")
    row(page, "bt-one.copy").locator("button.state-btn:has-text('Start')").click()
    expect(confirm).to_be_visible()
    page.keyboard.press("Enter")  # the confirm button has the focus
    expect(confirm).to_be_hidden()
    expect(row(page, "bt-one.copy").locator(".desired")).to_have_text("→ RUNNING")
    assert set(Experiment.objects.desired_running().values_list("name", flat=True)) == {
        "bt-one",
        "bt-one.copy",
    }

    # --- create a group and move both into it -------------------------------------------------
    page.fill("#group-name", "bt-group")
    page.click("button:has-text('Add group')")
    group_section = page.locator("section.group:has(h2:text-is('bt-group'))")
    expect(group_section).to_be_visible()
    row(page, "bt-one").locator('input[name="ids"]').check()
    row(page, "bt-one.copy").locator('input[name="ids"]').check()
    expect(page.locator("#selection-count")).to_have_text("2 selected: bt-one, bt-one.copy")
    page.select_option("#bulk-group-select", label="bt-group")
    page.click("#bulk-form button:has-text('Move to')")
    expect(group_section.locator("tr.exp-row")).to_have_count(2)
    group = ExperimentGroup.objects.get(name="bt-group")
    assert [e.name for e in group.ordered_experiments()] == ["bt-one", "bt-one.copy"]

    # --- bulk-stop the two (the move cleared the selection: tick them again) -------------------
    expect(page.locator("#selection-count")).to_have_text("No experiments selected")
    row(page, "bt-one").locator('input[name="ids"]').check()
    row(page, "bt-one.copy").locator('input[name="ids"]').check()
    page.click("#bulk-form button:has-text('Stop')")
    expect(confirm).to_contain_text("Stop 2 experiments: no active job to cancel")
    confirm.locator("button:has-text('Stop')").click()
    expect(page.locator("#messages")).to_contain_text("Stopped 2 experiments: no active job")
    expect(group_section.locator(".desired")).to_have_count(0)
    assert not Experiment.objects.filter(desired_state=DesiredState.RUNNING).exists()

    # --- collapse the group (persisted), then expand it again ----------------------------------
    group_section.locator("button.toggle").click()
    expect(group_section.locator("tr.exp-row")).to_have_count(0)
    group.refresh_from_db()
    assert group.collapsed
    page.reload()
    expect(page.locator("section.group:has(h2:text-is('bt-group')) tr.exp-row")).to_have_count(0)
    page.locator("section.group:has(h2:text-is('bt-group')) button.toggle").click()
    expect(page.locator("section.group:has(h2:text-is('bt-group')) tr.exp-row")).to_have_count(2)

    # --- filter ("/" focuses the box), reload: the filter is kept ------------------------------
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("/")
    expect(page.locator("#search")).to_be_focused()
    page.keyboard.type("copy")
    expect(page).to_have_url(re.compile(r"\?q=copy$"))
    expect(page.locator("#deck tr.exp-row")).to_have_count(1)
    page.reload()
    expect(page.locator("#search")).to_have_value("copy")
    expect(page.locator("#deck tr.exp-row")).to_have_count(1)
    expect(row(page, "bt-one.copy")).to_be_visible()

    # every change above is in the operation log under the user's name
    actions = set(OperationLog.objects.filter(actor="alice").values_list("operation", flat=True))
    assert {
        "create",
        "update",
        "duplicate",
        "start",
        "stop",
        "group_create",
        "group_move",
    } <= actions
    assert page.js_errors == []


def test_panels_poll_without_clobbering_the_editor(page, live_server, alice):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Job

    exp = services.create_experiment("t", name="poller", base_command="run")
    login(page, live_server)
    row(page, "poller").locator("a.exp-name").click()
    editor = page.locator("#deck tr.detail-row form.editor")
    expect(editor).to_be_visible()
    editor.locator("#id_description").fill("typed but not saved")
    # a job appears in the background: the jobs panel picks it up by polling (every 5 s)
    now = timezone.now()
    Job.objects.create(
        id=777, experiment_id="poller", job_name="poller", status="RUNNING",
        submitted_at=now, first_seen=now, last_seen=now,
    )  # fmt: skip
    expect(page.locator("#deck tr.detail-row .panels")).to_contain_text("777", timeout=12_000)
    # the deck changes elsewhere (starred by someone else) and refreshes: the open editor and
    # what was typed in it survive the re-render
    services.update_experiment("bob", exp, starred=True)
    page.evaluate("htmx.trigger(document.body, 'refresh-deck')")
    expect(row(page, "poller").locator(".star-btn")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#deck tr.detail-row #id_description")).to_have_value("typed but not saved")
    expect(row(page, "poller").locator("a.exp-name")).to_have_attribute("aria-expanded", "true")
    exp.refresh_from_db()
    assert exp.description == ""
    assert page.js_errors == []


def test_selection_survives_deck_refresh(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services

    a = services.create_experiment("t", name="sel-a")
    services.create_experiment("t", name="sel-b")
    login(page, live_server)
    row(page, "sel-a").locator('input[name="ids"]').check()
    expect(page.locator("#selection-count")).to_have_text("1 selected: sel-a")
    services.set_desired_state("bob", [a], "RUNNING")
    page.evaluate("htmx.trigger(document.body, 'refresh-deck')")
    expect(row(page, "sel-a").locator(".desired")).to_have_text("→ RUNNING")
    expect(row(page, "sel-a").locator('input[name="ids"]')).to_be_checked()
    expect(row(page, "sel-b").locator('input[name="ids"]')).not_to_be_checked()
    expect(page.locator("#selection-count")).to_have_text("1 selected: sel-a")


def test_bulk_delete_asks_for_confirmation(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment

    for name in ("del-a", "del-b", "keep-c"):
        services.create_experiment("t", name=name)
    login(page, live_server)
    row(page, "del-a").locator('input[name="ids"]').check()
    row(page, "del-b").locator('input[name="ids"]').check()
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#bulk-form button:has-text('Delete')")
    page.wait_for_timeout(500)
    assert Experiment.objects.count() == 3
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-form button:has-text('Delete')")
    expect(page.locator("#messages")).to_contain_text("Deleted 2 experiments.")
    assert list(Experiment.objects.values_list("name", flat=True)) == ["keep-c"]
    assert page.js_errors == []


def test_group_header_tools_and_shift_click_ranges(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import ExperimentGroup

    group = services.create_group("t", "sweep")
    exps = [
        services.create_experiment(
            "t",
            name=f"sw-{i}",
            base_command="uv run",
            tool_path="train.py",
            flags={"trainer.lr": i, "trainer.batch": 8 * i, "seed": i},
        )
        for i in range(1, 5)
    ]
    services.add_to_group("t", group, exps)
    login(page, live_server)
    table = page.locator(f"#group-{group.pk}-table")

    # dotted flag names: "trainer" spans its two columns above "batch" and "lr"
    expect(table.locator("th.c-band")).to_have_text("trainer")
    expect(table.locator("th.c-band")).to_have_attribute("colspan", "2")
    expect(table.locator("tr.leaf-row th")).to_have_text(["batch", "lr"])

    # shift-click ticks a range; shift-click on a ticked box clears a range
    boxes = [row(page, f"sw-{i}").locator('input[name="ids"]') for i in range(1, 5)]
    boxes[0].click()
    boxes[2].click(modifiers=["Shift"])
    expect(page.locator("#selection-count")).to_have_text("3 selected: sw-1, sw-2, sw-3")
    for box, ticked in zip(boxes, (True, True, True, False), strict=True):
        (expect(box).to_be_checked if ticked else expect(box).not_to_be_checked)()
    boxes[3].click()
    boxes[1].click(modifiers=["Shift"])
    expect(page.locator("#selection-count")).to_have_text("1 selected: sw-1")
    expect(boxes[0]).to_be_checked()
    for box in boxes[1:]:
        expect(box).not_to_be_checked()

    # "Copy commands" puts every member's command on the clipboard, one per line; where the
    # browser refuses the clipboard, the text is shown selected for Ctrl+C instead
    expect(page.locator("#copy-dialog")).to_be_hidden()
    page.evaluate(
        "() => { navigator.clipboard.write = () => Promise.reject(new Error('denied')); }"
    )
    page.locator(f"#group-{group.pk} a:has-text('Copy commands')").click()
    expect(page.locator("#copy-dialog")).to_be_visible()
    expect(page.locator("#copy-text")).to_have_value(re.compile(r"^uv run train.py run=sw-1 "))
    assert page.evaluate("document.activeElement.id") == "copy-text"
    page.locator("#copy-dialog [data-close-dialog]").click()
    page.reload()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.locator(f"#group-{group.pk} a:has-text('Copy commands')").click()
    expect(page.locator("#toast")).to_have_text("Copied 4 commands of sweep.")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.splitlines() == [
        f"uv run train.py run=sw-{i} seed={i} trainer.batch={8 * i} trainer.lr={i}"
        for i in range(1, 5)
    ]

    # "+" in the header creates the new experiment inside that group
    page.locator(f"#group-{group.pk} a[title='New experiment in sweep']").click()
    dialog = page.locator("#create-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#id_group")).to_have_value(str(group.pk))
    dialog.locator("#id_name").fill("sw-5")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".notice.success")).to_contain_text("Created sw-5")
    dialog.locator("button:has-text('Close')").click()
    expect(table.locator("a.exp-name")).to_have_text(["sw-1", "sw-2", "sw-3", "sw-4", "sw-5"])
    assert [e.name for e in ExperimentGroup.objects.get().ordered_experiments()][-1] == "sw-5"
    # the top bar's button opens the same dialog with no group chosen
    page.click(".toolbar >> text=New experiment")
    expect(dialog.locator("#id_group")).to_have_value("")
    assert page.js_errors == []
