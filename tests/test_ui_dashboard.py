"""The dashboard `/`: login, layout of groups and columns, states, health pills, constant queries."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from experiments import dashboard, services
from experiments.models import (
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentGroupMember,
    Job,
    JobStatus,
    Launch,
    SyncState,
)

#: Queries for "/" whatever the number of rows: session, user, experiments (with_latest),
#: memberships, groups, active-job count, health_report() (SELECT 1, sync states, the
#: reconciler's mode, which the header's reconciler pill reuses, two worker-liveness
#: aggregates, the stalled / often-recovered active jobs, and the nodes).
DASHBOARD_QUERIES = 19  # ... of which one asks whether the user is read-only
HTMX_DECK = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "deck"}


@pytest.fixture
def user(db):
    return User.objects.create_user("alice", password="pw", first_name="Alice", last_name="Ng")


@pytest.fixture
def client(web):
    """Every request of this file is a logged-in user's (``user`` above)."""
    return web


def seed(count: int, groups: int = 5) -> None:
    """``count`` experiments spread over ``groups`` groups, with jobs and checkpoints (bulk)."""
    now = timezone.now()
    Experiment.objects.bulk_create(
        Experiment(
            name=f"seed-{i:04d}",
            flags={"lr": 0.001 * (i % 3 + 1), "batch": 1024 * (i % 2 + 1), "seed": i},
            nodes=1 + i % 2,
            gpus=8,
            accelerator="H100",
            desired_state=DesiredState.RUNNING if i % 4 == 0 else DesiredState.STOPPED,
        )
        for i in range(count)
    )
    experiments = list(Experiment.objects.filter(name__startswith="seed-").order_by("name"))
    group_objs = ExperimentGroup.objects.bulk_create(
        ExperimentGroup(name=f"group-{g}", order=g) for g in range(groups)
    )
    members = [
        ExperimentGroupMember(group=group_objs[i % groups], experiment=e, order=i)
        for i, e in enumerate(experiments)
        if i % 7  # every 7th stays ungrouped
    ]
    ExperimentGroupMember.objects.bulk_create(members)
    Job.objects.bulk_create(
        Job(
            id=100_000 + i,
            experiment_id=e.name,
            job_name=e.name,
            status=JobStatus.RUNNING if i % 2 else JobStatus.FAILED,
            submitted_at=now - timedelta(minutes=i),
            first_seen=now,
            last_seen=now,
        )
        for i, e in enumerate(experiments)
    )
    Checkpoint.objects.bulk_create(
        Checkpoint(
            experiment=e,
            epoch=epoch,
            model_path=f"s3://b/p/{e.name}/{e.name}:v{epoch}.mpt",
            synced_at=now,
        )
        for e in experiments
        for epoch in (1, 2)
    )
    Experiment.objects.refresh_current_state()


# --- access ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_is_sent_to_login():
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next=/"


