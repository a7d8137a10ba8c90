"""Shared set-up of the browser tests: Debian's chromium driven by Playwright (no download).

Launched as /work/shared/docs/browser-tests.md describes. A failing test leaves a full-page
screenshot in ``test-artifacts/``. The ``page`` and ``alice`` fixtures are in conftest.py.
"""

from __future__ import annotations

import re
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def login(page, live_server) -> None:
    """Sign in as the ``alice`` fixture's user through the real login form."""
    from playwright.sync_api import expect

    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    page.fill("#id_username", "alice")
    page.fill("#id_password", "correct-horse")
    page.click("button:has-text('Log in')")
    expect(page.locator(".username")).to_have_text("Alice")
    expect(page.locator("#deck")).to_be_visible()
