"""Issue 12 in the web UI: Start/Stop confirm first, per-job Cancel, ownership marks, Adopt,
the create dialog's name check and the reconciler pill.

SkyPilot is the ``server`` double (tests/fake_skypilot.py): ``server.cancel_bodies`` records
every cancel request SkyDeck sent.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from experiments import control, services
from experiments.models import (
    DesiredState,
    Experiment,
    JobStatus,
    Launch,
    LaunchStatus,
    Operation,
    OperationLog,
)
from syncing.skypilot import SkyPilotClient, SkyPilotError

HX = {"HTTP_HX_REQUEST": "true"}
X = "\u00d7"  # the multiplication sign of "2 nodes x 8 H100"
#: an htmx request from the dashboard (answers go into its deck)
DECK = {**HX, "HTTP_HX_CURRENT_URL": "http://testserver/"}


@pytest.fixture
def client(web):
    """Every request of this file is a logged-in user's."""
    return web


def own(job_id: int, experiment: Experiment) -> None:
    """Make a job SkyDeck's (as if the reconciler had launched it)."""
    Launch.objects.create(
        experiment=experiment,
        experiment_name=experiment.name,
        status=LaunchStatus.LISTED,
        job_id=job_id,
    )


def desired(experiment: Experiment) -> str:
    experiment.refresh_from_db()
    return experiment.desired_state


def hidden_jobs(html: str) -> list[int]:
    import re

    return [int(v) for v in re.findall(r'<input type="hidden" name="jobs" value="(\d+)">', html)]


# --- Stop ----------------------------------------------------------------------------------


def test_stop_confirmation_lists_each_job_with_its_user_and_owner(
    client, server, make_experiment, make_job
):
    exp = make_experiment("shared-run", desired_state="RUNNING")
    make_job(4398, name="shared-run", user_name="dave")
    make_job(4404, name="shared-run", user_name="alice")
    own(4404, exp)
    make_job(4300, name="shared-run", user_name="dave", status=JobStatus.SUCCEEDED)

    response = client.get(
        reverse("experiment_desired", args=[exp.pk]), {"state": "STOPPED"}, **DECK
    )
    assert response.status_code == 200
    assert response["HX-Retarget"] == "#confirm-dialog"
    html = response.content.decode()
    assert "Stop shared-run?" in html
    assert "Stop shared-run: cancels jobs 4398 (dave), 4404 (alice)" in html
    assert (
        'cancels job 4398 (dave)</span> — <span class="owner-mark is-foreign">not launched by SkyDeck'
        in html
    )
    assert 'cancels job 4404 (alice)</span> — <span class="owner-mark">launched by SkyDeck' in html
    assert "4300" not in html  # finished: nothing to cancel
    assert hidden_jobs(html) == [4398, 4404]
    assert 'hx-post="/experiments/' in html and 'name="confirmed" value="1"' in html
    # showing it changed nothing and sent nothing
    assert desired(exp) == DesiredState.RUNNING
    assert server.cancel_bodies == []


def test_stop_cancels_exactly_the_listed_jobs(client, server, make_experiment, make_job):
    exp = make_experiment("listed", desired_state="RUNNING")
    make_job(4398, name="listed", user_name="dave")
    make_job(4410, name="listed", user_name="bob")  # appeared after the confirmation
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "STOPPED", "confirmed": "1", "jobs": ["4398"]},
        **DECK,
    )
    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert server.cancel_bodies == [{"job_ids": [4398]}]
    assert desired(exp) == DesiredState.STOPPED
    html = response.content.decode()
    assert "Stopped listed: cancelled job 4398 (dave)." in html
    assert "job 4410 (bob) appeared after the confirmation" in html
    assert f"outerHTML:#deck tr[data-exp-id='{exp.pk}'] > td.c-state" in html
    assert "refresh-panels" in response["HX-Trigger"]
    cancel = OperationLog.objects.get(operation=Operation.CANCEL)
    assert (cancel.actor, cancel.job_id, cancel.success) == ("alice", 4398, True)
    assert "not launched by SkyDeck" in cancel.message


def test_stop_with_no_job_listed_cancels_nothing(client, server, make_experiment, make_job):
    exp = make_experiment("none-listed", desired_state="RUNNING")
    make_job(4398, name="none-listed", user_name="dave")
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "STOPPED", "confirmed": "1"},
        **DECK,
    )
    assert response.status_code == 200
    assert server.cancel_bodies == []
    assert desired(exp) == DesiredState.STOPPED


