"""The deck at scale: the change log its poll reads (database triggers), polls that send only
what changed, sections built as they scroll into view, and the indexes the deck's queries use."""

from __future__ import annotations

import re

import pytest
from decks import group_of
from django.db import connection

from experiments import dashboard, deckchanges, services
from experiments.models import (
    Checkpoint,
    DeckChange,
    Experiment,
    ExperimentGroup,
    JobStatus,
    Launch,
    LaunchStatus,
)

HTMX_DECK = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "deck"}
HTMX = {"HTTP_HX_REQUEST": "true"}


def changes_after(version: str) -> set[tuple]:
    since = deckchanges.parse_version(version)[1]
    return set(
        DeckChange.objects.filter(id__gt=since).values_list("experiment_id", "group_id", "layout")
    )


# --- the log ---------------------------------------------------------------------------------


def test_every_deck_trigger_exists(db):
    """A later migration that rebuilds a watched table on SQLite drops its triggers: this fails
    until that migration creates them again."""
    assert deckchanges.missing_triggers() == []


def test_the_log_sees_every_door(db, make_experiment, make_job, make_checkpoint):
    v = deckchanges.current_version()
    exp = services.create_experiment("t", name="watched")
    assert (exp.pk, None, False) in changes_after(v)

    v = deckchanges.current_version()  # a QuerySet.update (the syncers' way) is seen ...
    Experiment.objects.filter(pk=exp.pk).update(current_state=JobStatus.RUNNING)
    assert changes_after(v) == {(exp.pk, None, False)}
    v = deckchanges.current_version()  # ... and an update that changes nothing is not
    Experiment.objects.filter(pk=exp.pk).update(current_state=JobStatus.RUNNING)
    assert changes_after(v) == set()

    # the job syncer (the jobs table's only writer) records the experiments it touched
    from fake_skypilot import job_record

    from syncing.jobs import JobSyncResult, write_jobs

    def sync(*records):
        write_jobs({r["job_id"]: [r] for r in records}, {}, JobSyncResult())

    sync(job_record(1, "watched", "RUNNING"), job_record(2, "someone-else", "RUNNING"))
    assert changes_after(v) == {(exp.pk, None, False)}
    v = deckchanges.current_version()
    sync(job_record(1, "watched", "RUNNING"))  # nothing new: not shown, not logged
    assert changes_after(v) == set()
    sync(job_record(1, "watched", "SUCCEEDED"))
    assert changes_after(v) == {(exp.pk, None, False)}

    v = deckchanges.current_version()
    make_checkpoint(exp, 7)
    assert changes_after(v) == {(exp.pk, None, False)}
    v = deckchanges.current_version()
    Launch.objects.create(experiment=exp, experiment_name=exp.name, status=LaunchStatus.SUBMITTING)
    assert changes_after(v) == {(exp.pk, None, False)}

    v = deckchanges.current_version()
    group = services.create_group("t", "g1")
    assert (None, group.pk, True) in changes_after(v)  # a new group: the whole deck
    v = deckchanges.current_version()
    services.update_group("t", group, name="g1-renamed")
    assert changes_after(v) == {(None, group.pk, False)}
    v = deckchanges.current_version()
    services.add_to_group("t", group, [exp])
    assert (exp.pk, group.pk, False) in changes_after(v)  # a membership: group and Ungrouped
    other = services.create_group("t", "g2")
    v = deckchanges.current_version()
    services.reorder_groups("t", [other.pk, group.pk])
    assert any(layout for _, _, layout in changes_after(v))

    v = deckchanges.current_version()
    pk = exp.pk
    services.delete_experiments("t", [exp])
    assert {(pk, None, False), (pk, group.pk, False)} <= changes_after(v)


def test_changes_since_names_what_to_render(db, make_experiment):
    exp = make_experiment("one")
    group = services.create_group("t", "g")
    services.add_to_group("t", group, [exp])
    v = deckchanges.current_version()
    assert deckchanges.changes_since(v, v) is None
    Experiment.objects.filter(pk=exp.pk).update(reconcile_note="launched job 5")
    delta = deckchanges.changes_since(v, deckchanges.current_version())
    assert not delta.full and delta.experiments == {exp.pk} and not delta.groups
    # not a version, another history (a restore), or a version from the future: everything
    now = deckchanges.current_version()
    assert deckchanges.changes_since("junk", now).full
    token, last = deckchanges.parse_version(now)
    assert deckchanges.changes_since(f"other{token}-{last}", now).full
    assert deckchanges.changes_since(f"{token}-{last + 5}", now).full
    deckchanges.reset()  # what a restore does
    assert deckchanges.changes_since(now, deckchanges.current_version()).full


