"""Health data shared by ``/api/health``, the API's sync status, the UI's pills and the admin.

* Sync sources: a source is *stale* when it has not succeeded within three of its intervals.
* The worker (django-q2, ORM broker): it is *alive* when a task finished within three of the
  longest sync interval (at least two minutes) or a worker holds a task right now. The
  scheduler queues a sync every 30-60 s, so a live cluster finishes tasks all the time; the
  cluster's own ``Stat`` records live in the Django cache, which is per process here, so the web
  process could not see them. This costs two small queries.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from experiments.models import SyncSource, SyncState

INTERVAL_SETTINGS = {
    SyncSource.SKYPILOT: "SKYDECK_SYNC_SKYPILOT_INTERVAL",
    SyncSource.S3: "SKYDECK_SYNC_S3_INTERVAL",
}
STALE_FACTOR = 3
WORKER_MIN_WINDOW = 120


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _available_sources() -> set[str]:
    try:
        from syncing.runner import available_sources
    except ImportError:  # pragma: no cover - syncing is part of SkyDeck
        return set(INTERVAL_SETTINGS)
    return set(available_sources())


def _source_entry(source: str, state: SyncState | None, now, available: bool) -> dict[str, Any]:
    """The public part: freshness only (no counts, nothing secret)."""
    interval = getattr(settings, INTERVAL_SETTINGS[source])
    entry: dict[str, Any] = {
        "available": available,
        "interval_seconds": interval,
        "stale_after_seconds": STALE_FACTOR * interval,
        "last_attempt": None,
        "last_success": None,
        "ok": None,
        "last_error": "",
        "age_seconds": None,
        "stale": available,
    }
    if state is not None:
        entry.update(
            last_attempt=_iso(state.last_attempt_at),
            last_success=_iso(state.last_success_at),
            ok=state.ok if state.last_attempt_at else None,
            last_error=state.last_error if not state.ok else "",
        )
        if state.last_success_at:
            age = (now - state.last_success_at).total_seconds()
            entry["age_seconds"] = round(age, 1)
            entry["stale"] = available and age > STALE_FACTOR * interval
    return entry


def worker_report(now=None) -> dict[str, Any]:
    """Whether a django-q2 worker is alive, from the task tables it writes (ORM broker)."""
    from django_q.models import OrmQ, Task

    now = now or timezone.now()
    window = max(
        WORKER_MIN_WINDOW,
        STALE_FACTOR * max(getattr(settings, name) for name in INTERVAL_SETTINGS.values()),
    )
    last = Task.objects.aggregate(last=Max("stopped"))["last"]
    queue = OrmQ.objects.aggregate(
        busy=Count("id", filter=Q(lock__gt=now)),
        queued=Count("id", filter=Q(lock__lte=now) | Q(lock__isnull=True)),
    )
    age = round((now - last).total_seconds(), 1) if last else None
    busy = queue["busy"] or 0
    return {
        "alive": busy > 0 or (age is not None and age <= window),
        "last_task_at": _iso(last),
        "age_seconds": age,
        "busy": busy,
        "queued": queue["queued"] or 0,
        "alive_within_seconds": window,
    }


def _load_states() -> dict[str, SyncState]:
    return {s.source: s for s in SyncState.objects.all()}


def health_report() -> dict[str, Any]:
    """Whether the database answers, how fresh each sync source is, and whether the worker runs.

    ``status`` is "ok" whenever the database answers (``/api/health`` then answers 200); stale
    sources and a dead worker are listed in ``warnings``. Never holds secrets.
    """
    now = timezone.now()
    report: dict[str, Any] = {"status": "ok", "time": now.isoformat(), "database": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        states = _load_states()
    except DatabaseError as exc:
        report.update(status="error", database=f"unreachable: {type(exc).__name__}")
        return report
    available = _available_sources()
    sources = {
        source: _source_entry(source, states.get(source), now, source in available)
        for source in INTERVAL_SETTINGS
    }
    report["sync"] = sources
    warnings = [
        f"{source} sync has not succeeded for over {entry['stale_after_seconds']} s"
        if entry["last_success"]
        else f"{source} sync has never succeeded"
        for source, entry in sources.items()
        if entry["stale"]
    ]
    try:
        report["worker"] = worker_report(now)
    except DatabaseError as exc:
        report["worker"] = {"alive": False, "error": type(exc).__name__}
    if not report["worker"]["alive"]:
        warnings.append("no background worker has finished a task recently")
    report["warnings"] = warnings
    return report


def sync_status() -> dict[str, Any]:
    """The API's view of every source: freshness plus counts, duration and whether it runs."""
    now = timezone.now()
    states = _load_states()
    available = _available_sources()
    sources = []
    for source in INTERVAL_SETTINGS:
        state = states.get(source)
        entry = _source_entry(source, state, now, source in available)
        entry.update(
            source=str(source),
            label=str(SyncSource(source).label),
            last_error_at=_iso(state.last_error_at) if state else None,
            running=bool(
                state
                and state.lease_owner
                and state.lease_expires_at
                and state.lease_expires_at > now
            ),
            duration_seconds=state.duration if state else None,
            counts=dict(state.counts or {}) if state else {},
        )
        sources.append(entry)
    return {"sources": sources, "worker": worker_report(now)}
