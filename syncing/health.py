"""Health data shared by ``/api/health``, the API's sync status, the UI's pills and the admin.

* Sync sources: a source is *stale* when it has not succeeded within three of its intervals.
* The worker (django-q2, ORM broker): it is *alive* when a task finished within three of the
  longest sync interval (at least two minutes) or a worker holds a task right now. The
  scheduler queues a sync every 30-60 s, so a live cluster finishes tasks all the time; the
  cluster's own ``Stat`` records live in the Django cache, which is per process here, so the web
  process could not see them. This costs two small queries.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from experiments.control import reconciler_mode
from experiments.models import Job, JobStatus, SyncSource, SyncState
from skydeck_site import storage
from syncing import nodes, runner
from syncing.leases import owner_is_dead

INTERVAL_SETTINGS = {
    SyncSource.SKYPILOT: "SKYDECK_SYNC_SKYPILOT_INTERVAL",
    SyncSource.S3: "SKYDECK_SYNC_S3_INTERVAL",
}
STALE_FACTOR = 3
WORKER_MIN_WINDOW = 120
#: django-q2's scheduler wakes every 30 s, so a source scheduled more often can still be up to
#: 30 s between passes: staleness counts from max(interval, this), or pills flicker "late".
SCHEDULER_WAKE_SECONDS = 30


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _available_sources() -> set[str]:
    return set(runner.available_sources())


#: What a source reports when its last attempt ended without recording success or an error.
INTERRUPTED = (
    "the last attempt stopped before it finished (its process was killed or timed out); "
    "the next pass starts over"
)


def is_running(state: SyncState, now) -> bool:
    """A pass holds the lease right now (unexpired, and its process has not died)."""
    return bool(
        state.lease_owner
        and state.lease_expires_at
        and state.lease_expires_at > now
        and not owner_is_dead(state.lease_owner)  # a killed sync runs no more
    )


def _outcome(state: SyncState, now) -> tuple[bool | None, str]:
    """(ok, error) of the last attempt whose outcome is known.

    A pass under way has no outcome yet, so it reports the one before it: otherwise every
    source would flash "failed" for as long as each pass runs. An attempt that ended without
    an outcome (killed mid-pass) is a failure, and says so.
    """
    attempt = state.last_attempt_at
    if attempt is None:
        return None, ""
    if state.ok:
        return True, ""
    errored_since = state.last_error and not (state.last_error_at and state.last_error_at < attempt)
    if errored_since:
        return False, state.last_error
    if is_running(state, now):
        if state.last_error:
            return False, state.last_error
        return (True, "") if state.last_success_at else (None, "")
    return False, INTERRUPTED


def _source_entry(
    source: str, state: SyncState | None, now, available: bool, interval: int | None = None
) -> dict[str, Any]:
    """The public part: freshness only (no counts, nothing secret)."""
    if interval is None:
        interval = getattr(settings, INTERVAL_SETTINGS[source])
    entry: dict[str, Any] = {
        "available": available,
        "interval_seconds": interval,
        "stale_after_seconds": STALE_FACTOR * max(interval, SCHEDULER_WAKE_SECONDS),
        "last_attempt": None,
        "last_success": None,
        "ok": None,
        "last_error": "",
        "age_seconds": None,
        "stale": available,
    }
    if state is not None:
        ok, error = _outcome(state, now)
        entry.update(
            last_attempt=_iso(state.last_attempt_at),
            last_success=_iso(state.last_success_at),
            ok=ok,
            last_error=error,
        )
        errors = (state.counts or {}).get("errors") if ok else 0
        if isinstance(errors, int) and errors > 0:
            # the last pass succeeded, but some of what it covers failed (e.g. S3 prefixes)
            entry["partial_errors"] = errors
            entry["partial_detail"] = "see the operation log or GET /api/sync/ for which"
        if state.last_success_at:
            age = (now - state.last_success_at).total_seconds()
            entry["age_seconds"] = round(age, 1)
            entry["stale"] = available and age > entry["stale_after_seconds"]
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


#: Less free space than this where the SQLite database lives counts as a full disk.
MIN_FREE_BYTES = 8 * 1024 * 1024
STORAGE_FULL_RECENT_SECONDS = 300


def storage_warning() -> str:
    """Why writes fail or are about to (a full disk), or "" when there is room."""
    import shutil
    import time

    seen = storage.last_storage_full
    if seen is not None and time.time() - seen < STORAGE_FULL_RECENT_SECONDS:
        return "a write failed because the database's disk is full"
    folder = _sqlite_folder()
    if folder is None:
        return ""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    if free < MIN_FREE_BYTES:
        return f"the database's disk has only {free // 1024} KiB free: writes will fail"
    return ""


def _sqlite_folder() -> str | None:
    """Where the SQLite database lives (None on PostgreSQL or in memory)."""
    if connection.vendor != "sqlite":
        return None
    name = str(connection.settings_dict.get("NAME") or "")
    if not name or name.startswith(":memory:") or "mode=memory" in name:
        return None
    return os.path.dirname(os.path.abspath(name))


def reconciler_entry(state: SyncState | None) -> dict[str, Any]:
    """The reconciler's mode (on / dry-run / off / paused) and when its last pass ran."""

    mode = reconciler_mode()
    counts = (state.counts or {}) if state is not None else {}
    return {
        "mode": mode.mode,
        "why": mode.why,
        "paused_at": (mode.paused or {}).get("at"),
        "last_pass": _iso(state.last_attempt_at) if state is not None else None,
        "last_pass_mode": counts.get("mode"),
        "last_pass_skipped": bool(counts.get("skipped")),
    }