def test_a_browser_behind_the_pruned_log_gets_everything(db, make_experiment):
    exp = make_experiment("pruned")
    v = deckchanges.current_version()
    for n in range(5):
        Experiment.objects.filter(pk=exp.pk).update(reconcile_note=f"note {n}")
    assert deckchanges.prune(keep=2) > 0
    assert DeckChange.objects.count() == 2
    assert deckchanges.changes_since(v, deckchanges.current_version()).full


def test_many_changed_rows_render_the_deck(db, monkeypatch):
    monkeypatch.setattr(deckchanges, "MAX_PARTIAL", 3)
    Experiment.objects.bulk_create(Experiment(name=f"m-{i}") for i in range(5))
    v = deckchanges.current_version()
    Experiment.objects.update(reconcile_note="all at once")
    assert deckchanges.changes_since(v, deckchanges.current_version()).full


def test_a_restore_gives_a_new_token(db, monkeypatch):
    """``backups.restore`` calls ``deckchanges.reset()`` once the file is in place."""
    from backups import backup

    calls = []
    monkeypatch.setattr(deckchanges, "reset", lambda: calls.append("reset"))
    monkeypatch.setattr(backup, "ensure_schedules", lambda: None)
    info = type("Info", (), {"missing": set()})()
    assert backup._after_restore(info) == []
    assert calls == ["reset"]


# --- polls -----------------------------------------------------------------------------------


def poll(client, version: str, shown: str | None = None, q: str = ""):
    params = {"v": version}
    if shown is not None:
        params["shown"] = shown
    if q:
        params["q"] = q
    return client.get("/", params, **HTMX_DECK)


def section_html(html: str, group_id: int) -> str:
    start = html.index(f'id="group-{group_id}"')
    return html[html.rindex("<section", 0, start) : html.index("</section>", start)]


def version_of(response) -> str:
    return re.search(r'data-version="([^"]+)"', response.content.decode()).group(1)


def test_a_changed_poll_sends_only_the_changed_section(web, django_assert_max_num_queries):
    a, a_rows = group_of("alpha", 3)
    b, _ = group_of("beta", 3, order=1)
    first = web.get("/", **HTMX_DECK)
    v = version_of(first)
    Experiment.objects.filter(pk=a_rows[1].pk).update(current_state=JobStatus.RUNNING)
    response = poll(web, v, shown=f"{a.pk}:3,{b.pk}:3,u:0")
    assert response["HX-Reswap"] == "none"
    html = response.content.decode()
    assert f'id="group-{a.pk}"' in html and f'id="group-{b.pk}"' not in html
    assert html.count('class="exp-row') == 3 and "alpha-0001" in html
    assert re.search(rf'<section [^>]*id="group-{a.pk}"[^>]*hx-swap-oob="true"', html)
    new = version_of(response)
    assert new != v and f'data-version="{new}" hx-swap-oob="true"' in html
    # the next poll with the new version: nothing to send
    assert "exp-row" not in poll(web, new, shown=f"{a.pk}:3").content.decode()


def shown_of(html: str) -> str:
    """What skydeck.js sends as ``shown`` for a deck: key, rows and layout of each built section."""
    parts = []
    for match in re.finditer(
        r'<section [^>]*data-key="([^"]+)" data-built data-layout="(\w+)"', html
    ):
        rest = html[match.end() : html.find("</section>", match.end())]
        rows = rest.count('class="exp-row')
        parts.append(f"{match.group(1)}:{rows}:{match.group(2)}")
    return ",".join(parts)


