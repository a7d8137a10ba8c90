"""Site-wide middleware: a full disk answers 503 naming it (``skydeck_site.storage``); every
response carries the CSP.

The restore middleware (503 while ``skydeck restore`` runs) lives with the backups app.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.gzip import GZipMiddleware

from skydeck_site.storage import is_storage_full, storage_full_response

# --- a full disk ----------------------------------------------------------------------------


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


class CompressionMiddleware(GZipMiddleware):
    """gzip for whole answers (the deck's HTML is mostly repeated markup: about 10x smaller).

    Streams pass untouched: a gzip stream holds lines back until its buffer fills, and the job
    log's Server-Sent Events must reach the browser as they come. Django's GZipMiddleware pads
    each answer with random bytes against BREACH (CSRF tokens are in the pages).
    """

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.streaming:
            return response
        return super().process_response(request, response)
