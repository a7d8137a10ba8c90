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

from backups import backup

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
