"""UI pages and fragments: expanded row, jobs, operations, links; login, CSRF and escaping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, JobStatus, OperationLog

HX = {"HTTP_HX_REQUEST": "true"}
XSS = "<script>alert(1)</script>"


@pytest.fixture
def client(web):
    """Every request of this file is a logged-in user's."""
    return web


# --- login required everywhere --------------------------------------------------------------

GET_URLS = [
    ("dashboard", []),
    ("jobs", []),
    ("operations", []),
    ("experiment_create", []),
    ("experiment_detail", [1]),
    ("experiment_panels", [1]),
    ("experiment_edit", [1]),
    ("experiment_delete", [1]),
    ("group_delete", [1]),
    # issue 12: the confirmations and the name check
    ("experiment_desired", [1]),
    ("experiment_adopt", [1]),
    ("experiment_name_check", []),
    ("bulk_confirm", []),
    ("job_cancel", [1]),
    ("reconciler_resume", []),
]
POST_URLS = [
    ("experiment_create", []),
    ("bulk_action", []),
    ("experiment_edit", [1]),
    ("experiment_duplicate", [1]),
    ("experiment_delete", [1]),
    ("experiment_desired", [1]),
    ("experiment_star", [1]),
    ("experiment_adopt", [1]),
    ("job_cancel", [1]),
    ("reconciler_resume", []),
    ("group_create", []),
    ("group_rename", [1]),
    ("group_collapse", [1]),
    ("group_delete", [1]),
    ("group_move", [1]),
    ("member_move", [1, 1]),
]


@pytest.mark.parametrize(("name", "args"), GET_URLS)
def test_anonymous_get_redirects_to_login(db, name, args):
    url = reverse(name, args=args)
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")


@pytest.mark.parametrize(("name", "args"), POST_URLS)
def test_anonymous_post_changes_nothing(db, make_experiment, name, args):
    exp = make_experiment("target")
    group = services.create_group("t", "grp")
    if name == "member_move":
        args = [group.pk, exp.pk]
    elif args:
        args = [group.pk] if name.startswith("group") else [exp.pk]
    before = OperationLog.objects.count()
    data = {"state": "RUNNING", "name": "x", "confirmed": "1"}
    response = Client().post(reverse(name, args=args), data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert OperationLog.objects.count() == before


def test_api_health_stays_public(db):
    assert Client().get("/api/health").status_code in (200, 503)


# --- CSRF -----------------------------------------------------------------------------------


def test_csrf_enforced_on_ui_posts(user, make_experiment):
    exp = make_experiment("csrf")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING", "confirmed": "1"}
    )
    assert response.status_code == 403
    exp.refresh_from_db()
    assert exp.desired_state == "STOPPED"
    # the token from the page, sent the way htmx sends it (the X-CSRFToken header from <body>)
    client.get("/")
    token = client.cookies["csrftoken"].value
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "RUNNING", "confirmed": "1"},
        HTTP_X_CSRFTOKEN=token,
        **HX,
    )
    assert response.status_code == 200
    exp.refresh_from_db()
    assert exp.desired_state == "RUNNING"


def test_csrf_enforced_on_login_form(user):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("login"), {"username": "alice", "password": "pw"})
    assert response.status_code == 403


# --- escaping -------------------------------------------------------------------------------


def test_markup_in_flag_values_and_descriptions_is_escaped(client, make_experiment, make_job):
    exp = make_experiment("xss-target", flags={"note": XSS, "a": 1}, description=XSS)
    other = make_experiment("xss-other", flags={"note": "plain", "a": 2})
    group = services.create_group("t", "xss-group")
    services.add_to_group("t", group, [exp, other])
    make_job(name="xss-target", failure_reason=XSS, user_name=XSS)
    services.record("alice", "update", experiment=exp, message=XSS)
    pages = [
        client.get("/"),
        client.get("/", HTTP_HX_TARGET="deck", **HX),
        client.get(reverse("experiment_detail", args=[exp.pk])),
        client.get(reverse("experiment_detail", args=[exp.pk]), **HX),
        client.get(reverse("experiment_panels", args=[exp.pk]), **HX),
        client.get(reverse("jobs")),
        client.get(reverse("operations")),
        client.get(f"/?q={XSS}"),
    ]
    for response in pages:
        html = response.content.decode()
        assert response.status_code == 200
        assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].content.decode()


def test_flag_key_markup_cannot_be_saved(client, make_experiment):
    exp = make_experiment("keys")
    response = client.post(
        reverse("experiment_edit", args=[exp.pk]),
        {"name": "keys", "nodes": "1", "gpus": "0", "flag_key": ["<b>"], "flag_value": ["1"]},
        **HX,
    )
    assert response.status_code == 400
    assert b"<b>" not in response.content


# --- expanded row ---------------------------------------------------------------------------


