"""django-q2 task entry points: thin wrappers over :func:`syncing.runner.run_sync`."""

from __future__ import annotations

from experiments.models import SyncSource
from syncing.runner import run_sync


def sync_skypilot() -> str:
    return run_sync(SyncSource.SKYPILOT).summary()


def sync_s3() -> str:
    return run_sync(SyncSource.S3).summary()
