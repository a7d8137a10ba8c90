"""Two ``skydeck serve`` nodes on one PostgreSQL (issue 18), each running its worker: health
lists both with the worker role; over three schedule periods the SkyPilot sync schedule fires
once per period, not once per node (django-q2 locks due schedules with SELECT ... FOR UPDATE);
when one node is SIGKILLed the other keeps syncing and health shows the killed node gone. Real
processes on a database of their own (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from processes import ROOT, child_env

# on a PostgreSQL database of its own, whatever the suite's: run once, with the PostgreSQL step
pytestmark = [pytest.mark.slow, pytest.mark.own_postgres]

ADMIN_URL = os.environ.get("SKYDECK_CI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
#: The SkyPilot sync's interval here: a cron schedule due at :00 and :30 of every minute, and
#: django-q2's scheduler of each cluster looks every 30 s, so each period's due time is seen by
#: both clusters and must be run by exactly one of them.
PERIOD = 30
SYNC_TASK = "syncing.tasks.sync_jobs_and_reconcile"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def database():
    """A PostgreSQL database of this test's own (dropped after)."""
    name = f"skydeck_nodes_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


class Node:
    def __init__(self, tmp: Path, name: str, database: str, *, migrate: bool) -> None:
        self.name, self.port = name, free_port()
        (tmp / name).mkdir(parents=True, exist_ok=True)
        env = child_env(
            tmp / name,
            DATABASE_URL=database,
            SKYDECK_NODE_ID=name,
            SKYDECK_SECRET_KEY="x" * 40,
            SKYDECK_STATIC_ROOT=str(tmp / name / "static"),
            SKYDECK_NODE_GONE_SECONDS="15",
            SKYDECK_SYNC_SKYPILOT_INTERVAL=str(PERIOD),
            # nothing listens there: each pass fails at once, and is still a pass
            SKYDECK_SKYPILOT_ENDPOINT=f"http://127.0.0.1:{free_port()}",
            SKYPILOT_API_COOKIE_FILE=str(tmp / name / "no-cookies.txt"),
        )
        argv = [sys.executable, "-m", "skydeck_site.cli", "serve", "--port", str(self.port)]
        if not migrate:
            argv.append("--no-migrate")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.env = env
        self.token = ""
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True).start()

    def output(self) -> str:
        return "".join(self.lines)

    def health(self) -> dict | None:
        """The full report (an API token's view), or None while it does not answer."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/health",
            headers={"Authorization": f"Token {self.token}"} if self.token else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=3) as r:
                return json.load(r)
        except OSError:
            return None

    def nodes(self) -> dict[str, dict]:
        return {n["node"]: n for n in (self.health() or {}).get("nodes", [])}

    def make_token(self) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "skydeck_site.cli", "tokens", "create", "ops", "--create-user"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip()

    def wait_for(self, what, timeout: float, why: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = what()
            if value:
                return value
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"{self.name}: {why}; its output:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def sync_runs(database: str) -> list[float]:
    """When each run of the SkyPilot sync task started (epoch seconds), from django-q2's table."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT started FROM django_q_task WHERE func = %s ORDER BY started", [SYNC_TASK]
        ).fetchall()
    return [row[0].timestamp() for row in rows]


def last_attempt(database: str) -> float:
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT last_attempt_at FROM sync_states WHERE source = 'skypilot'"
        ).fetchone()
    return row[0].timestamp() if row and row[0] else 0.0


def test_both_nodes_run_workers_each_schedule_runs_once_and_a_killed_node_is_replaced(
    tmp_path, database
):
    a = Node(tmp_path, "node-a", database, migrate=True)
    b = None
    try:
        a.wait_for(a.health, 90, "never answered /api/health")
        a.token = a.make_token()
        b = Node(tmp_path, "node-b", database, migrate=False)
        b.token = a.token
        b.wait_for(b.health, 90, "never answered /api/health")
        assert "already runs on this database" not in b.output()  # no standby, no refusal

        def both_working():
            nodes = b.nodes()
            roles = {name: nodes.get(name, {}).get("roles") for name in ("node-a", "node-b")}
            return roles if all(r == ["web", "worker"] for r in roles.values()) else None

        b.wait_for(both_working, 30, "health never listed both nodes with a worker")

        # three schedule periods with both clusters looking at the schedule every 30 s
        watch_from = (time.time() // PERIOD + 1) * PERIOD  # the next due time
        b.wait_for(lambda: time.time() > watch_from + 3 * PERIOD + 5, 3 * PERIOD + 45, "died")
        runs = [t for t in sync_runs(database) if watch_from < t <= watch_from + 3 * PERIOD]
        # a run of the schedule due at d starts after d, within the 30 s the schedulers wake in
        per_period = Counter(int((t - watch_from - 0.001) // PERIOD) for t in runs)
        assert [per_period[k] for k in range(3)] == [1, 1, 1], (runs, watch_from)

        # node-a dies without a word: node-b's worker goes on syncing, node-a shows as gone
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        killed = time.time()
        b.wait_for(
            lambda: last_attempt(database) > killed, 2 * PERIOD + 15, "stopped syncing after"
        )
        assert b.nodes()["node-b"]["roles"] == ["web", "worker"]
        b.wait_for(lambda: b.nodes().get("node-a", {}).get("state") == "gone", 40, "a not gone")
        report = b.health()
        assert report["status"] == "ok"  # one node gone: a warning, the deck still serves
        assert any(
            w.startswith("node node-a (web, worker) has not been seen") for w in report["warnings"]
        )
    finally:
        for node in (a, b):
            if node is not None and node.proc.poll() is None:
                node.stop()
    assert b.proc.returncode == 0, b.output()
