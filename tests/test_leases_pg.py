"""Leases on PostgreSQL (issue 18): a pass holds its source's advisory lock for its session, so a
second session cannot take a held lease, and a holder whose session ends (its process SIGKILLed,
or its backend terminated) frees it at once although the row's expiry is minutes away; the taker
says whose lease it took. Real processes, each with its own session, on a database of this
test's own (only the ``sync_states`` table is made)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from processes import ROOT, child_env

# Real processes on a PostgreSQL database of its own: a slow proof, run once (.ci/run's PostgreSQL
# step), not by the README's test command, which needs no PostgreSQL.
pytestmark = [pytest.mark.slow, pytest.mark.own_postgres]

ADMIN_URL = os.environ.get("SKYDECK_CI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")

#: One process, one database session: ``hold`` takes the lease and sleeps, ``take`` tries once.
SCRIPT = """
import os, sys, time
import django
django.setup()
from django.db import connection
from experiments.models import SyncState
from syncing import leases

mode = sys.argv[1]
if mode == "setup":
    with connection.schema_editor() as editor:
        editor.create_model(SyncState)
elif mode == "hold":
    with leases.lease("skypilot", ttl=600) as owner:
        print("HELD", owner, connection.connection.info.backend_pid, flush=True)
        time.sleep(120)
elif mode == "take":
    try:
        with leases.lease("skypilot", ttl=600) as owner:
            print("TOOK", owner, flush=True)
    except leases.LeaseHeld as exc:
        print("REFUSED", exc, flush=True)
elif mode == "nested":
    with leases.lease("skypilot", ttl=600):
        try:
            with leases.lease("skypilot", ttl=600):
                print("NESTED TOOK", flush=True)
        except leases.LeaseHeld:
            print("NESTED REFUSED", flush=True)
elif mode in ("raise", "raise-without-session"):
    import psycopg
    with leases.lease("skypilot", ttl=600):
        if mode == "raise-without-session":  # the connection is lost under the pass
            with psycopg.connect(os.environ["ADMIN_URL"], autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid]
                )
        raise ValueError("the body's own error")
"""


@pytest.fixture
def pg(tmp_path: Path):
    """A database of this test's own with the ``sync_states`` table; the env to reach it."""
    name = f"skydeck_leases_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    env = child_env(
        tmp_path,
        DATABASE_URL=url,
        ADMIN_URL=ADMIN_URL,
        DJANGO_SETTINGS_MODULE="skydeck_site.settings",
        SKYDECK_SECRET_KEY="x" * 40,
        SKYDECK_NODE_ID="node-t",
    )
    script = tmp_path / "lease.py"
    script.write_text(SCRIPT)
    session = Sessions(env, script, url)
    assert session.run("setup").returncode == 0
    yield session
    session.kill_all()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class Sessions:
    def __init__(self, env: dict[str, str], script: Path, url: str) -> None:
        self.env, self.script, self.url = env, script, url
        self.holders: list[subprocess.Popen] = []

    def run(self, mode: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(self.script), mode],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def hold(self) -> tuple[subprocess.Popen, str, int]:
        """A process holding the lease: (it, its owner name, its backend pid)."""
        proc = subprocess.Popen(
            [sys.executable, str(self.script), "hold"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.holders.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("HELD "), line + proc.stdout.read()
        _, owner, pid = line.split()
        return proc, owner, int(pid)

    def row(self) -> tuple[str, datetime | None, str | None]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT lease_owner, lease_expires_at, lease_node FROM sync_states "
                "WHERE source = 'skypilot'"
            ).fetchone()
        return found or ("", None, None)

    def advisory_locks(self) -> int:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            ).fetchone()[0]

    def kill_all(self) -> None:
        for proc in self.holders:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def test_a_held_lease_is_refused_and_freed_at_once_when_its_holder_is_killed(pg):
    holder, owner, _ = pg.hold()
    assert owner.endswith(":pg")  # the row says its holder took the advisory lock
    refused = pg.run("take")
    assert refused.stdout.startswith("REFUSED") and owner in refused.stdout, refused
    row_owner, expires, node = pg.row()
    assert (row_owner, node) == (owner, "node-t")

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert pg.row()[0] == owner and expires > datetime.now(UTC)  # the row still says "held"
    taken = pg.run("take")
    assert taken.returncode == 0 and taken.stdout.startswith("TOOK"), taken
    assert (
        f"skypilot sync: took over the lease of {owner}, whose database session ended"
        in taken.stderr
    )
    assert pg.row()[0] == ""  # released after the pass
    assert pg.advisory_locks() == 0


def test_a_holder_whose_session_was_terminated_loses_the_lease_while_it_still_runs(pg):
    holder, owner, backend = pg.hold()
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [backend]).fetchone()[0]
    assert holder.poll() is None  # the process lives on, without its session
    taken = pg.run("take")
    assert taken.stdout.startswith("TOOK"), taken
    assert f"took over the lease of {owner}, whose database session ended" in taken.stderr


def test_the_lock_and_the_row_are_released_when_the_body_raises(pg):
    raised = pg.run("raise")
    assert raised.returncode != 0 and "ValueError: the body's own error" in raised.stderr
    assert pg.row()[0] == "" and pg.advisory_locks() == 0
    assert pg.run("take").stdout.startswith("TOOK")


def test_a_lost_connection_is_a_warning_and_the_bodys_error_is_what_is_raised(pg):
    raised = pg.run("raise-without-session")
    assert raised.returncode != 0
    assert raised.stderr.rstrip().endswith("ValueError: the body's own error"), raised.stderr
    assert "could not release its lease row" in raised.stderr
    # the row's release failed, so the session was ended: the lock went with it
    assert "its advisory lock was gone" in raised.stderr or "release its advisory lock" in (
        raised.stderr
    )
    owner = pg.row()[0]
    assert owner.endswith(":pg")  # left behind: its session is gone, so the next pass takes it
    taken = pg.run("take")
    assert taken.stdout.startswith("TOOK")
    assert f"took over the lease of {owner}, whose database session ended" in taken.stderr


def test_a_second_lease_of_the_same_source_in_one_session_is_refused(pg):
    # PostgreSQL's advisory locks are re-entrant within a session: the lease must not be
    nested = pg.run("nested")
    assert nested.stdout.strip() == "NESTED REFUSED", nested
    assert pg.row()[0] == "" and pg.advisory_locks() == 0
