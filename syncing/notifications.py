"""Notifications: events into an outbox (``Notification``), delivered to webhooks by tasks.

* :func:`emit` is how any code says "this happened": database writes only (safe inside a sync, a
  lease or a transaction). Each enabled destination that wants the event gets an outbox row, or,
  when one with the same key was made within ``SKYDECK_NOTIFY_COLLAPSE_MINUTES``, that row's
  count goes up instead: one message per failure bucket per window, not one per job.
* :func:`deliver` is one attempt at one row, run by a django-q2 task queued after the row's
  transaction commits: the only network call, never inside a transaction or a sync lease, so a
  broken destination never blocks or slows a sync. Failures retry with backoff (1, 2, 4 ...
  minutes) up to ``SKYDECK_NOTIFY_MAX_ATTEMPTS``; every attempt is one operation-log row.
* :func:`check` is the scheduled pass (every minute): it turns what happened since its cursor
  (failed jobs, parks, completions, budget rows, syncs failing for long) into events, then queues
  the retries that are due. It never posts anything itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from experiments import services
from experiments.models import (
    DeliveryStatus,
    DesiredState,
    Experiment,
    Job,
    Notification,
    NotificationEvent,
    Operation,
    OperationLog,
    SyncSource,
    SyncState,
    WebhookDestination,
)
from syncing import runner, webhooks
from syncing.leases import LeaseHeld, lease, restore_in_progress
from syncing.webhooks import mask_url

__all__ = [
    "check",
    "delete_destinations",
    "deliver",
    "emit",
    "mask_url",
    "save_destination",
    "send_test",
]

logger = logging.getLogger(__name__)
ACTOR = "notify"
DELIVER_TASK = "syncing.notifications.deliver"
#: The event of a test message from the admin (sent whatever the destination subscribes to).
TEST_EVENT = "test"
#: Failed jobs are looked for this far back by their end time (a sync may learn of a failure
#: late); the ids already told about within it are kept in the cursor, so none is told twice.
FAILURE_LOOKBACK = timedelta(days=1)
#: A new row's own task gets this long before the check queues it again (lost task, worker down).
REQUEUE_AFTER = timedelta(minutes=1)
#: The sync sources whose failing is an event.
WATCHED_SOURCES = (SyncSource.SKYPILOT, SyncSource.S3)


# --- emitting -----------------------------------------------------------------------------------


def _merge(data: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the list items of ``new`` it lacks appended (experiments, job ids)."""
    merged = dict(data)
    for key, value in new.items():
        if isinstance(value, list):
            known = list(merged.get(key) or [])
            merged[key] = known + [v for v in value if v not in known]
        else:
            merged.setdefault(key, value)
    return merged


def _queue(notification_id: int) -> None:
    from django_q.tasks import async_task

    async_task(DELIVER_TASK, notification_id, task_name=f"notify {notification_id}")


def emit(
    event: str,
    key: str,
    title: str,
    text: str = "",
    *,
    experiment_name: str = "",
    data: dict[str, Any] | None = None,
) -> list[Notification]:
    """Record an event for every enabled destination that wants it; returns the rows made or
    collapsed into. Only database writes: delivery is queued once the transaction commits."""
    if event not in NotificationEvent.values:
        raise ValueError(
            f"unknown notification event {event!r}: choose from {', '.join(NotificationEvent)}"
        )
    key = key[:400]
    new_data = dict(data or {})
    if experiment_name:
        new_data["experiments"] = [experiment_name]
    destinations = [
        d for d in WebhookDestination.objects.filter(enabled=True) if event in (d.events or [])
    ]
    if not destinations:
        return []
    now = timezone.now()
    since = now - timedelta(minutes=settings.SKYDECK_NOTIFY_COLLAPSE_MINUTES)
    rows = []
    with transaction.atomic():
        for destination in destinations:
            row = (
                Notification.objects.select_for_update()
                .filter(destination=destination, event=event, key=key, created_at__gte=since)
                .order_by("-created_at", "-id")
                .first()
            )
            if row is not None:
                Notification.objects.filter(pk=row.pk).update(
                    count=F("count") + 1, data=_merge(row.data or {}, new_data), updated_at=now
                )
                row.refresh_from_db()
            else:
                row = Notification.objects.create(
                    destination=destination,
                    event=event,
                    key=key,
                    experiment_name=experiment_name,
                    title=title[:300],
                    text=text,
                    data=new_data,
                    next_attempt_at=now,
                )
                transaction.on_commit(lambda pk=row.pk: _queue(pk))
            rows.append(row)
    return rows


