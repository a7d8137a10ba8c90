"""A lease row per sync source, so a sync never runs twice at once.

The worker, ``manage.py sync`` and a second worker may all try to run the same source. Taking the
lease is one conditional UPDATE on the ``sync_states`` row, atomic on SQLite and PostgreSQL alike.
A lease carries an expiry, so one held by a process that was killed frees itself.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from experiments.models import SyncState


class LeaseHeld(Exception):
    """Another process holds the lease for this source."""

    def __init__(self, source: str, owner: str, expires_at) -> None:
        self.source, self.owner, self.expires_at = source, owner, expires_at
        until = expires_at.isoformat(timespec="seconds") if expires_at else "unknown"
        super().__init__(f"{source} sync is already running ({owner}, lease until {until})")


def new_owner() -> str:
    """A name unique to this attempt that also says where it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(source: str, owner: str, ttl: float) -> bool:
    """Take the lease if it is free, expired, or already ours."""
    SyncState.objects.get_or_create(source=source)
    now = timezone.now()
    taken = (
        SyncState.objects.filter(source=source)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner))
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=ttl))
    )
    return taken == 1


def release(source: str, owner: str) -> None:
    SyncState.objects.filter(source=source, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None
    )


@contextmanager
def lease(source: str, ttl: float, owner: str | None = None) -> Iterator[str]:
    """Hold the lease for the body; raises LeaseHeld when another process has it."""
    owner = owner or new_owner()
    if not acquire(source, owner, ttl):
        state = SyncState.objects.get(source=source)
        raise LeaseHeld(source, state.lease_owner, state.lease_expires_at)
    try:
        yield owner
    finally:
        release(source, owner)