def test_detail_partial_and_full_page(client, make_experiment, make_job, make_checkpoint):
    exp = make_experiment(
        "detailed",
        flags={"lr": 0.1},
        base_command="uv run",
        tool_path="tools/train.py",
        nodes=2,
        gpus=8,
        accelerator="H100",
    )
    now = timezone.now()
    make_job(
        1234,
        name="detailed",
        status=JobStatus.FAILED,
        user_name="bob",
        started_at=now - timedelta(hours=2),
        ended_at=now - timedelta(hours=1),
        duration=3600,
        resources="2x[H100:8]",
        recovery_count=3,
        failure_reason="OOM",
    )
    make_checkpoint(exp, 50, size=2048, missing=True)
    make_checkpoint(exp, 40, size=1024)
    partial = client.get(reverse("experiment_detail", args=[exp.pk]), **HX)
    html = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in html
    assert "uv run tools/train.py run=detailed lr=0.1" in html  # launch preview command
    assert "num_nodes: 2" in html and "H100:8" in html  # task YAML
    assert ">1234<" in html and ">bob<" in html and "OOM" in html and "1 h 00 min" in html
    assert "2x[H100:8]" in html and ">3<" in html
    assert "s3://softmax-public/policies/detailed/detailed:v50.mpt" in html
    assert "missing" in html and "2.0\xa0KB" in html
    assert "data-copy" in html
    # polls every 5 s while the tab is visible (the gate is in skydeck.js: the CSP forbids eval)
    assert 'hx-trigger="every 5s, refresh-deck from:body, refresh-panels from:body"' in html
    assert 'data-poll-gate="visible"' in html
    # the poller is the panels container, not the editor
    editor_start = html.index('<form class="editor')
    panels_start = html.index('class="panels"')
    assert "hx-trigger" not in html[editor_start : html.index("</form>", editor_start)]
    assert "every 5s" in html[panels_start : panels_start + 400]
    full = client.get(reverse("experiment_detail", args=[exp.pk]))
    assert full.status_code == 200 and "<html" in full.content.decode()
    assert b"uv run tools/train.py" in full.content


def test_detail_shows_why_there_is_no_launch(client, make_experiment):
    exp = make_experiment("no-command")
    html = client.get(reverse("experiment_detail", args=[exp.pk]), **HX).content.decode()
    assert "Nothing can be launched" in html and "has no command" in html


def test_detail_shows_operation_log(client, make_experiment):
    exp = make_experiment("logged")
    client.post(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING", "confirmed": "1"}, **HX
    )
    html = client.get(reverse("experiment_panels", args=[exp.pk]), **HX).content.decode()
    assert ">alice<" in html and ">start<" in html and ">tester<" in html


def test_panels_stop_polling_when_experiment_is_gone(client):
    response = client.get(reverse("experiment_panels", args=[4242]), **HX)
    assert response.status_code == 286
    assert b"no longer exists" in response.content


def test_detail_query_count_is_constant(
    client, make_experiment, make_job, make_checkpoint, django_assert_max_num_queries
):
    exp = make_experiment("many", base_command="run")
    for i in range(30):
        make_job(name="many", status=JobStatus.SUCCEEDED)
        make_checkpoint(exp, i)
    with django_assert_max_num_queries(8):
        assert client.get(reverse("experiment_detail", args=[exp.pk]), **HX).status_code == 200
    with django_assert_max_num_queries(7):
        assert client.get(reverse("experiment_panels", args=[exp.pk]), **HX).status_code == 200


# --- links ----------------------------------------------------------------------------------


def test_links_hidden_unless_configured(client, make_experiment, make_job, make_checkpoint):
    exp = make_experiment("linked")
    make_job(77, name="linked")
    make_checkpoint(exp, 5)
    html = client.get(reverse("experiment_detail", args=[exp.pk]), **HX).content.decode()
    assert "wandb.example" not in html and "W&amp;B" not in html and ">logs<" not in html


def test_links_shown_when_configured(client, settings, make_experiment, make_job, make_checkpoint):
    settings.SKYDECK_LINK_WANDB = "https://wandb.example/runs/{name}"
    settings.SKYDECK_LINK_SKYPILOT_JOB = "https://sky.example/jobs/{job_id}"
    settings.SKYDECK_LINK_LOGS = "https://logs.example/{name}/{job_id}"
    settings.SKYDECK_LINK_CHECKPOINT_VIEWER = "https://viewer.example/{name}?epoch={epoch}"
    exp = make_experiment("linked")
    make_job(77, name="linked")
    make_checkpoint(exp, 5)
    html = client.get(reverse("experiment_detail", args=[exp.pk]), **HX).content.decode()
    assert 'href="https://wandb.example/runs/linked"' in html
    assert 'href="https://sky.example/jobs/77"' in html
    assert 'href="https://logs.example/linked/77"' in html
    assert 'href="https://viewer.example/linked?epoch=5"' in html
    jobs = client.get(reverse("jobs")).content.decode()
    assert 'href="https://sky.example/jobs/77"' in jobs


