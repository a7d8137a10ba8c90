"""Web views (thin: they call querysets and services)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from experiments.health import health_report


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Unauthenticated liveness check: ``curl -s localhost:8000/api/health``."""
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
