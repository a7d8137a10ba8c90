"""django-q2 task entry points: thin wrappers over the syncers and the reconciler.

The schedules name these by dotted path (``syncing.schedules``). Paths stored by earlier
versions keep working through the aliases at the end; ``ensure_schedules`` rewrites the rows.
"""

from __future__ import annotations

from experiments.models import SyncSource
from syncing.runner import run_sync


def sync_jobs_and_reconcile() -> str:
    """Sync jobs, then reconcile on the freshest listing (or only plan, as the mode says)."""
    from syncing.reconciler import sync_and_reconcile

    summary, result = sync_and_reconcile()
    if result is None:
        return summary
    return "\n".join(line for line in [summary, result.header(), *result.lines()] if line)


def sync_s3() -> str:
    return run_sync(SyncSource.S3).summary()


def sample_logs() -> str:
    """One log-sampler pass (``syncing.sampler``): failure logs, progress, stalled runs."""
    from syncing.sampler import run_pass

    return run_pass().summary()


def notify() -> str:
    """The notification checks (``syncing.notifications.check``): events in, retries queued."""
    from syncing.notifications import check

    return check()


# --- aliases for task paths stored in schedule rows and queued tasks before they moved --------

sync_skypilot = sync_jobs_and_reconcile


def backup_database() -> str:
    """Moved to ``backups.tasks.backup_database``."""
    from backups.tasks import backup_database as moved

    return moved()
