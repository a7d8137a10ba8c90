"""Issue 17's deck defects, each driven in headless Chromium (each failed before its fix).

- the create dialog's and the bulk bar's group pickers keep their choice across the refresh
  that follows "Create experiment";
- Duplicate and Delete in an expanded row replace the deck (never a second ``#deck`` inside it);
- the expanded row's "Recent jobs" table fits a 1280 px window, durations on one line;
- a bulk action clears the selection (the next one cannot hit rows out of view), and the bar
  names what is selected;
- the unstarred star and the dash of a missing flag meet WCAG AA contrast, light and dark.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser

CONTRAST_JS = """(el) => {
  function rgb(text) { return text.match(/[\\d.]+/g).map(Number); }
  function lum(c) {
    var v = c.slice(0, 3).map(function (x) {
      x = x / 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
  }
  var fg = rgb(getComputedStyle(el).color);
  var node = el, bg = null;
  while (node && node.nodeType === 1) {
    var c = rgb(getComputedStyle(node).backgroundColor);
    if (c.length < 4 || c[3] > 0) { bg = c; break; }
    node = node.parentElement;
  }
  bg = bg || [255, 255, 255];
  var a = lum(fg), b = lum(bg);
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def row(page, name: str):
    return page.locator(f"#deck tr.exp-row:has(a.exp-name:text-is('{name}'))")


def test_group_pickers_keep_their_choice_after_create(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import ExperimentGroup

    first = services.create_group("t", "alpha")
    second = services.create_group("t", "beta")
    services.create_group("t", "gamma")  # the last group: what the pickers used to jump to
    login(page, live_server)
    page.select_option("#bulk-group-select", str(second.pk))
    page.click("text=New experiment")
    dialog = page.locator("#create-dialog")
    dialog.locator("#id_group").select_option(str(first.pk))
    dialog.locator("#id_name").fill("picked-a")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".notice.success")).to_contain_text("Created picked-a")
    # the deck's refresh after a create (and the polls after it) swap the pickers' options
    expect(page.locator("#deck section.group", has_text="picked-a")).to_be_visible()
    page.evaluate("htmx.trigger(document.body, 'refresh-deck')")
    page.wait_for_timeout(1500)
    expect(dialog.locator("#id_group")).to_have_value(str(first.pk))
    expect(page.locator("#bulk-group-select")).to_have_value(str(second.pk))
    # a second create in a row goes to the same group
    dialog.locator("#id_name").fill("picked-b")
    dialog.locator("button:has-text('Create experiment')").click()
    expect(dialog.locator(".notice.success")).to_contain_text("Created picked-b")
    page.wait_for_timeout(1500)
    assert [e.name for e in ExperimentGroup.objects.get(pk=first.pk).ordered_experiments()] == [
        "picked-a",
        "picked-b",
    ]
    expect(page.locator("#bulk-group-select")).to_have_value(str(second.pk))
    assert page.js_errors == []


@pytest.mark.parametrize("action", ["Duplicate", "Delete"])
def test_expanded_row_actions_replace_the_deck(page, live_server, alice, action):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Experiment

    group = services.create_group("t", "team")
    experiments = [services.create_experiment("t", name=f"dup-{i}") for i in range(3)]
    services.add_to_group("t", group, experiments)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    login(page, live_server)
    row(page, "dup-1").locator("a.exp-name").click()
    detail = page.locator("#deck tr.detail-row")
    expect(detail.locator(".detail-actions")).to_be_visible()
    if action == "Delete":
        page.once("dialog", lambda dialog: dialog.accept())
    detail.locator(f".detail-actions button:has-text('{action}')").click()
    if action == "Duplicate":
        expect(page.locator("#messages")).to_contain_text("Duplicated dup-1 as dup-1.copy")
        expect(row(page, "dup-1.copy")).to_be_visible()
        expected = 4
    else:
        expect(page.locator("#messages")).to_contain_text("Deleted dup-1.")
        expect(row(page, "dup-1")).to_have_count(0)
        expected = 2
    assert Experiment.objects.count() == expected
    page.wait_for_timeout(500)
    assert page.locator("#deck").count() == 1
    assert page.locator("#messages").count() == 1
    assert not [text for text in console if "oobErrorNoTarget" in text], console
    # the group's header count is the new one at once, not at the next poll
    expect(page.locator(f"#group-{group.pk} .group-count")).to_contain_text(str(expected))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"defects-expanded-{action.lower()}.png"))
    assert page.js_errors == []