def test_a_poll_whose_rows_alone_changed_sends_those_rows(web, make_job):
    a, a_rows = group_of("alpha", 30)
    b, _ = group_of("beta", 3, order=1)
    first = web.get("/", **HTMX_DECK).content.decode()
    shown = shown_of(first)
    assert shown.startswith(f"{a.pk}:30:") and f",{b.pk}:3:" in shown
    Experiment.objects.filter(pk=a_rows[7].pk).update(current_state=JobStatus.RUNNING)
    services.set_desired_state("t", [a_rows[9]], "RUNNING")
    v = re.search(r'data-version="([^"]+)"', first).group(1)
    html = poll(web, v, shown=shown).content.decode()
    assert "<section" not in html  # no section re-rendered ...
    rows = re.findall(
        r'<template><tr id="row-(\d+)-(\d+)" class="exp-row[^"]*" hx-swap-oob="true"', html
    )
    assert sorted(rows) == sorted([(str(a.pk), str(a_rows[7].pk)), (str(a.pk), str(a_rows[9].pk))])
    assert html.count('class="exp-row') == 2  # ... only its two changed rows
    figures = re.search(
        rf'<span class="group-figures" id="group-{a.pk}-figures" hx-swap-oob="true">(.*?)</span></span>',
        html,
    )
    assert figures and "30</span>" in figures.group(1) and "1 running" in figures.group(1)
    assert "lr" in html and 'title="lr = 7"' in html  # the flag cells under the same columns


def test_a_changed_layout_or_an_ungrouped_row_re_renders_the_section(web, make_experiment):
    a, a_rows = group_of("alpha", 4)
    loose = make_experiment("loose")
    first = web.get("/", **HTMX_DECK).content.decode()
    v = re.search(r'data-version="([^"]+)"', first).group(1)
    shown = shown_of(first)
    services.update_experiment("t", a_rows[0], flags={"lr": 0, "new.key": 1})  # a new column
    html = poll(web, v, shown=shown).content.decode()
    assert re.search(rf'<section [^>]*id="group-{a.pk}"[^>]*hx-swap-oob="true"', html)
    assert html.count('class="exp-row') == 4 and "<template><tr" not in html
    v = re.search(r'data-version="([^"]+)"', html).group(1)
    Experiment.objects.filter(pk=loose.pk).update(current_state=JobStatus.RUNNING)
    html = poll(web, v, shown=shown).content.decode()
    assert 'data-key="u"' in html and "<template><tr" not in html  # sorted by name: whole
    v = re.search(r'data-version="([^"]+)"', html).group(1)
    Experiment.objects.filter(pk=a_rows[1].pk).update(reconcile_note="x")
    old_layout = poll(web, v, shown=f"{a.pk}:4:000000000000").content.decode()
    assert re.search(rf'<section [^>]*id="group-{a.pk}"', old_layout)  # the browser's is stale


def test_a_changed_row_the_browser_does_not_show_is_not_sent(web):
    group, rows = group_of("long", 80)
    first = web.get("/", **HTMX_DECK).content.decode()
    v = re.search(r'data-version="([^"]+)"', first).group(1)
    shown = shown_of(first)
    assert shown.startswith(f"{group.pk}:50:")
    Experiment.objects.filter(pk=rows[70].pk).update(reconcile_note="far down")
    html = poll(web, v, shown=shown).content.decode()
    assert "exp-row" not in html and f'id="group-{group.pk}-figures"' in html


def test_a_poll_of_changed_rows_costs_the_same_queries_for_few_and_many(web):
    from django.test.utils import CaptureQueriesContext

    groups = [group_of(f"g{i}", 20, order=i) for i in range(3)]
    cost = {}
    for changed in (1, 15):
        first = web.get("/", **HTMX_DECK).content.decode()
        v = re.search(r'data-version="([^"]+)"', first).group(1)
        ids = [r.pk for _, rows in groups for r in rows[:changed]]
        Experiment.objects.filter(pk__in=ids).update(reconcile_note=f"busy {changed}")
        with CaptureQueriesContext(connection) as queries:
            html = poll(web, v, shown=shown_of(first)).content.decode()
        assert html.count("<template><tr") == 3 * changed and "<section" not in html
        cost[changed] = len(queries)
    assert cost[1] == cost[15]


def test_a_changed_section_keeps_the_rows_the_browser_loaded(web):
    group, rows = group_of("long", 130)
    v = version_of(web.get("/", **HTMX_DECK))
    Experiment.objects.filter(pk=rows[0].pk).update(reconcile_note="changed")
    html = poll(web, v, shown=f"{group.pk}:100").content.decode()
    assert html.count('class="exp-row') == 100  # not back to the first 50
    assert "?offset=100" in html and "Show 30 more of 130" in html


