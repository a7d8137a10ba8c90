"""Running SkyDeck's own commands in a subprocess, for settings read at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shell_last_line(code: str, environ: dict[str, str]) -> str:
    """Run ``manage.py shell -c code`` with ``environ``; the last line it printed.

    The last, because the shell prints its auto-import notice first. A failed run fails the test
    with the command's stderr.
    """
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        capture_output=True,
        text=True,
        env=environ,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]
