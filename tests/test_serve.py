"""The run command: ``skydeck serve`` migrates, serves the site and the worker, and stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from processes import run_python

from skydeck_site import cli

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_skydeck_without_a_command_means_serve(monkeypatch):
    calls = []
    monkeypatch.setattr("django.core.management.execute_from_command_line", calls.append)
    monkeypatch.delenv("SKYDECK_DB_PATH", raising=False)
    cli.main(["skydeck", "--port", "9000"])
    cli.main(["skydeck"])
    cli.main(["skydeck", "--db-path", "/tmp/x.db", "migrate"])
    assert calls == [
        ["skydeck", "serve", "--port", "9000"],
        ["skydeck", "serve"],
        ["skydeck", "migrate"],
    ]
    assert os.environ["SKYDECK_DB_PATH"] == "/tmp/x.db"


def test_manage_py_keeps_djangos_behaviour(monkeypatch):
    calls = []
    monkeypatch.setattr("django.core.management.execute_from_command_line", calls.append)
    cli.main(["manage.py"], serve_by_default=False)
    assert calls == [["manage.py"]]


@pytest.mark.slow  # starts skydeck serve
def test_serve_runs_web_and_worker_and_stops_on_sigterm(tmp_path):
    port = free_port()
    db = tmp_path / "serve.db"
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SKYDECK_DB_PATH"}}
    environ.update(
        HOME=str(tmp_path),
        SKYDECK_HOME=str(tmp_path / "home"),
        SKYDECK_STATIC_ROOT=str(tmp_path / "static"),
        SKYDECK_WORKER_LOG_LEVEL="INFO",  # django-q2's "Q Cluster ... running." shows the worker ran
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "skydeck_site.cli", "--db-path", str(db), "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    body = json.load(r)
                    break
            except OSError:
                time.sleep(0.3)
        assert body is not None, "server did not answer /api/health"
        assert body["status"] == "ok"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.css") as r:
            assert r.status == 200
            assert len(r.read()) > 1000
        # migrations were applied to the chosen file, and the worker registered itself
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
        # the django-q2 worker comes up beside the web server
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("running." in line for line in lines):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        reader.join(timeout=10)
        output = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert "createsuperuser" in output  # first start with no user says how to make one
    assert "Q Cluster" in output and "running." in output  # the django-q2 worker ran
    assert "SkyDeck stopped" in output


@pytest.mark.slow  # starts skydeck serve
def test_a_malformed_skydeck_port_is_one_line_not_a_traceback(tmp_path):
    env = {**os.environ, "SKYDECK_PORT": "80 80", "SKYDECK_HOME": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    cli_args = ["-m", "skydeck_site.cli", "--db-path", str(tmp_path / "d.db"), "serve"]
    done = run_python(*cli_args, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "configuration error: SKYDECK_PORT='80 80' is not a whole number"


def test_a_busy_port_is_refused_before_serving_and_names_another(db, capsys):
    import pytest
    from django.core.management import CommandError, call_command

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"port {port} on 127.0.0.1 is already in use") as e:
            call_command("serve", "--port", str(port), "--no-migrate")
    assert f"skydeck serve --port {port + 1}" in str(e.value)
    assert "serving" not in capsys.readouterr().out  # nothing claimed it was up