def test_a_poll_leaves_placeholders_and_collapsed_groups_unbuilt(web):
    lazy, lazy_rows = group_of("later", 5)
    folded, folded_rows = group_of("folded", 5, order=1, collapsed=True)
    v = version_of(web.get("/", **HTMX_DECK))
    Experiment.objects.filter(pk__in=[lazy_rows[0].pk, folded_rows[0].pk]).update(
        reconcile_note="x"
    )
    html = poll(web, v, shown="").content.decode()  # the browser has neither loaded
    assert f'id="group-{lazy.pk}"' in html and f'id="group-{folded.pk}"' in html
    assert "exp-row" not in html
    assert f'hx-get="/groups/{lazy.pk}/section"' in html  # still loads when scrolled to


def test_new_or_reordered_groups_and_filters_re_render_the_deck(web):
    group_of("one", 2)
    v = version_of(web.get("/", **HTMX_DECK))
    services.create_group("t", "two")
    response = poll(web, v, shown="")
    assert "HX-Reswap" not in response and 'id="deck"' in response.content.decode()
    v = version_of(response)
    Experiment.objects.filter(name="one-0000").update(reconcile_note="x")
    filtered = poll(web, v, shown="", q="one")
    assert "HX-Reswap" not in filtered  # a filtered deck is re-rendered whole


def test_a_malformed_shown_is_refused(web):
    response = web.get("/", {"v": "x-1", "shown": "12:lots"}, **HTMX_DECK)
    assert response.status_code == 400
    assert "shown" in response.content.decode()


@pytest.mark.parametrize("count", [10, pytest.param(2000, marks=pytest.mark.slow)])
def test_the_unchanged_poll_costs_the_same_at_any_size(web, django_assert_num_queries, count):
    Experiment.objects.bulk_create(Experiment(name=f"p-{i:05d}") for i in range(count))
    v = version_of(web.get("/", **HTMX_DECK))
    # session, user, version, two header counts, health (5), the nodes, read-only check
    with django_assert_num_queries(12):
        response = poll(web, v, shown="u:50")
    assert response["HX-Reswap"] == "none" and "exp-row" not in response.content.decode()


# --- sections ---------------------------------------------------------------------------------


def test_a_first_load_builds_the_first_rows_only(web, monkeypatch):
    monkeypatch.setattr(dashboard, "FIRST_ROWS", 150)
    first, _ = group_of("first", 120)
    second, _ = group_of("second", 40, order=1)
    third, _ = group_of("third", 40, order=2)
    folded, _ = group_of("folded", 40, order=3, collapsed=True)
    html = web.get("/").content.decode()
    assert html.count('class="exp-row') == dashboard.GROUP_ROWS + 40 + 40  # 130: budget 150
    assert f"/groups/{first.pk}/rows?offset={dashboard.GROUP_ROWS}" in html
    assert "Show 50 more of 120" in html
    # all within the first rows: nothing waits to scroll into view; a collapsed one is a header
    assert 'hx-target="closest section"' not in html
    assert f'hx-get="/groups/{folded.pk}/section"' not in html
    section = section_html(html, folded.pk)
    assert "folded-0000" not in html and 'title="40 experiments">40</span>' in section
    assert f'id="group-{third.pk}"' in html and f'id="group-{second.pk}"' in html


def test_groups_after_the_first_rows_load_as_they_scroll_in(web, monkeypatch):
    monkeypatch.setattr(dashboard, "FIRST_ROWS", 150)
    for g in range(5):
        group_of(f"g{g}", 40, order=g)
    html = web.get("/").content.decode()
    assert html.count('class="exp-row') == 160  # whole groups until 150 rows are passed
    last = ExperimentGroup.objects.get(name="g4")
    assert f'hx-get="/groups/{last.pk}/section" hx-trigger="intersect once"' in html
    # a placeholder's header is slim: its tools come with its rows
    assert "Rename" not in section_html(html, last.pk)
    section = web.get(f"/groups/{last.pk}/section", **HTMX)
    assert section.status_code == 200
    body = section.content.decode()
    assert body.count('class="exp-row') == 40 and body.lstrip().startswith("<section")
    assert "Rename" in body


