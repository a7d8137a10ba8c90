"""Backups: snapshots while writers run, checked restores, the 503 while restoring, the admin
download, scheduled snapshots with retention, and a full disk.

Snapshots and restores need real SQLite files in WAL mode, so those tests build them in tmp_path
and drive ``manage.py --db-path`` in subprocesses, as a user would; the rest patch
``backup.live_db_path`` to such a file. Every test here also passes when the suite runs on
PostgreSQL (DATABASE_URL): none assumes the test database is SQLite.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_q.models import Schedule
from processes import MANAGE, run_python, shell_last_line

from backups import backup
from experiments import dashboard
from experiments.models import Operation, OperationLog, SyncState
from syncing import health, leases, schedules, tasks
from syncing.runner import run_sync

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_FILENAME = re.compile(r'filename="(skydeck-\d{8}-\d{6}\.db)"')

# Runs in `manage.py shell`: create experiments until $STOP_FILE exists, print how many.
WRITER = """
import os, pathlib, time
from experiments import services
stop = pathlib.Path(os.environ["STOP_FILE"])
prefix = os.environ["WRITER_PREFIX"]
n = 0
while not stop.exists():
    services.create_experiment("writer", name=f"{prefix}-{n}")
    n += 1
    time.sleep(0.005)
print("WROTE", n)
"""

SEED = """
from experiments import services
group = services.create_group("tester", "base")
experiments = [services.create_experiment("tester", name=f"base-{i}") for i in range(5)]
services.add_to_group("tester", group, experiments)
"""


# --- helpers ----------------------------------------------------------------------------------


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "SKYDECK_DB_PATH", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith("SKYDECK_BACKUP_")
    }
    environ.update(HOME=str(home), SKYDECK_HOME=str(home / ".skydeck"))
    environ.update(extra or {})
    return environ


def manage(
    db: Path, *args: str, home: Path, extra_env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess:
    return run_python(
        MANAGE, "--db-path", str(db), *args, env=_env(home, extra_env), timeout=180, **kwargs
    )


@contextmanager
def writer(db: Path, home: Path, prefix: str) -> Iterator[subprocess.Popen]:
    """A second process creating experiments in ``db`` as fast as it can until the body ends."""
    stop = home / f"stop-{prefix}"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "--db-path", str(db), "shell", "-c", WRITER],
        env=_env(home, {"STOP_FILE": str(stop), "WRITER_PREFIX": prefix}),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while count(db, f"name LIKE '{prefix}-%'") < 5:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the writer did not start writing"
            time.sleep(0.1)
        yield proc
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "WROTE" in out


def query(db: Path, sql: str) -> list[tuple]:
    with closing(sqlite3.connect(db, timeout=20)) as conn:
        return conn.execute(sql).fetchall()


def count(db: Path, where: str = "1") -> int:
    return query(db, f"SELECT COUNT(*) FROM experiments WHERE {where}")[0][0]  # noqa: S608


def names(db: Path) -> list[str]:
    return [r[0] for r in query(db, "SELECT name FROM experiments ORDER BY name")]


def consistent(db: Path) -> bool:
    """Each experiment is created with its "create" log row in one transaction: a torn copy
    would show different counts."""
    created = query(db, "SELECT COUNT(*) FROM operation_logs WHERE operation = 'create'")[0][0]
    return created == count(db)


def without_log(lines: list[str]) -> list[str]:
    """A dump without the operation log (and its id sequence), which a restore appends to,
    without the sync states, where it pauses the reconciler, and without the deck's token,
    which it renews (open decks then re-render)."""
    skip = ("operation_logs", "sync_states", '"deck_state"')
    return [line for line in lines if not any(s in line for s in skip)]


def integrity(db: Path) -> str:
    return query(db, "PRAGMA integrity_check")[0][0]


def dump(db: Path) -> list[str]:
    with closing(sqlite3.connect(db, timeout=20)) as conn:
        return list(conn.iterdump())


def clone(source: Path, dest: Path, *, wal: bool = True) -> Path:
    """A copy made with the backup API (the source may still have a -wal file)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(dest)) as dst:
        src.backup(dst)
        dst.execute(f"PRAGMA journal_mode={'WAL' if wal else 'DELETE'}")
    return dest


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """A migrated SkyDeck database with five experiments in a group (made once)."""
    home = tmp_path_factory.mktemp("template")
    db = home / "template.db"
    result = manage(db, "migrate", "-v0", home=home)
    assert result.returncode == 0, result.stderr
    result = manage(db, "shell", "-c", SEED, home=home)
    assert result.returncode == 0, result.stderr
    return db


