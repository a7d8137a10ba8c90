"""What every page carries, built cheaply (issue 15's load): the deck's placeholder sections in
Python, and the create dialog's blank fields rendered once per process."""

from __future__ import annotations

import re

import pytest

from experiments import services
from experiments.forms import ExperimentCreateForm
from experiments.templatetags import skydeck

pytestmark = pytest.mark.django_db


def test_a_placeholder_section_loads_its_rows_with_the_filter(web, make_experiment, monkeypatch):
    from experiments import dashboard

    monkeypatch.setattr(dashboard, "FIRST_ROWS", 3)  # the first 3 groups' rows, then placeholders
    for i in range(12):
        group = services.create_group("alice", f"g{i:02d}")
        services.add_to_group("alice", group, [make_experiment(f"e{i:02d}", description="x y&z")])
    page = web.get("/", {"q": "x y&z"}).content.decode()
    lazy = re.findall(r'<div class="lazy-rows" hx-get="([^"]+)"', page)
    assert lazy, "a deck of 12 groups leaves some to load as they scroll into view"
    assert all(url.endswith("/section?q=x%20y%26z") for url in lazy)
    page = web.get("/").content.decode()
    section = re.search(r'<section [^>]*class="group is-lazy"[^>]*>.*?</section>', page, re.S)
    assert "Loading 1 experiment…" in section.group(0) and "</header>" in section.group(0)


def test_the_blank_create_fields_are_rendered_once_and_a_bound_form_every_time(monkeypatch):
    calls = []
    real = skydeck.render_to_string
    monkeypatch.setattr(skydeck, "_BLANK_FIELDS", {})
    monkeypatch.setattr(
        skydeck, "render_to_string", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    first = skydeck.form_fields(ExperimentCreateForm())
    assert skydeck.form_fields(ExperimentCreateForm()) == first and len(calls) == 1
    assert 'name="name"' in first and 'id="id_nodes"' in first
    bound = ExperimentCreateForm(data={"name": "bad name!", "nodes": "0"})
    assert not bound.is_valid()
    html = skydeck.form_fields(bound)
    assert len(calls) == 2 and "errorlist" in html and 'value="bad name!"' in html
