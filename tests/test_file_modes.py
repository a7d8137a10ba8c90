"""Files holding secrets are 0600 (in a 0700 directory SkyDeck creates), whatever the umask.

Each test runs ``manage.py`` in a subprocess with umask 022, as a user's shell usually has it: the
live database, its -wal/-shm, the generated secret key and a ``backup`` snapshot must still be
readable by their owner only. Directories that already exist are not SkyDeck's to change.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import processes
import pytest

from skydeck_site.filemodes import private_dir, private_file, tighten

UMASK = 0o022


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_manage(*args: str, home: Path) -> subprocess.CompletedProcess:
    result = processes.run_manage(*args, home=home, umask=UMASK)
    assert result.returncode == 0, result.stderr
    return result


# While the connection that wrote is open, -wal and -shm exist (they go away when it closes).
WRITE_AND_REPORT = """
import json, os
from django.conf import settings
from django.db import connection
from experiments.models import Experiment
Experiment.objects.create(name="modes")
db = str(settings.DATABASES["default"]["NAME"])
print(json.dumps({s: os.stat(db + s).st_mode & 0o777 for s in ("", "-wal", "-shm")}))
"""


@pytest.mark.slow  # a subprocess
def test_plain_sqlite_would_create_a_world_readable_file_under_this_umask(tmp_path):
    """The control: without SkyDeck's care the database would be 0644."""
    code = f"import sqlite3; sqlite3.connect({str(tmp_path / 'plain.db')!r}).execute('create table t(x)')"
    subprocess.run([sys.executable, "-c", code], check=True, umask=UMASK)
    assert mode(tmp_path / "plain.db") == 0o644


@pytest.mark.slow  # a subprocess
def test_db_wal_shm_secret_key_and_snapshot_are_private(tmp_path):
    db = tmp_path / "new" / "sub" / "x.db"
    run_manage("--db-path", str(db), "migrate", "-v0", home=tmp_path)

    assert mode(db) == 0o600
    assert mode(db.parent) == mode(db.parent.parent) == 0o700  # created by SkyDeck
    home = tmp_path / ".skydeck"
    assert mode(home) == 0o700
    assert mode(home / "secret_key") == 0o600

    result = run_manage("--db-path", str(db), "shell", "-c", WRITE_AND_REPORT, home=tmp_path)
    modes = json.loads(result.stdout.strip().splitlines()[-1])
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}

    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    run_manage("--db-path", str(db), "backup", str(snapshots), home=tmp_path)
    (snapshot,) = snapshots.glob("skydeck-*.db")
    assert mode(snapshot) == 0o600
    with sqlite3.connect(snapshot) as conn:
        assert conn.execute("SELECT name FROM experiments").fetchall() == [("modes",)]


@pytest.mark.slow  # a subprocess
def test_default_database_in_skydeck_home_is_private(tmp_path):
    run_manage("migrate", "-v0", home=tmp_path)
    home = tmp_path / ".skydeck"
    assert (mode(home), mode(home / "skydeck.db"), mode(home / "secret_key")) == (
        0o700,
        0o600,
        0o600,
    )


@pytest.mark.slow  # a subprocess
def test_existing_world_readable_files_are_tightened(tmp_path):
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (x)")
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"")  # as a crashed process may leave it
    home = tmp_path / ".skydeck"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    key = home / "secret_key"
    key.write_text("k" * 50 + "\n")
    for path in (db, wal, key):
        path.chmod(0o644)

    # at start-up, before anything connects (a WAL-mode close would remove the empty -wal)
    run_manage("--db-path", str(db), "check", home=tmp_path)

    assert (mode(db), mode(wal), mode(key)) == (0o600, 0o600, 0o600)
    assert mode(home) == 0o755  # an existing directory is the user's: left alone
    run_manage("--db-path", str(db), "migrate", "-v0", home=tmp_path)
    assert mode(db) == 0o600


@pytest.mark.slow  # a subprocess
def test_loading_settings_alone_creates_no_database(tmp_path):
    """The file appears when Django first connects (``backup`` of a missing database says so)."""
    db = tmp_path / "later.db"
    run_manage("--db-path", str(db), "check", home=tmp_path)
    assert not db.exists()


@pytest.mark.slow  # a subprocess
def test_restore_into_a_new_database_file_is_private(tmp_path):
    source = tmp_path / "source.db"
    run_manage("--db-path", str(source), "migrate", "-v0", home=tmp_path)
    snapshot = tmp_path / "snap.db"
    run_manage("--db-path", str(source), "backup", str(snapshot), home=tmp_path)

    fresh = tmp_path / "fresh" / "new.db"
    run_manage("--db-path", str(fresh), "restore", str(snapshot), home=tmp_path)
    assert mode(fresh) == 0o600
    assert mode(fresh.parent) == 0o700


@pytest.mark.slow  # a subprocess
def test_an_existing_directory_such_as_tmp_is_not_changed(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    db = shared / "x.db"
    run_manage("--db-path", str(db), "migrate", "-v0", home=tmp_path)
    assert mode(shared) == 0o1777
    assert mode(db) == 0o600


def test_helpers_never_loosen_and_never_touch_existing_directories(tmp_path):
    private_dir(tmp_path)  # exists: untouched
    before = mode(tmp_path)
    private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path) == before
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700

    strict = tmp_path / "strict"
    strict.write_text("")
    strict.chmod(0o400)
    tighten(strict)
    private_file(strict)
    assert mode(strict) == 0o400  # already private: never made more permissive

    tighten(tmp_path / "missing")  # nothing to do, no error
    fresh = tmp_path / "fresh.db"
    old = os.umask(0o022)
    try:
        private_file(fresh)
    finally:
        os.umask(old)
    assert mode(fresh) == 0o600 and fresh.stat().st_size == 0
