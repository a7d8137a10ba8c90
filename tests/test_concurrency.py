"""Leases on a real SQLite file (WAL) under concurrent processes: exactly one wins."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# a race between real processes (.ci/run runs it: -m slow)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SKYDECK_DB_PATH"}}
    environ.update(HOME=str(tmp_path), SKYDECK_HOME=str(tmp_path / "home"))
    return environ


def test_only_one_process_gets_the_lease(tmp_path):
    db = tmp_path / "race.db"
    env = _env(tmp_path)
    manage = [sys.executable, str(ROOT / "manage.py"), "--db-path", str(db)]
    subprocess.run([*manage, "migrate", "-v0"], check=True, env=env, cwd=ROOT)
    start_at = time.time() + 4  # every process starts its attempt at the same moment
    code = (
        "import time\n"
        "from syncing.leases import acquire\n"
        f"time.sleep(max(0, {start_at} - time.time()))\n"
        "print('RESULT', acquire('skypilot', '{owner}', 60))\n"
    )
    procs = [
        subprocess.Popen(
            [*manage, "shell", "-c", code.replace("{owner}", f"proc-{i}")],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(out.strip().splitlines()[-1])
    assert sorted(results) == ["RESULT False"] * 5 + ["RESULT True"]
    assert "database is locked" not in "".join(results)
