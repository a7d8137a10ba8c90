"""Two ``skydeck serve`` nodes on one PostgreSQL (issue 18's start): the second serves the web
and stands by for the worker; when the first is SIGKILLed, the second takes the worker over and
health lists both nodes by id. Real processes on a database of their own (slow)."""

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
from pathlib import Path

import psycopg
import pytest
from processes import ROOT, child_env

pytestmark = pytest.mark.slow

ADMIN_URL = os.environ.get("SKYDECK_CI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


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


def test_a_second_node_stands_by_and_takes_the_worker_over(tmp_path, database):
    a = Node(tmp_path, "node-a", database, migrate=True)
    b = None
    try:
        a.wait_for(a.health, 90, "never answered /api/health")
        a.token = a.make_token()
        b = Node(tmp_path, "node-b", database, migrate=False)
        b.token = a.token
        b.wait_for(b.health, 90, "never answered /api/health")
        assert "node-a" in b.output() and "takes the worker over" in b.output(), b.output()

        def both():
            report = b.health() or {}
            nodes = {n["node"]: n for n in report.get("nodes", [])}
            return nodes if {"node-a", "node-b"} <= set(nodes) else None

        nodes = b.wait_for(both, 30, "health never listed both nodes")
        assert nodes["node-a"]["roles"] == ["web", "worker"]
        assert nodes["node-b"]["roles"] == ["web"]  # standing by
        # the first node dies without a word: the second runs the worker within a heartbeat or
        # two (a dead process on this machine lets go of its lease at once)
        killed_at = time.monotonic()
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        b.wait_for(lambda: "took over the worker" in b.output(), 60, "never took the worker")
        took = time.monotonic() - killed_at

        def worker_on_b():
            nodes = both() or {}
            roles = nodes.get("node-b", {}).get("roles")
            return nodes if roles == ["web", "worker"] else None

        nodes = b.wait_for(worker_on_b, 30, "health never showed node-b's worker")
        gone = b.wait_for(
            lambda: (both() or {}).get("node-a", {}).get("state") == "gone", 40, "node-a never gone"
        )
        assert gone
        report = b.health()
        assert report["status"] == "ok"  # one node gone: a warning, the deck still serves
        assert any(
            w.startswith("node node-a (web, worker) has not been seen") for w in report["warnings"]
        )
        assert took < 30, took
    finally:
        for node in (a, b):
            if node is not None and node.proc.poll() is None:
                node.stop()
    assert b.proc.returncode == 0, b.output()
