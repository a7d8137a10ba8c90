"""The django-q2 schedules for the syncers, created idempotently after ``migrate``.

django-q2's scheduler wakes every 30 seconds; intervals under a minute use a cron expression with
a seconds field (croniter), whole minutes use a MINUTES schedule.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from syncing import runner

TASKS = {
    "skydeck: sync SkyPilot jobs and reconcile": (
        "skypilot",
        "syncing.tasks.sync_jobs_and_reconcile",
        "SKYDECK_SYNC_SKYPILOT_INTERVAL",
    ),
    "skydeck: sync S3 checkpoints": ("s3", "syncing.tasks.sync_s3", "SKYDECK_SYNC_S3_INTERVAL"),
    # failed jobs' log tails, running jobs' progress, stalls: it reads logs from SkyPilot
    "skydeck: sample job logs": (
        "skypilot",
        "syncing.tasks.sample_logs",
        "SKYDECK_SAMPLE_INTERVAL",
    ),
}
#: Scheduled snapshots: only while SKYDECK_BACKUP_DIR is set (removed when it is emptied).
BACKUP_SCHEDULE = "skydeck: back up the database"
BACKUP_TASK = "backups.tasks.backup_database"
#: The notification checks: every minute, whatever is configured (a pass without destinations
#: only moves its cursor).
NOTIFY_SCHEDULE = "skydeck: notifications"
NOTIFY_TASK = "syncing.tasks.notify"
NOTIFY_INTERVAL = 60
#: Schedules stored under an earlier name: renamed in place, so none runs twice.
RENAMED = {"skydeck: sync SkyPilot jobs": "skydeck: sync SkyPilot jobs and reconcile"}


def schedule_fields(interval: int) -> dict:
    from django_q.models import Schedule

    if interval % 60 == 0:
        return {"schedule_type": Schedule.MINUTES, "minutes": interval // 60, "cron": None}
    # the sixth cron field is seconds
    return {"schedule_type": Schedule.CRON, "cron": f"* * * * * */{interval}", "minutes": None}


def ensure_schedules() -> list[str]:
    """Create or update SkyDeck's schedules to match the settings; returns their names."""
    from django_q.models import Schedule

    for old, new in RENAMED.items():
        if Schedule.objects.filter(name=new).exists():
            Schedule.objects.filter(name=old).delete()
        else:
            Schedule.objects.filter(name=old).update(name=new)
    sources = set(runner.available_sources())
    wanted = {
        name: (func, getattr(settings, setting))
        for name, (source, func, setting) in TASKS.items()
        if source in sources
    }
    if settings.SKYDECK_BACKUP_DIR:
        wanted[BACKUP_SCHEDULE] = (BACKUP_TASK, settings.SKYDECK_BACKUP_INTERVAL)
    else:
        Schedule.objects.filter(name=BACKUP_SCHEDULE).delete()
    wanted[NOTIFY_SCHEDULE] = (NOTIFY_TASK, NOTIFY_INTERVAL)
    for name, (func, interval) in wanted.items():
        _ensure(Schedule, name, func, interval)
    return list(wanted)


def _ensure(schedule_model: type, name: str, func: str, interval: int) -> None:
    """Create the schedule, or update it when its task or interval changed."""
    fields = {"func": func, "repeats": -1, **schedule_fields(interval)}
    existing = schedule_model.objects.filter(name=name).first()
    if existing is None:
        schedule_model.objects.create(name=name, **fields)
        return
    changed = [key for key, value in fields.items() if getattr(existing, key) != value]
    if changed:
        for key in changed:
            setattr(existing, key, fields[key])
        existing.next_run = timezone.now()  # first run of the new rule: now
        existing.save()


def on_post_migrate(sender, using: str = "default", **kwargs) -> None:
    """Create the schedules once django-q2's tables exist (a partial ``migrate`` may precede)."""
    from django.db import connections
    from django_q.models import Schedule

    if Schedule._meta.db_table in connections[using].introspection.table_names():
        ensure_schedules()
