"""Running SkyDeck's own commands in a subprocess, for settings read at start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aws_isolation import isolated_environ

ROOT = Path(__file__).resolve().parent.parent
MANAGE = str(ROOT / "manage.py")

#: What the suite's own process is set up with and a user's fresh shell would not have.
SUITE_ONLY = {"SKYDECK_DB_PATH", "DATABASE_URL", "SKYDECK_SECRET_KEY", "DJANGO_SETTINGS_MODULE"}


def run_python(*args: str, env: dict[str, str], timeout: float = 120, **kwargs):
    """``python *args`` from the project root; its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        **kwargs,
    )


def run_manage(
    *args: str, home: Path, extra_env: dict[str, str] | None = None, timeout: float = 120, **kwargs
) -> subprocess.CompletedProcess:
    """``manage.py *args`` as a user would run it, with ``home`` as HOME: none of the suite's
    database, secret key or settings module; ``extra_env`` on top."""
    environ = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY}
    environ.update({"HOME": str(home), "SKYDECK_HOME": str(home / ".skydeck")})
    environ.update(extra_env or {})
    return run_python(MANAGE, *args, env=environ, timeout=timeout, **kwargs)


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A child environment on its own SKYDECK_HOME, never the suite's database or AWS config,
    and with no SkyPilot credentials; the reconciler off."""
    drop = {"DATABASE_URL", "SKYDECK_DB_PATH"}
    environ = isolated_environ({k: v for k, v in os.environ.items() if k not in drop}, tmp)
    environ.update(
        HOME=str(tmp),
        SKYDECK_HOME=str(tmp / "home"),
        SKYPILOT_API_COOKIE_FILE=str(tmp / "no-cookies.txt"),
        SKYDECK_RECONCILE="off",
        SKYDECK_LOG_LEVEL="WARNING",
    )
    environ.pop("SKYPILOT_SERVICE_ACCOUNT_TOKEN", None)
    environ.update(extra)
    return environ


def shell_last_line(code: str, environ: dict[str, str]) -> str:
    """Run ``manage.py shell -c code`` with ``environ``; the last line it printed.

    The last, because the shell prints its auto-import notice first. A failed run fails the test
    with the command's stderr.
    """
    result = run_python(MANAGE, "shell", "-c", code, env=environ)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
