"""Shared fixtures: small factories that go through the real services."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import browser_support
import pytest
import responses
from _pytest.mark.expression import Expression
from django.utils import timezone
from fake_skypilot import ENDPOINT, FakeSkyPilot

from experiments import services
from experiments.models import Checkpoint, Experiment, Job, JobStatus

_seq = itertools.count(1)

# Collecting these builds their cases up front (schemathesis: every operation's coverage cases,
# about 20 s) even when -m then deselects them: not collected at all when the marker expression
# (e.g. the default "not ... and not slow") refuses a test marked only `slow`.
_SLOW_TO_COLLECT = {"test_schemathesis.py"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name in _SLOW_TO_COLLECT:
        expression = config.getoption("markexpr")
        if expression and not Expression.compile(expression).evaluate(
            lambda name, /, **kwargs: name == "slow"
        ):
            return True
    return None


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hasher() -> Iterator[None]:
    """MD5 for the passwords tests set: PBKDF2's 1,000,000 rounds cost minutes per suite run.

    Only in this process; SkyDeck processes the tests start use the real hashers.
    """
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def _fresh_health(settings) -> None:
    """Each page asks health afresh (tests change sync states and look at the pills at once);
    tests/test_sampler.py proves the reuse with its own TTL."""
    settings.SKYDECK_HEALTH_CACHE_SECONDS = 0


@pytest.fixture(autouse=True)
def _no_throttle_leaks() -> None:
    """Each test starts with no API throttle counts (the cache); login lockouts (django-axes) live
    in the test database and go with it. (axes needs a request in ``authenticate()``: tests log in
    with ``force_login`` or through the login form, not ``Client.login``.)
    """
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def make_experiment(db):
    def make(name: str | None = None, **fields) -> Experiment:
        # Creating never sets the desired state (only Start/Stop/Adopt do): start it after.
        desired = fields.pop("desired_state", None)
        experiment = services.create_experiment(
            "tester", name=name or f"exp-{next(_seq)}", **fields
        )
        if desired == "RUNNING":
            services.set_desired_state("tester", [experiment], "RUNNING")
            experiment.refresh_from_db()
        return experiment

    return make


@pytest.fixture
def user(db):
    """A plain user (not staff, not read-only); files that need another one define their own."""
    from django.contrib.auth.models import User

    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def web(user):
    """A test client logged in as ``user``."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def token(user) -> str:
    """The API token key of ``user``."""
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=user).key


@pytest.fixture
def api(token):
    """A DRF test client sending ``user``'s token."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def readonly_api(db):
    """A DRF test client sending the token of ``viewer``, a member of the read-only group."""
    from django.contrib.auth.models import Group, User
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    viewer = User.objects.create_user("viewer")
    viewer.groups.add(Group.objects.get_or_create(name="read-only")[0])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=viewer).key}")
    return client


@pytest.fixture
def make_job(db):
    def make(job_id: int | None = None, name: str | None = "exp", **fields) -> Job:
        now = timezone.now()
        defaults = {
            "status": JobStatus.RUNNING,
            "job_name": name or "",
            "submitted_at": now - timedelta(minutes=5),
            "first_seen": now,
            "last_seen": now,
        }
        defaults.update(fields)
        return Job.objects.create(id=job_id or next(_seq) + 10_000, experiment_id=name, **defaults)

    return make


@pytest.fixture
def make_checkpoint(db):
    def make(experiment: Experiment, epoch: int, **fields) -> Checkpoint:
        defaults = {
            "model_path": f"s3://softmax-public/policies/{experiment.name}/{experiment.name}:v{epoch}.mpt",
            "policy_version": f"v{epoch}",
            "synced_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
        defaults.update(fields)
        return Checkpoint.objects.create(experiment=experiment, epoch=epoch, **defaults)

    return make


@pytest.fixture
def no_local_skypilot(monkeypatch) -> None:
    """No SkyPilot token, cookies or config of this machine reach the clients under test."""
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    monkeypatch.setenv("SKYPILOT_GLOBAL_CONFIG", "/nonexistent/config.yaml")


@pytest.fixture
def server(db, settings, monkeypatch, no_local_skypilot):
    """A SkyPilot API server double (the real request protocol) that SkyDeck is pointed at."""
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    monkeypatch.setattr("syncing.skypilot.pause", lambda s: None)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeSkyPilot(rsps)


# --- browser tests (marker `browser`; tests/browser_support.py) ------------------------------


def _note_csp_refusal(message, refused: list[str]) -> None:
    text = message.text
    if "Content Security Policy" in text or "evalDisallowed" in text:
        refused.append(f"{text} at {message.location}")


@pytest.fixture
def page(live_server, transactional_db, request, monkeypatch) -> Iterator:
    """A Chromium page (browser tests only); a failing test leaves a screenshot."""
    # Playwright's sync API runs an event loop in this thread; Django would then refuse the
    # ORM calls the tests make to seed and check the database (SynchronousOnlyOperation).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright import sync_api as playwright_api

    if not Path(browser_support.CHROMIUM).exists():
        pytest.fail(
            f"{browser_support.CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
        )
    failed_before = request.session.testsfailed
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_support.CHROMIUM, args=browser_support.CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.js_errors = errors
        # Every browser test also proves the UI works under the Content-Security-Policy: Chromium
        # logs each refused script, style or eval, and htmx logs the evals it was denied.
        refused: list[str] = []
        page.on("console", lambda msg: _note_csp_refusal(msg, refused))
        page.csp_violations = refused
        try:
            yield page
            assert refused == [], f"the page broke its Content-Security-Policy: {refused}"
        finally:
            if request.session.testsfailed > failed_before:
                browser_support.ARTIFACTS.mkdir(exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
                page.screenshot(path=str(browser_support.ARTIFACTS / f"{name}.png"), full_page=True)
            context.close()
            browser.close()


@pytest.fixture
def alice(transactional_db):
    from django.contrib.auth.models import User

    return User.objects.create_user("alice", password="correct-horse", first_name="Alice")
