"""Login lockout (django-axes) on /accounts/login/ and /admin/login/, and the API's throttles."""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.management import call_command
from django.db.models import F
from django.test import Client
from processes import shell_last_line
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/?next=/admin/"
HOME = "10.1.1.1"
ELSEWHERE = "10.2.2.2"
PASSWORD = "right-pw-1"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """DRF's throttle counts live in the cache: every test starts (and ends) with none."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def boss(db):
    return User.objects.create_user("boss", password=PASSWORD, is_staff=True, is_superuser=True)


def attempt(client: Client, password: str, ip: str = HOME, user: str = "alice", path: str = LOGIN):
    return client.post(path, {"username": user, "password": password}, REMOTE_ADDR=ip)


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def lock_out(client: Client, ip: str = HOME, user: str = "alice", path: str = LOGIN):
    """The configured number of wrong passwords; the last one answers the lockout page."""
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        assert attempt(client, "wrong", ip, user, path).status_code == 200
    return attempt(client, "wrong", ip, user, path)


def test_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"
    assert settings.MIDDLEWARE[-1] == "axes.middleware.AxesMiddleware"


# (a) after N wrong passwords the right one is refused, and the session is not logged in
def test_right_password_is_refused_after_the_failure_limit(alice):
    client = Client()
    assert lock_out(client).status_code == 429
    response = attempt(client, PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)
    assert client.get("/")["Location"].startswith(LOGIN)


def test_failures_below_the_limit_still_let_the_right_password_in_and_reset_the_count(alice):
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(limit - 1):
        attempt(client, "wrong")
    assert attempt(client, PASSWORD).status_code == 302
    assert logged_in(client)
    assert not AccessAttempt.objects.exists()  # reset on success
    client = Client()
    for _ in range(limit - 1):
        assert attempt(client, "wrong").status_code == 200
    assert attempt(client, PASSWORD).status_code == 302


def test_a_forged_x_forwarded_for_does_not_dodge_the_lockout(alice):
    """Not behind a proxy, the address is REMOTE_ADDR whatever X-Forwarded-For says."""
    client = Client()
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post(
            LOGIN,
            {"username": "alice", "password": "wrong"},
            REMOTE_ADDR=HOME,
            HTTP_X_FORWARDED_FOR=f"81.2.69.{n + 1}",
        )
    response = client.post(
        LOGIN,
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR=HOME,
        HTTP_X_FORWARDED_FOR="81.2.69.200",
    )
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {HOME}


# (b) a readable page, not a 500, the same whether or not the password was right
def test_lockout_page_is_readable_and_tells_nothing_about_the_password(alice):
    client = Client()
    lock_out(client)
    wrong = attempt(client, "still-wrong")
    right = attempt(client, PASSWORD)
    for response in (wrong, right):
        assert response.status_code == 429
        assert response["Content-Type"].startswith("text/html")
        text = response.content.decode()
        assert "<title>Too many login attempts · SkyDeck</title>" in text
        assert "Try again in 15 minutes" in text
        assert "axes_reset_username" in text
        assert "didn't match" not in text
        assert 'href="/accounts/login/"' in text

    def strip(html: str) -> str:
        return re.sub(r'"X-CSRFToken": "[^"]*"', "", html)

    assert strip(wrong.content.decode()) == strip(right.content.decode())


# (c) the lock is per user name and address: alice from elsewhere, and others from here, get in
def test_another_address_can_still_log_in_as_that_user(alice):
    lock_out(Client())
    other = Client()
    assert attempt(other, PASSWORD, ip=ELSEWHERE).status_code == 302
    assert logged_in(other)
    # and the lock at HOME is untouched by that success elsewhere
    assert attempt(Client(), PASSWORD, ip=HOME).status_code == 429


def test_another_user_at_the_same_address_is_not_locked(alice, boss):
    lock_out(Client())
    client = Client()
    assert attempt(client, PASSWORD, user="boss").status_code == 302
    assert logged_in(client)


def travel(delta: timedelta) -> None:
    """Move every recorded attempt back in time by ``delta``."""
    AccessAttempt.objects.update(attempt_time=F("attempt_time") - delta)


# (d) after the cool-off the right password works (the attempts are moved back in time)
def test_right_password_works_again_after_the_cool_off(alice):
    lock_out(Client())
    cooloff = settings.AXES_COOLOFF_TIME
    travel(cooloff - timedelta(minutes=1))
    assert attempt(Client(), PASSWORD).status_code == 429  # a minute to go: refused...
    travel(timedelta(minutes=2))
    assert attempt(Client(), PASSWORD).status_code == 429  # ...and that attempt restarted the wait
    travel(cooloff + timedelta(seconds=1))
    client = Client()
    assert attempt(client, PASSWORD).status_code == 302
    assert logged_in(client)


# (e) the admin's login is covered, and shares the count with the site's
def test_admin_login_is_locked_out_too(boss):
    client = Client()
    assert lock_out(client, user="boss", path=ADMIN_LOGIN).status_code == 429
    response = attempt(client, PASSWORD, user="boss", path=ADMIN_LOGIN)
    assert response.status_code == 429
    assert "Too many login attempts" in response.content.decode()
    assert not logged_in(client)
    assert attempt(client, PASSWORD, user="boss").status_code == 429  # /accounts/login/ as well


def test_failures_on_the_site_lock_the_admin_login(boss):
    lock_out(Client(), user="boss")
    client = Client()
    assert attempt(client, PASSWORD, user="boss", path=ADMIN_LOGIN).status_code == 429
    assert client.get("/admin/").status_code == 302


# (f) a refused attempt costs no password hashing (that CPU is what slowed every page)
def test_a_locked_out_attempt_does_not_hash_the_password(alice, monkeypatch):
    calls = []
    for name in ("verify", "encode"):
        real = getattr(MD5PasswordHasher, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MD5PasswordHasher, name, spy)
    attempt(Client(), "wrong", ip=ELSEWHERE)
    assert "verify" in calls  # the spy sees a normal attempt's check
    client = Client()
    lock_out(client)
    calls.clear()
    assert attempt(client, PASSWORD).status_code == 429
    assert attempt(client, "wrong").status_code == 429
    assert (
        attempt(client, "wrong", user="nobody-here").status_code == 200
    )  # another name is checked
    assert calls == ["encode"]  # ...only that one (Django hashes for an unknown name, too)


# (g) an admin clears a lockout with axes' commands
@pytest.mark.parametrize("command", [("axes_reset_username", "alice"), ("axes_reset",)])
def test_reset_command_clears_the_lockout(alice, command):
    lock_out(Client())
    call_command(*command, verbosity=0)
    client = Client()
    assert attempt(client, PASSWORD).status_code == 302
    assert logged_in(client)


# axes needs a request in authenticate(): the API's token and session logins never call it
def test_token_and_session_logins_still_work(alice):
    token = APIClient()
    token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    assert token.get("/api/experiments/").status_code == 200
    forced = Client()
    forced.force_login(alice)
    assert forced.get("/").status_code == 200
    assert forced.get("/api/experiments/").status_code == 200


# (h) DRF throttles


class OpenView(APIView):
    """A view anyone may call: real API views need a login, which DRF checks before throttles."""

    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"ok": True})


@pytest.fixture
def tiny_rates(monkeypatch):
    # DRF read the rates into the class when it was imported: patch them there.
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/min", "user": "5/min"})


def assert_throttled(response):
    if hasattr(response, "render"):
        response.render()  # a view called directly, outside the request cycle
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    body = json.loads(response.content)
    assert re.fullmatch(
        r"Request was throttled\. Expected available in \d+ seconds?\.", body["detail"]
    )


def test_settings_throttle_every_api_view():
    rest = settings.REST_FRAMEWORK
    assert rest["DEFAULT_THROTTLE_CLASSES"] == [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ]
    assert rest["DEFAULT_THROTTLE_RATES"] == {"anon": "60/min", "user": "10000/min"}
    assert rest["NUM_PROXIES"] == 0
    assert not settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache")


def test_anonymous_requests_beyond_the_rate_get_429_with_retry_after(tiny_rates):
    factory, view = APIRequestFactory(), OpenView.as_view()

    def get(ip: str, **headers):
        return view(factory.get("/open", REMOTE_ADDR=ip, **headers))

    for _ in range(3):
        assert get(HOME).status_code == 200
    assert_throttled(get(HOME))
    assert_throttled(get(HOME, HTTP_X_FORWARDED_FOR="81.2.69.9"))  # a forged address is ignored
    assert get(ELSEWHERE).status_code == 200  # counted per address


def test_a_users_throttle_is_separate_from_the_anonymous_one(tiny_rates, alice):
    factory, view = APIRequestFactory(), OpenView.as_view()
    for _ in range(4):
        view(factory.get("/open", REMOTE_ADDR=HOME))
    assert view(factory.get("/open", REMOTE_ADDR=HOME)).status_code == 429
    client = APIClient(REMOTE_ADDR=HOME)
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    for _ in range(5):
        assert client.get("/api/experiments/").status_code == 200
    assert_throttled(client.get("/api/experiments/"))  # a real view, its JSON exception handler
    other = User.objects.create_user("bob")
    bob = APIClient(REMOTE_ADDR=HOME)
    bob.force_authenticate(other)
    assert bob.get("/api/experiments/").status_code == 200  # counted per user


def test_behind_the_proxy_the_right_most_forwarded_address_counts(tmp_path):
    """SKYDECK_BEHIND_HTTPS_PROXY: the address our proxy appended, not one the client forged."""
    code = (
        "from django.test import RequestFactory\n"
        "from axes.helpers import get_client_ip_address\n"
        "from rest_framework.throttling import AnonRateThrottle\n"
        "from rest_framework.request import Request\n"
        "r = RequestFactory().post('/accounts/login/', REMOTE_ADDR='10.9.9.9',\n"
        "    HTTP_X_FORWARDED_FOR='9.9.9.9, 81.2.69.160')\n"
        "d = RequestFactory().post('/accounts/login/', REMOTE_ADDR='10.9.9.9')\n"
        "print(get_client_ip_address(r), get_client_ip_address(d),\n"
        "    AnonRateThrottle().get_ident(Request(r)))\n"
    )
    environ = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "SKYDECK_DB_PATH"}}
    environ.update(SKYDECK_HOME=str(tmp_path), SKYDECK_BEHIND_HTTPS_PROXY="true")
    assert shell_last_line(code, environ).split() == ["81.2.69.160", "10.9.9.9", "81.2.69.160"]
