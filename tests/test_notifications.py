"""Notifications: events into the outbox, delivered to real loopback webhook receivers.

Deliveries go through the queue as the worker would run them: the tasks ``emit`` and ``check``
queue (django-q2's ORM broker) are taken from the queue and run here (:func:`run_queued`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pydoc import locate

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from webhook_receiver import Receiver, down_url

from experiments import services
from experiments.models import (
    DeliveryStatus,
    Notification,
    NotificationEvent,
    Operation,
    OperationLog,
    SyncSource,
    SyncState,
    WebhookDestination,
)
from syncing import notifications, reconciler, schedules, webhooks

SECRET = "T0SECRET/B0SECRET/xoxTOKEN123"


@pytest.fixture(autouse=True)
def _fast(settings) -> None:
    settings.SKYDECK_NOTIFY_TIMEOUT = 0.5
    settings.SKYDECK_NOTIFY_MAX_ATTEMPTS = 3
    settings.SKYDECK_NOTIFY_COLLAPSE_MINUTES = 60
    settings.SKYDECK_NOTIFY_SYNC_FAILING_MINUTES = 15


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def commit(django_capture_on_commit_callbacks):
    """Run on-commit callbacks (the delivery tasks are queued there) as a real commit would."""

    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return func(*args, **kwargs)

    return run


def destination(base_url: str, *events: str, name: str = "team-alerts", **fields):
    return WebhookDestination.objects.create(
        name=name,
        url=f"{base_url}/services/{SECRET}?token=q{SECRET}",
        events=list(events),
        **fields,
    )


def run_queued() -> list[str]:
    """Run the queued tasks as the worker would (by their dotted path), oldest first."""
    results = []
    for queued in OrmQ.objects.order_by("id"):
        task = queued.task
        queued.delete()
        results.append(locate(task["func"])(*task["args"], **task["kwargs"]))
    return results


def notify_logs() -> list[OperationLog]:
    return list(OperationLog.objects.filter(operation=Operation.NOTIFY).order_by("id"))


def start_check() -> None:
    """The first pass only sets the cursor: nothing before it is told about."""
    assert notifications.check().startswith("notify: started")


# --- payloads at a real receiver ----------------------------------------------------------------


def test_a_slack_message_arrives_escaped_and_is_logged(db, receiver, commit):
    destination(receiver.url, NotificationEvent.PARKED)
    (row,) = commit(
        notifications.emit,
        NotificationEvent.PARKED,
        "exp-a",
        "exp-a parked",
        "3 failures in a row <FAILED> & more",
        experiment_name="exp-a",
    )
    assert row.status == DeliveryStatus.PENDING and receiver.requests == []  # emit never posts
    assert run_queued() == ['slack "team-alerts": parked exp-a — HTTP 200: ok']

    (got,) = receiver.requests
    assert got.path == f"/services/{SECRET}?token=q{SECRET}"
    assert got.headers["Content-Type"] == "application/json"
    assert set(got.body) == {"text", "blocks"}
    (block,) = got.body["blocks"]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    assert block["text"]["text"] == "*exp-a parked*\n3 failures in a row &lt;FAILED&gt; &amp; more"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.answer) == ("sent", 1, "HTTP 200: ok")
    assert row.sent_at is not None
    (log,) = notify_logs()
    assert (log.actor, log.experiment_name, log.success) == ("notify", "exp-a", True)


def test_a_json_message_has_its_fields(db, receiver, commit):
    destination(receiver.url, NotificationEvent.STALLED, format="json")
    commit(
        notifications.emit,
        NotificationEvent.STALLED,
        "job 7",
        "exp-b stalled",
        "no log progress for 61 min",
        experiment_name="exp-b",
        data={"job_id": 7},
    )
    run_queued()
    (got,) = receiver.requests
    assert set(got.body) == {"event", "title", "text", "experiment", "count", "data", "sent_at"}
    assert got.body["event"] == "stalled"
    assert got.body["title"] == "exp-b stalled"
    assert got.body["experiment"] == "exp-b"
    assert got.body["count"] == 1
    assert got.body["data"] == {"job_id": 7, "experiments": ["exp-b"]}
    assert got.body["sent_at"].startswith(str(timezone.now().year))


def test_a_stalled_run_gives_one_webhook_however_often_it_is_reported(db, receiver, commit):
    destination(receiver.url, NotificationEvent.STALLED)
    for _ in range(3):  # the sampler reports it on each pass
        commit(notifications.emit, NotificationEvent.STALLED, "job 7", "exp-b stalled")
    run_queued()
    assert len(receiver.requests) == 1
    assert Notification.objects.get().count == 3


def test_redirects_are_not_followed(db, commit):
    server = Receiver(mode="redirect").start()
    try:
        destination(server.url, NotificationEvent.PARKED)
        commit(notifications.emit, NotificationEvent.PARKED, "exp-a", "exp-a parked")
        (message,) = run_queued()
        assert "HTTP 302: redirects are not followed" in message
        assert len(server.requests) == 1
    finally:
        server.stop()


# --- events from the checks ---------------------------------------------------------------------


def test_a_parked_experiment_gives_exactly_one_webhook(db, receiver, commit, make_experiment):
    destination(receiver.url, NotificationEvent.PARKED, NotificationEvent.COMPLETED)
    start_check()
    experiment = make_experiment("exp-a", desired_state="RUNNING")
    action = reconciler.Action("park", experiment, reason="3 failed launches in a row")
    assert reconciler.execute([action], client=None) == ["park exp-a: 3 failed launches in a row"]
    commit(notifications.check)
    commit(notifications.check)  # a second pass tells nothing new
    run_queued()
    (got,) = receiver.requests
    assert got.body["text"] == "exp-a parked\n3 failed launches in a row"
    row = Notification.objects.get()
    assert (row.event, row.key, row.experiment_name, row.status) == (
        "parked",
        "exp-a",
        "exp-a",
        "sent",
    )


def test_a_row_committed_late_with_a_lower_id_is_still_told_once(db, receiver, commit):
    """The cursor stays SETTLE behind; ids read past it are remembered (PostgreSQL hands out
    ids at insert, so a slow transaction's row can land below rows already read)."""
    from datetime import timedelta

    from django.utils import timezone

    from experiments.models import OperationLog, SyncState

    destination(receiver.url, NotificationEvent.PARKED)
    start_check()
    late = services.record("reconciler", Operation.PARK, experiment_name="exp-late", message="x")
    first = services.record("reconciler", Operation.PARK, experiment_name="exp-a", message="y")
    late_id = late.id
    late.delete()  # not committed yet when the next pass reads
    commit(notifications.check)
    OperationLog.objects.create(id=late_id, actor="reconciler", operation=Operation.PARK,
                                experiment_name="exp-late", message="x")  # fmt: skip
    commit(notifications.check)
    commit(notifications.check)
    run_queued()
    assert sorted(r.body["text"].split("\n")[0] for r in receiver.requests) == [
        "exp-a parked",
        "exp-late parked",
    ]
    OperationLog.objects.update(created_at=timezone.now() - timedelta(minutes=3))
    commit(notifications.check)
    cursor = SyncState.objects.get(source="notify").cursor
    assert cursor["oplog_id"] >= first.id and cursor["oplog_read"] == []
    run_queued()
    assert len(receiver.requests) == 2


def test_a_completed_experiment_and_budget_rows_become_their_events(db, receiver, commit):
    destination(
        receiver.url,
        NotificationEvent.COMPLETED,
        NotificationEvent.BUDGET_WARNING,
        NotificationEvent.BUDGET_EXCEEDED,
        format="json",
    )
    start_check()
    services.record("reconciler", Operation.COMPLETE, experiment_name="exp-c", message="done")
    services.record(
        "budget",
        Operation.BUDGET,
        message="warning: group sweep: 81.0 of 100 GPU-h (81 %) this month (2026-12)",
    )
    services.record(
        "budget",
        Operation.BUDGET,
        message="exceeded: group sweep: 100.0 of 100 GPU-h (100 %) this month (2026-12); stopped 1: a",
    )
    services.record("budget", Operation.BUDGET, message="budget of group sweep removed")
    commit(notifications.check)
    run_queued()
    assert [(r.body["event"], r.body["title"]) for r in receiver.requests] == [
        ("completed", "exp-c completed"),
        ("budget_warning", "budget warning: group sweep"),
        ("budget_exceeded", "budget exceeded: group sweep"),
    ]


def test_the_first_check_starts_from_now(db, receiver, commit, make_job, make_experiment):
    destination(receiver.url, *NotificationEvent.values)
    make_experiment("old", desired_state="RUNNING")
    make_job(name="old", status="FAILED", failure_signature="FAILED: boom", ended_at=timezone.now())
    services.record("reconciler", Operation.PARK, experiment_name="old", message="long ago")
    commit(notifications.check)
    commit(notifications.check)
    assert Notification.objects.count() == 0
    cursor = SyncState.objects.get(source=SyncSource.NOTIFY).cursor
    assert cursor["oplog_id"] == OperationLog.objects.latest("id").id


def test_failures_of_one_bucket_are_one_message_per_window(
    db, receiver, commit, make_job, make_experiment
):
    destination(receiver.url, NotificationEvent.JOB_FAILED)
    start_check()
    signature = "FAILED: CUDA out of memory on node <ip>"
    for name in ("exp-1", "exp-2", "exp-3"):
        make_experiment(name, desired_state="RUNNING")
        for _ in range(2):  # two jobs of exp-1..3 each: six jobs, one bucket
            make_job(
                name=name, status="FAILED", failure_signature=signature, ended_at=timezone.now()
            )
    make_experiment("stopped")  # desired STOPPED: its failure is nobody's news
    make_job(name="stopped", status="FAILED", failure_signature=signature)
    make_job(name="exp-1", status="FAILED", failure_signature="FAILED_SETUP: other")
    commit(notifications.check)
    commit(notifications.check)
    run_queued()
    assert len(receiver.requests) == 2  # one per bucket
    row = Notification.objects.get(key=signature)
    assert row.count == 6
    assert row.data["experiments"] == ["exp-1", "exp-2", "exp-3"]
    assert row.data["failures"].startswith("/failures?signature=FAILED%3A+CUDA")
    text = next(r.body["text"] for r in receiver.requests if "CUDA" in r.body["text"])
    assert text.endswith("6 times: exp-1, exp-2, exp-3")

    # within the window another failure only counts; after it, a new message
    make_job(name="exp-2", status="FAILED", failure_signature=signature, ended_at=timezone.now())
    commit(notifications.check)
    assert run_queued() == [] and Notification.objects.get(key=signature).count == 7
    Notification.objects.filter(key=signature).update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    make_job(name="exp-3", status="FAILED", failure_signature=signature, ended_at=timezone.now())
    commit(notifications.check)
    run_queued()
    assert Notification.objects.filter(key=signature).count() == 2
    assert len(receiver.requests) == 3


def test_a_sync_failing_longer_than_the_limit_is_one_message_per_window(db, receiver, commit):
    destination(receiver.url, NotificationEvent.SYNC_FAILING)
    start_check()
    now = timezone.now()
    SyncState.objects.update_or_create(
        source=SyncSource.SKYPILOT,
        defaults={
            "last_success_at": now - timedelta(minutes=5),
            "last_attempt_at": now,
            "last_error": "SkyPilot API server did not answer",
        },
    )
    commit(notifications.check)
    assert Notification.objects.count() == 0  # failing, but not for long yet
    SyncState.objects.filter(source=SyncSource.SKYPILOT).update(
        last_success_at=now - timedelta(minutes=20)
    )
    commit(notifications.check)
    commit(notifications.check)
    run_queued()
    (got,) = receiver.requests
    assert got.body["text"].startswith("SkyPilot jobs sync failing for 20 min")
    Notification.objects.update(created_at=now - timedelta(hours=2))
    commit(notifications.check)
    assert Notification.objects.count() == 2
    # a sync that works again is no event
    SyncState.objects.filter(source=SyncSource.SKYPILOT).update(last_error="")
    Notification.objects.update(created_at=now - timedelta(hours=2))
    commit(notifications.check)
    assert Notification.objects.count() == 2


def test_unsubscribed_and_disabled_destinations_get_nothing(db, receiver, commit):
    destination(receiver.url, NotificationEvent.COMPLETED, name="completions only")
    destination(receiver.url, NotificationEvent.PARKED, name="off", enabled=False)
    assert commit(notifications.emit, NotificationEvent.PARKED, "exp-a", "exp-a parked") == []
    assert run_queued() == [] and receiver.requests == []
    with pytest.raises(ValueError, match="unknown notification event 'parkd'"):
        notifications.emit("parkd", "exp-a", "typo")


# --- broken receivers: failed attempts, retries, and syncs never wait -----------------------------


def test_a_down_receiver_is_retried_with_backoff_then_given_up(db, commit):
    destination(down_url(), NotificationEvent.PARKED)
    start_check()
    commit(
        notifications.emit,
        NotificationEvent.PARKED,
        "exp-a",
        "exp-a parked",
        experiment_name="exp-a",
    )
    (first,) = run_queued()
    assert first.startswith(
        'slack "team-alerts": parked exp-a — could not connect to http://127.0.0.1:'
    )
    assert first.endswith("(attempt 1 of 3, next in 1 min)")
    row = Notification.objects.get()
    assert row.status == "pending" and row.attempts == 1
    assert timedelta(seconds=50) < row.next_attempt_at - timezone.now() <= timedelta(minutes=1)

    # not due yet: neither a direct call nor the check sends it again
    assert "not due" in notifications.deliver(row.pk)
    commit(notifications.check)
    assert run_queued() == []

    Notification.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert commit(notifications.check).endswith("retries queued 1")
    (second,) = run_queued()
    assert second.endswith("(attempt 2 of 3, next in 2 min)")
    Notification.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    commit(notifications.check)
    (third,) = run_queued()
    assert third.endswith("(attempt 3 of 3, giving up)")
    row.refresh_from_db()
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 3, None)
    assert row.answer.startswith("could not connect to http://127.0.0.1:")
    logs = notify_logs()
    assert [log.success for log in logs] == [False, False, False]
    assert [log.message for log in logs] == [first, second, third]