def test_stop_on_an_already_stopped_experiment_still_cancels(
    client, server, make_experiment, make_job
):
    exp = make_experiment("stopped-busy")
    make_job(4398, name="stopped-busy", user_name="dave")
    # the row offers Stop (not Start) while a job is active under the name
    html = client.get("/").content.decode()
    cell = html[html.index(f'data-exp-id="{exp.pk}"') :]
    cell = cell[: cell.index("</tr>")]
    assert 'value="STOPPED"' in cell and ">Stop</button>" in cell
    assert f'data-confirm-url="/experiments/{exp.pk}/desired?state=STOPPED"' in cell

    confirm = client.get(reverse("experiment_desired", args=[exp.pk]), {"state": "STOPPED"}, **HX)
    assert b"already desired STOPPED: this only cancels its active jobs" in confirm.content
    assert hidden_jobs(confirm.content.decode()) == [4398]
    client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "STOPPED", "confirmed": "1", "jobs": ["4398"]},
        **DECK,
    )
    assert server.cancel_bodies == [{"job_ids": [4398]}]
    assert desired(exp) == DesiredState.STOPPED


def test_stop_shows_skypilots_error_and_stays_stopped(
    client, server, make_experiment, make_job, monkeypatch
):
    exp = make_experiment("cancel-fails", desired_state="RUNNING")
    make_job(4398, name="cancel-fails", user_name="dave")

    def refuse(self, job_ids):
        raise SkyPilotError("the API server is down")

    monkeypatch.setattr(SkyPilotClient, "cancel", refuse)
    response = client.post(
        reverse("experiment_desired", args=[exp.pk]),
        {"state": "STOPPED", "confirmed": "1", "jobs": ["4398"]},
        **DECK,
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "cancel-fails is desired STOPPED, but SkyPilot did not cancel job 4398 (dave)" in html
    assert "the API server is down" in html
    assert desired(exp) == DesiredState.STOPPED


def test_stop_without_javascript_confirms_on_a_page(client, server, make_experiment, make_job):
    exp = make_experiment("plain-stop", desired_state="RUNNING")
    make_job(4398, name="plain-stop", user_name="dave")
    url = reverse("experiment_desired", args=[exp.pk])
    # the row button posts the hidden #af form: the answer is the confirmation page
    page = client.post(url, {"state": "STOPPED", "q": "plain"})
    assert page.status_code == 200
    html = page.content.decode()
    assert "<h1" in html and "Stop plain-stop?" in html and "hx-post" not in html
    assert hidden_jobs(html) == [4398]
    assert desired(exp) == DesiredState.RUNNING
    response = client.post(
        url, {"state": "STOPPED", "confirmed": "1", "jobs": "4398", "next": "/?q=plain"}
    )
    assert response.status_code == 302 and response["Location"] == "/?q=plain"
    assert server.cancel_bodies == [{"job_ids": [4398]}]
    assert b"Stopped plain-stop: cancelled job 4398 (dave)." in client.get("/?q=plain").content


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"state": "STOPPED", "confirmed": "1", "jobs": "abc"}, b"is not a job id"),
        ({"state": "FLY"}, b"Unknown desired state"),
    ],
)
def test_bad_start_stop_input_is_400(client, server, make_experiment, data, message):
    exp = make_experiment("bad-input", desired_state="RUNNING")
    response = client.post(reverse("experiment_desired", args=[exp.pk]), data, **DECK)
    assert response.status_code == 400 and message in response.content
    assert desired(exp) == DesiredState.RUNNING
    get = client.get(reverse("experiment_desired", args=[exp.pk]), {"state": "FLY"})
    assert get.status_code == 400 and b"Unknown desired state" in get.content


# --- Start ----------------------------------------------------------------------------------


