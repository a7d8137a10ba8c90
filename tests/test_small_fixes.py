"""Issue 13's lower items that are each one small rule: slash-tolerant pages, no password-reset
flow, staleness that allows for the scheduler's 30 s wake-up, a sync loop that survives a
transient database error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from experiments.models import SyncState
from syncing.health import health_report

pytestmark = pytest.mark.django_db


def test_jobs_and_operations_answer_with_and_without_a_slash(admin_client):
    for path in ("/jobs", "/jobs/", "/operations", "/operations/"):
        assert admin_client.get(path).status_code == 200, path
    assert admin_client.get("/jobs/?status=RUNNING").status_code == 200


def test_there_is_no_password_reset_flow(client):
    for path in ("/accounts/password_reset/", "/accounts/reset/x/y/", "/accounts/password_change/"):
        assert client.get(path).status_code in {302, 404}, path
        assert client.post(path, {"email": "a@b.c"}).status_code in {302, 404}, path
    assert client.get("/accounts/login/").status_code == 200


def test_a_short_interval_is_not_late_between_two_scheduler_wakes(settings):
    settings.SKYDECK_SYNC_SKYPILOT_INTERVAL = 10
    now = timezone.now()
    SyncState.objects.create(
        source="skypilot",
        last_attempt_at=now - timedelta(seconds=40),
        last_success_at=now - timedelta(seconds=40),
    )
    entry = health_report()["sync"]["skypilot"]
    assert entry["stale_after_seconds"] == 90  # 3 x max(10, 30)
    assert entry["stale"] is False


def test_sync_loop_survives_a_transient_database_error(monkeypatch, capsys):
    from syncing.management.commands import sync as command

    calls = []

    def flaky(source, **kwargs):
        calls.append(source)
        if len(calls) == 1:
            raise OperationalError("database or disk is full")
        if len(calls) >= 3:
            raise KeyboardInterrupt
        from syncing.runner import SyncOutcome

        return SyncOutcome(source, ok=True, counts={"new": 0})

    monkeypatch.setattr(command, "run_sync", flaky)
    monkeypatch.setattr(command.time, "sleep", lambda s: None)
    call_command("sync", "skypilot", "--loop", "--interval", "1")
    captured = capsys.readouterr()
    assert "sync pass failed (OperationalError: database or disk is full)" in captured.err
    assert len(calls) == 3  # it went on after the error
    assert "stopped" in captured.out


@pytest.mark.slow  # subprocesses
def test_https_settings_come_from_the_environment(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "SKYDECK_HOME": str(tmp_path),
        "SKYDECK_SSL_REDIRECT": "true",
        "SKYDECK_HSTS_SECONDS": "31536000",
        "SKYDECK_BEHIND_HTTPS_PROXY": "true",
        "SKYDECK_SECURE_COOKIES": "true",
    }
    env.pop("DATABASE_URL", None)
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "skydeck_site.settings"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == [True, 31536000, ["HTTP_X_FORWARDED_PROTO", "https"]]
    deploy = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"], env=env, capture_output=True, text=True
    )
    assert "W004" not in deploy.stderr + deploy.stdout  # HSTS
    assert "W008" not in deploy.stderr + deploy.stdout  # SSL redirect


def test_health_answers_plain_http_with_the_redirect_on(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/api/health").status_code in {200, 503}
    assert client.get("/jobs").status_code == 301


def test_a_full_disk_is_a_json_503_naming_it_and_health_is_degraded(monkeypatch, make_experiment):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from experiments import services
    from skydeck_site import storage as middleware

    monkeypatch.setattr(middleware, "last_storage_full", None)
    api = APIClient()
    api.credentials(
        HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=User.objects.create_user('w')).key}"
    )

    def full(*args, **kwargs):
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(services.Experiment, "save", full)
    response = api.post("/api/experiments/", {"name": "x"}, format="json")
    assert response.status_code == 503
    assert response.json() == {"status": "storage_full", "detail": middleware.STORAGE_FULL_MESSAGE}
    assert response["Retry-After"] == "60"
    health = api.get("/api/health")  # with the token: the warnings are details
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert "disk is full" in " ".join(health.json()["warnings"])


def test_the_ui_answers_a_full_disk_with_a_page_naming_it(monkeypatch, web):
    from experiments import services
    from skydeck_site import storage as middleware

    monkeypatch.setattr(middleware, "last_storage_full", None)

    def full(*args, **kwargs):
        raise OperationalError("database or disk is full")

    monkeypatch.setattr(services.Experiment, "save", full)
    response = web.post("/experiments/new", {"name": "x", "nodes": "1", "gpus": "0"})
    assert response.status_code == 503
    assert b"disk is full" in response.content


def test_low_free_space_makes_health_degraded(monkeypatch, tmp_path):
    import shutil
    from collections import namedtuple

    from skydeck_site import storage as middleware
    from syncing import health

    monkeypatch.setattr(middleware, "last_storage_full", None)
    monkeypatch.setattr(health, "_sqlite_folder", lambda: str(tmp_path))
    assert health_report()["status"] == "ok"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100, 100, 4096))
    report = health_report()
    assert report["status"] == "degraded"
    assert "only 4 KiB free" in " ".join(report["warnings"])


def test_a_pass_with_some_failed_prefixes_is_amber_with_the_count(web):
    from experiments.dashboard import health_pills

    now = timezone.now()
    SyncState.objects.create(
        source="s3", last_attempt_at=now, last_success_at=now, counts={"errors": 3, "failed": ["a"]}
    )
    report = health_report()
    assert report["sync"]["s3"]["partial_errors"] == 3
    assert "s3 sync: 3 items failed in the last pass" in report["warnings"]
    pill = next(p for p in health_pills(report) if p.source == "s3")
    assert (pill.tone, pill.text) == ("late", "3 failed")
    assert "3 of its items failed" in pill.title


def test_favicon_is_skydecks_mark_on_every_page_admin_included(client, db):
    response = client.get("/favicon.ico")
    assert response.status_code == 302
    icon = client.get(response["Location"])
    assert icon.status_code == 200
    assert b"<svg" in b"".join(icon.streaming_content if icon.streaming else [icon.content])
