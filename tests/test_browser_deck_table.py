"""The deck as a table a researcher lives in (issue 17), in headless Chromium: sort by a column
head (the URL says so), filter by a tag chip, choose a group's columns, exact numbers."""

from __future__ import annotations

import re

import pytest
from browser_support import ARTIFACTS, login

pytestmark = pytest.mark.browser


def names(page, group_pk: int) -> list[str]:
    return page.locator(f"#group-{group_pk} tr.exp-row a.exp-name").all_inner_texts()


@pytest.fixture
def sweep(transactional_db):
    from experiments import services
    from experiments.models import Checkpoint, Experiment

    group = services.create_group("t", "sweep")
    made = []
    for name, lr, batch, epoch, tags in [
        ("run-a", 0.003, 131072, 120, ["baseline"]),
        ("run-b", 0.0001, 1024, 300, []),
        ("run-c", 0.01, 1000, 7, ["baseline", "v2"]),
    ]:
        experiment = services.create_experiment(
            "t", name=name, flags={"lr": lr, "batch": batch, "seed": 1}, tags=tags
        )
        Checkpoint.objects.create(
            experiment=experiment,
            epoch=epoch,
            model_path=f"s3://b/{name}/{epoch}.pt",
            synced_at="2026-01-01T00:00:00Z",
        )
        made.append(experiment)
    services.add_to_group("t", group, made)
    services.create_experiment("t", name="loner", flags={"lr": 0.5})
    return group, Experiment


def test_sort_by_a_column_head_and_share_the_url(page, live_server, alice, sweep):
    from playwright.sync_api import expect

    group, _ = sweep
    login(page, live_server)
    assert names(page, group.pk) == ["run-a", "run-b", "run-c"]
    head = page.locator(f"#group-{group.pk} th.c-epoch")
    head.locator("a.sort-link").click()
    expect(page).to_have_url(re.compile(r"\?q=sort:epoch$"))
    head = page.locator(f"#group-{group.pk} th.c-epoch")
    expect(head).to_have_attribute("aria-sort", "ascending")
    assert names(page, group.pk) == ["run-c", "run-a", "run-b"]
    expect(page.locator("#search")).to_have_value("sort:epoch")
    # again: descending, from the keyboard
    head.locator("a.sort-link").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f"#group-{group.pk} th.c-epoch")).to_have_attribute(
        "aria-sort", "descending"
    )
    assert names(page, group.pk) == ["run-b", "run-a", "run-c"]
    expect(page.locator(".sort-note")).to_contain_text("Rows sorted by Epoch descending")
    # rows cannot be moved by hand in a sorted view
    expect(
        page.locator(f"#group-{group.pk} tr.exp-row").first.locator("td.c-order button").first
    ).to_be_disabled()
    # a flag column sorts too, numbers as numbers; the URL is the view to share
    page.locator(f"#group-{group.pk} th.c-flag a.sort-link", has_text="lr").click()
    expect(page).to_have_url(re.compile(r"\?q=sort:lr$"))
    assert names(page, group.pk) == ["run-b", "run-a", "run-c"]
    shared = page.url
    page.goto(f"{live_server.url}/")
    page.goto(shared)
    assert names(page, group.pk) == ["run-b", "run-a", "run-c"]
    # exact numbers: 131072 (grouped on screen, copied as digits), 1000 and 1024 distinct
    batch = page.locator(f"#group-{group.pk} tr.exp-row td.c-flag.num")
    expect(batch).to_have_count(3)
    assert sorted(t.replace("\n", "") for t in batch.all_text_contents()) == [
        "1000",
        "1024",
        "131072",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "table-sorted.png"))
    page.locator(".sort-note a", has_text="Clear sort").click()
    expect(page).to_have_url(f"{live_server.url}/")
    assert names(page, group.pk) == ["run-a", "run-b", "run-c"]
    assert page.js_errors == []


