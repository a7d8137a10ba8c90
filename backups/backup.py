"""Backups of the SQLite database: consistent snapshots, checked restores, scheduled snapshots.

Why the SQLite backup API everywhere: copying ``skydeck.db`` with ``cp`` while the web server and
the worker write to it (WAL mode) can miss pages still in ``skydeck.db-wal`` or catch a page
half-written. ``sqlite3.Connection.backup`` copies a consistent state under a read transaction
while writers carry on.

* :func:`snapshot` writes into a temporary file next to the destination, checks it with
  ``PRAGMA integrity_check``, fsyncs it and renames it into place, so a failed backup (disk full)
  never leaves a truncated file behind and never replaces a good older file.
* :func:`restore` never swaps the live file: open connections would keep writing to the old inode
  and a leftover ``-wal`` would be replayed into the new file. It keeps a snapshot of the live
  database (``<db>.pre-restore-<UTC time>``), then copies the checked snapshot *into* the live
  database with the backup API, which other connections see as one transaction. A marker file
  (``<db>.restoring``) makes the web app answer 503 and the syncs skip while it runs.
* PostgreSQL has its own tools (``pg_dump`` / ``pg_restore``); everything here refuses it.

Management commands, the admin page and the django-q2 task are thin wrappers over this module.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.db import connections
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from experiments import control, deckchanges, services
from experiments.models import Operation, SyncSource, SyncState
from skydeck_site.filemodes import private_database
from syncing import leases
from syncing.leases import (  # the marker lives with the leases: syncs read it, restores hold it
    FOREIGN_MARKER_MAX_AGE as FOREIGN_MARKER_MAX_AGE,
)
from syncing.leases import (
    RestoreMarker,
    marker_path,
    read_marker,
)
from syncing.leases import restore_in_progress as restore_in_progress
from syncing.schedules import ensure_schedules

logger = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
#: Scheduled and downloaded snapshots: ``skydeck-YYYYmmdd-HHMMSS.db`` (UTC). Only files with
#: exactly this name are ever pruned.
SNAPSHOT_PATTERN = re.compile(r"^skydeck-\d{8}-\d{6}\.db$")
SNAPSHOT_TIME_FORMAT = "%Y%m%d-%H%M%S"
#: The actor of scheduled backups in the operation log.
ACTOR = "backup"
RESTORE_ACTOR = "restore"
#: How long a snapshot or restore waits for a lock held by another connection.
LOCK_WAIT_SECONDS = 60.0

POSTGRES_MESSAGE = (
    "SkyDeck uses PostgreSQL here (DATABASE_URL): back it up with pg_dump "
    "(e.g. `pg_dump -Fc -f skydeck.dump DBNAME`) and restore with pg_restore; "
    "SkyDeck's backup and restore handle only its SQLite database"
)


class BackupError(Exception):
    """A backup or restore that could not be done; the message says why and is safe to show."""


class UnsupportedDatabase(BackupError):
    """The database is not an SQLite file (PostgreSQL, or SQLite in memory)."""


class DiskFull(BackupError):
    """The destination ran out of space; nothing that was already stored was touched."""


class InvalidSnapshot(BackupError):
    """The file is not a restorable SkyDeck database (missing, not SQLite, corrupt, too new)."""


class RestoreInProgress(BackupError):
    """Another live process is restoring into this database."""


@dataclass(frozen=True)
class SnapshotResult:
    path: Path
    size: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.path} ({filesizeformat(self.size)}, integrity ok, "
            f"{describe_counts(self.counts)}) in {self.seconds:.1f}s"
        )


@dataclass(frozen=True)
class SnapshotInfo:
    """What :func:`check_snapshot` found in a file that can be restored."""

    path: Path
    size: int
    page_size: int
    applied: frozenset[tuple[str, str]]
    #: Migrations this code has that the file lacks: ``migrate`` runs after restoring it.
    missing: frozenset[tuple[str, str]]
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AccessChanges:
    """Logins a restore brings back: what was revoked after the snapshot was taken.

    ``users``: accounts deleted or deactivated since, active again in the snapshot;
    ``passwords``: accounts whose password changed since (the old one works again);
    ``tokens``: the owners of API tokens revoked since (never the keys themselves).
    """

    users: tuple[str, ...] = ()
    passwords: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.users or self.passwords or self.tokens)

    def lines(self) -> list[str]:
        out = []
        if self.users:
            out.append(
                f"re-enables {len(self.users)} account(s) deleted or deactivated since: {', '.join(self.users)}"
            )
        if self.passwords:
            out.append(f"brings back the old password of: {', '.join(self.passwords)}")
        if self.tokens:
            out.append(
                f"brings back {len(self.tokens)} API token(s) revoked since, of: "
                f"{', '.join(sorted(set(self.tokens)))}"
            )
        return out


@dataclass(frozen=True)
class RestoreResult:
    info: SnapshotInfo
    database: Path
    #: The live database as it was before the restore; None when there was none.
    kept: Path | None
    migrated: list[str]
    seconds: float
    access: AccessChanges = field(default_factory=AccessChanges)
    kept_revocations: bool = False


# --- where the database is ------------------------------------------------------------------


def supported() -> bool:
    """Whether the configured database is SQLite (PostgreSQL uses pg_dump / pg_restore)."""
    return connections["default"].vendor == "sqlite"


def live_db_path() -> Path:
    """The live SQLite file; raises UnsupportedDatabase for PostgreSQL or an in-memory SQLite."""
    if not supported():
        raise UnsupportedDatabase(POSTGRES_MESSAGE)
    path = leases.live_sqlite_path()
    if path is None:
        raise UnsupportedDatabase("the database lives in memory: there is no file to back up")
    return path


def snapshot_name(now: datetime | None = None) -> str:
    """``skydeck-YYYYmmdd-HHMMSS.db`` in UTC: names sort by age."""
    return f"skydeck-{(now or datetime.now(UTC)).strftime(SNAPSHOT_TIME_FORMAT)}.db"


# --- small SQLite helpers -------------------------------------------------------------------

COUNTED_TABLES = ("experiments", "experiment_groups", "jobs", "checkpoints", "operation_logs")


def describe_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in counts.items()) or "no SkyDeck tables"


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    tables = _tables(conn)
    return {
        table: conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]  # noqa: S608
        for table in COUNTED_TABLES
        if table in tables
    }


def _integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA integrity_check`` findings; empty when the file is sound."""
    rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
    return [] if rows == ["ok"] else rows