def test_a_slow_receiver_times_out_and_never_slows_the_check(db, commit, settings):
    server = Receiver(mode="slow", delay=3).start()
    try:
        destination(server.url, NotificationEvent.PARKED)
        start_check()
        for name in ("exp-a", "exp-b", "exp-c"):
            services.record("reconciler", Operation.PARK, experiment_name=name, message="parked")
        started = time.monotonic()
        commit(notifications.check)  # three events in: the check posts nothing itself
        assert time.monotonic() - started < 1.0  # posting inline would take 3 x 0.5 s
        assert server.requests == []

        started = time.monotonic()
        (message, *_) = run_queued()
        assert time.monotonic() - started < 3 * (0.5 + 0.5)  # each gives up at the timeout
        assert message == (
            'slack "team-alerts": parked exp-a — timed out after 0.5 s '
            "(attempt 1 of 3, next in 1 min)"
        )
        assert Notification.objects.filter(status="pending", attempts=1).count() == 3

        # due retries are queued, not sent, by the check: it stays quick
        Notification.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
        started = time.monotonic()
        assert commit(notifications.check).endswith("retries queued 3")
        assert time.monotonic() - started < 1.0
    finally:
        server.stop()


def test_an_error_answer_is_kept_and_logged(db, commit):
    server = Receiver(mode="error").start()
    try:
        destination(server.url, NotificationEvent.PARKED, format="json")
        commit(notifications.emit, NotificationEvent.PARKED, "exp-a", "exp-a parked")
        (message,) = run_queued()
        assert message.endswith("— HTTP 500: boom: receiver broke (attempt 1 of 3, next in 1 min)")
        assert Notification.objects.get().answer == "HTTP 500: boom: receiver broke"
        (log,) = notify_logs()
        assert not log.success
    finally:
        server.stop()


