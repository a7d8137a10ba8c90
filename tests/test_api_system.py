"""REST API: authentication, meta, sync, health, schema and docs, and the tokens command."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import OrmQ, Success
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from experiments.models import Operation, OperationLog, SyncState
from syncing import health

pytestmark = pytest.mark.django_db

LIST_URLS = [
    "/api/experiments/",
    "/api/groups/",
    "/api/jobs/",
    "/api/checkpoints/",
    "/api/operations/",
    "/api/sync/",
    "/api/meta/",
    "/api/schema/",
]


# --- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize("url", LIST_URLS)
def test_anonymous_gets_401(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "/api/experiments/"),
        ("patch", "/api/experiments/1/"),
        ("delete", "/api/groups/1/"),
        ("post", "/api/bulk/"),
        ("post", "/api/sync/"),
        ("post", "/api/jobs/1/cancel/"),
    ],
)
def test_anonymous_writes_get_401(method, url):
    assert getattr(APIClient(), method)(url, {}, format="json").status_code == 401


def test_bad_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")
    assert client.get("/api/experiments/").status_code == 401


def test_inactive_user_token_is_401(user, api):
    user.is_active = False
    user.save()
    assert api.get("/api/experiments/").status_code == 401


def test_session_auth_reads_and_writes_need_csrf(user):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.get("/api/experiments/").status_code == 200
    response = client.post("/api/experiments/", {"name": "e"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    client.get("/admin/login/")  # sets the CSRF cookie
    csrf = client.cookies["csrftoken"].value
    response = client.post("/api/experiments/", {"name": "e"}, format="json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 201


def test_token_writes_need_no_csrf(api):
    assert api.post("/api/experiments/", {"name": "e"}, format="json").status_code == 201


def test_unknown_api_path_is_json_404(api):
    for path in ("/api/nothing", "/api/experiments/a/b/c/", "/api/experiments/a%0Ab/"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    assert api.post("/api/nothing", {}, format="json").status_code == 404


def test_wrong_method_is_405(api):
    assert api.delete("/api/jobs/").status_code == 405
    assert api.get("/api/bulk/").status_code == 405


# --- meta -----------------------------------------------------------------------------------


def test_meta(api, readonly_api):
    body = api.get("/api/meta").json()
    assert body["version"] == "0.1.0"
    assert body["api_version"] == "1"
    assert body["enums"]["desired_states"] == ["RUNNING", "STOPPED"]
    assert "CANCELLING" in body["enums"]["job_statuses"]
    assert "SUCCEEDED" not in body["enums"]["active_job_statuses"]
    assert "NO_JOB" in body["enums"]["current_states"]
    assert "cancel" in body["enums"]["operations"]
    assert body["enums"]["sync_sources"] == ["skypilot", "s3"]
    assert "set_desired_state" in body["enums"]["bulk_actions"]
    assert [a["scheme"] for a in body["auth"]] == ["token", "session"]
    assert body["read_only_group"] == "read-only"
    assert body["user"] == {"username": "alice", "read_only": False}
    assert readonly_api.get("/api/meta/").json()["user"] == {
        "username": "viewer",
        "read_only": True,
    }


# --- sync -----------------------------------------------------------------------------------


def test_sync_status(api):
    now = timezone.now()
    SyncState.objects.create(
        source="skypilot",
        last_attempt_at=now,
        last_success_at=now,
        counts={"new": 3},
        duration=1.5,
        lease_owner="host:1:abc",
        lease_expires_at=now + timedelta(minutes=1),
    )
    SyncState.objects.create(
        source="s3",
        last_attempt_at=now,
        last_success_at=now - timedelta(hours=1),
        last_error="S3 said no",
        last_error_at=now,
    )
    body = api.get("/api/sync/").json()
    sources = {s["source"]: s for s in body["sources"]}
    assert sources["skypilot"]["ok"] is True
    assert sources["skypilot"]["stale"] is False
    assert sources["skypilot"]["running"] is True
    assert sources["skypilot"]["counts"] == {"new": 3}
    assert sources["skypilot"]["duration_seconds"] == 1.5
    assert sources["s3"]["ok"] is False
    assert sources["s3"]["stale"] is True
    assert sources["s3"]["last_error"] == "S3 said no"
    assert sources["s3"]["label"] == "S3 checkpoints"
    assert body["worker"]["alive"] is False


def test_sync_trigger_queues_tasks_and_answers_at_once(api):
    response = api.post("/api/sync/")
    assert response.status_code == 202
    tasks = response.json()["tasks"]
    assert [t["source"] for t in tasks] == ["skypilot", "s3"]
    queued = {q.task["id"]: q.func() for q in OrmQ.objects.all()}
    assert queued == {
        tasks[0]["task_id"]: "syncing.tasks.sync_jobs_and_reconcile",
        tasks[1]["task_id"]: "syncing.tasks.sync_s3",
    }
    op = OperationLog.objects.get(operation=Operation.SYNC)
    assert op.actor == "alice" and "skypilot, s3" in op.message

    one = api.post("/api/sync/", {"sources": ["s3", "s3"]}, format="json")
    assert [t["source"] for t in one.json()["tasks"]] == ["s3"]
    assert api.get("/api/sync/").json()["worker"]["queued"] == 3


def test_sync_trigger_validation(api, monkeypatch):
    assert api.post("/api/sync/", {"sources": ["ftp"]}, format="json").status_code == 400
    assert api.post("/api/sync/", {"sources": "s3"}, format="json").status_code == 400
    assert api.post("/api/sync/", {"source": ["s3"]}, format="json").status_code == 400
    monkeypatch.setattr("syncing.runner.available_sources", lambda: ["skypilot"])
    response = api.post("/api/sync/", {"sources": ["s3"]}, format="json")
    assert response.status_code == 400 and "s3" in response.json()["sources"][0]
    assert not OrmQ.objects.exists()


def test_read_only_cannot_trigger_sync(readonly_api):
    assert readonly_api.get("/api/sync/").status_code == 200
    assert readonly_api.post("/api/sync/").status_code == 403
    assert not OrmQ.objects.exists()


# --- health ---------------------------------------------------------------------------------


def _task(stopped):
    return Success.objects.create(
        id=f"t{stopped.timestamp()}".replace(".", "")[:32],
        name="t",
        func="syncing.tasks.sync_skypilot",
        started=stopped - timedelta(seconds=1),
        stopped=stopped,
        success=True,
    )


def test_health_needs_no_login_and_reports_worker_and_staleness(client, settings):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert set(response.json()) == {"status", "time", "database", "detail"}  # status only
    client.force_login(User.objects.create_user("watcher"))
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "ok"
    assert body["worker"]["alive"] is False
    assert body["worker"]["last_task_at"] is None
    assert body["sync"]["skypilot"]["stale"] is True
    assert "skypilot sync has never succeeded" in body["warnings"]
    assert "no background worker has finished a task recently" in body["warnings"]
    assert settings.SECRET_KEY not in response.content.decode()


def test_worker_alive_from_recent_task_or_a_task_in_hand():
    now = timezone.now()
    _task(now - timedelta(hours=1))
    report = health.worker_report()
    assert report["alive"] is False and report["age_seconds"] > 3000
    _task(now - timedelta(seconds=10))
    report = health.worker_report()
    assert report["alive"] is True and report["age_seconds"] < 60
    Success.objects.all().delete()
    OrmQ.objects.create(key="skydeck", payload="x", lock=now + timedelta(minutes=5))
    OrmQ.objects.create(key="skydeck", payload="y", lock=now - timedelta(seconds=1))
    report = health.worker_report()
    assert (report["alive"], report["busy"], report["queued"]) == (True, 1, 1)


def test_health_fresh_sources_are_not_stale(client):
    now = timezone.now()
    for source in ("skypilot", "s3"):
        SyncState.objects.create(source=source, last_attempt_at=now, last_success_at=now)
    _task(now)
    client.force_login(User.objects.create_user("watcher"))
    body = client.get("/api/health").json()
    assert body["warnings"] == []
    assert body["sync"]["s3"]["stale"] is False
    assert body["sync"]["s3"]["age_seconds"] < 60
    assert body["worker"]["alive"] is True


# --- schema and docs ------------------------------------------------------------------------


def test_schema_documents_every_operation(api, client):
    assert client.get("/api/schema/").status_code == 401
    response = api.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    assert api.get("/api/schema/?format=json").json()["info"]["title"] == "SkyDeck API"
    operations = [
        (path, method, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert len(operations) >= 30
    for path, method, op in operations:
        if path == "/api/health":
            assert op["security"] == []
            continue
        codes = set(op["responses"])
        assert "401" in codes, (path, method)
        if method != "get":
            assert "403" in codes, (path, method)
            if "requestBody" in op:
                assert "400" in codes, (path, method)
        if "{" in path:
            assert "404" in codes, (path, method)
    experiment = schema["paths"]["/api/experiments/{id_or_name}/"]
    assert "409" in experiment["patch"]["responses"]
    assert any(p["name"] == "If-Match" for p in experiment["patch"]["parameters"])
    components = schema["components"]["schemas"]
    assert components["ExperimentCreateRequest"]["additionalProperties"] is False
    assert "flags_patch" in components["PatchedExperimentUpdateRequest"]["properties"]
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


def test_docs_page(client, user, monkeypatch):
    assert client.get("/api/docs/").status_code == 302  # to the login page
    client.force_login(user)
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "cdn." not in page and "unpkg" not in page  # no internet needed
    # The Content-Security-Policy allows no inline code: every script is a file, no <style>.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S | re.I)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in page.lower()
    init = client.get("/api/docs/?script")  # the init script the page loads
    assert init.status_code == 200
    assert init["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in init.content.decode()
    assert "?script" in page
    monkeypatch.setattr("experiments.api.system.sidecar_installed", lambda: False)
    plain = client.get("/api/docs/").content.decode()
    assert "/api/experiments/{id_or_name}/start/" in plain
    assert "Start an experiment" in plain
    assert "<style" not in plain.lower() and "<script" not in plain.lower()


# --- tokens command -------------------------------------------------------------------------


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("tokens", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_tokens_create_prints_only_the_key(user):
    key, note = run("create", "alice")
    assert key == Token.objects.get(user=user).key
    assert "new token for alice" in note
    again, note = run("create", "alice")
    assert again == key and "existing" in note
    rotated, _ = run("create", "alice", "--rotate")
    assert rotated != key and Token.objects.get(user=user).key == rotated
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {rotated}")
    assert client.get("/api/meta/").status_code == 200


def test_tokens_create_user_and_read_only(db):
    with pytest.raises(CommandError, match="no user 'bot'"):
        run("create", "bot")
    key, note = run("create", "bot", "--create-user", "--read-only")
    assert "created user bot" in note
    bot = User.objects.get(username="bot")
    assert not bot.has_usable_password()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/experiments/").status_code == 200
    assert client.post("/api/experiments/", {"name": "x"}, format="json").status_code == 403


def test_tokens_list_and_revoke(user):
    key, _ = run("create", "alice")
    listing, _ = run("list")
    assert listing.startswith("alice\t" + key[:6])
    assert key not in listing
    assert "read-write" in listing
    out, _ = run("revoke", "alice")
    assert "revoked" in out
    assert not Token.objects.exists()
    with pytest.raises(CommandError, match="has no token"):
        run("revoke", "alice")
    assert run("list")[0] == "no tokens"
