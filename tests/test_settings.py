"""Settings from the environment, the --db-path option, SQLite tuning and the health endpoint.

These run ``manage.py`` in a subprocess, as a user would, against real SQLite files.
"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from processes import run_manage

from skydeck_site import env
from skydeck_site.cli import UsageError, extract_db_path
from skydeck_site.settings import postgres_database


def tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


@pytest.mark.slow  # manage.py in a subprocess
def test_default_database_lives_in_skydeck_home_with_wal(tmp_path):
    result = run_manage("migrate", "-v0", home=tmp_path)
    assert result.returncode == 0, result.stderr
    db = tmp_path / ".skydeck" / "skydeck.db"
    assert db.exists()
    assert {"experiments", "experiment_groups", "experiment_group_members", "jobs"} <= tables(db)
    assert {"checkpoints", "operation_logs", "sync_states"} <= tables(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    key = tmp_path / ".skydeck" / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_text().strip()) >= 32


@pytest.mark.slow  # manage.py in a subprocess
def test_db_path_option_and_env_var(tmp_path):
    by_option = tmp_path / "opt" / "one.db"
    result = run_manage("--db-path", str(by_option), "migrate", "-v0", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "experiments" in tables(by_option)
    assert not (tmp_path / ".skydeck" / "skydeck.db").exists()

    by_env = tmp_path / "env" / "two.db"
    result = run_manage("migrate", "-v0", home=tmp_path, extra_env={"SKYDECK_DB_PATH": str(by_env)})
    assert result.returncode == 0, result.stderr
    assert "experiments" in tables(by_env)

    # --db-path=... form, after the command name, reaches the same file
    result = run_manage(
        "shell", "-c", "from experiments.models import Experiment; Experiment.objects.create(name='viaopt')",
        f"--db-path={by_option}", home=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(by_option) as conn:
        assert conn.execute("SELECT name FROM experiments").fetchall() == [("viaopt",)]


@pytest.mark.slow  # manage.py in a subprocess
def test_runtime_connection_pragmas(tmp_path):
    db = tmp_path / "p.db"
    code = (
        "from django.db import connection\n"
        "c = connection.cursor()\n"
        "print([c.execute(f'PRAGMA {p}').fetchone()[0] for p in "
        "('journal_mode', 'synchronous', 'busy_timeout', 'foreign_keys')])\n"
    )
    result = run_manage("--db-path", str(db), "shell", "-c", code, home=tmp_path)
    assert result.returncode == 0, result.stderr
    # synchronous=1 is NORMAL
    assert result.stdout.strip().splitlines()[-1] == "['wal', 1, 20000, 1]"


@pytest.mark.slow  # manage.py in a subprocess
@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("SKYDECK_DEBUG", "maybe", "SKYDECK_DEBUG"),
        ("SKYDECK_SYNC_SKYPILOT_INTERVAL", "fast", "SKYDECK_SYNC_SKYPILOT_INTERVAL"),
        ("SKYDECK_SYNC_S3_INTERVAL", "1", "too small"),
        ("SKYDECK_SYNC_S3_INTERVAL", "45", "cannot be scheduled"),
        ("DATABASE_URL", "mysql://x/y", "not supported"),
        ("SKYDECK_SECRET_KEY", "short", "too short"),
    ],
)
def test_bad_settings_stop_start_up_with_a_clear_message(tmp_path, name, value, words):
    result = run_manage("check", home=tmp_path, extra_env={name: value})
    assert result.returncode != 0
    assert words in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # manage.py in a subprocess
def test_db_path_without_value_is_a_usage_error(tmp_path):
    result = run_manage("migrate", "--db-path", home=tmp_path)
    assert result.returncode == 2
    assert "--db-path needs a file path" in result.stderr


@pytest.mark.slow  # manage.py in a subprocess
def test_db_path_and_database_url_conflict(tmp_path):
    result = run_manage(
        "--db-path", str(tmp_path / "x.db"), "check", home=tmp_path,
        extra_env={"DATABASE_URL": "postgres://u@localhost/db"},
    )  # fmt: skip
    assert result.returncode != 0
    assert "choose one database" in result.stderr


def test_extract_db_path():
    assert extract_db_path(["migrate", "--db-path", "a.db", "-v0"]) == (["migrate", "-v0"], "a.db")
    assert extract_db_path(["--db-path=b.db", "check"]) == (["check"], "b.db")
    assert extract_db_path(["check"]) == (["check"], None)
    with pytest.raises(UsageError):
        extract_db_path(["check", "--db-path="])


def test_database_url_parsing():
    db = postgres_database("postgres://skydeck:p%40ss@db.example:5433/skydeck")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "skydeck", "skydeck", "p@ss", "db.example", "5433",
    )  # fmt: skip
    with pytest.raises(ImproperlyConfigured):
        postgres_database("postgres://host/")


def test_env_readers(monkeypatch):
    monkeypatch.setenv("X_BOOL", "Yes")
    monkeypatch.setenv("X_INT", "5")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env.envbool("X_BOOL", False) is True
    assert env.envint("X_INT", 1, minimum=1) == 5
    assert env.envlist("X_LIST", []) == ["a", "b", "c"]
    assert env.envint("X_UNSET", 7) == 7
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="X_INT"):
        env.envint("X_INT", 1, minimum=1)
    monkeypatch.setenv("X_FLOAT", "inf")
    with pytest.raises(ImproperlyConfigured, match="finite"):
        env.envfloat("X_FLOAT", 1.0)


def test_health_is_public_json_without_secrets(client, db, settings):
    from django.contrib.auth.models import User

    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert "sync" not in body and "log in" in body["detail"]  # details only after login
    assert settings.SECRET_KEY not in response.content.decode()
    client.force_login(User.objects.create_user("watcher"))
    assert set(client.get("/api/health").json()["sync"]) == {"skypilot", "s3"}


def test_health_reports_a_failed_sync_only_to_a_login_or_token(client, db):
    from django.contrib.auth.models import User
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from experiments.models import SyncState

    error = "cannot reach SkyPilot at http://sky.internal:46580: connection refused"
    SyncState.objects.create(source="skypilot", last_attempt_at=timezone.now(), last_error=error)
    anonymous = client.get("/api/health")
    assert anonymous.status_code == 200 and anonymous.json()["status"] == "ok"
    assert "sky.internal" not in anonymous.content.decode()  # no upstream endpoint or error text
    token = Token.objects.create(user=User.objects.create_user("monitor")).key
    body = client.get("/api/health", HTTP_AUTHORIZATION=f"Token {token}").json()
    assert body["sync"]["skypilot"]["ok"] is False
    assert body["sync"]["skypilot"]["last_error"] == error
    bad = client.get("/api/health", HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.status_code == 401 and bad.json() == {"detail": "Invalid token."}
    client.force_login(User.objects.get(username="monitor"))
    assert client.get("/api/health").json()["sync"]["skypilot"]["last_error"] == error


def test_admin_requires_login(client, db):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_health_answers_405_not_a_csrf_page_to_other_methods(client, db):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/api/health")
    assert response.status_code == 405