#: How many stalled or often-recovered jobs a warning names (the count is always whole).
WARNING_JOBS = 5


def _named(jobs: list[str]) -> str:
    more = len(jobs) - WARNING_JOBS
    return ", ".join(jobs[:WARNING_JOBS]) + (f" and {more} more" if more > 0 else "")


def job_warnings() -> list[str]:
    """Running jobs the log sampler flagged stalled, and active jobs that recovered more than
    SKYDECK_MAX_RECOVERIES times: one query over two partial indexes."""
    limit = settings.SKYDECK_MAX_RECOVERIES
    rows = (
        Job.objects.filter(
            # each side matches a partial index's condition (jobs_stalled_idx,
            # jobs_recovered_idx), so this reads the flagged jobs only
            (Q(stalled__isnull=False) & Q(status=JobStatus.RUNNING) & ~Q(stalled=""))
            | (
                Q(recovery_count__gt=0)
                & Q(recovery_count__gt=limit)
                & Q(status__in=JobStatus.active())
            )
        )
        .order_by("job_name", "id")
        .values_list("id", "job_name", "status", "stalled", "recovery_count")
    )
    stalled, recovered = [], []
    for job_id, name, status, reason, count in rows:
        label = name or f"job {job_id}"
        if (
            status == JobStatus.RUNNING
            and reason
            and not (count > limit and reason.startswith("recovered"))
        ):
            stalled.append(f"{label} ({reason})")  # (the recoveries have their own line)
        if count > limit:
            recovered.append((-count, job_id, f"{label} (job {job_id}, {count} times)"))
    out = []
    if stalled:
        verb = "job looks" if len(stalled) == 1 else "jobs look"
        out.append(f"{len(stalled)} running {verb} stalled: {_named(stalled)}")
    if recovered:
        what = "job has" if len(recovered) == 1 else "jobs have"
        named = _named([text for *_, text in sorted(recovered)])
        out.append(f"{len(recovered)} active {what} recovered more than {limit} times: {named}")
    return out


def _load_states() -> dict[str, SyncState]:
    return {s.source: s for s in SyncState.objects.all()}


_recent: tuple[float, dict[str, Any]] | None = None
_recent_lock = threading.Lock()


def recent_health_report() -> dict[str, Any]:
    """``health_report()``, reused for SKYDECK_HEALTH_CACHE_SECONDS by this process: every page
    and deck poll shows the header's pills, and the report's seven queries cost more than an
    unchanged poll's own work. Sync states change every 30 s or so, so a report a second or two
    old shows the same pills; ``/api/health`` always asks afresh. Treat the dict as read-only."""
    global _recent
    ttl = settings.SKYDECK_HEALTH_CACHE_SECONDS
    if ttl <= 0:
        return health_report()
    now = time.monotonic()
    cached = _recent
    if cached is not None and now - cached[0] < ttl:
        return cached[1]
    with _recent_lock:  # one thread asks; the others wait for its answer
        cached = _recent
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        report = health_report()
        if report["database"] == "ok":  # an unreachable database is asked again next time
            _recent = (time.monotonic(), report)
        return report


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
        f"{source} sync: {entry['partial_errors']} items failed in the last pass"
        for source, entry in sources.items()
        if entry.get("partial_errors")
    ] + [
        f"{source} sync has not succeeded for over {entry['stale_after_seconds']} s"
        if entry["last_success"]
        else f"{source} sync has never succeeded"
        for source, entry in sources.items()
        if entry["stale"]
    ]
    if settings.SKYDECK_BACKUP_DIR:
        # scheduled backups are on: their freshness and last error, like a sync source
        entry = _source_entry(
            SyncSource.BACKUP,
            states.get(SyncSource.BACKUP),
            now,
            True,
            interval=settings.SKYDECK_BACKUP_INTERVAL,
        )
        report["backup"] = entry
        if entry["ok"] is False:
            warnings.append(f"the last scheduled backup failed: {entry['last_error']}")
        elif entry["stale"]:
            warnings.append(
                "no scheduled backup has succeeded yet"
                if not entry["last_success"]
                else f"no scheduled backup has succeeded for over {entry['stale_after_seconds']} s"
            )
    storage = storage_warning()
    if storage:
        report["status"] = "degraded"  # it answers, but writes fail: say so, keep serving reads
        warnings.append(storage)
    report["reconciler"] = reconciler_entry(states.get(SyncSource.RECONCILER))
    if report["reconciler"]["mode"] != "on":
        warnings.append(
            f"the reconciler is {report['reconciler']['mode']}: {report['reconciler']['why']}"
        )
    warnings += job_warnings()
    sampler = states.get(SyncSource.SAMPLER)
    if sampler is not None and sampler.last_error and not sampler.ok:
        warnings.append(f"the log sampler's last pass failed: {sampler.last_error}")
    try:
        report["worker"] = worker_report(now)
    except DatabaseError as exc:
        report["worker"] = {"alive": False, "error": type(exc).__name__}
    if not report["worker"]["alive"]:
        warnings.append("no background worker has finished a task recently")
    report["nodes"] = nodes.report(now)
    warnings += [
        f"node {node['node']} ({', '.join(node['roles'])}) has not been seen for "
        f"{node['seconds_since_seen']:.0f} s"
        for node in report["nodes"]
        if node["state"] == "gone"
    ]
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
            running=bool(state and is_running(state, now)),
            duration_seconds=state.duration if state else None,
            counts=dict(state.counts or {}) if state else {},
        )
        sources.append(entry)
    return {"sources": sources, "worker": worker_report(now)}
