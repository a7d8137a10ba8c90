"""The django-q2 schedules for the syncers, created idempotently after ``migrate``.

django-q2's scheduler wakes every 30 seconds; intervals under a minute use a cron expression with
a seconds field (croniter), whole minutes use a MINUTES schedule.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

TASKS = {
    "skydeck: sync SkyPilot jobs": (
        "skypilot",
        "syncing.tasks.sync_skypilot",
        "SKYDECK_SYNC_SKYPILOT_INTERVAL",
    ),
    "skydeck: sync S3 checkpoints": ("s3", "syncing.tasks.sync_s3", "SKYDECK_SYNC_S3_INTERVAL"),
}


def schedule_fields(interval: int) -> dict:
    from django_q.models import Schedule

    if interval % 60 == 0:
        return {"schedule_type": Schedule.MINUTES, "minutes": interval // 60, "cron": None}
    # the sixth cron field is seconds
    return {"schedule_type": Schedule.CRON, "cron": f"* * * * * */{interval}", "minutes": None}


def ensure_schedules() -> list[str]:
    """Create or update SkyDeck's schedules to match the settings; returns their names."""
    from django_q.models import Schedule

    from syncing.runner import available_sources

    sources = set(available_sources())
    names = []
    for name, (source, func, setting) in TASKS.items():
        if source not in sources:
            continue
        names.append(name)
        fields = schedule_fields(getattr(settings, setting))
        existing = Schedule.objects.filter(name=name).first()
        if existing is None:
            Schedule.objects.create(name=name, func=func, repeats=-1, **fields)
            continue
        changed = [
            k
            for k, v in {"func": func, "repeats": -1, **fields}.items()
            if getattr(existing, k) != v
        ]
        if changed:
            for key in changed:
                setattr(existing, key, {"func": func, "repeats": -1, **fields}[key])
            existing.next_run = timezone.now()  # first run of the new rule: now
            existing.save()
    return names


def on_post_migrate(sender, **kwargs) -> None:
    ensure_schedules()