def test_emit_inside_a_sync_lease_only_writes_rows(db, commit, settings):
    """What the sampler or a sync does: emit while holding its lease; nothing is posted there."""
    from syncing.leases import lease

    server = Receiver(mode="slow", delay=3).start()
    try:
        destination(server.url, NotificationEvent.STALLED)
        started = time.monotonic()
        with lease(SyncSource.SAMPLER, 60):
            commit(notifications.emit, NotificationEvent.STALLED, "job 1", "exp stalled")
        assert time.monotonic() - started < 0.5
        assert server.requests == [] and OrmQ.objects.count() == 1
    finally:
        server.stop()


# --- the URL is a secret ----------------------------------------------------------------------


def test_the_url_never_shows_in_answers_logs_or_messages(db, commit):
    server = Receiver(mode="echo").start()  # answers the request's path back
    try:
        destination(server.url, NotificationEvent.PARKED)
        commit(notifications.emit, NotificationEvent.PARKED, "exp-a", "exp-a parked")
        (message,) = run_queued()
        assert "no such hook: …" in message
        with pytest.raises(webhooks.WebhookError) as failed:
            webhooks.post(f"{down_url()}/services/{SECRET}", {}, timeout=0.5)
    finally:
        server.stop()
    texts = [
        message,
        str(failed.value),
        *(log.message for log in OperationLog.objects.all()),
        *(row.answer for row in Notification.objects.all()),
    ]
    assert not [text for text in texts if "SECRET" in text]
    assert webhooks.mask_url(f"https://hooks.slack.com/services/{SECRET}") == (
        "https://hooks.slack.com/…"
    )