@services.writes
def send_test(actor: services.Actor, destinations: Iterable[WebhookDestination]) -> int:
    """Queue a test message to each destination through the same :func:`deliver` path."""
    now = timezone.now()
    destinations = list(destinations)
    with transaction.atomic():
        for destination in destinations:
            row = Notification.objects.create(
                destination=destination,
                event=TEST_EVENT,
                key=destination.name,
                title=f"SkyDeck test notification for {destination.name}",
                text=f"Sent from the admin by {services.actor_name(actor)}.",
                next_attempt_at=now,
            )
            services.record(
                actor,
                Operation.NOTIFY,
                message=f'test notification queued for {destination.format} "{destination.name}"',
            )
            transaction.on_commit(lambda pk=row.pk: _queue(pk))
    return len(destinations)


# --- destinations (the admin's doors) ------------------------------------------------------------


def _describe(destination: WebhookDestination) -> str:
    """What a destination is, without its URL."""
    events = ", ".join(destination.events or []) or "no events"
    state = "enabled" if destination.enabled else "disabled"
    return f'{destination.format} "{destination.name}" ({events}; {state})'


@services.writes
def save_destination(actor: services.Actor, destination: WebhookDestination) -> WebhookDestination:
    """Create or change a destination, validated; the log says what changed, never the URL."""
    old = WebhookDestination.objects.filter(pk=destination.pk).first() if destination.pk else None
    destination.full_clean()
    with transaction.atomic():
        destination.save()
        if old is None:
            message = f"webhook added: {_describe(destination)}"
        else:
            message = f"webhook changed: {_describe(old)} -> {_describe(destination)}"
            if old.url != destination.url:
                message += " (URL replaced)"
        services.record(actor, Operation.NOTIFY, message=message)
    return destination


@services.writes
def delete_destinations(actor: services.Actor, destinations: Iterable[WebhookDestination]) -> int:
    """Delete destinations (and their outbox rows): nothing more is sent to them."""
    count = 0
    with transaction.atomic():
        for destination in list(destinations):
            text = _describe(destination)
            destination.delete()
            services.record(actor, Operation.NOTIFY, message=f"webhook deleted: {text}")
            count += 1
    return count


# --- delivering ---------------------------------------------------------------------------------


def _backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 ... minutes after the ``attempts``-th failure."""
    return timedelta(minutes=2 ** (attempts - 1))


def _subject(row: Notification) -> str:
    what = row.experiment_name or row.key
    return f"{row.event} {what}"[:200]


def _message_text(row: Notification) -> str:
    """The text sent: the event's own, plus how many repeats were collapsed into it."""
    if row.count <= 1:
        return row.text
    names = [str(n) for n in (row.data or {}).get("experiments", [])]
    repeat = f"{row.count} times" + (f": {', '.join(names)}" if names else "")
    return f"{row.text}\n{repeat}" if row.text else repeat