def _connect(path: Path) -> sqlite3.Connection:
    """A plain connection that waits for locks like the app does (busy_timeout)."""
    return sqlite3.connect(
        str(path), timeout=settings.SQLITE_BUSY_TIMEOUT_MS / 1000, isolation_level=None
    )


@contextmanager
def _open_readonly(path: Path) -> Iterator[sqlite3.Connection]:
    """Open ``path`` read-only; removes the ``-wal``/``-shm`` files SQLite creates to read a
    WAL-mode file, so checking a snapshot leaves nothing behind."""
    sidecars = [Path(f"{path}-wal"), Path(f"{path}-shm")]
    existed = {p for p in sidecars if p.exists()}
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()
        for sidecar in sidecars:
            if sidecar not in existed:
                sidecar.unlink(missing_ok=True)


def _logins(conn: sqlite3.Connection) -> tuple[dict[str, tuple[bool, str]], dict[str, str]]:
    """({username: (active, password hash)}, {token key: username}) of a database file."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    users: dict[str, tuple[bool, str]] = {}
    tokens: dict[str, str] = {}
    if "auth_user" in tables:
        for name, active, password in conn.execute(
            "SELECT username, is_active, password FROM auth_user"
        ):
            users[name] = (bool(active), password)
    if "authtoken_token" in tables and "auth_user" in tables:
        for key, name in conn.execute(
            "SELECT t.key, u.username FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id"
        ):
            tokens[key] = name
    return users, tokens


def access_changes(live: Path, snapshot: Path) -> AccessChanges:
    """What restoring ``snapshot`` over ``live`` would give back that was revoked since."""
    if not live.exists() or not live.stat().st_size:
        return AccessChanges()
    try:
        with _open_readonly(live) as conn:
            now_users, now_tokens = _logins(conn)
        with _open_readonly(snapshot) as conn:
            old_users, old_tokens = _logins(conn)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot compare the logins of {live} and {snapshot}: {exc}") from exc
    users = sorted(
        name
        for name, (active, _) in old_users.items()
        if active and (name not in now_users or not now_users[name][0])
    )
    passwords = sorted(
        name
        for name, (_, password) in old_users.items()
        if name in now_users and now_users[name][1] != password and name not in users
    )
    tokens = sorted(name for key, name in old_tokens.items() if key not in now_tokens)
    return AccessChanges(tuple(users), tuple(passwords), tuple(tokens))


def _keep_revocations(
    live: Path, access: AccessChanges, before: tuple[dict[str, tuple[bool, str]], dict[str, str]]
) -> None:
    """After a restore: deactivate the accounts it re-enabled, put back the passwords changed
    since, and delete the tokens it brought back (keys the live database no longer had)."""
    users_before, tokens_before = before
    with closing(_connect(live)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        for name in access.users:
            conn.execute("UPDATE auth_user SET is_active = 0 WHERE username = ?", (name,))
        for name in access.passwords:
            conn.execute(
                "UPDATE auth_user SET password = ? WHERE username = ?",
                (users_before[name][1], name),
            )
        _, tokens = _logins(conn)
        for key in tokens:
            if key not in tokens_before:
                conn.execute("DELETE FROM authtoken_token WHERE key = ?", (key,))
        conn.execute("COMMIT")


def _backup(source: sqlite3.Connection, target: sqlite3.Connection, what: str) -> None:
    """``source.backup(target)`` in one step, giving up after LOCK_WAIT_SECONDS of locks.

    Python's backup loop retries SQLITE_BUSY forever; the progress callback bounds that.
    """
    deadline = time.monotonic() + LOCK_WAIT_SECONDS

    def progress(status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise BackupError(
                f"{what}: the database stayed locked by another connection for "
                f"{LOCK_WAIT_SECONDS:.0f}s; nothing was changed, try again"
            )

    source.backup(target, pages=-1, progress=progress)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# --- snapshot -------------------------------------------------------------------------------


def snapshot(dest: Path | str, *, source: Path | None = None) -> SnapshotResult:
    """Write a consistent, checked copy of ``source`` (the live database) to ``dest``.

    ``dest`` may be an existing directory: the file is then ``skydeck-YYYYmmdd-HHMMSS.db`` in it.
    The copy goes to a temporary file in the same directory and is renamed into place only once
    it passed ``PRAGMA integrity_check``, so ``dest`` is either the complete new snapshot or left
    as it was. Raises DiskFull when the destination is full, BackupError for anything else.
    """
    source = live_db_path() if source is None else Path(source)
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / snapshot_name()
    directory = dest.parent
    if not directory.is_dir():
        raise BackupError(f"the destination directory {directory} does not exist")
    if not source.is_file():
        raise BackupError(f"there is no database at {source}: run `skydeck migrate` first")
    if _same_file(source, dest):
        raise BackupError(f"{dest} is the live database itself: choose another path")
    started = time.monotonic()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise _write_error(exc, dest) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with closing(_connect(source)) as src, closing(sqlite3.connect(tmp)) as dst:
            _backup(src, dst, f"backup of {source}")
            # a self-contained single file: no -wal needed to read it
            dst.execute("PRAGMA journal_mode=DELETE")
            problems = _integrity_problems(dst)
            counts = _counts(dst)
        if problems:
            raise BackupError(
                f"the snapshot of {source} failed PRAGMA integrity_check "
                f"({'; '.join(problems[:3])}): the live database may be damaged; "
                f"{dest} was not written"
            )
        _fsync(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, dest)
        _fsync_dir(directory)
    except BackupError:
        raise
    except (OSError, sqlite3.Error) as exc:
        raise _write_error(exc, dest) from exc
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            leftover.unlink(missing_ok=True)
    return SnapshotResult(dest, size, time.monotonic() - started, counts)


def _write_error(exc: BaseException, dest: Path) -> BackupError:
    if _is_disk_full(exc):
        return DiskFull(
            f"disk full: not enough space in {dest.parent} for the snapshot; "
            f"{dest} was not written and no existing file was changed"
        )
    reason = str(exc).strip() or type(exc).__name__
    return BackupError(f"could not write the snapshot to {dest}: {reason}")


def open_snapshot() -> tuple[BinaryIO, str]:
    """A fresh snapshot as an open file plus its download name (``skydeck-...db``).

    Written in the temp directory and unlinked as soon as it is open (the handle keeps the
    data), so nothing is left on disk even if the download is interrupted. The caller closes
    the handle.
    """
    name = snapshot_name()
    with tempfile.TemporaryDirectory(prefix="skydeck-download-") as directory:
        path = Path(directory) / name
        snapshot(path)
        handle = path.open("rb")
        path.unlink()
    return handle, name


def download_snapshot(actor: Any) -> tuple[BinaryIO, str]:
    """:func:`open_snapshot` for a person taking a copy away: who took a copy of every password
    hash and token is noted in the operation log (and the server log)."""

    handle, name = open_snapshot()
    logger.info("%s downloaded the database snapshot %s", services.actor_name(actor), name)
    services.record(actor, Operation.BACKUP, message=f"downloaded the snapshot {name}")
    return handle, name


# --- checking a file before restoring it ---------------------------------------------------


def _known_migrations() -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(every migration on disk, the graph this code migrates to)."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    return set(loader.disk_migrations), set(loader.graph.nodes)


def check_snapshot(path: Path | str) -> SnapshotInfo:
    """Check that ``path`` is a sound SkyDeck database this version can restore.

    Raises InvalidSnapshot when the file is missing, not SQLite, corrupt (``PRAGMA
    integrity_check``), not a SkyDeck database, or has migrations this code does not know (it
    comes from a newer SkyDeck). Older files pass: ``missing`` lists what ``migrate`` adds.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InvalidSnapshot(f"{path} does not exist")
    if not path.is_file():
        raise InvalidSnapshot(f"{path} is not a file")
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise InvalidSnapshot(f"cannot read {path}: {exc.strerror or exc}") from exc
    if header != SQLITE_HEADER:
        raise InvalidSnapshot(f"{path} is not an SQLite database")
    try:
        with _open_readonly(path) as conn:
            problems = _integrity_problems(conn)
            if problems:
                raise InvalidSnapshot(
                    f"{path} is corrupt (PRAGMA integrity_check: {'; '.join(problems[:3])})"
                )
            tables = _tables(conn)
            if not {"django_migrations", "experiments"} <= tables:
                raise InvalidSnapshot(
                    f"{path} is not a SkyDeck database (it has no experiments table)"
                )
            applied = {
                (str(a), str(n)) for a, n in conn.execute("SELECT app, name FROM django_migrations")
            }
            counts = _counts(conn)
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise InvalidSnapshot(f"{path} is corrupt or unreadable: {exc}") from exc
    if ("experiments", "0001_initial") not in applied:
        raise InvalidSnapshot(
            f"{path} is not a SkyDeck database (its migrations are not SkyDeck's)"
        )
    on_disk, graph = _known_migrations()
    unknown = sorted(applied - on_disk)
    if unknown:
        names = ", ".join(f"{app}.{name}" for app, name in unknown[:5])
        raise InvalidSnapshot(
            f"{path} comes from a newer SkyDeck: it has migrations this version does not know "
            f"({names}{', ...' if len(unknown) > 5 else ''}); upgrade SkyDeck, then restore it"
        )
    return SnapshotInfo(
        path=path,
        size=path.stat().st_size,
        page_size=page_size,
        applied=frozenset(applied),
        missing=frozenset(graph - applied),
        counts=counts,
    )


