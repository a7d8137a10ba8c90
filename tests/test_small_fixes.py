"""Issue 13's lower items that are each one small rule: slash-tolerant pages, no password-reset
flow, staleness that allows for the scheduler's 30 s wake-up, a sync loop that survives a
transient database error."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from experiments.health import health_report
from experiments.models import SyncState

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
