"""A lease row per sync source, so a sync never runs twice at once.

The worker, ``manage.py sync`` and the workers of other nodes may all try to run the same
source. Taking the lease is one conditional UPDATE on the ``sync_states`` row, atomic on SQLite
and PostgreSQL alike. A lease carries an expiry, so one held by a process that was killed frees
itself. The expiry is long (the task timeout plus a minute), so a restart after a crash would
otherwise skip syncs for minutes: an owner name also records the machine (host name, boot id and
PID namespace), and a lease whose owner ran on this very machine and whose process is gone is
taken over at once. Owners on other machines (or whose process id was reused) keep their lease
until it expires.

On PostgreSQL, where the workers of several machines share one database, a pass also holds a
session-level advisory lock for its source on the connection that runs it. PostgreSQL frees it
the moment that session ends, whichever machine the process that held it ran on, so a node
killed mid-pass is taken over by the next pass elsewhere at once, not after the expiry. The row
stays the record health shows (owner, node, expiry); its owner name says the lock was taken
(``:pg`` at the end), so a row written without one (``acquire`` alone, an older SkyDeck) is only
ever taken when it expires. Session locks need a session per client: behind a pooler, use
session pooling (pgbouncer's transaction mode would hand the lock to whichever client runs next).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connection, connections
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


#: The last field of the owner name of a pass that holds its source's advisory lock.
SESSION_MARK = "pg"


def new_owner(*, session_lock: bool = False) -> str:
    """A name unique to this attempt that says where it runs: ``host:pid:nonce[:machine]``,
    and ``host:pid:nonce:machine:pg`` for one that holds the advisory lock (PostgreSQL)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    machine = machine_id()
    if session_lock:
        return f"{owner}:{machine}:{SESSION_MARK}"
    return f"{owner}:{machine}" if machine else owner


def holds_session_lock(owner: str) -> bool:
    """Whether ``owner`` took the row together with the source's advisory lock."""
    parts = owner.split(":")
    return len(parts) == 5 and parts[4] == SESSION_MARK


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
    if holds_session_lock(owner):
        parts = parts[:4]
    machine = machine_id()
    if len(parts) != 4 or not machine or parts[3] != machine:
        return False
    if parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    return pid != os.getpid() and process_gone(pid)


def _claim(source: str, owner: str, ttl: float) -> bool:
    """The compare-and-swap: take the row if it is free, expired or already ours."""
    now = timezone.now()
    return (
        SyncState.objects.filter(source=source)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner))
        .update(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=ttl),
            lease_node=settings.SKYDECK_NODE_ID,
        )
        == 1
    )


def _take_from(source: str, holder: str, owner: str, ttl: float) -> bool:
    """Compare-and-swap on the holder's name: of several contenders exactly one wins."""
    return (
        SyncState.objects.filter(source=source, lease_owner=holder).update(
            lease_owner=owner,
            lease_expires_at=timezone.now() + timedelta(seconds=ttl),
            lease_node=settings.SKYDECK_NODE_ID,
        )
        == 1
    )


def _holder(source: str) -> str:
    return SyncState.objects.filter(source=source).values_list("lease_owner", flat=True).first()


def acquire(source: str, owner: str, ttl: float) -> bool:
    """Take the lease if it is free, expired, already ours, or held by a dead local process."""
    SyncState.objects.get_or_create(source=source)
    if _claim(source, owner, ttl):
        return True
    holder = _holder(source)
    if not holder or not owner_is_dead(holder):
        return False
    taken = _take_from(source, holder, owner, ttl)
    if taken:
        logger.warning(
            "%s sync: took over the lease of %s, a process that no longer runs", source, holder
        )
    return taken


def release(source: str, owner: str) -> None:
    SyncState.objects.filter(source=source, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, lease_node=None
    )


@contextmanager
def lease(source: str, ttl: float, owner: str | None = None) -> Iterator[str]:
    """Hold the lease for the body; raises LeaseHeld when another process has it.

    On PostgreSQL the body also holds the source's advisory lock (the module docstring says why).
    """
    if connection.vendor == "postgresql":
        with _session_lease(source, ttl, owner) as held:
            yield held
        return
    owner = owner or new_owner()
    if not acquire(source, owner, ttl):
        raise _held(source)
    try:
        yield owner
    finally:
        release(source, owner)


def _held(source: str) -> LeaseHeld:
    state = SyncState.objects.filter(source=source).first()
    if state is None or not state.lease_owner:  # the lock's holder has not written the row yet
        return LeaseHeld(source, "another database session", None)
    return LeaseHeld(source, state.lease_owner, state.lease_expires_at)


def advisory_key(source: str) -> int:
    """The source's advisory lock: a stable signed 64-bit number (PostgreSQL's bigint key)."""
    digest = hashlib.blake2b(f"skydeck:{source}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: Advisory keys this thread's connection holds. PostgreSQL's locks are re-entrant within a
#: session, so a second lease of the same source in this thread must be refused here.
_locked = threading.local()


def _keys_held() -> set[int]:
    if not hasattr(_locked, "keys"):
        _locked.keys = set()
    return _locked.keys


@contextmanager
def _session_lease(source: str, ttl: float, owner: str | None) -> Iterator[str]:
    owner = owner or new_owner(session_lock=True)
    key = advisory_key(source)
    keys = _keys_held()
    if key in keys:
        raise _held(source)
    SyncState.objects.get_or_create(source=source)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        if not cursor.fetchone()[0]:  # a live session (this machine or another) runs it
            raise _held(source)
    keys.add(key)
    try:
        if not _take_row(source, owner, ttl):
            raise _held(source)
        try:
            yield owner
        finally:
            try:
                release(source, owner)
            except DatabaseError as exc:
                logger.warning("%s sync: could not release its lease row: %s", source, exc)
                _end_session(source)
    finally:
        keys.discard(key)
        _unlock(source, key)


def _take_row(source: str, owner: str, ttl: float) -> bool:
    """With the advisory lock held: take the row, also from a holder whose session ended."""
    if _claim(source, owner, ttl):
        return True
    holder = _holder(source)
    if holder and holds_session_lock(holder):
        # it held the lock we hold now, so its session is gone (killed, on whatever machine)
        taken = _take_from(source, holder, owner, ttl)
        if taken:
            logger.warning(
                "%s sync: took over the lease of %s, whose database session ended", source, holder
            )
        return taken
    # taken without the lock (``acquire``, an older SkyDeck): the row's own rules
    return acquire(source, owner, ttl)


def _unlock(source: str, key: int) -> None:
    """Give the advisory lock back; a failure is logged, never raised over the body's outcome."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            unlocked = cursor.fetchone()[0]
    except DatabaseError as exc:
        logger.warning(
            "%s sync: could not release its advisory lock (%s); the connection is closed so "
            "that PostgreSQL frees it",
            source,
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
        )
        _end_session(source)
        return
    if not unlocked:
        logger.warning(
            "%s sync: its advisory lock was gone before the pass ended: the database session "
            "was lost during the pass",
            source,
        )


def _end_session(source: str) -> None:
    """Close this thread's connection: its session, and every lock it holds, ends."""
    try:
        connection.close()
    except DatabaseError as exc:
        logger.warning("%s sync: could not close the database connection: %s", source, exc)


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
