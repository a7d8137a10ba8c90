"""A real SkyPilot 0.14.1 API server on loopback, for integration tests.

SkyPilot lives in its own virtualenv (never a SkyDeck dependency), created once and cached at
``$SKYDECK_SKYPILOT_VENV`` (default ``~/.cache/skydeck-skypilot-venv``). The server runs with an
isolated HOME in consolidation mode, so launches create real job records that end in
FAILED_PRECHECKS without any cloud (see ../shared/docs/skypilot-api.md). Needs ``rsync``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SKYPILOT_VERSION = "0.14.1"


def venv_dir() -> Path:
    default = Path.home() / ".cache" / "skydeck-skypilot-venv"
    return Path(os.environ.get("SKYDECK_SKYPILOT_VENV", default)).expanduser()


def ensure_skypilot() -> Path:
    """The ``sky`` executable, installing SkyPilot into its cached virtualenv when missing."""
    venv = venv_dir()
    sky = venv / "bin" / "sky"
    if sky.exists():
        version = subprocess.run([str(sky), "--version"], capture_output=True, text=True)
        if SKYPILOT_VERSION in version.stdout:
            return sky
        shutil.rmtree(venv)
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"skypilot=={SKYPILOT_VERSION}"], check=True
    )
    return sky


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SkyPilotServer:
    endpoint: str
    home: Path
    env: dict[str, str]
    sky: Path

    def stop(self) -> None:
        subprocess.run(
            [str(self.sky), "api", "stop"], env=self.env, capture_output=True, timeout=120
        )

    def log(self) -> str:
        path = self.home / ".sky" / "api_server" / "server.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""


def start_server(home: Path) -> SkyPilotServer:
    """Start ``sky api start`` on a free loopback port with ``home`` as its HOME."""
    if not shutil.which("rsync"):
        raise RuntimeError("the SkyPilot API server needs rsync: apt-get install -y rsync")
    sky = ensure_skypilot()
    (home / ".sky").mkdir(parents=True, exist_ok=True)
    (home / ".sky" / "config.yaml").write_text(
        "jobs:\n  controller:\n    consolidation_mode: true\n"
    )
    port = free_port()
    env = {
        "PATH": f"{sky.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "SKYPILOT_API_SERVER_LOCAL_PORT": str(port),
        "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
        "LANG": "C.UTF-8",
    }
    subprocess.run(
        [str(sky), "api", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    server = SkyPilotServer(f"http://127.0.0.1:{port}", home, env, sky)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{server.endpoint}/api/health", timeout=5) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(1)
    server.stop()
    raise RuntimeError(f"SkyPilot API server did not become healthy:\n{server.log()}")