def test_unsafe_link_templates_are_not_rendered(client, settings, make_experiment):
    settings.SKYDECK_LINK_WANDB = "javascript:alert('{name}')"
    exp = make_experiment("unsafe")
    html = client.get(reverse("experiment_detail", args=[exp.pk]), **HX).content.decode()
    assert "javascript:" not in html


# --- jobs page ------------------------------------------------------------------------------


def test_jobs_page_newest_first_with_links_and_orphans(client, make_experiment, make_job):
    exp = make_experiment("owner")
    now = timezone.now()
    make_job(1, name="owner", submitted_at=now - timedelta(hours=2))
    make_job(2, name="ghost", submitted_at=now - timedelta(hours=1))
    html = client.get(reverse("jobs")).content.decode()
    assert html.index(">ghost<") < html.index(">owner<")
    assert f'href="{reverse("experiment_detail", args=[exp.pk])}"' in html
    assert "orphaned" in html


def test_jobs_filters_are_kept_in_the_url(client, make_experiment, make_job):
    make_experiment("fexp")
    make_job(1, name="fexp", status=JobStatus.RUNNING, user_name="alice")
    make_job(2, name="fexp", status=JobStatus.SUCCEEDED, user_name="bob")
    make_job(3, name="orphan-job", status=JobStatus.FAILED, user_name="bob")

    def ids(query: str) -> set[int]:
        response = client.get(reverse("jobs") + query)
        return {j.id for j in response.context["jobs"]}

    assert ids("") == {1, 2, 3}
    assert ids("?status=RUNNING") == {1}
    assert ids("?failed=true") == {3}  # any failure status (JobFilter, as /api/jobs/)
    assert ids("?user=bob") == {2, 3}
    assert ids("?experiment=fexp") == {1, 2}
    assert ids("?orphaned=true") == {3}
    assert ids("?active=true") == {1}
    assert ids("?user=bob&orphaned=true") == {3}
    html = client.get(reverse("jobs") + "?user=bob&status=SUCCEEDED").content.decode()
    assert 'value="bob"' in html and '<option value="SUCCEEDED" selected>' in html


def test_jobs_pagination_keeps_filters(client, make_job):
    for i in range(120):
        make_job(1000 + i, name="bulk", user_name="carol")
    page1 = client.get(reverse("jobs") + "?user=carol")
    assert len(page1.context["jobs"]) == 50
    html = page1.content.decode()
    assert "Page 1 of 3" in html
    assert 'href="?user=carol&amp;page=2"' in html
    page3 = client.get(reverse("jobs") + "?user=carol&page=3")
    assert len(page3.context["jobs"]) == 20
    assert client.get(reverse("jobs") + "?page=abc").status_code == 200
    assert client.get(reverse("jobs") + "?page=999").status_code == 200


@pytest.mark.parametrize("count", [5, 120])
def test_jobs_query_count_is_constant(
    client, make_job, make_experiment, count, django_assert_max_num_queries
):
    for i in range(5):
        make_experiment(f"q{i}")
    for i in range(count):
        make_job(5000 + i, name=f"q{i % 7}")
    with django_assert_max_num_queries(6):  # 5, and whether the user is read-only
        assert client.get(reverse("jobs")).status_code == 200


# --- operations page ------------------------------------------------------------------------


def test_operations_page_filters(client, make_experiment):
    exp = make_experiment("opexp")
    client.post(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING", "confirmed": "1"}, **HX
    )
    services.record("reconciler", "launch", experiment=exp, success=False, message="no quota")

    def ops(query: str) -> list[tuple[str, str]]:
        response = client.get(reverse("operations") + query)
        assert response.status_code == 200
        return [(o.actor, o.operation) for o in response.context["operations"]]

    assert ops("") == [("reconciler", "launch"), ("alice", "start"), ("tester", "create")]
    assert ops("?actor=alice") == [("alice", "start")]
    assert ops("?operation=create") == [("tester", "create")]
    assert ops("?success=false") == [("reconciler", "launch")]
    assert ops("?experiment=opexp&actor=reconciler") == [("reconciler", "launch")]
    assert ops("?experiment=opex") == []  # exact, as on /api/operations/; q is the substring
    assert ops("?q=opex&actor=reconciler") == [("reconciler", "launch")]
    assert ops("?experiment=nothing") == []
    html = client.get(reverse("operations") + "?success=false&q=recon").content.decode()
    assert 'value="recon"' in html and 'name="success" value="false" checked' in html
    assert "no quota" in html


def test_operations_pagination(client):
    for i in range(60):
        services.record("bot", "sync", message=f"m{i}")
    response = client.get(reverse("operations"))
    assert len(response.context["operations"]) == 50
    assert "Page 1 of 2" in response.content.decode()
    assert Experiment.objects.count() == 0