def test_start_confirmation_shows_the_gpus(client, server, make_experiment):
    exp = make_experiment("gpu-run", nodes=2, gpus=8, accelerator="H100")
    response = client.get(reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING"}, **HX)
    html = response.content.decode()
    assert "Start gpu-run?" in html
    assert f"Start gpu-run: 2 nodes {X} 8 H100 = 16 GPUs" in html
    assert "nothing launches until" not in html  # the reconciler is on
    assert desired(exp) == DesiredState.STOPPED
    done = client.post(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING", "confirmed": "1"}, **DECK
    )
    assert b"Started gpu-run: 2 nodes \xc3\x97 8 H100 = 16 GPUs." in done.content
    assert desired(exp) == DesiredState.RUNNING
    assert server.launch_bodies == []  # the reconciler launches, not the view


def test_start_says_nothing_launches_while_the_reconciler_is_not_on(
    client, server, settings, make_experiment
):
    settings.SKYDECK_RECONCILE = "dry-run"
    exp = make_experiment("dry-start", nodes=1, gpus=8, accelerator="H100")
    html = client.get(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING"}, **HX
    ).content.decode()
    assert "Reconciler dry-run: nothing launches until it is on" in html
    assert "The reconciler is dry-run" in html


def test_start_over_someone_elses_job_says_it_waits(client, server, make_experiment, make_job):
    exp = make_experiment("blocked", nodes=1, gpus=8, accelerator="H100")
    make_job(4398, name="blocked", user_name="dave", status=JobStatus.SUCCEEDED)
    make_job(4399, name="blocked", user_name="dave", status=JobStatus.PENDING)
    services.set_desired_state("t", [exp], DesiredState.STOPPED)
    # the row offers Stop while dave's job is active; Start is still reachable by URL
    html = client.get(
        reverse("experiment_desired", args=[exp.pk]), {"state": "RUNNING"}, **HX
    ).content.decode()
    assert "does not launch: 1 active job by dave already uses this name" in html


def test_bulk_start_confirmation_sums_the_gpus(client, server, make_experiment):
    exps = [make_experiment(f"bulk-{i}", nodes=2, gpus=8, accelerator="H100") for i in range(3)]
    ids = [str(e.pk) for e in exps]
    response = client.get(reverse("bulk_confirm"), {"action": "start", "ids": ids}, **DECK)
    assert response.status_code == 200 and response["HX-Retarget"] == "#confirm-dialog"
    html = response.content.decode()
    assert "Start 3 experiments?" in html
    assert f"Start 3 experiments: 6 nodes {X} 8 H100 = 48 GPUs" in html
    assert f"bulk-1: 2 nodes {X} 8 H100 = 16 GPUs" in html
    assert html.count('name="ids"') == 3 and 'name="action" value="start"' in html
    assert not Experiment.objects.desired_running().exists()


def test_bulk_stop_confirms_and_cancels_the_listed_jobs(client, server, make_experiment, make_job):
    a = make_experiment("bs-a", desired_state="RUNNING")
    b = make_experiment("bs-b")
    make_job(4398, name="bs-a", user_name="dave")
    make_job(4404, name="bs-b", user_name="erin")
    ids = [str(a.pk), str(b.pk)]
    html = client.get(reverse("bulk_confirm"), {"action": "stop", "ids": ids}, **DECK).content
    html = html.decode()
    assert "Stop 2 experiments: cancels jobs 4398 (dave), 4404 (erin)" in html
    assert "bs-a: cancels job 4398 (dave)" in html and "bs-b: cancels job 4404 (erin)" in html
    # the bulk bar's POST without confirmed=1 (no JavaScript) asks first as well
    page = client.post(reverse("bulk_action"), {"action": "stop", "ids": ids})
    assert b"Stop 2 experiments?" in page.content and server.cancel_bodies == []
    response = client.post(
        reverse("bulk_action"),
        {"action": "stop", "ids": ids, "confirmed": "1", "jobs": ["4398", "4404"]},
        **DECK,
    )
    assert response.status_code == 200
    assert server.cancel_bodies == [{"job_ids": [4398, 4404]}]
    assert b"Stopped 2 experiments: cancelled jobs 4398 (dave), 4404 (erin)." in response.content
    assert not Experiment.objects.desired_running().exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"action": "delete", "ids": ["1"]}, b"Unknown action"),
        ({"action": "start"}, b"Select at least one experiment"),
        ({"action": "start", "ids": ["x"]}, b"Select at least one experiment"),
    ],
)
def test_bulk_confirm_bad_input_is_400(client, params, message):
    response = client.get(reverse("bulk_confirm"), params, **HX)
    assert response.status_code == 400 and message in response.content


# --- per-job Cancel ---------------------------------------------------------------------------


