"""The django-q2 task of scheduled snapshots (``skydeck: back up the database``)."""

from __future__ import annotations

from backups.backup import scheduled_backup


def backup_database() -> str:
    """A scheduled snapshot into SKYDECK_BACKUP_DIR with retention; failures are logged."""
    return scheduled_backup()