@pytest.fixture
def live(template_db, tmp_path) -> Path:
    """This test's own live database (WAL), a copy of the template."""
    return clone(template_db, tmp_path / "live.db")


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def use_live(live, monkeypatch) -> Path:
    """Point the in-process code (admin, middleware, tasks) at ``live``."""
    monkeypatch.setattr(leases, "live_sqlite_path", lambda: live)  # the restore marker's check
    monkeypatch.setattr(backup, "live_db_path", lambda: live)  # also on a PostgreSQL run
    return live


# --- snapshots ------------------------------------------------------------------------------


@pytest.mark.slow  # manage.py in subprocesses
def test_backup_while_another_process_writes_is_consistent(live, home, tmp_path):
    base = count(live)
    snapshots = []
    with writer(live, home, "w") as proc:
        for i in range(2):
            snap = tmp_path / f"snap-{i}.db"
            result = manage(live, "backup", str(snap), home=home)
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith(f"Wrote {snap}")
            assert "integrity ok" in result.stdout
            snapshots.append(snap)
            assert proc.poll() is None, "the writer must keep running during the backup"
    counts = []
    for snap in snapshots:
        assert integrity(snap) == "ok"
        assert consistent(snap)
        assert snap.read_bytes()[18:20] == b"\x01\x01"  # a single file, no -wal needed
        assert not Path(f"{snap}-wal").exists()
        counts.append(count(snap))
    assert base < counts[0] < counts[1] <= count(live), "the writer wrote during the backups"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    assert integrity(live) == "ok"
    assert consistent(live)


@pytest.mark.slow  # manage.py in subprocesses
def test_backup_into_a_directory_names_the_file_and_keeps_n(live, home, tmp_path):
    target = tmp_path / "backups"
    target.mkdir()
    for stamp in ("20200101-000000", "20200102-000000"):
        (target / f"skydeck-{stamp}.db").write_bytes(b"old")
    result = manage(live, "backup", str(target), "--keep", "2", home=home)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in target.iterdir())
    assert len(files) == 2
    assert files[0] == "skydeck-20200102-000000.db"
    assert re.fullmatch(r"skydeck-\d{8}-\d{6}\.db", files[1])
    assert names(target / files[1]) == names(live)
    assert "Removed the older snapshot" in result.stdout


@pytest.mark.slow  # manage.py in subprocesses
def test_backup_command_errors_are_one_clear_line(live, home, tmp_path):
    cases = [
        (tmp_path / "missing" / "x.db", "the destination directory"),
        (live, "is the live database itself"),
    ]
    for target, message in cases:
        result = manage(live, "backup", str(target), home=home)
        assert result.returncode == 1
        assert message in result.stderr
        assert "Traceback" not in result.stderr
    result = manage(tmp_path / "nothing.db", "backup", str(tmp_path / "x.db"), home=home)
    assert result.returncode == 1
    assert "there is no database at" in result.stderr
    assert not (tmp_path / "nothing.db").exists()


# --- restore --------------------------------------------------------------------------------