def test_debug_logging_of_the_http_library_does_not_show_the_url(receiver, caplog):
    caplog.set_level(logging.DEBUG)
    answer = webhooks.post(f"{receiver.url}/services/{SECRET}", {"text": "hi"}, timeout=0.5)
    assert answer.ok and len(receiver.requests) == 1
    assert "SECRET" not in caplog.text
    # the filter is lifted afterwards: other requests still log as configured
    logging.getLogger("urllib3.connectionpool").debug("after %s", "post")
    assert "after post" in caplog.text


@pytest.fixture
def admin_web(db) -> Client:
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


def change_url(dest: WebhookDestination) -> str:
    return reverse("admin:experiments_webhookdestination_change", args=[dest.pk])


def posted(dest: WebhookDestination, **changes) -> dict:
    data = {
        "name": dest.name,
        "url": "",
        "format": dest.format,
        "events": list(dest.events),
        "enabled": "on" if dest.enabled else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != ""}


def test_the_admin_never_shows_the_saved_url_and_keeps_it_when_left_empty(admin_web, receiver):
    add = reverse("admin:experiments_webhookdestination_add")
    url = f"{receiver.url}/services/{SECRET}"
    response = admin_web.post(
        add,
        {"name": "team-alerts", "url": url, "format": "slack", "events": ["parked", "stalled"]},
    )
    assert response.status_code == 302, response.content
    dest = WebhookDestination.objects.get()
    assert (dest.url, dest.events, dest.enabled) == (url, ["parked", "stalled"], False)

    page = admin_web.get(change_url(dest)).content.decode()
    assert "SECRET" not in page
    assert f"saved ({receiver.url}/…)" in page
    assert (
        "SECRET"
        not in admin_web.get(
            reverse("admin:experiments_webhookdestination_changelist")
        ).content.decode()
    )

    # empty: kept; events and enabled changed
    response = admin_web.post(change_url(dest), posted(dest, events=["completed"], enabled="on"))
    assert response.status_code == 302
    dest.refresh_from_db()
    assert (dest.url, dest.events, dest.enabled) == (url, ["completed"], True)
    # a new value replaces it
    response = admin_web.post(change_url(dest), posted(dest, url=f"{receiver.url}/new/{SECRET}2"))
    assert response.status_code == 302
    dest.refresh_from_db()
    assert dest.url == f"{receiver.url}/new/{SECRET}2"

    logs = [log.message for log in notify_logs()]
    assert logs[0] == 'webhook added: slack "team-alerts" (parked, stalled; disabled)'
    assert logs[-1].endswith("(URL replaced)")
    assert not [text for text in logs if "SECRET" in text]
    assert (
        "SECRET"
        not in admin_web.get(reverse("admin:experiments_operationlog_changelist")).content.decode()
    )


