"""Answer 503 "restoring" while ``skydeck restore`` replaces the database's contents.

The restore copies a snapshot into the live SQLite file in one transaction; a request that
writes meanwhile would either wait on the lock or be overwritten a moment later. Refusing up
front with ``Retry-After`` tells people and scripts to come back instead. It costs one ``stat``
per request (the marker file next to the database); on PostgreSQL it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html

from experiments import backup

RETRY_AFTER_SECONDS = 10
MESSAGE = "SkyDeck is restoring a backup; try again in a moment."


class RestoringMiddleware:
    """503 for every request but static files while a restore marker of a live process exists."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.static_prefix):
            return self.get_response(request)
        marker = backup.restore_in_progress()
        if marker is None:
            return self.get_response(request)
        return restoring_response(request)


def restoring_response(request: HttpRequest) -> HttpResponse:
    """JSON for the API (``{"status": "restoring", "detail": ...}``), a short page otherwise."""
    response: HttpResponse
    if request.path_info.startswith("/api/"):
        response = JsonResponse({"status": "restoring", "detail": MESSAGE}, status=503)
    else:
        response = HttpResponse(
            format_html(
                "<!doctype html><html><head><meta charset='utf-8'>"
                "<title>SkyDeck: restoring</title>"
                "<meta http-equiv='refresh' content='{}'></head>"
                "<body><h1>Restoring</h1><p>{}</p></body></html>",
                RETRY_AFTER_SECONDS,
                MESSAGE,
            ),
            status=503,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


# --- a full disk ----------------------------------------------------------------------------

STORAGE_FULL_MESSAGE = (
    "The database's disk is full: nothing was written. Free some space, then try again."
)
STORAGE_RETRY_AFTER_SECONDS = 60
#: When this process last saw a write fail for lack of space (``health_report`` reads it).
last_storage_full: float | None = None


def is_storage_full(exc: BaseException) -> bool:
    """A write that failed because the disk (or the database's quota) is full."""
    import errno

    from django.db import DatabaseError

    if isinstance(exc, OSError) and exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        return True
    if isinstance(exc, DatabaseError):
        text = str(exc).lower()
        return "database or disk is full" in text or "no space left on device" in text
    return False


def storage_full_response(request: HttpRequest) -> HttpResponse:
    """503 naming the cause: JSON for the API, a short page otherwise."""
    global last_storage_full
    import time

    last_storage_full = time.time()
    response: HttpResponse
    if request.path_info.startswith("/api/"):
        response = JsonResponse(
            {"status": "storage_full", "detail": STORAGE_FULL_MESSAGE}, status=503
        )
    else:
        response = HttpResponse(
            format_html(
                "<!doctype html><html><head><meta charset='utf-8'>"
                "<title>SkyDeck: disk full</title></head>"
                "<body><h1>Disk full</h1><p>{}</p></body></html>",
                STORAGE_FULL_MESSAGE,
            ),
            status=503,
        )
    response["Retry-After"] = str(STORAGE_RETRY_AFTER_SECONDS)
    return response


class StorageFullMiddleware:
    """A write that hits a full disk answers 503 with the reason, never Django's HTML 500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_storage_full(exception):
            return storage_full_response(request)
        return None


# --- Content-Security-Policy ----------------------------------------------------------------


class ContentSecurityPolicyMiddleware:
    """Send ``settings.CONTENT_SECURITY_POLICY`` on every response that does not set its own.

    The UI loads scripts and styles only from its static files and runs htmx without eval, so a
    script injected into a page (a name, a log line) could not run even if escaping missed it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if self.policy and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = self.policy
        return response