@pytest.mark.slow  # manage.py in subprocesses
def test_restore_round_trip_restores_the_snapshot_and_keeps_the_old_file(live, home, tmp_path):
    snap = tmp_path / "snap.db"
    assert manage(live, "backup", str(snap), home=home).returncode == 0
    wanted = dump(snap)
    added = manage(
        live,
        "shell",
        "-c",
        "from experiments import services; services.create_experiment('t', name='after-snap')",
        home=home,
    )
    assert added.returncode == 0, added.stderr
    assert "after-snap" in names(live)
    # a connection open across the restore, like a gunicorn worker's
    with closing(sqlite3.connect(live, timeout=20)) as reader:
        assert reader.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 6
        result = manage(live, "restore", str(snap), home=home)
        assert result.returncode == 0, result.stderr
        assert reader.execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 5
    assert "Restored" in result.stdout
    # exactly the snapshot, plus the restore noted in its operation log
    assert without_log(dump(live)) == without_log(wanted)
    assert "after-snap" not in names(live)
    token_sql = "SELECT token FROM deck_state"
    assert query(live, token_sql) != query(snap, token_sql)  # every open deck re-renders
    kept = list(tmp_path.glob("live.db.pre-restore-*"))
    assert len(kept) == 1
    assert f"kept at {kept[0]}" in result.stdout
    log_sql = "SELECT actor, operation, message FROM operation_logs ORDER BY id"
    assert query(live, log_sql)[:-2] == query(snap, log_sql)
    (actor, operation, message), pause = query(live, log_sql)[-2:]
    assert (actor, operation) == (backup.RESTORE_ACTOR, "restore")
    assert f"restored {snap}" in message
    # ... and the reconciler waits for a person: an old snapshot acts on nothing by itself
    assert pause[:2] == (backup.RESTORE_ACTOR, "pause")
    assert "reconciler paused: the restore of snap.db" in pause[2]
    assert "The reconciler is paused" in result.stdout
    state = query(live, "SELECT cursor FROM sync_states WHERE source = 'reconciler'")
    assert '"paused"' in state[0][0]
    assert f"the previous database is kept at {kept[0]}" in message
    assert "after-snap" in names(kept[0])
    assert integrity(kept[0]) == "ok"
    assert integrity(live) == "ok"
    assert query(live, "PRAGMA journal_mode")[0][0] == "wal"
    assert not backup.marker_path(live).exists()


@pytest.mark.slow  # manage.py in subprocesses
def test_restore_while_another_process_writes(live, home, tmp_path):
    snap = tmp_path / "snap.db"
    assert manage(live, "backup", str(snap), home=home).returncode == 0
    with writer(live, home, "during"):
        result = manage(live, "restore", str(snap), home=home)
        assert result.returncode == 0, result.stderr
        restored = count(live, "name LIKE 'during-%'")
        time.sleep(0.5)  # the writer goes on writing into the restored database
    assert integrity(live) == "ok"
    assert consistent(live)
    assert set(names(snap)) <= set(names(live))
    kept = next(tmp_path.glob("live.db.pre-restore-*"))
    assert integrity(kept) == "ok"
    assert consistent(kept)
    # what the writer wrote before the restore is in the kept copy and gone from the live one
    before = set(names(kept)) - set(names(snap))
    assert before and not before & set(names(live))
    # and its later writes went into the restored database (not into a replaced, unlinked file)
    assert count(live, "name LIKE 'during-%'") > restored


@pytest.mark.slow  # manage.py in subprocesses
def test_restore_migrates_an_older_snapshot(live, home, tmp_path):
    old = tmp_path / "old.db"
    assert manage(old, "migrate", "experiments", "0001", "-v0", home=home).returncode == 0
    check = manage(live, "restore", "--check", str(old), home=home)
    assert check.returncode == 0, check.stderr
    assert "can be restored" in check.stdout
    assert "migrations" in check.stdout
    result = manage(live, "restore", str(old), home=home)
    assert result.returncode == 0, result.stderr
    assert "newer migrations" in result.stdout
    applied = set(query(live, "SELECT app, name FROM django_migrations"))
    assert ("experiments", "0002_reconciler") in applied
    assert ("django_q", "0001_initial") in applied
    assert names(live) == []
    # the schedules follow this install's settings after the migrate
    funcs = {r[0] for r in query(live, "SELECT func FROM django_q_schedule")}
    assert "syncing.tasks.sync_jobs_and_reconcile" in funcs


def _bad_file(kind: str, template: Path, path: Path) -> Path:
    if kind == "missing":
        return path
    if kind == "text":
        path.write_text("experiments,jobs\n1,2\n")
    elif kind == "not-skydeck":
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE notes (body TEXT)")
            conn.commit()
    elif kind == "newer":
        clone(template, path, wal=False)
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "INSERT INTO django_migrations (app, name, applied) "
                "VALUES ('experiments', '9999_from_the_future', '2030-01-01')"
            )
            conn.commit()
    elif kind == "corrupt":
        clone(template, path, wal=False)
        with open(path, "r+b") as fh:
            fh.seek(4096 * 4)
            fh.write(b"\xa5" * 4096 * 8)
    return path