def deliver(notification_id: int) -> str:
    """One attempt at one outbox row (the task :func:`emit` and :func:`check` queue).

    Run outside any transaction: the row is claimed with a conditional UPDATE (so two workers
    never both send it), posted, and the outcome written and logged. Returns the log message.
    """
    now = timezone.now()
    hold = timedelta(seconds=settings.SKYDECK_NOTIFY_TIMEOUT + 60)
    claimed = (
        Notification.objects.filter(pk=notification_id, status=DeliveryStatus.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .update(next_attempt_at=now + hold)
    )
    if not claimed:
        return f"notification {notification_id}: not due (sent, given up, or being sent)"
    row = Notification.objects.select_related("destination").get(pk=notification_id)
    destination = row.destination
    label = f'{destination.format} "{destination.name}"'
    attempt = row.attempts + 1
    limit = settings.SKYDECK_NOTIFY_MAX_ATTEMPTS
    if not destination.enabled and row.event != TEST_EVENT:
        outcome, ok = "not sent: the destination is disabled", False
        attempt = limit  # nothing to retry
    else:
        try:
            body = webhooks.payload(
                destination.format,
                event=row.event,
                title=row.title,
                text=_message_text(row),
                experiment=row.experiment_name,
                count=row.count,
                data=row.data or {},
                sent_at=timezone.now(),
            )
            answer = webhooks.post(destination.url, body)
        except (webhooks.WebhookError, ValueError) as exc:
            outcome, ok = str(exc), False
        else:
            ok = answer.ok
            outcome = answer.describe() + (" ok" if ok and not answer.body else "")
    done = timezone.now()
    if ok:
        fields = {
            "status": DeliveryStatus.SENT,
            "sent_at": done,
            "next_attempt_at": None,
            "answer": outcome,
        }
        message = f"{label}: {_subject(row)} — {outcome}"
    elif attempt >= limit:
        fields = {"status": DeliveryStatus.FAILED, "next_attempt_at": None, "answer": outcome}
        message = f"{label}: {_subject(row)} — {outcome} (attempt {attempt} of {limit}, giving up)"
    else:
        wait = _backoff(attempt)
        fields = {"next_attempt_at": done + wait, "answer": outcome}
        message = (
            f"{label}: {_subject(row)} — {outcome} (attempt {attempt} of {limit}, "
            f"next in {int(wait.total_seconds() // 60)} min)"
        )
    Notification.objects.filter(pk=row.pk).update(attempts=attempt, updated_at=done, **fields)
    services.record(
        ACTOR,
        Operation.NOTIFY,
        experiment_name=row.experiment_name,
        success=ok,
        message=message,
    )
    if not ok:
        logger.warning("notification %s: %s", row.pk, message)
    return message


# --- the scheduled check ------------------------------------------------------------------------


def _failures(cursor: dict[str, Any], now: datetime, first: bool) -> tuple[int, list[int]]:
    """Emit one event per newly failed job of a desired-RUNNING experiment (collapsed per
    bucket); returns (events, the failed job ids to remember)."""
    cut = now - FAILURE_LOOKBACK
    failed = Job.objects.exclude(failure_signature="")
    keep = list(
        failed.filter(Q(first_seen__gt=cut) | Q(ended_at__gt=cut)).values_list("id", flat=True)
    )
    if first:
        return 0, keep
    since = datetime.fromisoformat(cursor["job_time"])
    known = set(cursor.get("failed_ids") or [])
    candidates = failed.filter(Q(first_seen__gt=since) | Q(ended_at__gt=cut))
    new = [
        job
        for job in candidates.only("id", "experiment_id", "failure_signature", "failure_reason")
        if job.id not in known
    ]
    running = set(
        Experiment.objects.filter(
            name__in={j.experiment_id for j in new if j.experiment_id},
            desired_state=DesiredState.RUNNING,
        ).values_list("name", flat=True)
    )
    events = 0
    for job in sorted(new, key=lambda j: j.id):
        if job.experiment_id not in running:
            continue
        signature = job.failure_signature
        emit(
            NotificationEvent.JOB_FAILED,
            signature,
            f"job failed: {signature}",
            f"{job.experiment_id}: job {job.id}: {job.failure_reason}".strip()[:1000],
            experiment_name=job.experiment_id,
            data={
                "signature": signature,
                "failures": "/failures?" + urlencode({"signature": signature}),
                "job_ids": [job.id],
            },
        )
        events += 1
    return events, keep


#: A row logged in a transaction that commits late can carry a lower id than rows already
#: read (PostgreSQL hands out ids at insert): the cursor stays this far behind, and the ids
#: read past it are remembered, so such a row is read once, neither skipped nor twice.
SETTLE = timedelta(minutes=2)


def _logged(after: int, seen: list[int], now: datetime) -> tuple[int, int, list[int]]:
    """Emit parks, completions and budget rows logged after id ``after`` (but not ``seen``);
    returns (events, the new cursor id, the ids read past it)."""
    rows = OperationLog.objects.filter(
        id__gt=after, operation__in=[Operation.PARK, Operation.COMPLETE, Operation.BUDGET]
    ).order_by("id")
    done = set(seen)
    events = 0
    for row in rows:
        if row.id in done:
            continue
        done.add(row.id)
        name = row.experiment_name
        if row.operation == Operation.PARK:
            emit(
                NotificationEvent.PARKED, name, f"{name} parked", row.message, experiment_name=name
            )
        elif row.operation == Operation.COMPLETE:
            emit(
                NotificationEvent.COMPLETED,
                name,
                f"{name} completed",
                row.message,
                experiment_name=name,
            )
        else:
            # syncing.budgets: "warning: group vision: 41.5 of 50 GPU-h (83 %) this month ..."
            level, _, rest = row.message.partition(": ")
            event = {
                "warning": NotificationEvent.BUDGET_WARNING,
                "exceeded": NotificationEvent.BUDGET_EXCEEDED,
            }.get(level)
            if event is None:
                continue
            group = rest.split(": ", 1)[0]
            emit(event, f"{level} {group}", f"budget {level}: {group}", row.message)
        events += 1
    settled = (
        OperationLog.objects.filter(id__gt=after, created_at__lt=now - SETTLE).aggregate(
            top=Max("id")
        )["top"]
        or after
    )
    return events, settled, sorted(i for i in done if i > settled)


def _sync_failing(cursor: dict[str, Any], now: datetime) -> int:
    """Emit for each watched sync failing longer than SKYDECK_NOTIFY_SYNC_FAILING_MINUTES (once
    per collapse window while it goes on)."""
    limit = timedelta(minutes=settings.SKYDECK_NOTIFY_SYNC_FAILING_MINUTES)
    first_seen = dict(cursor.get("failing_since") or {})
    available = set(runner.available_sources())
    events = 0
    for state in SyncState.objects.filter(
        source__in=[s for s in WATCHED_SOURCES if s in available]
    ):
        if not state.last_error:
            first_seen.pop(state.source, None)
            continue
        if state.last_success_at is not None:
            since = state.last_success_at
        else:  # never succeeded: from when this check first saw it failing
            since = datetime.fromisoformat(first_seen.setdefault(state.source, now.isoformat()))
        if now - since < limit:
            continue
        minutes = int((now - since).total_seconds() // 60)
        label = SyncSource(state.source).label
        emit(
            NotificationEvent.SYNC_FAILING,
            state.source,
            f"{label} sync failing for {minutes} min",
            state.last_error[:1000],
            data={"source": state.source, "since": since.isoformat()},
        )
        events += 1
    cursor["failing_since"] = first_seen
    return events


def _due(now: datetime) -> list[int]:
    """Pending rows whose attempt is due: retries, and new rows whose own task went missing
    (a new row's own task, queued when it was made, gets REQUEUE_AFTER first)."""
    due = Notification.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
    due = due.filter(Q(attempts__gt=0) | Q(created_at__lte=now - REQUEUE_AFTER))
    return list(due.order_by("id").values_list("pk", flat=True))


def check() -> str:
    """The scheduled pass: events since the cursor into the outbox, then queue due retries.

    The first pass only sets the cursor to now (no notifications about the whole history).
    Never raises for a failed pass: the SyncState row says what went wrong, like a sync's.
    """
    source = SyncSource.NOTIFY
    restoring = restore_in_progress()
    if restoring is not None:
        return f"notify: skipped: restoring: {restoring.describe()}"
    started = time.monotonic()
    try:
        with lease(source, settings.Q_CLUSTER["timeout"] + 60):
            try:
                counts = _pass()
            except Exception as exc:
                message = runner.describe_error(exc)
                logger.exception("notification check failed")
                SyncState.objects.filter(source=source).update(
                    last_attempt_at=timezone.now(),
                    last_error=message,
                    last_error_at=timezone.now(),
                    duration=time.monotonic() - started,
                )
                return f"notify: FAILED: {message}"
    except LeaseHeld as exc:
        return f"notify: skipped: {exc}"
    due = _due(timezone.now())
    for pk in due:
        _queue(pk)
    counts["retries queued"] = len(due)
    SyncState.objects.filter(source=source).update(counts=counts)
    return "notify: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def _pass() -> dict[str, Any]:
    """The database part of :func:`check`, in one transaction with the cursor."""
    started = time.monotonic()
    now = timezone.now()
    with transaction.atomic():
        state = SyncState.objects.select_for_update().get(source=SyncSource.NOTIFY)
        cursor = dict(state.cursor or {})
        first = "oplog_id" not in cursor
        failed, keep = _failures(cursor, now, first)
        if first:
            top = OperationLog.objects.aggregate(top=Max("id"))["top"] or 0
            logged = 0
            cursor["failing_since"] = {}
        else:
            logged, top, read = _logged(int(cursor["oplog_id"]), cursor.get("oplog_read", []), now)
            cursor["oplog_read"] = read
        failing = 0 if first else _sync_failing(cursor, now)
        cursor.update(oplog_id=top, job_time=now.isoformat(), failed_ids=keep)
        SyncState.objects.filter(source=SyncSource.NOTIFY).update(
            cursor=cursor,
            last_attempt_at=now,
            last_success_at=timezone.now(),
            last_error="",
            duration=time.monotonic() - started,
        )
    counts: dict[str, Any] = (
        {"started": "from now"}
        if first
        else {"job failures": failed, "logged events": logged, "syncs failing": failing}
    )
    return counts