def test_recent_jobs_table_fits_the_window(page, live_server, alice):
    from django.utils import timezone
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import Job

    experiment = services.create_experiment("t", name="wide-jobs")
    now = timezone.now()
    for i in range(4):
        Job.objects.create(
            id=100 + i,
            experiment_id="wide-jobs",
            job_name="wide-jobs",
            status="FAILED" if i % 2 else "SUCCEEDED",
            user_name="someone.with.a.long.name",
            resources="2x[H100:8, A100-80GB:8] on aws us-east-1 (spot, any zone)",
            nodes=2,
            gpus=8,
            accelerator="H100",
            submitted_at=now - timedelta(hours=30),
            started_at=now - timedelta(hours=29),
            ended_at=now - timedelta(hours=1),
            duration=28 * 3600 + 17 * 60 + 5,
            recovery_count=i,
            failure_reason=(
                "Job failed: RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB "
                "(GPU 0; 79.15 GiB total capacity; 60.10 GiB already allocated)"
            )
            if i % 2
            else "",
            first_seen=now,
            last_seen=now,
        )
    login(page, live_server)
    row(page, experiment.name).locator("a.exp-name").click()
    table = page.locator("#deck tr.detail-row .panel table.recent-jobs")
    expect(table).to_be_visible()
    page.wait_for_timeout(300)
    sizes = table.evaluate(
        """(t) => ({table: t.getBoundingClientRect().right,
                     wrap: t.parentElement.clientWidth, scroll: t.parentElement.scrollWidth,
                     window: document.documentElement.clientWidth})"""
    )
    assert sizes["table"] <= sizes["window"], sizes
    assert sizes["scroll"] <= sizes["wrap"], sizes
    failure = table.locator("td.failure").first
    expect(failure).to_be_visible()
    assert failure.bounding_box()["x"] + 40 < sizes["window"]
    # a duration is one line: its cell is as tall as the job id's
    heights = table.evaluate(
        """(t) => Array.from(t.querySelectorAll('td.duration')).map(td => {
             var r = document.createRange(); r.selectNodeContents(td);
             return r.getClientRects().length; })"""
    )
    assert heights and all(lines == 1 for lines in heights), heights
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "defects-recent-jobs.png"))


def test_a_bulk_action_clears_the_selection(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import ExperimentGroup

    target = services.create_group("t", "target")
    for name in ("sel-a", "sel-b", "sel-c"):
        services.create_experiment("t", name=name)
    login(page, live_server)
    row(page, "sel-a").locator('input[name="ids"]').check()
    row(page, "sel-b").locator('input[name="ids"]').check()
    # the bar says which ones are selected, not only how many
    expect(page.locator("#selection-count")).to_have_text("2 selected: sel-a, sel-b")
    page.select_option("#bulk-group-select", str(target.pk))
    page.click("#bulk-form button:has-text('Add to')")
    expect(page.locator("#messages")).to_contain_text("Added 2 experiments to target.")
    expect(page.locator("#selection-count")).to_have_text("No experiments selected")
    expect(page.locator('#deck input[name="ids"]:checked')).to_have_count(0)
    assert sorted(e.name for e in ExperimentGroup.objects.get(pk=target.pk).experiments.all()) == [
        "sel-a",
        "sel-b",
    ]
    # the buttons are off: a second click cannot act on a selection the user no longer sees
    expect(page.locator("#bulk-form button:has-text('Add to')")).to_be_disabled()
    assert page.js_errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_unstarred_star_and_missing_flag_contrast(page, live_server, alice, scheme):
    from playwright.sync_api import expect

    from experiments import services

    group = services.create_group("t", "contrast", flags=["lr"])
    plain = services.create_experiment("t", name="no-lr")
    services.add_to_group("t", group, [plain])
    page.emulate_media(color_scheme=scheme)
    login(page, live_server)
    star = row(page, "no-lr").locator(".star-btn")
    missing = row(page, "no-lr").locator("td.c-flag.missing")
    expect(star).to_be_visible()
    expect(missing).to_have_text("\u2013")
    for element in (star, missing):
        ratio = element.evaluate(CONTRAST_JS)
        assert ratio >= 4.5, f"{scheme}: contrast {ratio:.2f}:1"
