"""The deck sorts by any column and filters by tag, both in the filter box (``q``) so a view is
a URL to share: ``sort:-epoch``, ``sort:trainer.lr``, ``tag:baseline``."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from test_ui_dashboard import DASHBOARD_QUERIES, HTMX_DECK, seed

from experiments import dashboard, deckchanges, deckquery, services
from experiments.models import Experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(db) -> Client:
    user = User.objects.create_user("alice", password="pw")
    web = Client()
    web.force_login(user)
    return web


def names(view: dashboard.GroupView) -> list[str]:
    return [row.experiment.name for row in view.rows]


# --- the filter box ---------------------------------------------------------------------------


def test_the_filter_box_splits_into_text_tags_and_one_sort():
    q = deckquery.parse("lr tag:baseline sort:-epoch tag:v2")
    assert (q.text, q.tags, q.sort) == ("lr", ("baseline", "v2"), deckquery.Sort("epoch", True))
    assert q.filters
    only_sort = deckquery.parse("sort:trainer.lr")
    assert only_sort.sort == deckquery.Sort("flags.trainer.lr") and not only_sort.filters
    assert only_sort.sort.flag == "trainer.lr" and only_sort.sort.label == "trainer.lr"
    # a flag named like a fixed column is reached with flags.
    assert deckquery.parse("sort:flags.name").sort.flag == "name"
    assert deckquery.Sort("flags.name").token == "sort:flags.name"


def test_a_column_head_cycles_ascending_descending_and_off():
    q = "lr tag:x"
    first = deckquery.with_sort(q, "epoch")
    assert first == "lr tag:x sort:epoch"
    second = deckquery.with_sort(first, "epoch")
    assert second == "lr tag:x sort:-epoch"
    assert deckquery.with_sort(second, "epoch") == "lr tag:x"
    assert deckquery.with_sort(second, "flags.seed") == "lr tag:x sort:seed"


def test_tag_filter_is_exact_and_all_tags_must_match(make_experiment):
    make_experiment("a", tags=["baseline", "v2"])
    make_experiment("b", tags=["baseline-old"])
    make_experiment("c", tags=["v2"])
    found = lambda q: sorted(Experiment.objects.search(q).values_list("name", flat=True))  # noqa: E731
    assert found("tag:baseline") == ["a"]  # not "baseline-old"
    assert found("tag:BASELINE") == ["a"]
    assert found("tag:v2") == ["a", "c"]
    assert found("tag:v2 tag:baseline") == ["a"]
    assert found("tag:v2 c") == ["c"]
    assert found("sort:-epoch") == ["a", "b", "c"]  # a sort filters nothing


def test_api_filters_by_tag_and_q_understands_tag_tokens(admin_client, make_experiment):
    make_experiment("a", tags=["baseline"])
    make_experiment("b", tags=["baseline-old"])
    by_tag = admin_client.get("/api/experiments/", {"tag": "baseline"}).json()
    assert [e["name"] for e in by_tag["results"]] == ["a"]
    by_q = admin_client.get("/api/experiments/", {"q": "tag:baseline"}).json()
    assert [e["name"] for e in by_q["results"]] == ["a"]


# --- sorting the deck -------------------------------------------------------------------------


@pytest.fixture
def team(make_experiment, make_checkpoint):
    group = services.create_group("t", "team")
    spec = {
        "e-a": dict(flags={"lr": 0.01, "opt": "sgd"}, nodes=2, gpus=8, epoch=120),
        "e-b": dict(flags={"lr": 0.001, "opt": "Adam"}, nodes=1, gpus=8, epoch=300),
        "e-c": dict(flags={"lr": 1}, nodes=4, gpus=8, epoch=None),
        "e-d": dict(flags={}, nodes=1, gpus=1, epoch=5),
    }
    made = []
    for name, fields in spec.items():
        epoch = fields.pop("epoch")
        experiment = make_experiment(name, **fields)
        if epoch is not None:
            make_checkpoint(experiment, epoch)
            make_checkpoint(experiment, epoch - 1)
        made.append(experiment)
    services.add_to_group("t", group, made)
    Experiment.objects.filter(name="e-b").update(gpu_seconds=7200)
    Experiment.objects.filter(name="e-c").update(gpu_seconds=3600)
    return group


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("", ["e-a", "e-b", "e-c", "e-d"]),  # the group's own order
        ("sort:epoch", ["e-d", "e-a", "e-b", "e-c"]),  # no checkpoint: last
        ("sort:-epoch", ["e-b", "e-a", "e-d", "e-c"]),  # ... last either way
        ("sort:lr", ["e-b", "e-a", "e-c", "e-d"]),  # numbers as numbers (1 after 0.01)
        ("sort:-lr", ["e-c", "e-a", "e-b", "e-d"]),
        ("sort:opt", ["e-b", "e-a", "e-c", "e-d"]),  # text ignoring case: Adam, sgd
        ("sort:-name", ["e-d", "e-c", "e-b", "e-a"]),
        ("sort:shape", ["e-d", "e-b", "e-a", "e-c"]),  # 1, 8, 16, 32 GPUs
        ("sort:-gpuh", ["e-b", "e-c", "e-a", "e-d"]),
        ("sort:nosuchflag", ["e-a", "e-b", "e-c", "e-d"]),  # nothing to sort by: own order
    ],
)
def test_rows_sort_by_any_column(team, q, expected):
    view = dashboard.build_dashboard(q).groups[0]
    assert names(view) == expected
    assert view.matched == 4  # a sort hides nothing


def test_sorted_page_links_heads_and_disables_manual_order(client, team):
    html = client.get("/", {"q": "sort:-epoch"}).content.decode()
    assert html.index(">e-b<") < html.index(">e-a<") < html.index(">e-d<") < html.index(">e-c<")
    # the sorted head says so, and its link goes on to the deck's own order
    epoch_head = re.search(r'<th class="c-epoch num"[^>]*>.*?</th>', html).group(0)
    assert 'aria-sort="descending"' in epoch_head and 'href="/"' in epoch_head
    assert 'href="/?q=sort:lr"' in html and 'href="/?q=sort:name"' in html
    assert "Rows sorted by <strong>Epoch</strong> descending" in html
    assert "experiments match" not in html  # not a filter
    # ↑/↓ cannot say where a row goes in a sorted view
    row = re.search(r'<tr id="row-\d+-\d+".*?</tr>', html, re.S).group(0)
    assert row.count("disabled") == 2 and "Sorted by Epoch" in row


def test_sort_applies_to_every_group_and_keeps_empty_groups(client, team, make_experiment):
    services.create_group("t", "empty")
    board = dashboard.build_dashboard("sort:name")
    assert [v.name for v in board.groups] == ["team", "empty", "Ungrouped"]


def test_tag_chips_link_to_the_filter(client, make_experiment):
    make_experiment("tagged", tags=["baseline", "lr:sweep"])
    html = client.get("/").content.decode()
    assert '<a class="tag-chip" href="/?q=tag:baseline"' in html
    assert 'href="/?q=tag:lr:sweep"' in html
    filtered = client.get("/", {"q": "tag:baseline"}).content.decode()
    assert ">tagged<" in filtered and "1 of 1 experiments match" in filtered


def test_a_poll_of_a_sorted_deck_rebuilds_a_changed_section(client, team):
    version = deckchanges.current_version()
    Experiment.objects.filter(name="e-d").update(nodes=64)  # its trigger logs the change
    board = dashboard.build_dashboard(
        "sort:-shape", known_version=version, shown={str(team.pk): 4}, layouts={}
    )
    assert board.partial
    (view,) = [v for v in board.groups if v.group is not None]
    assert not view.rows_only and names(view)[0] == "e-d"  # whole, in its new order


@pytest.mark.parametrize("count", [10, 60])
@pytest.mark.parametrize("q", ["sort:-epoch", "sort:lr", "sort:-gpuh"])
def test_a_sorted_deck_costs_constant_queries(client, django_assert_max_num_queries, count, q):
    seed(count)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        assert client.get("/", {"q": q}).status_code == 200
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        assert client.get("/", {"q": q}, **HTMX_DECK).status_code == 200


# --- a group's columns, chosen in the UI --------------------------------------------------------


def test_column_chooser_lists_columns_then_other_flags(client, team):
    html = client.get(f"/groups/{team.pk}/columns").content.decode()
    keys = re.findall(r'name="columns" value="([^"]+)"( checked)?', html)
    # automatic: the differing flags (lr, opt) shown, in the deck's order
    assert keys == [("lr", " checked"), ("opt", " checked")]
    assert "Now automatic" in html
    partial = client.get(f"/groups/{team.pk}/columns", HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'hx-post="/groups/' in partial.content


def test_choosing_columns_saves_order_and_logs_it(client, team):
    from experiments.models import OperationLog

    response = client.post(f"/groups/{team.pk}/columns", {"columns": ["opt", "lr"]})
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.flags == ["opt", "lr"]
    view = dashboard.build_dashboard().groups[0]
    assert [c.key for c in view.columns] == ["opt", "lr"]
    log = OperationLog.objects.filter(operation="group_update").first()
    assert log.message == "group team: flag columns opt, lr"
    # back to automatic
    client.post(f"/groups/{team.pk}/columns", {"automatic": "1"})
    team.refresh_from_db()
    assert team.flags == []


def test_bad_columns_are_refused_with_a_message(client, team):
    response = client.post(
        f"/groups/{team.pk}/columns", {"columns": ["bad key!"]}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 400
    assert b"Columns of team not changed" in response.content
    none = client.post(f"/groups/{team.pk}/columns", {}, HTTP_HX_REQUEST="true")
    assert none.status_code == 400 and b"Choose at least one column" in none.content
    team.refresh_from_db()
    assert team.flags == []


def test_column_chooser_costs_constant_queries(client, django_assert_max_num_queries):
    from decks import group_of

    small, _ = group_of("small", 3)
    big, _ = group_of("big", 30)
    with django_assert_max_num_queries(8) as small_count:
        client.get(f"/groups/{small.pk}/columns")
    with django_assert_max_num_queries(len(small_count.captured_queries)):
        client.get(f"/groups/{big.pk}/columns")


# --- drag and drop: a row before or after another, a group before or after another -------------


def test_a_dropped_row_lands_before_or_after_the_row(client, team):
    from experiments.models import Experiment

    ids = {e.name: e.pk for e in Experiment.objects.all()}
    url = f"/groups/{team.pk}/members/{ids['e-d']}/place"
    assert client.post(url, {"before": ids["e-b"]}, HTTP_HX_REQUEST="true").status_code == 200
    assert [e.name for e in team.ordered_experiments()] == ["e-a", "e-d", "e-b", "e-c"]
    url = f"/groups/{team.pk}/members/{ids['e-a']}/place"
    client.post(url, {"after": ids["e-c"]}, HTTP_HX_REQUEST="true")
    assert [e.name for e in team.ordered_experiments()] == ["e-d", "e-b", "e-c", "e-a"]
    from experiments.models import OperationLog

    assert OperationLog.objects.first().message == "moved to position 4 in group team"


def test_a_drop_outside_the_group_or_without_a_place_changes_nothing(client, team, make_experiment):
    outsider = make_experiment("outsider")
    e_a = team.ordered_experiments()[0]
    url = f"/groups/{team.pk}/members/{e_a.pk}/place"
    refused = client.post(url, {"before": outsider.pk}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400 and b"not moved" in refused.content
    nowhere = client.post(url, {}, HTTP_HX_REQUEST="true")
    assert (
        nowhere.status_code == 400 and b"before=&lt;id&gt; or after=&lt;id&gt;" in nowhere.content
    )
    assert [e.name for e in team.ordered_experiments()] == ["e-a", "e-b", "e-c", "e-d"]


def test_a_dropped_group_lands_before_another(client, team):
    from experiments.models import ExperimentGroup

    second = services.create_group("t", "second")
    third = services.create_group("t", "third")
    client.post(f"/groups/{third.pk}/place", {"before": team.pk}, HTTP_HX_REQUEST="true")
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == [
        "third",
        "team",
        "second",
    ]
    client.post(f"/groups/{third.pk}/place", {"after": second.pk}, HTTP_HX_REQUEST="true")
    assert list(ExperimentGroup.objects.values_list("name", flat=True)) == [
        "team",
        "second",
        "third",
    ]


def test_rows_and_groups_carry_drag_handles_unless_sorted(client, team):
    html = client.get("/").content.decode()
    assert html.count('class="drag-handle" draggable="true"') == 4
    assert f'data-place-url="/groups/{team.pk}/place"' in html
    sorted_html = client.get("/", {"q": "sort:name"}).content.decode()
    assert 'class="drag-handle" draggable="true"' not in sorted_html
