"""Headless Chromium on a deck too large to build at once: groups load as they scroll into view,
long groups load their rest, collapsed groups expand, and a changed row updates in place
(through the poll's out-of-band sections) without losing loaded rows, an open editor or the
selection."""

from __future__ import annotations

import pytest
from browser_support import login
from decks import group_of

pytestmark = pytest.mark.browser


def rows_of(page, group) -> object:
    return page.locator(f"#group-{group.pk} tr.exp-row")


def test_a_long_group_loads_its_rest_and_keeps_it_across_polls(page, live_server, alice):
    from playwright.sync_api import expect

    from experiments.models import Experiment

    group, _ = group_of("long", 120, order=0)
    login(page, live_server)
    expect(rows_of(page, group)).to_have_count(50)
    more = page.locator(f"#group-{group.pk} tr.more-row button")
    expect(more).to_contain_text("Show 50 more of 120")
    more.scroll_into_view_if_needed()  # rows load as they scroll into view
    expect(rows_of(page, group)).to_have_count(100)
    page.locator(f"#group-{group.pk} tr.more-row button").click()  # or on demand
    expect(rows_of(page, group)).to_have_count(120)
    expect(page.locator(f"#group-{group.pk} tr.more-row")).to_have_count(0)

    # open an editor on a late row, tick another, then a sync changes a row: the poll swaps that
    # row in place; the loaded rows, the editor (and what is typed) and the tick all stay
    late = page.locator("#deck tr.exp-row:has(a.exp-name:text-is('long-0110'))")
    late.locator("a.exp-name").click()
    editor = page.locator("#deck tr.detail-row form.editor")
    expect(editor).to_be_visible()
    editor.locator("#id_description").fill("typed, not saved")
    page.locator("#deck tr.exp-row:has(a.exp-name:text-is('long-0090'))").locator(
        'input[name="ids"]'
    ).check()
    page.locator("#deck").click(position={"x": 2, "y": 2})  # focus leaves the editor
    page.evaluate(f"document.getElementById('group-{group.pk}').dataset.marker = 'kept'")
    Experiment.objects.filter(name="long-0110").update(current_state="RUNNING")
    page.evaluate("htmx.trigger(document.body, 'refresh-deck')")
    expect(late.locator(".c-state")).to_contain_text("running")
    expect(page.locator(f"#group-{group.pk} .group-head")).to_contain_text("1 running")
    expect(rows_of(page, group)).to_have_count(120)
    expect(page.locator("#deck tr.detail-row #id_description")).to_have_value("typed, not saved")
    expect(late.locator("a.exp-name")).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#selection-count")).to_have_text("1 selected: long-0090")
    # only the row came: the section is the same element (its rows alone changed)
    expect(page.locator(f"#group-{group.pk}[data-marker='kept']")).to_have_count(1)
    assert page.js_errors == []


def test_groups_further_down_load_as_they_scroll_into_view(page, live_server, alice):
    from playwright.sync_api import expect

    groups = [group_of(f"g{g}", 40, order=g)[0] for g in range(6)]
    page.set_viewport_size({"width": 1280, "height": 700})
    login(page, live_server)
    expect(rows_of(page, groups[0])).to_have_count(40)
    last = groups[-1]
    expect(page.locator(f"#group-{last.pk}.is-lazy")).to_have_count(1)
    expect(rows_of(page, last)).to_have_count(0)
    page.locator(f"#group-{last.pk}").scroll_into_view_if_needed()
    expect(rows_of(page, last)).to_have_count(40)
    expect(page.locator(f"#group-{last.pk}.is-lazy")).to_have_count(0)
    assert page.js_errors == []


def test_a_collapsed_group_expands_with_its_rows(page, live_server, alice):
    from playwright.sync_api import expect

    group, _ = group_of("folded", 12, order=0, collapsed=True)
    login(page, live_server)
    header = page.locator(f"#group-{group.pk} .group-head")
    expect(header).to_contain_text("folded")
    expect(header.locator(".group-count")).to_have_text("12")
    expect(rows_of(page, group)).to_have_count(0)
    header.get_by_role("button", name="Expand folded").click()
    expect(rows_of(page, group)).to_have_count(12)
    group.refresh_from_db()
    assert group.collapsed is False
    header = page.locator(f"#group-{group.pk} .group-head")
    header.get_by_role("button", name="Collapse folded").click()
    expect(rows_of(page, group)).to_have_count(0)
    assert page.js_errors == []