def test_cancel_any_users_job_after_a_confirmation(client, server, make_experiment, make_job):
    make_experiment("cj")
    make_job(4398, name="cj", user_name="dave")
    url = reverse("job_cancel", args=[4398])
    confirm = client.get(url, **HX)
    assert confirm.status_code == 200
    html = confirm.content.decode()
    assert "Cancel job 4398 (dave)?" in html and "It was not launched by SkyDeck." in html
    assert server.cancel_bodies == []
    response = client.post(url, {"confirmed": "1"}, **DECK)
    assert response.status_code == 200
    assert server.cancel_bodies == [{"job_ids": [4398]}]
    assert b"Cancelled job 4398 (dave), not launched by SkyDeck" in response.content
    log = OperationLog.objects.get(operation=Operation.CANCEL)
    assert (log.actor, log.job_id, log.experiment_name, log.success) == ("alice", 4398, "cj", True)


def test_cancel_warns_when_the_reconciler_will_launch_again(
    client, server, make_experiment, make_job
):
    exp = make_experiment("relaunch", desired_state="RUNNING")
    make_job(4500, name="relaunch", user_name="alice")
    own(4500, exp)
    url = reverse("job_cancel", args=[4500])
    assert b"It was launched by SkyDeck." in client.get(url, **HX).content
    response = client.post(url, {"confirmed": "1"}, **DECK)
    assert b"relaunch is still desired RUNNING: the reconciler will launch it again" in (
        response.content
    )


def test_cancel_on_the_jobs_page_without_javascript(client, server, make_job):
    make_job(4600, name="someone-elses", user_name="dave")
    listing = client.get(reverse("jobs") + "?active=true").content.decode()
    assert 'href="/jobs/4600/cancel?next=/jobs%3Factive%3Dtrue"' in listing
    page = client.get(reverse("job_cancel", args=[4600]), {"next": "/jobs?active=true"})
    assert b"<h1" in page.content and b"Cancel job 4600 (dave)?" in page.content
    response = client.post(
        reverse("job_cancel", args=[4600]), {"confirmed": "1", "next": "/jobs?active=true"}
    )
    assert response.status_code == 302 and response["Location"] == "/jobs?active=true"
    assert server.cancel_bodies == [{"job_ids": [4600]}]
    assert b"Cancelled job 4600 (dave)" in client.get("/jobs?active=true").content


def test_cancel_of_a_finished_job_is_refused(client, server, make_job):
    make_job(4700, name="done", user_name="dave", status=JobStatus.SUCCEEDED)
    url = reverse("job_cancel", args=[4700])
    get = client.get(url, **HX)
    assert get.status_code == 409 and b"no longer active (SUCCEEDED)" in get.content
    post = client.post(url, {"confirmed": "1"}, **DECK)
    assert post.status_code == 409 and b"no longer active" in post.content
    assert client.post(url, {"confirmed": "1"}).status_code == 409
    assert server.cancel_bodies == []
    assert client.get(reverse("job_cancel", args=[999999]), **HX).status_code == 404


def test_cancel_failure_is_shown_not_a_500(client, server, make_job, monkeypatch):
    make_job(4800, name="x", user_name="dave")

    def refuse(self, job_ids):
        raise SkyPilotError("permission denied for user alice")

    monkeypatch.setattr(SkyPilotClient, "cancel", refuse)
    response = client.post(reverse("job_cancel", args=[4800]), {"confirmed": "1"}, **DECK)
    assert response.status_code == 200
    assert b"SkyPilot could not cancel job 4800" in response.content
    assert b"permission denied" in response.content
    assert OperationLog.objects.get(operation=Operation.CANCEL).success is False


def test_a_post_without_confirmed_only_asks(client, server, make_job):
    make_job(4900, name="x", user_name="dave")
    response = client.post(reverse("job_cancel", args=[4900]), {}, **DECK)
    assert response["HX-Retarget"] == "#confirm-dialog"
    assert server.cancel_bodies == []


# --- ownership marks --------------------------------------------------------------------------


def test_job_tables_mark_jobs_skydeck_did_not_launch(client, make_experiment, make_job):
    exp = make_experiment("marks")
    make_job(5001, name="marks", user_name="dave")
    make_job(5002, name="marks", user_name="alice", status=JobStatus.SUCCEEDED)
    own(5002, exp)
    for url in (reverse("jobs"), reverse("experiment_panels", args=[exp.pk])):
        html = client.get(url, **HX).content.decode()
        rows = {
            job_id: html[html.index(f">{job_id}<") :][:1500].split("</tr>")[0]
            for job_id in (5001, 5002)
        }
        assert "not launched by SkyDeck" in rows[5001], url
        assert "not launched by SkyDeck" not in rows[5002], url
        assert "/jobs/5001/cancel" in rows[5001]  # active: Cancel offered
        assert "/jobs/5002/cancel" not in rows[5002]  # finished: nothing to cancel