def test_show_more_sends_the_next_rows(web):
    group, _rows = group_of("many", 120)
    response = web.get(f"/groups/{group.pk}/rows", {"offset": 50}, **HTMX)
    html = response.content.decode()
    assert html.count('class="exp-row') == 50
    assert "many-0050" in html and "many-0099" in html and "many-0049" not in html
    assert "?offset=100" in html and "Show 20 more" in html
    tail = web.get(f"/groups/{group.pk}/rows", {"offset": 100}, **HTMX).content.decode()
    assert tail.count('class="exp-row') == 20 and "more-row" not in tail
    # the last row knows it is last (its "move down" is disabled)
    assert 'aria-label="Move many-0119 down" disabled' in tail


def test_sections_follow_the_filter_and_refuse_bad_input(web, make_experiment):
    group, _ = group_of("filt", 10)
    make_experiment("loose-one")
    html = web.get(f"/groups/{group.pk}/section", {"q": "filt-0003"}, **HTMX).content.decode()
    assert html.count('class="exp-row') == 1 and "1 of 10" in html
    assert "loose-one" in web.get("/groups/u/section", **HTMX).content.decode()
    assert web.get(f"/groups/{group.pk}/rows", {"offset": "-1"}, **HTMX).status_code == 400
    assert web.get("/groups/999999/section", **HTMX).status_code == 404
    assert web.get("/groups/nope/section", **HTMX).status_code == 404


def test_a_flag_only_later_rows_have_is_a_column_from_the_start(web):
    """Columns come from every member's flags: rows loaded later line up under them."""
    _group, rows = group_of("cols", 60)
    Experiment.objects.filter(pk=rows[-1].pk).update(flags={"lr": 1, "late": True})
    html = web.get("/").content.decode()
    assert 'title="late"' in html


# --- indexes ----------------------------------------------------------------------------------


def plan_text(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny test tables: ask what it can use
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_the_deck_rows_use_their_indexes(db, make_experiment, make_checkpoint, make_job):
    exp = make_experiment("indexed")
    make_checkpoint(exp, 3)
    make_job(name="indexed", status=JobStatus.RUNNING)
    plan = plan_text(Experiment.objects.with_latest())
    if connection.vendor == "sqlite":
        assert "checkpoints_latest_idx" in plan  # latest epoch: ORDER BY epoch DESC LIMIT 1
        assert "jobs_experiment_status_idx" in plan  # has an active job
        assert "jobs_experiment_latest_idx" in plan  # the latest job
    else:  # PostgreSQL picks among the (experiment, ...) indexes by its statistics: on tiny
        # tables the foreign key's index serves the latest epoch as well as the (experiment,
        # epoch) one, depending on what the tests before left in pg_statistic
        assert "jobs_experiment_" in plan and "Seq Scan on checkpoints" not in plan
        # an index of checkpoints, whichever (Index / Index Only / Bitmap Index Scan)
        assert re.search(r"(using|on) checkpoints_\w+", plan), plan
    assert exp.pk in {e.pk for e in Experiment.objects.with_latest().filter(latest_epoch=3)}


def test_the_latest_epoch_skips_missing_checkpoints(db, make_experiment, make_checkpoint):
    exp = make_experiment("holes")
    make_checkpoint(exp, 5)
    make_checkpoint(exp, 9, missing=True)
    assert Experiment.objects.with_latest().get(pk=exp.pk).latest_epoch == 5
    Checkpoint.objects.filter(experiment=exp).update(missing=True)
    assert Experiment.objects.with_latest().get(pk=exp.pk).latest_epoch is None


# --- compression ------------------------------------------------------------------------------


def test_pages_are_compressed_and_streams_are_not(web, make_experiment, make_job, monkeypatch):
    for i in range(30):
        make_experiment(f"zip-{i:02d}", flags={"lr": i})
    plain = web.get("/")
    zipped = web.get("/", HTTP_ACCEPT_ENCODING="gzip")
    assert zipped["Content-Encoding"] == "gzip" and "Accept-Encoding" in zipped["Vary"]
    assert len(zipped.content) * 4 < len(plain.content)
    import gzip

    assert gzip.decompress(zipped.content).count(b'class="exp-row') == 30
    # the job log's event stream is never held back in a compressor
    job = make_job(77, "zip-00", status=JobStatus.RUNNING)
    from syncing import services as actions

    monkeypatch.setattr(actions, "open_log_stream", lambda *a, **k: iter([b"data: x\n\n"]))
    stream = web.get(f"/jobs/{job.pk}/logs/stream", HTTP_ACCEPT_ENCODING="gzip")
    assert stream.streaming and not stream.has_header("Content-Encoding")