@pytest.mark.slow  # manage.py in subprocesses
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "does not exist"),
        ("text", "is not an SQLite database"),
        ("not-skydeck", "is not a SkyDeck database"),
        ("newer", "comes from a newer SkyDeck"),
        ("corrupt", "is corrupt"),
    ],
)
def test_restore_refuses_bad_files_and_leaves_the_live_database_alone(
    kind, message, template_db, live, home, tmp_path
):
    bad = _bad_file(kind, template_db, tmp_path / f"{kind}.db")
    before = dump(live)
    result = manage(live, "restore", str(bad), home=home)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert dump(live) == before
    assert list(tmp_path.glob("live.db.pre-restore-*")) == []
    assert not backup.marker_path(live).exists()
    with pytest.raises(backup.InvalidSnapshot, match=message):
        backup.check_snapshot(bad)


@pytest.mark.slow  # manage.py in subprocesses
def test_restore_refuses_the_live_database_itself(live, home):
    result = manage(live, "restore", str(live), home=home)
    assert result.returncode == 1
    assert "is the live database itself" in result.stderr


@pytest.mark.slow  # manage.py in subprocesses
def test_another_page_size_is_refused_into_a_wal_database_but_restores_into_a_new_one(
    template_db, live, home, tmp_path
):
    big_pages = clone(template_db, tmp_path / "big-pages.db", wal=False)
    with closing(sqlite3.connect(big_pages, isolation_level=None)) as conn:
        conn.execute("PRAGMA page_size=8192")
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 8192
    before = dump(live)
    refused = manage(live, "restore", str(big_pages), home=home)
    assert refused.returncode == 1
    assert "8192-byte pages" in refused.stderr
    assert dump(live) == before
    assert list(tmp_path.glob("live.db.pre-restore-*")) == []
    fresh = tmp_path / "fresh" / "new.db"
    result = manage(fresh, "restore", str(big_pages), home=home)
    assert result.returncode == 0, result.stderr
    assert "kept" not in result.stdout  # there was nothing to keep
    assert names(fresh) == names(template_db)
    assert query(fresh, "PRAGMA journal_mode")[0][0] == "wal"


# --- the marker: 503 while restoring, syncs skip --------------------------------------------


def test_requests_get_503_while_a_restore_runs(db, client, use_live):
    with backup.restoring(use_live):
        page = client.get("/")
        assert page.status_code == 503
        assert b"restoring a backup" in page.content
        assert page["Retry-After"] == "10"
        health = client.get("/api/health")
        assert health.status_code == 503
        assert health.json()["status"] == "restoring"
        api = client.post("/api/experiments/", {"name": "x"}, content_type="application/json")
        assert api.status_code == 503
        assert "restoring a backup" in api.json()["detail"]
        assert client.get("/static/admin/css/base.css").status_code == 200
    assert not backup.marker_path(use_live).exists()
    assert client.get("/api/health").status_code == 200


def test_a_stale_marker_is_ignored_with_a_warning(db, client, use_live, caplog):
    marker = backup.marker_path(use_live)
    marker.write_text(
        json.dumps({"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01"})
    )
    with caplog.at_level(logging.WARNING, logger="backups.backup"):
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/health").status_code == 200
    warnings = [r for r in caplog.records if "stale restore marker" in r.getMessage()]
    assert len(warnings) == 1  # once, not on every request
    with backup.restoring(use_live) as taken:  # a new restore takes it over
        assert json.loads(marker.read_text())["pid"] == os.getpid() == taken.pid
    assert not marker.exists()


def test_markers_of_running_restores_and_other_hosts(use_live):
    marker = backup.marker_path(use_live)
    with (
        backup.restoring(use_live),
        pytest.raises(backup.RestoreInProgress, match="pid"),
        backup.restoring(use_live),
    ):
        pass
    # another host: its pid cannot be checked here, so the marker counts for an hour
    marker.write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "2020-01-01"}))
    assert backup.restore_in_progress() is not None
    old = time.time() - backup.FOREIGN_MARKER_MAX_AGE - 60
    os.utime(marker, (old, old))
    assert backup.restore_in_progress() is None
    marker.write_text("not json")
    assert backup.restore_in_progress() is None