def test_bad_events_and_urls_are_form_errors(admin_web):
    dest = destination("https://hooks.example.com", "parked")
    response = admin_web.post(change_url(dest), posted(dest, events=["parked", "nope"]))
    assert response.status_code == 200
    assert "nope is not one of the available choices" in response.content.decode()
    for bad in ("ftp://hooks.example.com/x", "not a url"):
        response = admin_web.post(change_url(dest), posted(dest, url=bad))
        assert response.status_code == 200
        assert "Enter an http:// or https:// URL." in response.content.decode()
    response = admin_web.post(
        reverse("admin:experiments_webhookdestination_add"),
        {"name": "no url", "format": "json", "events": ["parked"]},
    )
    assert response.status_code == 200
    assert "Give the webhook URL" in response.content.decode()
    dest.refresh_from_db()
    assert dest.events == ["parked"] and dest.url.startswith("https://hooks.example.com/")


def test_the_admin_test_action_sends_through_the_queue(
    admin_web, receiver, django_capture_on_commit_callbacks
):
    dest = destination(receiver.url, format="json")  # subscribed to nothing: a test still goes
    changelist = reverse("admin:experiments_webhookdestination_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_web.post(
            changelist, {"action": "send_test", "_selected_action": [dest.pk]}, follow=True
        )
    assert "Queued a test notification to 1 destination" in response.content.decode()
    (message,) = run_queued()
    assert message == 'json "team-alerts": test team-alerts — HTTP 200: ok'
    (got,) = receiver.requests
    assert got.body["event"] == "test"
    assert got.body["title"] == "SkyDeck test notification for team-alerts"
    page = admin_web.get(reverse("admin:experiments_notification_changelist")).content.decode()
    assert "SkyDeck test notification for team-alerts" in page and "HTTP 200: ok" in page


def test_deleting_a_destination_is_logged(admin_web):
    dest = destination("https://hooks.example.com", "parked")
    response = admin_web.post(
        reverse("admin:experiments_webhookdestination_delete", args=[dest.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not WebhookDestination.objects.exists()
    (log,) = notify_logs()
    assert log.message == 'webhook deleted: slack "team-alerts" (parked; enabled)'


# --- the schedule -------------------------------------------------------------------------------


def test_the_check_is_scheduled_every_minute_and_its_task_path_runs(db):
    schedules.ensure_schedules()
    row = Schedule.objects.get(name=schedules.NOTIFY_SCHEDULE)
    assert (row.func, row.schedule_type, row.minutes) == ("syncing.tasks.notify", "I", 1)
    assert locate(row.func)().startswith("notify: started")
