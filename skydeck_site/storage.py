"""A write that hits a full disk: how to recognise it and the 503 that names it.

A helper module with no SkyDeck imports, so the middleware, the API's exception handler and
the health report (which warns while writes recently failed) share one answer.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html

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