# --- Adopt ------------------------------------------------------------------------------------


def test_adopt_makes_someone_elses_job_the_current_run(client, server, make_experiment, make_job):
    exp = make_experiment("adoptee")
    make_job(4398, name="adoptee", user_name="dave")
    panels = client.get(reverse("experiment_panels", args=[exp.pk]), **HX).content.decode()
    assert "1 active job by dave already uses this name (job 4398 (dave))" in panels
    assert f'data-confirm-url="/experiments/{exp.pk}/adopt"' in panels

    url = reverse("experiment_adopt", args=[exp.pk])
    confirm = client.get(url, **DECK).content.decode()
    assert "Adopt job 4398 (dave) as adoptee&#x27;s current run" in confirm
    assert not Launch.objects.exists()

    response = client.post(url, {"confirmed": "1"}, **DECK)
    assert response.status_code == 200
    assert b"Adopted job 4398 (dave) as adoptee" in response.content
    launch = Launch.objects.get()
    assert (launch.job_id, launch.status, launch.requested_by) == (
        4398,
        LaunchStatus.ADOPTED,
        "alice",
    )
    assert desired(exp) == DesiredState.RUNNING
    assert server.cancel_bodies == [] and server.launch_bodies == []
    panels = client.get(reverse("experiment_panels", args=[exp.pk]), **HX).content.decode()
    assert "already uses this name" not in panels and "not launched by SkyDeck" not in panels
    assert OperationLog.objects.filter(operation=Operation.ADOPT, job_id=4398).exists()


def test_adopt_with_nothing_to_adopt_is_refused(client, server, make_experiment, make_job):
    exp = make_experiment("nothing")
    url = reverse("experiment_adopt", args=[exp.pk])
    assert client.get(url, **HX).status_code == 409
    response = client.post(url, {"confirmed": "1"}, **DECK)
    assert response.status_code == 409 and b"Nothing adopted" in response.content
    assert desired(exp) == DesiredState.STOPPED


# --- create: the name check -------------------------------------------------------------------


def test_name_check_names_the_users_of_active_jobs(client, make_experiment, make_job):
    make_job(4398, name="taken.by.dave", user_name="dave")
    make_job(4404, name="taken.by.dave", user_name="dave")
    url = reverse("experiment_name_check")
    html = client.get(url, {"name": "taken.by.dave"}, **HX).content.decode()
    assert "2 active jobs by dave already use this name (jobs 4398 (dave), 4404 (dave))" in html
    assert "will not touch them" in html and "adopt" in html
    assert client.get(url, {"name": "free.name"}, **HX).content.strip() == b""
    make_experiment("exists")
    assert b"already exists" in client.get(url, {"name": "exists"}, **HX).content
    assert client.get(url, **HX).status_code == 400
    assert client.get(url, {"name": "x" * 500}, **HX).status_code == 400


def test_create_dialog_checks_the_name_while_typing(client):
    html = client.get("/").content.decode()
    assert f'hx-get="{reverse("experiment_name_check")}"' in html
    assert 'hx-trigger="input changed delay:300ms"' in html and 'id="name-check"' in html
    assert "starts stopped: creating it never launches or cancels anything" in html


def test_create_over_active_jobs_says_so_and_offers_adopt(client, server, make_job):
    make_job(4398, name="reuse.me", user_name="dave")
    data = {"name": "reuse.me", "nodes": "1", "gpus": "0", "flag_key": [""], "flag_value": [""]}
    response = client.post(reverse("experiment_create"), data, **HX)
    assert response.status_code == 200
    exp = Experiment.objects.get(name="reuse.me")
    html = response.content.decode()
    assert (
        "1 active job by dave already uses this name (job 4398 (dave)): creating did not touch them"
        in html
    )
    assert f'data-confirm-url="/experiments/{exp.pk}/adopt"' in html
    assert exp.desired_state == DesiredState.STOPPED and server.cancel_bodies == []
    # without htmx: the message says so too
    data["name"] = "reuse.me2"
    make_job(4399, name="reuse.me2", user_name="erin")
    page = client.post(reverse("experiment_create"), data, follow=True)
    assert b"1 active job by erin already uses this name" in page.content


