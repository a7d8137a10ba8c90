"""deploy/: one systemd unit per role, as the README's "Running several nodes" describes, each
one parsed by ``systemd-analyze verify`` (where it exists: on this project's machines it does)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = {
    "skydeck.service": "serve --host 127.0.0.1 --port 8000",
    "skydeck-web.service": "serve --no-worker --no-migrate",
    "skydeck-worker.service": "worker",
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(DEPLOY / name)
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_runs_its_role_as_a_service(name):
    parsed = unit(name)
    service = parsed["Service"]
    assert service["ExecStart"].startswith("/opt/skydeck/.venv/bin/skydeck ")
    assert UNITS[name] in service["ExecStart"]
    assert service["EnvironmentFile"] == "/etc/skydeck/skydeck.env"
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert service["User"] == "skydeck"
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


def test_the_roles_are_real_commands():
    from django.core.management import get_commands

    commands = get_commands()
    assert {"serve", "worker", "migrate"} <= set(commands)


def test_the_example_environment_names_real_settings():
    text = (DEPLOY / "skydeck.env.example").read_text()
    names = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and line[0] != "#"}
    readme = (DEPLOY.parent / "README.md").read_text()
    assert names <= {n for n in names if n in readme}, names - {n for n in names if n in readme}


@pytest.mark.slow  # CI's machines have systemd-analyze; a fresh laptop running the README's
# test command may not, so this runs with the slow proofs, and fails there if it is missing
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verifies_each_unit(tmp_path, name):
    """verify wants the executable to exist: a copy of the unit points at a stand-in."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (CI's machines have it)")
    skydeck = tmp_path / "skydeck"
    skydeck.write_text("#!/bin/sh\n")
    skydeck.chmod(0o755)
    text = (DEPLOY / name).read_text().replace("/opt/skydeck/.venv/bin/skydeck", str(skydeck))
    copy = tmp_path / name
    copy.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # it may warn about the host (no such user here, no PostgreSQL unit): not about the unit file
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if name in line and ("Unknown" in line or "Invalid" in line or "Failed to parse" in line)
    ]
    assert problems == [], result.stdout + result.stderr
