"""Crash recovery on a real SQLite file (WAL): syncs and the worker killed with SIGKILL mid-pass.

Each test runs the real commands (``manage.py sync``, ``manage.py qcluster``) in subprocesses
against real loopback servers (tests/stub_skypilot.py, moto), kills them with SIGKILL while a pass
is under way, and then checks that the file passes ``PRAGMA integrity_check``, that the dead
process's lease does not block the next pass, and that the next pass leaves exactly the rows the
servers hold: none lost, none duplicated. The SQLite file is always created with ``--db-path``, so
the tests behave the same when the suite itself runs on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from processes import child_env
from stub_skypilot import S3FaultProxy, StubSkyPilot

# crash proofs: real processes killed with SIGKILL (.ci/run runs them: -m slow)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "skydeck-crash"


# --- helpers -------------------------------------------------------------------------------------


def migrate_template(tmp: Path) -> Path:
    """A migrated SQLite file in ``tmp``, its WAL checkpointed, for tests to copy."""
    db = tmp / "template.db"
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "--db-path", str(db), "migrate", "-v0"],
        check=True,
        env=child_env(tmp),
        cwd=ROOT,
    )
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per module; each test works on a copy."""
    return migrate_template(tmp_path_factory.mktemp("template"))


class Deck:
    """A SkyDeck installation on one SQLite file, driven through its commands."""

    def __init__(self, tmp: Path, template: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "deck.db"
        shutil.copy(template, self.db)
        self.env = child_env(tmp)

    def manage(self, *args: str) -> list[str]:
        return [sys.executable, str(ROOT / "manage.py"), "--db-path", str(self.db), *args]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.manage(*args),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """A child in its own process group, so SIGKILL reaches every process it forked."""
        return subprocess.Popen(
            self.manage(*args),
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def query(self, sql: str, *params: object) -> list[tuple]:
        conn = sqlite3.connect(self.db, timeout=20)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def scalar(self, sql: str, *params: object) -> object:
        return self.query(sql, *params)[0][0]

    def lease(self, source: str) -> tuple[str, str | None]:
        rows = self.query(
            "SELECT lease_owner, lease_expires_at FROM sync_states WHERE source = ?", source
        )
        return rows[0] if rows else ("", None)

    def integrity(self) -> str:
        return str(self.scalar("PRAGMA integrity_check"))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def kill_group(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the child and everything it forked; return what it printed."""
    os.killpg(proc.pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return output or ""


def kill_once_written(
    deck: Deck, proc: subprocess.Popen[str], table: str, total: int, timeout: float, step: float
) -> int:
    """SIGKILL a sync pass as soon as its first rows in ``table`` are committed; the kill must
    land mid-write (some rows, not all ``total``). Returns how many rows were written."""
    count = f"SELECT COUNT(*) FROM {table}"  # noqa: S608 - a table name from the test itself
    wait_for(
        lambda: proc.poll() is not None or deck.scalar(count) > 0,
        timeout,
        f"the first rows in {table}",
        step=step,
    )
    output = kill_group(proc)
    written = deck.scalar(count)
    assert 0 < written < total, (written, output)  # killed mid-write
    return written


def assert_held_by_dead_process(deck: Deck, source: str, pid: int) -> None:
    """The killed pass left its lease behind, unexpired: nothing released it."""
    owner, expires = deck.lease(source)
    assert f":{pid}:" in owner, owner
    assert expires is not None
    assert datetime.fromisoformat(expires).replace(tzinfo=UTC) > datetime.now(UTC)


def sync_status(deck: Deck) -> dict:
    """The API's sync status, computed by SkyDeck itself on the file."""
    code = "import json; from syncing.health import sync_status; print(json.dumps(sync_status()))"
    done = deck.run("shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_jobs_match(deck: Deck, stub: StubSkyPilot) -> None:
    """Exactly the stub's jobs, once each, with the stub's current status."""
    rows = deck.query("SELECT id, status FROM jobs")
    ids = [row[0] for row in rows]
    assert len(ids) == len(set(ids))
    with stub.lock:
        expected = {r["job_id"]: r["status"] for r in stub.fake.jobs}
    assert dict(rows) == expected


@pytest.fixture
def deck(tmp_path: Path, migrated: Path) -> Deck:
    return Deck(tmp_path, migrated)


@pytest.fixture
def stub() -> Iterator[StubSkyPilot]:
    with StubSkyPilot(jobs=3000) as server:
        yield server


# --- SkyPilot job sync ---------------------------------------------------------------------------


def test_sync_killed_while_fetching_leaves_nothing_half_done(deck: Deck, stub: StubSkyPilot):
    deck.env["SKYDECK_SKYPILOT_ENDPOINT"] = stub.endpoint
    stub.set_mode("slow", 0.3)  # six pages x three calls: the pass is mid-fetch for seconds
    proc = deck.start("sync", "skypilot")
    wait_for(lambda: deck.lease("skypilot")[0] != "" and stub.requests >= 2, 30, "the pass")
    kill_group(proc)

    assert deck.integrity() == "ok"
    assert deck.scalar("SELECT COUNT(*) FROM jobs") == 0  # everything is fetched before writing
    assert_held_by_dead_process(deck, "skypilot", proc.pid)
    status = {s["source"]: s for s in sync_status(deck)["sources"]}["skypilot"]
    assert status["running"] is False  # the health view knows a dead owner runs nothing
    assert status["ok"] is False and "stopped before it finished" in status["last_error"]

    stub.set_mode("ok")
    stub.advance(moves=50, new_jobs=5)  # the history moved on while SkyDeck was down
    done = deck.run("sync", "skypilot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skypilot (full): new 3005" in done.stdout  # not "skipped: already running"
    assert_jobs_match(deck, stub)
    assert deck.lease("skypilot")[0] == ""
    assert deck.scalar("SELECT last_error FROM sync_states WHERE source='skypilot'") == ""


def test_sync_killed_while_writing_then_next_pass_completes(deck: Deck, stub: StubSkyPilot):
    deck.env["SKYDECK_SKYPILOT_ENDPOINT"] = stub.endpoint
    total = len(stub.job_ids())
    proc = deck.start("sync", "skypilot")
    # kill the moment the first chunk (500 jobs) is committed: five more chunks are to come
    written = kill_once_written(deck, proc, "jobs", total, 30, step=0.002)

    assert deck.integrity() == "ok"
    # what was committed is whole: complete chunks of rows that are right in every field we check
    assert written % 500 == 0
    with stub.lock:
        expected = {r["job_id"]: (r["job_name"], r["status"]) for r in stub.fake.jobs}
    for job_id, name, status, experiment in deck.query(
        "SELECT id, job_name, status, experiment_id FROM jobs"
    ):
        assert (name, status) == expected[job_id]
        assert experiment == name
    assert_held_by_dead_process(deck, "skypilot", proc.pid)

    stub.advance(moves=100, new_jobs=3)
    done = deck.run("sync", "skypilot")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"new {total + 3 - written}" in done.stdout
    assert_jobs_match(deck, stub)
    # the pass after that is incremental and still exact
    stub.advance(moves=100, new_jobs=3)
    done = deck.run("sync", "skypilot")
    assert "skypilot (incremental)" in done.stdout, done.stdout + done.stderr
    assert_jobs_match(deck, stub)


def test_worker_killed_mid_sync_then_restarted(deck: Deck, stub: StubSkyPilot):
    """``kill -9`` of the django-q2 cluster during a scheduled sync, then a restart."""
    deck.env.update(SKYDECK_SKYPILOT_ENDPOINT=stub.endpoint, SKYDECK_TASK_TIMEOUT="60")
    enqueue = (
        "from django_q.tasks import async_task; async_task('syncing.tasks.sync_jobs_and_reconcile')"
    )
    stub.set_mode("slow", 0.3)
    assert deck.run("shell", "-c", enqueue).returncode == 0
    cluster = deck.start("qcluster")
    try:
        wait_for(lambda: deck.lease("skypilot")[0] != "", 30, "the worker to start the sync")
        owner = deck.lease("skypilot")[0]
    finally:
        kill_group(cluster)
    assert deck.integrity() == "ok"
    assert deck.scalar("SELECT COUNT(*) FROM jobs") == 0
    assert deck.lease("skypilot")[0] == owner  # still held by the killed worker process

    stub.set_mode("ok")
    assert deck.run("shell", "-c", enqueue).returncode == 0
    restarted = deck.start("qcluster")
    try:
        wait_for(
            lambda: (
                deck.scalar("SELECT last_success_at FROM sync_states WHERE source='skypilot'")
                is not None
            ),
            40,
            "the restarted worker's sync",
            step=0.2,
        )
    finally:
        kill_group(restarted)  # the pass is over; how the cluster stops is not the point here
    assert deck.integrity() == "ok"
    assert_jobs_match(deck, stub)
    assert deck.lease("skypilot")[0] == ""


# --- S3 checkpoint sync --------------------------------------------------------------------------


@pytest.fixture
def s3_proxy(tmp_path: Path) -> Iterator[S3FaultProxy]:
    """moto's S3 on loopback behind a proxy that slows each request down a little."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = S3FaultProxy(f"http://{host}:{port}").start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


def seed_s3(endpoint: str, names: list[str], epochs: int) -> int:
    raw = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    raw.create_bucket(Bucket=BUCKET)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]  # the server runs in this process
    for name in names:
        for epoch in range(1, epochs + 1):
            backend.put_object(BUCKET, f"policies/{name}/{name}:v{epoch}.mpt", b"w")
    return len(names) * epochs


def test_checkpoint_sync_killed_between_batches(deck: Deck, s3_proxy: S3FaultProxy):
    names = [f"ck-{i:04}" for i in range(400)]  # two listing batches of 200
    total = seed_s3(s3_proxy.endpoint, names, epochs=4)
    seed = (
        "from experiments.models import Experiment; "
        f"Experiment.objects.bulk_create(Experiment(name=f'ck-{{i:04}}') for i in range({len(names)}))"
    )
    assert deck.run("shell", "-c", seed).returncode == 0
    deck.env.update(
        SKYDECK_S3_ENDPOINT_URL=s3_proxy.endpoint,
        SKYDECK_S3_BUCKET=BUCKET,
        SKYDECK_S3_REGION="us-east-1",
    )
    s3_proxy.delay = 0.02  # the next batch is still being listed when the kill comes
    proc = deck.start("sync", "s3")
    written = kill_once_written(deck, proc, "checkpoints", total, 60, step=0.01)
    assert deck.integrity() == "ok"
    assert_held_by_dead_process(deck, "s3", proc.pid)

    s3_proxy.delay = 0
    done = deck.run("sync", "s3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"new {total - written}" in done.stdout, done.stdout
    assert deck.integrity() == "ok"
    assert deck.scalar("SELECT COUNT(*) FROM checkpoints") == total
    assert deck.scalar("SELECT COUNT(DISTINCT model_path) FROM checkpoints") == total
    assert deck.scalar("SELECT COUNT(*) FROM checkpoints WHERE missing") == 0
    per_experiment = deck.query(
        "SELECT e.name, COUNT(c.id), MIN(c.epoch), MAX(c.epoch) FROM experiments e "
        "LEFT JOIN checkpoints c ON c.experiment_id = e.id GROUP BY e.name"
    )
    assert per_experiment == [(name, 4, 1, 4) for name in names]