def test_the_editor_cannot_change_the_desired_state(client, make_experiment):
    exp = make_experiment("no-edit-start", base_command="run")
    data = {"name": "no-edit-start", "nodes": "1", "gpus": "0", "base_command": "run"}
    data["desired_state"] = "RUNNING"
    response = client.post(reverse("experiment_edit", args=[exp.pk]), data, **HX)
    assert response.status_code == 200
    assert desired(exp) == DesiredState.STOPPED


def test_rename_is_refused_once_jobs_exist(client, make_experiment, make_job):
    exp = make_experiment("has-jobs")
    make_job(4398, name="has-jobs", user_name="dave")
    data = {"name": "renamed", "nodes": "1", "gpus": "0"}
    response = client.post(reverse("experiment_edit", args=[exp.pk]), data, **HX)
    assert response.status_code == 400
    assert b"has-jobs cannot be renamed" in response.content
    exp.refresh_from_db()
    assert exp.name == "has-jobs"


# --- the reconciler pill ----------------------------------------------------------------------


def pill(html: str) -> str:
    start = html.index('data-source="reconciler"')
    return html[html.rindex("<span", 0, start) : html.index("</span>\n", start)]


def test_reconciler_pill_on_is_ok(client):
    html = client.get("/").content.decode()
    assert 'class="pill reconciler health-ok"' in html
    assert '<span class="pill-label">Reconciler:</span> <span class="pill-text">on</span>' in html
    assert "Resume" not in pill(html)


def test_reconciler_pill_dry_run(client, settings):
    settings.SKYDECK_RECONCILE = "dry-run"
    html = client.get("/").content.decode()
    assert 'class="pill reconciler health-late"' in html
    assert '<span class="pill-text">dry-run</span>' in html
    assert "SKYDECK_RECONCILE is dry-run: it only plans" in html
    # the out-of-band header of a deck refresh carries it too
    deck = client.get("/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="deck").content.decode()
    assert '<span class="pill-text">dry-run</span>' in deck


def test_reconciler_paused_then_resumed(client, user):
    control.pause_reconciler("t", "restored from x")
    html = client.get("/").content.decode()
    assert '<span class="pill-text">paused</span>' in html
    assert "paused since restored from x" in html
    assert 'data-confirm-url="/reconciler/resume"' in html
    url = reverse("reconciler_resume")
    confirm = client.get(url, **DECK).content.decode()
    assert "Resume the reconciler?" in confirm and "Paused since restored from x (by t" in confirm
    assert control.reconciler_mode().mode == "paused"
    response = client.post(url, {"confirmed": "1"}, **DECK)
    assert response.status_code == 200
    assert b"Reconciler resumed" in response.content
    assert b'<span class="pill-text">on</span>' in response.content  # the header, out of band
    assert control.reconciler_mode().mode == "on"
    assert OperationLog.objects.filter(operation=Operation.RESUME, actor="alice").exists()
    assert client.post(url, {"confirmed": "1"}, **DECK).status_code == 409


# --- login and CSRF ---------------------------------------------------------------------------

NEW_ROUTES = [
    ("GET", "experiment_desired", [1]),
    ("GET", "experiment_adopt", [1]),
    ("GET", "experiment_name_check", []),
    ("GET", "bulk_confirm", []),
    ("GET", "job_cancel", [1]),
    ("GET", "reconciler_resume", []),
    ("POST", "experiment_adopt", [1]),
    ("POST", "job_cancel", [1]),
    ("POST", "reconciler_resume", []),
]


@pytest.mark.parametrize(("method", "name", "args"), NEW_ROUTES)
def test_anonymous_requests_go_to_login(db, server, make_job, method, name, args):
    make_job(1, name="x", user_name="dave")
    control.pause_reconciler("t", "restored from x")
    url = reverse(name, args=args)
    anonymous = Client()
    response = anonymous.get(url) if method == "GET" else anonymous.post(url, {"confirmed": "1"})
    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('login')}?next=")
    assert server.cancel_bodies == []
    assert control.reconciler_mode().mode == "paused"


def test_acts_need_the_csrf_token(user, server, make_job):
    make_job(4398, name="x", user_name="dave")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    response = strict.post(reverse("job_cancel", args=[4398]), {"confirmed": "1"})
    assert response.status_code == 403 and server.cancel_bodies == []
    strict.get(reverse("jobs"))
    token = strict.cookies["csrftoken"].value
    strict.post(
        reverse("job_cancel", args=[4398]), {"confirmed": "1"}, HTTP_X_CSRFTOKEN=token, **DECK
    )
    assert server.cancel_bodies == [{"job_ids": [4398]}]