def test_tag_chips_filter_the_deck(page, live_server, alice, sweep):
    from playwright.sync_api import expect

    group, _ = sweep
    login(page, live_server)
    row = page.locator(f"#group-{group.pk} tr.exp-row", has_text="run-c")
    expect(row.locator(".tag-chip")).to_have_text(["baseline", "v2"])
    row.locator(".tag-chip", has_text="baseline").click()
    expect(page).to_have_url(re.compile(r"\?q=tag:baseline$"))
    assert names(page, group.pk) == ["run-a", "run-c"]
    expect(page.locator(".filter-note")).to_contain_text("2 of 4 experiments match")
    # typed in the box: tags combine
    page.fill("#search", "tag:baseline tag:v2")
    expect(page.locator(f"#group-{group.pk} tr.exp-row")).to_have_count(1)
    assert names(page, group.pk) == ["run-c"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "table-tags.png"))
    assert page.js_errors == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_choose_a_groups_columns(page, live_server, alice, sweep, scheme):
    from playwright.sync_api import expect

    group, _ = sweep
    page.emulate_media(color_scheme=scheme)
    login(page, live_server)
    heads = page.locator(f"#group-{group.pk} thead th.c-flag")
    expect(heads).to_have_text(["batch", "lr"])  # automatic: the flags that differ
    page.locator(f"#group-{group.pk} a", has_text="Columns…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator('input[name="columns"]')).to_have_count(3)
    # show seed too, and put lr first (from the keyboard)
    dialog.locator('input[name="columns"][value="seed"]').check()
    dialog.locator("button[aria-label='Move lr up']").focus()
    page.keyboard.press("Enter")
    expect(dialog.locator("[data-column] code")).to_have_text(["lr", "batch", "seed"])
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"table-columns-{scheme}.png"))
    dialog.locator("button", has_text="Save columns").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#messages")).to_contain_text("Columns of sweep: lr, batch, seed.")
    heads = page.locator(f"#group-{group.pk} thead th.c-flag")
    expect(heads).to_have_text(["lr", "batch", "seed"])
    group.refresh_from_db()
    assert group.flags == ["lr", "batch", "seed"]
    # and back to automatic
    page.locator(f"#group-{group.pk} a", has_text="Columns…").click()
    dialog.locator("button", has_text="Automatic").click()
    expect(page.locator(f"#group-{group.pk} thead th.c-flag")).to_have_text(["batch", "lr"])
    assert page.js_errors == []


def test_drag_a_row_and_a_group_into_place(page, live_server, alice, sweep):
    from playwright.sync_api import expect

    from experiments import services
    from experiments.models import ExperimentGroup

    group, _ = sweep
    other = services.create_group("t", "other")
    login(page, live_server)
    rows = page.locator(f"#group-{group.pk} tr.exp-row")
    # run-c's handle dropped on the top half of run-a: it goes first
    target = rows.filter(has_text="run-a")
    box = target.bounding_box()
    rows.filter(has_text="run-c").locator(".drag-handle").drag_to(
        target, target_position={"x": box["width"] / 2, "y": 3}
    )
    expect(page.locator(f"#group-{group.pk} tr.exp-row a.exp-name")).to_have_text(
        ["run-c", "run-a", "run-b"]
    )
    assert [e.name for e in group.ordered_experiments()] == ["run-c", "run-a", "run-b"]
    # the arrows still work, from the keyboard
    page.locator(f"#group-{group.pk} button[aria-label='Move run-c down']").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f"#group-{group.pk} tr.exp-row a.exp-name")).to_have_text(
        ["run-a", "run-c", "run-b"]
    )
    # the group "other" dragged by its header above "sweep"
    sweep_section = page.locator(f"#group-{group.pk}")
    page.locator(f"#group-{other.pk} .group-handle").drag_to(
        sweep_section, target_position={"x": 200, "y": 5}
    )
    expect(page.locator("#deck section.group h2")).to_have_text(["other", "sweep", "Ungrouped"])
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == ["other", "sweep"]
    assert page.js_errors == []