def test_syncs_and_scheduled_backups_skip_while_restoring(db, use_live, settings, tmp_path):
    settings.SKYDECK_BACKUP_DIR = tmp_path / "backups"
    with backup.restoring(use_live):
        outcome = run_sync("skypilot")
        assert outcome.skipped
        assert "restoring" in outcome.summary()
        assert tasks.backup_database().startswith("backup: skipped: a backup is being restored")
    assert not SyncState.objects.filter(last_attempt_at__isnull=False).exists()
    assert not (tmp_path / "backups").exists()


# --- the admin download -----------------------------------------------------------------------


def test_superuser_downloads_a_valid_snapshot(admin_client, use_live, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    index = admin_client.get(reverse("admin:index"))
    assert reverse("admin:backup").encode() in index.content
    page = admin_client.get(reverse("admin:backup"))
    assert page.status_code == 200
    assert b"Download snapshot" in page.content
    response = admin_client.post(reverse("admin:backup"))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert SNAPSHOT_FILENAME.search(response["Content-Disposition"])
    body = b"".join(response.streaming_content)
    # the audit trail says who took a copy of every password hash (asked before close():
    # closing a response sends request_finished, which closes the database connection)
    log = OperationLog.objects.get(operation=Operation.BACKUP)
    assert log.actor == "admin"
    name = SNAPSHOT_FILENAME.search(response["Content-Disposition"]).group(1)
    assert log.message == f"downloaded the snapshot {name}"
    response.close()
    assert body.startswith(b"SQLite format 3\x00")
    downloaded = tmp_path / "downloaded.db"
    downloaded.write_bytes(body)
    assert integrity(downloaded) == "ok"
    assert names(downloaded) == names(use_live)
    assert list(scratch.iterdir()) == []  # the temporary file is gone


def test_backup_page_lists_scheduled_snapshots_newest_first(
    admin_client, use_live, settings, tmp_path
):
    settings.SKYDECK_BACKUP_DIR = tmp_path
    for stamp in ("20200101-000000", "20200103-000000", "20200102-000000"):
        (tmp_path / f"skydeck-{stamp}.db").write_bytes(b"x" * 10)
    (tmp_path / "notes.db").write_bytes(b"not ours")
    page = admin_client.get(reverse("admin:backup")).content.decode()
    listed = re.findall(r"<td>(skydeck-[0-9-]+\.db)</td>", page)
    assert listed == [
        "skydeck-20200103-000000.db",
        "skydeck-20200102-000000.db",
        "skydeck-20200101-000000.db",
    ]
    assert "notes.db" not in page


def test_only_superusers_reach_the_backup_page(client, django_user_model, use_live):
    url = reverse("admin:backup")
    anonymous = client.post(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("admin:login"))
    client.force_login(django_user_model.objects.create_user("plain", password="pw-plain-123"))
    assert client.post(url)["Location"].startswith(reverse("admin:login"))
    client.force_login(
        django_user_model.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    )
    assert client.post(url).status_code == 403
    assert reverse("admin:backup").encode() not in client.get(reverse("admin:index")).content


def test_the_backup_page_on_postgresql_points_to_pg_dump(admin_client, monkeypatch):
    monkeypatch.setattr(backup, "supported", lambda: False)
    for response in (
        admin_client.get(reverse("admin:backup")),
        admin_client.post(reverse("admin:backup")),
    ):
        assert response.status_code == 200
        assert b"pg_dump" in response.content
        assert b"download-snapshot" not in response.content
        assert "Content-Disposition" not in response


# --- scheduled snapshots and retention -----------------------------------------------------


def test_the_backup_schedule_follows_the_setting(db, settings, tmp_path):
    assert settings.SKYDECK_BACKUP_DIR is None  # off by default
    assert schedules.BACKUP_SCHEDULE not in schedules.ensure_schedules()
    assert not Schedule.objects.filter(name=schedules.BACKUP_SCHEDULE).exists()
    settings.SKYDECK_BACKUP_DIR = tmp_path
    assert schedules.BACKUP_SCHEDULE in schedules.ensure_schedules()
    schedule = Schedule.objects.get(name=schedules.BACKUP_SCHEDULE)
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == (
        "backups.tasks.backup_database",
        Schedule.MINUTES,
        1440,
    )
    settings.SKYDECK_BACKUP_INTERVAL = 30
    schedules.ensure_schedules()
    schedule = Schedule.objects.get(name=schedules.BACKUP_SCHEDULE)
    assert (schedule.schedule_type, schedule.cron) == (Schedule.CRON, "* * * * * */30")
    settings.SKYDECK_BACKUP_DIR = None
    assert schedules.BACKUP_SCHEDULE not in schedules.ensure_schedules()
    assert not Schedule.objects.filter(name=schedules.BACKUP_SCHEDULE).exists()
    assert tasks.backup_database() == "backup: off (SKYDECK_BACKUP_DIR is empty)"


def test_prune_keeps_exactly_the_newest_n_and_nothing_else(tmp_path):
    stamps = [f"202401{day:02d}-1200{sec:02d}" for day, sec in [(5, 0), (1, 0), (9, 30), (3, 0)]]
    stamps += [f"2024011{d}-000000" for d in range(6)]
    for i, stamp in enumerate(stamps):
        path = tmp_path / f"skydeck-{stamp}.db"
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # mtimes disagree with the names
    others = ["notes.txt", "skydeck-latest.db", "skydeck-20200101-000000.db.tmp", "my.db"]
    for name in others:
        (tmp_path / name).write_text("keep me")
    (tmp_path / "skydeck-20000101-000000.db").mkdir()  # a directory is never a snapshot
    removed = backup.prune(tmp_path, 3)
    assert len(removed) == 7
    left = sorted(p.name for p in tmp_path.iterdir())
    expected = ["skydeck-20240114-000000.db", "skydeck-20240115-000000.db"]
    expected += ["skydeck-20240113-000000.db", *others, "skydeck-20000101-000000.db"]
    assert left == sorted(expected)
    with pytest.raises(ValueError, match="at least 1"):
        backup.prune(tmp_path, 0)


def test_scheduled_backup_writes_a_snapshot_and_prunes(db, settings, use_live, tmp_path):
    target = tmp_path / "backups"
    target.mkdir()
    for stamp in ("20200101-000000", "20200102-000000", "20200103-000000"):
        (target / f"skydeck-{stamp}.db").write_bytes(b"old")
    settings.SKYDECK_BACKUP_DIR = target
    settings.SKYDECK_BACKUP_KEEP = 2
    line = tasks.backup_database()
    assert line.startswith("backup: wrote"), line
    files = sorted(target.iterdir())
    assert files[0].name == "skydeck-20200103-000000.db"
    assert len(files) == 2
    assert integrity(files[1]) == "ok"
    assert names(files[1]) == names(use_live)
    log = OperationLog.objects.get(actor=backup.ACTOR)
    assert (log.operation, log.success) == (Operation.BACKUP, True)
    assert files[1].name in log.message
    # the header's Backup pill: green, with the time of this backup
    report = health.health_report()
    assert report["backup"]["ok"] is True and report["backup"]["last_success"]
    pill = next(p for p in dashboard.health_pills(report) if p.source == "backup")
    assert (pill.label, pill.tone) == ("Backup", "ok")
    assert pill.title.startswith("Scheduled backup: last success")


def test_no_backup_pill_while_scheduled_backups_are_off(db, settings):
    settings.SKYDECK_BACKUP_DIR = None
    report = health.health_report()
    assert "backup" not in report
    assert "backup" not in [p.source for p in dashboard.health_pills(report)]
    settings.SKYDECK_BACKUP_DIR = Path("/nonexistent/backups")
    report = health.health_report()
    assert report["backup"]["ok"] is None  # on, but none has run yet
    assert "no scheduled backup has succeeded yet" in report["warnings"]
    pill = next(p for p in dashboard.health_pills(report) if p.source == "backup")
    assert (pill.tone, pill.text) == ("unknown", "not run yet")


# --- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path) -> Iterator[tuple[Path, int | None]]:
    """A 64 KiB tmpfs as the destination; where mounting is not allowed (not root), the same
    directory on the normal disk plus a file-size limit for the process that writes."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode == 0:
        yield mount, None
        subprocess.run(["umount", str(mount)], check=True)
    else:
        yield mount, 64 * 1024


def _limit_file_size(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


@contextmanager
def file_size_limit(limit: int | None) -> Iterator[None]:
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _fill(directory: Path) -> dict[str, bytes]:
    """Two small files that must survive: an older snapshot and the file the backup targets."""
    small = directory / "skydeck-20200101-000000.db"
    with closing(sqlite3.connect(small)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.commit()
    (directory / "existing.db").write_bytes(small.read_bytes())
    return {p.name: p.read_bytes() for p in directory.iterdir()}


@pytest.mark.slow  # manage.py in subprocesses
def test_backup_to_a_full_disk_fails_clearly_and_loses_nothing(live, home, full_disk):
    directory, limit = full_disk
    before = _fill(directory)
    live_before = dump(live)
    result = manage(
        live,
        "backup",
        str(directory / "existing.db"),
        home=home,
        preexec_fn=(lambda: _limit_file_size(limit)) if limit else None,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    if limit is None:  # a real full disk (tmpfs)
        assert "disk full" in result.stderr and "was not written" in result.stderr
    else:  # the file-size limit stands in for it where mounting is not allowed
        assert "could not write the snapshot" in result.stderr
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # no temp file left
    assert dump(live) == live_before
    assert integrity(live) == "ok"


def test_a_failed_scheduled_backup_is_logged_and_the_app_keeps_serving(
    db, client, settings, use_live, full_disk, caplog
):
    admin_client = Client()
    directory, limit = full_disk
    before = _fill(directory)
    settings.SKYDECK_BACKUP_DIR = directory
    settings.SKYDECK_BACKUP_KEEP = 1
    with caplog.at_level(logging.ERROR, logger="backups.backup"), file_size_limit(limit):
        line = tasks.backup_database()
    assert line.startswith("backup: FAILED")
    if limit is None:
        assert "disk full" in line
    log = OperationLog.objects.get(actor=backup.ACTOR)
    assert not log.success
    assert log.message.startswith("backup failed:")
    assert any("scheduled backup failed" in r.getMessage() for r in caplog.records)
    # nothing pruned, nothing half-written
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert integrity(use_live) == "ok"
    assert client.get("/api/health").status_code == 200
    # users see it: a red Backup pill naming the error, and a warning in /api/health
    client.force_login(User.objects.create_user("watcher"))
    report = client.get("/api/health").json()
    assert report["backup"]["ok"] is False
    assert report["backup"]["last_error"] == line.removeprefix("backup: FAILED: ")
    assert any(w.startswith("the last scheduled backup failed: ") for w in report["warnings"])
    admin_client.force_login(User.objects.create_user("viewer", password="pw"))
    page = admin_client.get("/").content.decode()
    pill = re.search(r'<span class="pill health-(\w+)"[^>]*data-source="backup"', page)
    assert pill and pill.group(1) == "bad"
    assert "Scheduled backup: the last attempt" in page


# --- PostgreSQL and settings ---------------------------------------------------------------


def test_supported_follows_the_configured_database(db):
    assert backup.supported() is (connection.vendor == "sqlite")


def test_commands_on_postgresql_point_to_pg_dump_and_pg_restore(db, monkeypatch, tmp_path):
    monkeypatch.setattr(backup, "supported", lambda: False)
    with pytest.raises(CommandError, match="pg_dump"):
        call_command("backup", str(tmp_path / "x.db"))
    with pytest.raises(CommandError, match="pg_restore"):
        call_command("restore", str(tmp_path / "x.db"))
    assert list(tmp_path.iterdir()) == []


def test_commands_against_the_test_database(db, tmp_path):
    """Unpatched: PostgreSQL gets the pg_dump message, the in-memory SQLite test database a
    clear refusal; neither writes a file."""
    for command in ("backup", "restore"):
        with pytest.raises(CommandError) as raised:
            call_command(command, str(tmp_path / "x.db"))
        if connection.vendor == "postgresql":
            assert "pg_dump" in str(raised.value)
        else:
            assert "lives in memory" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # manage.py in subprocesses
@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SKYDECK_BACKUP_KEEP": "0"}, "SKYDECK_BACKUP_KEEP"),
        ({"SKYDECK_BACKUP_KEEP": "seven"}, "SKYDECK_BACKUP_KEEP"),
        ({"SKYDECK_BACKUP_INTERVAL": "45"}, "SKYDECK_BACKUP_INTERVAL"),
        (
            {"SKYDECK_BACKUP_DIR": "/tmp/b", "DATABASE_URL": "postgres://u@127.0.0.1:9/x"},
            "SKYDECK_BACKUP_DIR",
        ),
    ],
)
def test_bad_backup_settings_stop_startup(env, variable, tmp_path):
    result = run_python(MANAGE, "check", env=_env(tmp_path, env))
    assert result.returncode == 2
    assert "configuration error" in result.stderr
    assert variable in result.stderr


@pytest.mark.slow  # manage.py in subprocesses
def test_good_backup_settings_load(tmp_path):
    environ = _env(
        tmp_path,
        {
            "SKYDECK_BACKUP_DIR": str(tmp_path / "b"),
            "SKYDECK_BACKUP_KEEP": "3",
            "SKYDECK_BACKUP_INTERVAL": "3600",
        },
    )
    code = (
        "from django.conf import settings; "
        "print(settings.SKYDECK_BACKUP_DIR, settings.SKYDECK_BACKUP_KEEP, "
        "settings.SKYDECK_BACKUP_INTERVAL)"
    )
    assert shell_last_line(code, environ) == f"{tmp_path / 'b'} 3 3600"
    shutil.rmtree(tmp_path / "b", ignore_errors=True)


# --- logins revoked after the snapshot (issue 13) -------------------------------------------

LOGINS = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
for name in ("bob", "carol", "dan"):
    user = User.objects.create_user(name, password="old")
    Token.objects.create(user=user, key=name * 10)
"""
REVOKE = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
User.objects.get(username="bob").delete()
carol = User.objects.get(username="carol"); carol.is_active = False; carol.save()
dan = User.objects.get(username="dan"); dan.set_password("new"); dan.save()
Token.objects.filter(key="dan" * 10).delete()
"""
STATE = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
print(sorted((u.username, u.is_active, u.check_password("old")) for u in User.objects.all()))
print(sorted(t.user.username for t in Token.objects.all()))
"""


@pytest.mark.slow  # manage.py in subprocesses
@pytest.mark.parametrize("keep", [False, True])
def test_restore_reports_the_logins_it_brings_back_and_can_keep_them_revoked(
    live, home, tmp_path, keep
):
    assert manage(live, "shell", "-c", LOGINS, home=home).returncode == 0
    snap = tmp_path / "snap.db"
    assert manage(live, "backup", str(snap), home=home).returncode == 0
    revoked = manage(live, "shell", "-c", REVOKE, home=home)
    assert revoked.returncode == 0, revoked.stderr
    check = manage(live, "restore", "--check", str(snap), home=home)
    assert "re-enables 2 account(s) deleted or deactivated since: bob, carol" in check.stdout
    assert "brings back the old password of: dan" in check.stdout
    assert "brings back 2 API token(s) revoked since, of: bob, dan" in check.stdout
    assert "bob" * 10 not in check.stdout  # never a token key
    args = ["restore", *(["--keep-revocations"] if keep else []), str(snap)]
    result = manage(live, *args, home=home)
    assert result.returncode == 0, result.stderr
    out = manage(live, "shell", "-c", STATE, home=home).stdout.splitlines()
    state = [line for line in out if line.startswith("[")]
    if keep:
        assert "Kept revoked (--keep-revocations)" in result.stdout, result.stdout
        assert state == [
            "[('bob', False, True), ('carol', False, True), ('dan', True, False)]",
            "['carol']",
        ]
    else:
        assert "The restore re-enables 2 account(s)" in result.stdout
        assert "restore with --keep-revocations" in result.stdout
        assert state == [
            "[('bob', True, True), ('carol', True, True), ('dan', True, True)]",
            "['bob', 'carol', 'dan']",
        ]
    log = query(live, "SELECT message FROM operation_logs WHERE operation = 'restore'")[-1][0]
    assert ("kept revoked" if keep else "came back") in log and "bob" * 10 not in log