@pytest.mark.django_db
def test_anonymous_htmx_request_redirects_whole_page():
    response = Client().get("/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="deck")
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith(reverse("login"))


def test_login_form_logs_in_and_shows_name(user):
    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="username"' in page.content
    response = client.post(
        reverse("login"), {"username": "alice", "password": "pw", "next": "/"}, follow=True
    )
    assert response.status_code == 200
    assert b"Alice Ng" in response.content
    assert b'action="/accounts/logout/"' in response.content


def test_wrong_password_shows_error(user):
    response = Client().post(reverse("login"), {"username": "alice", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content


def test_logout_is_a_post(client):
    assert client.post(reverse("logout")).status_code == 302
    assert client.get("/").status_code == 302


def test_base_page_has_htmx_csrf_header_and_static(client):
    html = client.get("/").content.decode()
    assert "django_htmx/htmx-2.min.js" in html  # vendored, no CDN
    assert "https://unpkg" not in html and "cdn." not in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html
    assert "skydeck/skydeck.css" in html and "skydeck/skydeck.js" in html


def test_static_files_are_served(client):
    css = client.get("/static/skydeck/skydeck.css")
    assert css.status_code == 200
    assert b"prefers-color-scheme: dark" in b"".join(css.streaming_content)


# --- layout ---------------------------------------------------------------------------------


def test_groups_in_order_with_ungrouped_last(client, make_experiment):
    a, b = make_experiment("alpha"), make_experiment("bravo")
    make_experiment("charlie")
    second = services.create_group("t", "second")
    first = services.create_group("t", "first")
    services.reorder_groups("t", [first.pk, second.pk])
    services.add_to_group("t", first, [b])
    services.add_to_group("t", second, [a])
    html = client.get("/").content.decode()
    assert html.index(">first</h2>") < html.index(">second</h2>") < html.index(">Ungrouped</h2>")
    assert html.index("bravo") < html.index(">alpha<") < html.index("charlie")


def test_members_shown_in_member_order(client, make_experiment):
    group = services.create_group("t", "g")
    exps = [make_experiment(n) for n in ("zulu", "yankee", "xray")]
    services.add_to_group("t", group, exps)
    html = client.get("/").content.decode()
    assert html.index(">zulu<") < html.index(">yankee<") < html.index(">xray<")


def test_flag_columns_common_pills_and_formatting(client, make_experiment):
    group = services.create_group("t", "sweep")
    a = make_experiment("a1", flags={"env": "arena", "lr": 0.001, "steps": 1500, "spot": True})
    b = make_experiment("b1", flags={"env": "arena", "lr": 0.002, "steps": 2_000_000})
    services.add_to_group("t", group, [a, b])
    view = dashboard.build_dashboard().groups[0]
    assert [c.key for c in view.columns] == ["lr", "spot", "steps"]
    assert [f.text for f in view.common] == ["env=arena"]
    cells = {r.experiment.name: [c.text for c in r.cells] for r in view.rows}
    assert cells == {"a1": ["0.001", "✓", "1500"], "b1": ["0.002", dashboard.MISSING, "2000000"]}
    html = client.get("/").content.decode()
    # exact, the digits of a wide one grouped by CSS (a copy gives 2000000)
    assert "env=arena" in html and ">1500<" in html
    assert '>2<span class="dg">000</span><span class="dg">000</span><' in html


def test_group_flags_choose_columns(client, make_experiment):
    group = services.create_group("t", "chosen", flags=["lr"])
    a = make_experiment("a2", flags={"lr": 1, "other": 1})
    b = make_experiment("b2", flags={"lr": 2, "other": 2})
    services.add_to_group("t", group, [a, b])
    view = dashboard.build_dashboard().groups[0]
    assert [c.key for c in view.columns] == ["lr"]


def test_boolean_false_and_formatting_helpers():
    assert dashboard.format_flag(False) == "✗"
    # exact numbers: 1000 and 1024 differ, floats in their shortest round-trip form
    assert dashboard.format_flag(131072) == "131072"
    assert dashboard.format_flag(1000) != dashboard.format_flag(1024)
    assert dashboard.format_flag(999_999) == "999999"
    assert dashboard.format_flag(0.0003) == "0.0003"
    assert dashboard.format_flag(1e-05) == "1e-05"
    assert dashboard.format_flag(0.1 + 0.2) == "0.30000000000000004"
    assert dashboard.format_flag(3.0) == "3.0"
    assert dashboard.format_flag(-1234567) == "-1234567"
    assert dashboard.format_flag("text") == "text"
    from experiments.templatetags.skydeck import grouped_digits

    assert grouped_digits("131072") == '131<span class="dg">072</span>'
    assert grouped_digits("-1234567") == '-1<span class="dg">234</span><span class="dg">567</span>'
    assert grouped_digits("1024") == "1024"


def test_dotted_flags_get_grouped_two_level_headers(client, make_experiment):
    group = services.create_group("t", "nested")
    a = make_experiment(
        "n1", flags={"trainer.lr": 0.1, "seed": 1, "env.name": "a", "trainer.batch": 8}
    )
    b = make_experiment(
        "n2", flags={"trainer.lr": 0.2, "seed": 2, "env.name": "b", "trainer.batch": 16}
    )
    services.add_to_group("t", group, [a, b])
    view = dashboard.build_dashboard().groups[0]
    assert [c.key for c in view.columns] == ["env.name", "seed", "trainer.batch", "trainer.lr"]
    assert [c.label for c in view.columns] == ["name", "seed", "batch", "lr"]
    assert [(b.label, b.span, b.parent) for b in view.bands] == [
        ("env", 1, True),
        ("seed", 1, False),
        ("trainer", 2, True),
    ]
    html = client.get("/").content.decode()
    assert 'scope="colgroup" colspan="2" title="trainer.*">trainer</th>' in html
    # a plain flag spans both header rows; every flag head sorts (a link setting sort: in q)
    assert re.search(r'rowspan="2" title="seed"><a class="sort-link" href="/\?q=sort:seed"', html)
    leaf_row = html[
        html.index('<tr class="leaf-row">') : html.index("</tr>", html.index("leaf-row"))
    ]
    assert re.findall(r'class="sort-link"[^>]*>([^<]+)</a>', leaf_row) == ["name", "batch", "lr"]
    assert 'href="/?q=sort:env.name"' in leaf_row and 'href="/?q=sort:trainer.lr"' in leaf_row
    # cells follow the same column order as the headers
    row = next(r for r in view.rows if r.experiment.name == "n2")
    assert [c.text for c in row.cells] == ["b", "2", "16", "0.2"]


def test_group_flag_order_keeps_dotted_siblings_together():
    assert dashboard.order_by_parent(["a.x", "lr", "a.y", "b.z", "a.w"]) == [
        "a.x",
        "a.y",
        "a.w",
        "lr",
        "b.z",
    ]
    flat = [dashboard.Column(k, k) for k in ("lr", "seed")]
    assert dashboard.header_bands(flat) == []


def test_flat_flags_keep_one_header_row(client, make_experiment):
    make_experiment("flat1", flags={"lr": 1})
    make_experiment("flat2", flags={"lr": 2})
    html = client.get("/").content.decode()
    assert "leaf-row" not in html and "colgroup" not in html
    # the flag is still a column, in the one header row
    assert (
        html.count(
            '<th class="c-flag" scope="col" title="lr"><a class="sort-link" href="/?q=sort:lr"'
        )
        == 1
    )
    assert 'rowspan="1"' in html and 'rowspan="2"' not in html


@pytest.mark.parametrize("status", [*JobStatus.values, "NO_JOB"])
def test_every_state_has_a_colour(status):
    assert dashboard.state_tone(status) in {"idle", "wait", "run", "warn", "wind", "done", "fail"}
    if status in JobStatus.failed():
        assert dashboard.state_tone(status) == "fail"


def test_desired_state_hint(client, make_experiment, make_job):
    want_run = make_experiment("want-run")
    services.set_desired_state("t", [want_run], DesiredState.RUNNING)
    stop = make_experiment("want-stop")
    make_job(555, name="want-stop", status=JobStatus.RUNNING)
    Launch.objects.create(experiment=stop, experiment_name="want-stop", status="LISTED", job_id=555)
    make_experiment("not-ours")  # someone else's job: the reconciler never cancels it
    make_job(556, name="not-ours", status=JobStatus.RUNNING, user_name="dave")
    settled = make_experiment("settled")
    make_job(name="settled", status=JobStatus.RUNNING)
    services.set_desired_state("t", [settled], DesiredState.RUNNING)
    Experiment.objects.refresh_current_state()
    rows = {
        r.experiment.name: r.experiment for g in dashboard.build_dashboard().groups for r in g.rows
    }
    assert rows["want-run"].desired_hint == "RUNNING"
    assert rows["want-stop"].desired_hint == "STOPPED"
    assert rows["settled"].desired_hint == ""
    assert rows["not-ours"].desired_hint == ""
    html = client.get("/").content.decode()
    assert "→ RUNNING" in html and "→ STOPPED" in html


def test_parked_reason_and_reconcile_note_shown(client, make_experiment):
    parked = make_experiment("parked")
    Experiment.objects.filter(pk=parked.pk).update(parked_reason="5 failures in a row")
    noted = make_experiment("noted")
    Experiment.objects.filter(pk=noted.pk).update(reconcile_note="waiting for backoff")
    html = client.get("/").content.decode()
    assert "Parked: 5 failures in a row" in html
    assert "waiting for backoff" in html


def test_row_shows_epoch_and_shape(client, make_experiment, make_checkpoint):
    exp = make_experiment("shape", nodes=2, gpus=8, accelerator="H100")
    make_checkpoint(exp, 120)
    make_checkpoint(exp, 80)
    html = client.get("/").content.decode()
    assert f"2{dashboard.TIMES}8 H100" in html
    assert ">120<" in html


def test_counts_in_header(client, make_experiment, make_job):
    make_experiment("one")
    make_experiment("two")
    make_job(name="one", status=JobStatus.RUNNING)
    make_job(name="orphan", status=JobStatus.PENDING)
    make_job(name="one", status=JobStatus.SUCCEEDED)
    board = dashboard.build_dashboard()
    assert (board.total_experiments, board.active_jobs) == (2, 2)
    html = client.get("/").content.decode()
    assert "<strong>2</strong> experiments" in html
    assert "<strong>2</strong> active jobs" in html


# --- health pills ---------------------------------------------------------------------------


def _pill(source: str) -> dashboard.HealthPill:
    return next(p for p in dashboard.health_pills() if p.source == source)


@pytest.mark.django_db
def test_health_pills_fresh_late_failed_and_never(settings):
    settings.SKYDECK_SYNC_SKYPILOT_INTERVAL = 30
    settings.SKYDECK_SYNC_S3_INTERVAL = 60
    now = timezone.now()
    assert _pill("skypilot").tone == "unknown"
    SyncState.objects.create(
        source="skypilot",
        last_attempt_at=now - timedelta(seconds=12),
        last_success_at=now - timedelta(seconds=12),
    )
    pill = _pill("skypilot")
    assert (pill.tone, pill.text) == ("ok", "12 s ago")
    SyncState.objects.filter(source="skypilot").update(
        last_attempt_at=now - timedelta(seconds=150), last_success_at=now - timedelta(seconds=150)
    )
    assert _pill("skypilot").tone == "late"
    SyncState.objects.filter(source="skypilot").update(
        last_attempt_at=now - timedelta(hours=1), last_success_at=now - timedelta(hours=1)
    )
    assert _pill("skypilot").tone == "bad"
    # a fresh success followed by a failed attempt is red, never green
    SyncState.objects.create(
        source="s3",
        last_attempt_at=now - timedelta(seconds=1),
        last_success_at=now - timedelta(seconds=5),
        last_error="AccessDenied <b>",
    )
    pill = _pill("s3")
    assert pill.tone == "bad"
    assert "AccessDenied" in pill.title


@pytest.mark.django_db
def test_worker_pill_only_when_worker_is_down():
    down = {"database": "ok", "sync": {}, "worker": {"alive": False, "last_task_at": None}}
    assert [p.source for p in dashboard.health_pills(down)] == ["worker"]
    assert dashboard.health_pills(down)[0].tone == "bad"
    up = {"database": "ok", "sync": {}, "worker": {"alive": True}}
    assert dashboard.health_pills(up) == []
    unreachable = {"database": "unreachable: OperationalError", "status": "error"}
    assert dashboard.health_pills(unreachable)[0].tone == "bad"


def test_health_error_visible_in_title_escaped(client):
    now = timezone.now()
    SyncState.objects.create(
        source="s3", last_attempt_at=now, last_success_at=None, last_error="boom <script>x</script>"
    )
    html = client.get("/").content.decode()
    assert "health-bad" in html
    assert "boom &lt;script&gt;x&lt;/script&gt;" in html


# --- search ---------------------------------------------------------------------------------


def test_search_filters_and_is_kept_in_url(client, make_experiment):
    make_experiment("needle-one", flags={"color": "red"})
    make_experiment("hay", flags={"color": "blue"})
    html = client.get("/?q=needle").content.decode()
    assert "needle-one" in html and ">hay<" not in html
    assert 'value="needle"' in html  # the box keeps the query
    html = client.get("/?q=blue").content.decode()  # flag values
    assert ">hay<" in html and "needle-one" not in html
    html = client.get("/?q=NO_JOB").content.decode()  # states
    assert ">hay<" in html and "needle-one" in html
    deck = client.get("/?q=needle", **HTMX_DECK).content.decode()
    assert 'hx-get="/?q=needle"' in deck and ">hay<" not in deck


def test_deck_fragment_has_status_out_of_band(client, make_experiment):
    make_experiment("frag")
    response = client.get("/", **HTMX_DECK)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="deck"')
    assert 'id="status" class="status" hx-swap-oob="true"' in html
    assert "<html" not in html
    assert "HX-Request" in response["Vary"]


def test_deck_polls_only_while_visible(client, make_experiment):
    make_experiment("poll")
    html = client.get("/").content.decode()
    # a 10 s poll, held back by skydeck.js while the tab is hidden or an edit is under way (the
    # gate is not an hx-trigger filter: those need eval, which the CSP refuses)
    assert 'hx-trigger="every 10s, refresh-deck from:body" data-poll-gate="deck-idle"' in html


# --- constant queries -----------------------------------------------------------------------


#: Deck sizes the query-count guards run at; 500 experiments is a slow proof (.ci/run: -m slow).
SCALES = [10, 60, pytest.param(500, marks=pytest.mark.slow)]


@pytest.mark.parametrize("count", SCALES)
def test_dashboard_query_count_is_constant(client, django_assert_max_num_queries, count):
    seed(count)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/")
    assert response.status_code == 200
    # a first load builds the first rows only (FIRST_ROWS; at most GROUP_ROWS per group)
    built = sum(len(v.rows) for v in response.context["board"].groups)
    assert response.content.count(b'class="exp-row') == built
    if count <= dashboard.FIRST_ROWS:
        assert built == count
    else:  # whole groups' first rows until the budget is used up, never the whole deck
        assert dashboard.FIRST_ROWS <= built < dashboard.FIRST_ROWS + dashboard.GROUP_ROWS


@pytest.mark.parametrize("count", SCALES)
def test_deck_fragment_query_count_is_constant(client, django_assert_max_num_queries, count):
    seed(count)
    with django_assert_max_num_queries(DASHBOARD_QUERIES):
        response = client.get("/", **HTMX_DECK)
    assert response.status_code == 200


@pytest.mark.parametrize("count", SCALES)
def test_search_query_count_is_constant(client, django_assert_max_num_queries, count):
    seed(count)
    # + the unfiltered totals (experiments, and members per group)
    with django_assert_max_num_queries(DASHBOARD_QUERIES + 2):
        response = client.get("/?q=seed-00")
    assert response.status_code == 200


def test_collapsed_group_hides_rows(client, make_experiment):
    group = services.create_group("t", "folded")
    services.add_to_group("t", group, [make_experiment("hidden-row")])
    services.update_group("t", group, collapsed=True)
    html = client.get("/").content.decode()
    assert ">folded</h2>" in html
    assert "hidden-row" not in html
    assert 'aria-expanded="false"' in html


def test_unchanged_deck_poll_sends_only_the_header(client, make_experiment):
    exp = make_experiment("steady")
    first = client.get("/", **HTMX_DECK)
    version = first.context["board"].version
    assert f'data-version="{version}"' in first.content.decode()
    again = client.get(f"/?v={version}", **HTMX_DECK)
    assert again["HX-Reswap"] == "none"
    html = again.content.decode()
    assert 'id="status"' in html and "hx-swap-oob" in html and "steady" not in html
    # any visible change gives a new version and the section that changed, out of band
    services.set_desired_state("t", [exp], DesiredState.RUNNING)
    changed = client.get(f"/?v={version}", **HTMX_DECK)
    assert changed["HX-Reswap"] == "none"
    html = changed.content.decode()
    assert 'id="group-ungrouped"' in html and "steady" in html
    new = changed.context["board"].version
    assert new != version and f'data-version="{new}" hx-swap-oob="true"' in html


def test_version_follows_jobs_and_checkpoints(make_experiment, make_job, make_checkpoint):
    exp = make_experiment("versioned")
    v1 = dashboard.build_dashboard().version
    assert dashboard.build_dashboard().version == v1
    # jobs come from the job syncer, the jobs table's only writer (it logs what it touched)
    from fake_skypilot import job_record

    from syncing.jobs import JobSyncResult, write_jobs

    write_jobs({5: [job_record(5, "versioned", "RUNNING")]}, {}, JobSyncResult())
    v2 = dashboard.build_dashboard().version
    assert v2 != v1
    make_checkpoint(exp, 3)
    assert dashboard.build_dashboard().version != v2


def test_deck_fragment_rows_have_every_cell(client, make_experiment):
    make_experiment("cells", flags={"a": 1})
    html = client.get("/", **HTMX_DECK).content.decode()
    row = html[html.index('class="exp-row') : html.index("</tr>", html.index('class="exp-row'))]
    assert 'class="c-star"' in row and 'class="c-state"' in row
    assert "hx-swap-oob" not in row
