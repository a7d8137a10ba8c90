"""django-q2 task entry points: thin wrappers over the syncers and the reconciler."""

from __future__ import annotations

from experiments.models import SyncSource
from syncing.runner import run_sync


def sync_skypilot() -> str:
    """Sync jobs, then reconcile on the freshest listing (or only plan, as the mode says)."""
    from syncing.reconciler import sync_and_reconcile

    summary, result = sync_and_reconcile()
    if result is None:
        return summary
    return "\n".join(line for line in [summary, result.header(), *result.lines()] if line)


def sync_s3() -> str:
    return run_sync(SyncSource.S3).summary()


def backup_database() -> str:
    """A scheduled snapshot into SKYDECK_BACKUP_DIR with retention; failures are logged."""
    from experiments.backup import scheduled_backup

    return scheduled_backup()
