"""Health data shared by ``/api/health``, the UI's pills and the admin."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from experiments.models import SyncSource, SyncState

INTERVAL_SETTINGS = {
    SyncSource.SKYPILOT: "SKYDECK_SYNC_SKYPILOT_INTERVAL",
    SyncSource.S3: "SKYDECK_SYNC_S3_INTERVAL",
}


def health_report() -> dict[str, Any]:
    """Whether the database answers and how fresh each sync source is; never holds secrets."""
    now = timezone.now()
    report: dict[str, Any] = {"status": "ok", "time": now.isoformat(), "database": "ok"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        states = {s.source: s for s in SyncState.objects.all()}
    except DatabaseError as exc:
        report.update(status="error", database=f"unreachable: {type(exc).__name__}")
        return report
    sources: dict[str, Any] = {}
    for source in INTERVAL_SETTINGS:
        state = states.get(source)
        interval = getattr(settings, INTERVAL_SETTINGS[source])
        entry: dict[str, Any] = {"interval_seconds": interval, "last_success": None, "ok": None}
        if state is not None:
            entry.update(
                last_attempt=state.last_attempt_at.isoformat() if state.last_attempt_at else None,
                last_success=state.last_success_at.isoformat() if state.last_success_at else None,
                ok=state.ok,
                last_error=state.last_error if not state.ok else "",
            )
            if state.last_success_at:
                age = (now - state.last_success_at).total_seconds()
                entry["age_seconds"] = round(age, 1)
                entry["stale"] = age > 3 * interval
        sources[source] = entry
    report["sync"] = sources
    return report