# --- the restore marker ----------------------------------------------------------------------


@contextmanager
def restoring(db: Path) -> Iterator[RestoreMarker]:
    """Hold the restore marker of ``db`` for the body; removed in ``finally``.

    Raises RestoreInProgress when a live process holds it; a stale marker is replaced.
    """
    path = marker_path(db)
    running = read_marker(db)
    if running is not None:
        raise RestoreInProgress(f"{running.describe()}; wait for it to finish")
    marker = RestoreMarker(
        path, os.getpid(), socket.gethostname(), datetime.now(UTC).isoformat(timespec="seconds")
    )
    payload = json.dumps({"pid": marker.pid, "host": marker.host, "started": marker.started})
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    try:
        tmp.write_text(payload + "\n")
        if path.exists():  # stale (read_marker said so): take it over
            path.unlink(missing_ok=True)
        os.link(tmp, path)  # atomic: fails if another restore created it meanwhile
    except FileExistsError:
        raise RestoreInProgress(f"another restore of {db} has just started") from None
    except OSError as exc:
        raise BackupError(f"cannot write the restore marker {path}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield marker
    finally:
        path.unlink(missing_ok=True)


# --- restore --------------------------------------------------------------------------------


def restore(path: Path | str, *, keep_revocations: bool = False) -> RestoreResult:
    """Replace the live database's contents with the snapshot at ``path``.

    Checks the file first (:func:`check_snapshot`), keeps the live database as
    ``<db>.pre-restore-<UTC time>``, copies the snapshot into the live database in one
    transaction (safe with the web server and worker connected), then migrates an older snapshot
    and brings the schedules back in line with the settings. The live database is unchanged
    whenever this raises before the copy. The result says which logins revoked since the
    snapshot come back (``access``); ``keep_revocations`` revokes them again at once.
    """
    live = live_db_path()
    source = Path(path).expanduser()
    if _same_file(source, live):
        raise InvalidSnapshot(f"{source} is the live database itself")
    info = check_snapshot(source)
    _check_page_size(live, info)
    started = time.monotonic()
    access = access_changes(live, source)
    before: tuple[dict[str, tuple[bool, str]], dict[str, str]] = ({}, {})
    if keep_revocations and access:
        with _open_readonly(live) as conn:
            before = _logins(conn)
    with restoring(live):
        kept: Path | None = None
        if live.exists():
            stamp = datetime.now(UTC).strftime(SNAPSHOT_TIME_FORMAT)
            kept = live.with_name(f"{live.name}.pre-restore-{stamp}")
            try:
                snapshot(kept, source=live)
            except BackupError as exc:
                raise type(exc)(
                    f"could not keep the current database, nothing restored: {exc}"
                ) from exc
        try:
            private_database(live)  # a database restored into a new file is 0600 too
            with _open_readonly(source) as src, closing(_connect(live)) as dst:
                _backup(src, dst, f"restore into {live}")
                dst.execute("PRAGMA journal_mode=WAL")
                problems = _integrity_problems(dst)
        except BackupError:
            raise
        except (OSError, sqlite3.Error) as exc:
            where = f"; the previous database is kept at {kept}" if kept else ""
            raise BackupError(f"restoring into {live} failed: {exc}{where}") from exc
        if problems:
            raise BackupError(
                f"the restored database failed PRAGMA integrity_check ({'; '.join(problems[:3])}); "
                f"the previous database is kept at {kept}: restore it with `skydeck restore {kept}`"
            )
        if keep_revocations and access:
            _keep_revocations(live, access, before)
        migrated = _after_restore(info)
        _record_restore(info, kept, migrated, access, keep_revocations)
        _pause_reconciler(info)
    return RestoreResult(
        info, live, kept, migrated, time.monotonic() - started, access, keep_revocations
    )


def _record_restore(
    info: SnapshotInfo,
    kept: Path | None,
    migrated: list[str],
    access: AccessChanges | None = None,
    kept_revocations: bool = False,
) -> None:
    """Note the restore in the restored database's own operation log: whoever looks at it next
    sees that its history was replaced, from which file, and where the old one went."""

    message = f"restored {info.path} ({describe_counts(info.counts)})"
    if kept is not None:
        message += f"; the previous database is kept at {kept}"
    if migrated:
        message += f"; applied {len(migrated)} newer migrations"
    if access:
        verb = "kept revoked (--keep-revocations)" if kept_revocations else "came back"
        message += f"; logins {verb}: " + "; ".join(access.lines())
    services.record(RESTORE_ACTOR, Operation.RESTORE, message=message)


def _pause_reconciler(info: SnapshotInfo) -> None:
    """An old snapshot's desired states must never launch or cancel anything by themselves:
    the reconciler waits until a person has looked and resumes it (button or
    ``skydeck reconcile --resume``). Done before the restore marker goes, so no pass acts
    in between."""

    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    control.pause_reconciler(RESTORE_ACTOR, f"the restore of {info.path.name} at {stamp}")


def _check_page_size(live: Path, info: SnapshotInfo) -> None:
    """The backup API cannot copy into a WAL database with another page size: refuse early."""
    if not live.exists() or not live.stat().st_size:
        return
    try:
        with closing(_connect(live)) as conn:
            live_page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read the live database {live}: {exc}") from exc
    if live_page_size != info.page_size:
        raise InvalidSnapshot(
            f"{info.path} uses {info.page_size}-byte pages and the live database "
            f"{live_page_size}-byte pages: SQLite cannot copy between them in WAL mode; "
            "restore into a new --db-path instead"
        )


def _after_restore(info: SnapshotInfo) -> list[str]:
    """Migrate an older snapshot; in any case make the schedules follow this install's settings."""
    from django.core.management import call_command

    connections["default"].close()  # forget anything cached about the replaced database
    migrated: list[str] = []
    if info.missing:
        call_command("migrate", interactive=False, verbosity=0)  # ensures the schedules too
        migrated = sorted(f"{app}.{name}" for app, name in info.missing)
    else:
        ensure_schedules()
    deckchanges.reset()  # open decks re-render: their versions belong to the replaced history
    return migrated


# --- scheduled snapshots and retention ---------------------------------------------------


def list_snapshots(directory: Path | str) -> list[Path]:
    """Scheduled snapshots in ``directory``, oldest first (the timestamp in the name orders
    them); files with any other name are not ours and are never listed."""
    return sorted(
        p for p in Path(directory).iterdir() if SNAPSHOT_PATTERN.match(p.name) and p.is_file()
    )


def prune(directory: Path | str, keep: int) -> list[Path]:
    """Delete the oldest ``skydeck-YYYYmmdd-HHMMSS.db`` files in ``directory`` beyond ``keep``.

    Only files with exactly that name are considered (other files are never touched); the
    timestamp in the name orders them. Returns the deleted paths.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1: pruning never deletes every snapshot")
    snapshots = list_snapshots(directory)
    doomed = snapshots[:-keep]
    for path in doomed:
        path.unlink()
    return doomed


def scheduled_backup() -> str:
    """One scheduled snapshot into SKYDECK_BACKUP_DIR, then keep the newest SKYDECK_BACKUP_KEEP.

    Never raises for a failed backup: the failure goes to the operation log and the error log
    (the live database is only read). Returns the line the task result shows.
    """

    directory = settings.SKYDECK_BACKUP_DIR
    if not directory:
        return "backup: off (SKYDECK_BACKUP_DIR is empty)"
    running = restore_in_progress()
    if running is not None:
        return f"backup: skipped: {running.describe()}"
    directory = Path(directory)
    started = timezone.now()
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = snapshot(directory / snapshot_name())
        removed = prune(directory, settings.SKYDECK_BACKUP_KEEP)
    except (BackupError, OSError) as exc:
        message = (
            str(exc) if isinstance(exc, BackupError) else f"{directory}: {exc.strerror or exc}"
        )
        logger.error("scheduled backup failed: %s", message)
        _record_attempt(started, error=message)
        services.record(ACTOR, Operation.BACKUP, success=False, message=f"backup failed: {message}")
        return f"backup: FAILED: {message}"
    line = f"backup: wrote {result.summary()}"
    if removed:
        line += f"; removed {len(removed)} older: {', '.join(p.name for p in removed)}"
    _record_attempt(started, counts={"size": result.size, "kept": settings.SKYDECK_BACKUP_KEEP})
    services.record(ACTOR, Operation.BACKUP, message=line)
    return line


def _record_attempt(started: datetime, *, error: str = "", counts: dict | None = None) -> None:
    """The outcome of a scheduled backup on its ``sync_states`` row: the header's Backup pill.

    Written once, when the attempt is over, so a backup in progress never looks failed.
    """

    now = timezone.now()
    fields: dict = {"last_attempt_at": started, "duration": (now - started).total_seconds()}
    if error:
        fields.update(last_error=error[:2000], last_error_at=now)
    else:
        fields.update(last_success_at=now, counts=counts or {})
    SyncState.objects.update_or_create(source=SyncSource.BACKUP, defaults=fields)
