"""A lease row per sync source, so a sync never runs twice at once.

The worker, ``manage.py sync`` and a second worker may all try to run the same source. Taking the
lease is one conditional UPDATE on the ``sync_states`` row, atomic on SQLite and PostgreSQL alike.
A lease carries an expiry, so one held by a process that was killed frees itself. The expiry is
long (the task timeout plus a minute), so a restart after a crash would otherwise skip syncs for
minutes: an owner name also records the machine (host name, boot id and PID namespace), and a lease
whose owner ran on this very machine and whose process is gone is taken over at once. Owners on
other machines (or whose process id was reused) keep their lease until it expires.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone

from experiments.models import SyncState

logger = logging.getLogger(__name__)


class LeaseHeld(Exception):
    """Another process holds the lease for this source."""

    def __init__(self, source: str, owner: str, expires_at) -> None:
        self.source, self.owner, self.expires_at = source, owner, expires_at
        until = expires_at.isoformat(timespec="seconds") if expires_at else "unknown"
        super().__init__(f"{source} sync is already running ({owner}, lease until {until})")


@cache
def machine_id() -> str:
    """A short digest of this boot of this machine and PID namespace ("" where unknown).

    Two processes with the same id see the same process table, so one can tell whether the
    other is still alive. Containers sharing a database file have different PID namespaces.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.blake2b(f"{boot}/{namespace}".encode(), digest_size=4).hexdigest()


def new_owner() -> str:
    """A name unique to this attempt that says where it runs: ``host:pid:nonce[:machine]``."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    machine = machine_id()
    return f"{owner}:{machine}" if machine else owner


def process_gone(pid: int) -> bool:
    """True when no process ``pid`` exists here, or it is a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, as another user's process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in {"Z", "X"}


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` ran on this machine (same host and machine id) and has exited."""
    parts = owner.split(":")
    machine = machine_id()
    if len(parts) != 4 or not machine or parts[3] != machine:
        return False
    if parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and process_gone(pid)


def acquire(source: str, owner: str, ttl: float) -> bool:
    """Take the lease if it is free, expired, already ours, or held by a dead local process."""
    SyncState.objects.get_or_create(source=source)
    now = timezone.now()
    expires = now + timedelta(seconds=ttl)
    taken = (
        SyncState.objects.filter(source=source)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner))
        .update(lease_owner=owner, lease_expires_at=expires, lease_node=settings.SKYDECK_NODE_ID)
    )
    if taken == 1:
        return True
    holder = SyncState.objects.filter(source=source).values_list("lease_owner", flat=True).first()
    if not holder or not owner_is_dead(holder):
        return False
    # compare-and-swap on the dead owner's name: of several contenders exactly one wins
    taken = SyncState.objects.filter(source=source, lease_owner=holder).update(
        lease_owner=owner, lease_expires_at=expires, lease_node=settings.SKYDECK_NODE_ID
    )
    if taken == 1:
        logger.warning(
            "%s sync: took over the lease of %s, a process that no longer runs", source, holder
        )
    return taken == 1


def release(source: str, owner: str) -> None:
    SyncState.objects.filter(source=source, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, lease_node=None
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


# --- the scheduler lease: one worker (django-q2 cluster) per database -------------------------

SCHEDULER_SOURCE = "scheduler"
#: Renewed every SCHEDULER_HEARTBEAT seconds by ``skydeck serve``; a holder on another machine
#: that stopped renewing is given up after SCHEDULER_TTL (one on this machine at once).
SCHEDULER_TTL = 60.0
SCHEDULER_HEARTBEAT = 10.0
#: Set by ``serve`` for the ``qcluster`` it starts: the owner name of the lease serve holds.
SUPERVISED_ENV = "SKYDECK_SCHEDULER_LEASE_OWNER"
SERVE_HINT = "stop it first, or add --no-worker to serve only the web site"


def describe_owner(owner: str) -> str:
    """``host H, pid P`` from an owner name (the name itself when it has another form)."""
    parts = owner.split(":")
    if len(parts) >= 3 and parts[1].isdigit():
        return f"host {parts[0]}, pid {parts[1]}"
    return owner or "unknown"


class SchedulerLeaseHeld(Exception):
    """Another live process runs the scheduler on this database."""


class SchedulerLease:
    """The lease a ``serve`` running the worker holds for as long as it runs (heartbeats)."""

    def __init__(self, ttl: float = SCHEDULER_TTL) -> None:
        self.ttl = ttl
        self.owner = new_owner()

    def take(self, hint: str = SERVE_HINT) -> None:
        """Take it, or raise SchedulerLeaseHeld with one line naming the holder."""
        if not acquire(SCHEDULER_SOURCE, self.owner, self.ttl):
            state = SyncState.objects.get(source=SCHEDULER_SOURCE)
            since = (state.cursor or {}).get("since", "an unknown time")
            until = state.lease_expires_at
            until = until.isoformat(timespec="seconds") if until else "unknown"
            raise SchedulerLeaseHeld(
                "another SkyDeck worker already runs on this database "
                f"({describe_owner(state.lease_owner)}, since {since}, lease renewed until "
                f"{until}); {hint}"
            )
        now = timezone.now().isoformat(timespec="seconds")
        SyncState.objects.filter(source=SCHEDULER_SOURCE, lease_owner=self.owner).update(
            cursor={"since": now, "owner": self.owner},
            last_attempt_at=timezone.now(),
            last_error="",
        )

    def renew(self) -> bool:
        """Extend it; False when another process holds it now (ours had lapsed)."""
        return acquire(SCHEDULER_SOURCE, self.owner, self.ttl)

    def holder(self) -> str:
        owner = (
            SyncState.objects.filter(source=SCHEDULER_SOURCE)
            .values_list("lease_owner", flat=True)
            .first()
        )
        return describe_owner(owner or "")

    def holder_node(self) -> str:
        """The SKYDECK_NODE_ID of the holder ("" before nodes were recorded)."""
        node = (
            SyncState.objects.filter(source=SCHEDULER_SOURCE)
            .values_list("lease_node", flat=True)
            .first()
        )
        return node or ""

    def release(self) -> None:
        release(SCHEDULER_SOURCE, self.owner)


def held_by(owner: str) -> bool:
    """Whether ``owner`` holds the scheduler lease right now (unexpired)."""
    return SyncState.objects.filter(
        source=SCHEDULER_SOURCE, lease_owner=owner, lease_expires_at__gt=timezone.now()
    ).exists()


# --- the restore marker: while ``skydeck restore`` runs it holds the whole database -----------
# backups.backup writes it; the syncs, the reconciler and the web middleware read it.

#: A restore marker written on another host cannot be checked by pid: it counts as stale after
#: this long (restoring a SkyDeck database takes seconds).
FOREIGN_MARKER_MAX_AGE = 3600


@dataclass(frozen=True)
class RestoreMarker:
    path: Path
    pid: int
    host: str
    started: str

    def describe(self) -> str:
        return f"a backup is being restored (pid {self.pid} on {self.host}, since {self.started})"


def live_sqlite_path() -> Path | None:
    """The live SQLite file, or None (PostgreSQL, or SQLite in memory)."""
    if connections["default"].vendor != "sqlite":
        return None
    name = str(connections["default"].settings_dict["NAME"])
    if not name or name == ":memory:" or "mode=memory" in name:
        return None
    return Path(name)


def marker_path(db: Path) -> Path:
    return Path(f"{db}.restoring")


_warned_stale: set[tuple[str, float]] = set()


def _warn_stale(path: Path, reason: str) -> None:
    """Log a stale marker once per marker file (the middleware looks at it on every request)."""
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError:
        return
    if key not in _warned_stale:
        _warned_stale.add(key)
        logger.warning("ignoring stale restore marker %s (%s); delete it", path, reason)


def read_marker(db: Path) -> RestoreMarker | None:
    """The running restore of ``db``, or None. Stale markers (their process is gone) are
    ignored with a warning, so a killed restore never blocks the app."""
    path = marker_path(db)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _warn_stale(path, f"unreadable: {exc.strerror or exc}")
        return None
    try:
        data = json.loads(raw)
        marker = RestoreMarker(path, int(data["pid"]), str(data["host"]), str(data["started"]))
    except (ValueError, KeyError, TypeError):
        _warn_stale(path, "not a restore marker")
        return None
    if marker.host == socket.gethostname():
        if process_gone(marker.pid):
            _warn_stale(path, f"process {marker.pid} is not running")
            return None
    else:
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return None
        if age > FOREIGN_MARKER_MAX_AGE:
            _warn_stale(path, f"written on {marker.host} {age:.0f}s ago")
            return None
    return marker


def restore_in_progress() -> RestoreMarker | None:
    """The restore running on the live database, if any (never on PostgreSQL)."""
    db = live_sqlite_path()
    return read_marker(db) if db is not None else None
