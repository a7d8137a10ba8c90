"""Sync status and trigger, API metadata, the docs page, JSON 404s and the schema hook."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import format_html, format_html_join
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.api.bulk import BULK_ACTIONS
from experiments.api.schema import MetaSerializer, SyncQueuedSerializer, SyncStatusSerializer
from experiments.api.serializers import EXCLUSIVE_FIELDS, SyncTriggerSerializer
from experiments.models import (
    CURRENT_STATE_CHOICES,
    DesiredState,
    JobStatus,
    Operation,
)
from experiments.services import READ_ONLY_GROUP, is_read_only_user
from syncing import services as door

from .common import StrictQueryParams, errors

API_VERSION = "1"


def skydeck_version() -> str:
    try:
        return metadata.version("skydeck")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "unknown"


class SyncView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Sync status",
        description="For each source (SkyPilot jobs, S3 checkpoints): last attempt and "
        "success, error, staleness, whether a pass runs now, and the counts of the last pass; "
        "and whether the background worker is alive.",
        responses={200: SyncStatusSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(door.sync_status())

    @extend_schema(
        summary="Trigger a sync",
        description="Queues one pass of each source (default: every available one) for the "
        "background worker and answers at once with the task ids. The SkyPilot pass also "
        "reconciles (unless SKYDECK_RECONCILE=off).",
        request=SyncTriggerSerializer,
        responses={202: SyncQueuedSerializer, **errors(400, 403, 415)},
    )
    def post(self, request: Request) -> Response:
        serializer = SyncTriggerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tasks = door.request_sync(request.user, serializer.validated_data.get("sources"))
        except door.SyncUnavailable as exc:
            raise exceptions.ValidationError({"sources": [str(exc)]}) from exc
        return Response({"tasks": tasks}, status=status.HTTP_202_ACCEPTED)


class MetaView(StrictQueryParams, APIView):
    @extend_schema(
        summary="API metadata",
        description="SkyDeck's version, every enum the API uses, how to authenticate, and who "
        "you are.",
        responses={200: MetaSerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "version": skydeck_version(),
                "api_version": API_VERSION,
                "enums": {
                    "desired_states": list(DesiredState.values),
                    "current_states": [value for value, _ in CURRENT_STATE_CHOICES],
                    "job_statuses": list(JobStatus.values),
                    "active_job_statuses": [str(s) for s in JobStatus.active()],
                    "operations": list(Operation.values),
                    "sync_sources": list(door.SYNC_TASKS),
                    "bulk_actions": [value for value, _ in BULK_ACTIONS],
                },
                "auth": [
                    {
                        "scheme": "token",
                        "description": "Header 'Authorization: Token <key>'; create a key with "
                        "`skydeck tokens create USERNAME`.",
                    },
                    {
                        "scheme": "session",
                        "description": "The login cookie of the web UI; writes also need the "
                        "X-CSRFToken header.",
                    },
                ],
                "read_only_group": READ_ONLY_GROUP,
                "user": {
                    "username": request.user.get_username(),
                    "read_only": is_read_only_user(request.user),
                },
            }
        )


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown paths under /api/ answer JSON, like every other API error."""
    return JsonResponse({"detail": "Not found."}, status=404)


def sidecar_installed() -> bool:
    return "drf_spectacular_sidecar" in settings.INSTALLED_APPS


@login_required
def docs(request: HttpRequest) -> HttpResponse:
    """The browsable docs: Swagger UI from the sidecar package, else a plain endpoint list."""
    if sidecar_installed():
        # The split view serves the init script as a separate request (?script), so the page
        # needs no inline <script>: the Content-Security-Policy allows none (script-src 'self').
        from drf_spectacular.views import SpectacularSwaggerSplitView

        return SpectacularSwaggerSplitView.as_view(url_name="api-schema")(request)
    schema = SchemaGenerator().get_schema(request=None, public=True)
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                rows.append((method.upper(), path, operation.get("summary", "")))
    body = format_html_join(
        "\n", "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>", rows
    )
    return HttpResponse(
        format_html(
            # plain HTML: the Content-Security-Policy allows no inline <style> (style-src 'self')
            "<!doctype html><html><head><meta charset='utf-8'><title>SkyDeck API</title>"
            "</head><body><h1>SkyDeck API</h1><p>Authenticate with "
            "<code>Authorization: Token &lt;key&gt;</code> (<code>skydeck tokens create "
            "USERNAME</code>) or this browser session. Full OpenAPI 3 schema: "
            "<a href='{}'>{}</a> (YAML; add <code>?format=json</code> for JSON).</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th></tr>{}</table></body></html>",
            "/api/schema/",
            "/api/schema/",
            body,
        )
    )


# --- schema post-processing -----------------------------------------------------------------

_HEALTH_PATH = {
    "get": {
        "operationId": "health",
        "summary": "Health check (no login)",
        "description": "Without a login: only whether the database answers (status, time, "
        "database) and a detail hinting to log in. With a session or a valid API token: the "
        "full report: also how fresh each sync source is, whether scheduled backups succeed "
        "(when on), whether the background worker is alive, the reconciler's mode and "
        "warnings. 503 when the database is unreachable; 401 for an invalid token (send none "
        "for the anonymous answer).",
        "tags": ["health"],
        # no login needed; a token or a session, when sent, unlocks the details
        "security": [],
        "responses": {
            "200": {
                "description": "Up.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                },
            },
            "401": {
                "description": "An Authorization header with an invalid token.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "503": {
                "description": "The database is unreachable.",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                },
            },
        },
    }
}
_HEALTH_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {
            "type": "string",
            "enum": ["ok", "degraded", "error"],
            "description": "degraded: it answers, but writes fail (a full disk); error: the "
            "database does not answer (HTTP 503).",
        },
        "time": {"type": "string", "format": "date-time"},
        "database": {"type": "string"},
        "detail": {
            "type": "string",
            "description": "Without a login only: a hint to log in (or send a token) for the "
            "details.",
        },
        "sync": {
            "type": "object",
            "additionalProperties": {"type": "object"},
            "description": "With a login only, as backup, worker, reconciler and warnings.",
        },
        "backup": {
            "type": "object",
            "description": "Scheduled backups (present only when SKYDECK_BACKUP_DIR is set).",
        },
        "worker": {"type": "object"},
        "reconciler": {
            "type": "object",
            "description": "mode (on, dry-run, off, paused), why, and when the last pass ran.",
        },
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["status", "time", "database"],
}


#: Every DRF view runs the throttles (settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"]).
_THROTTLED = {
    "description": "Too many requests from this client (token or session user; address when "
    "anonymous): wait Retry-After seconds.",
    "headers": {
        "Retry-After": {
            "description": "Seconds until a request may succeed again (sent whenever the "
            "throttle can tell).",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: Bodies that must name at least one field: a bulk update's changes (BulkSerializer.validate).
_MIN_PROPERTIES = {"ExperimentChangesRequest": 1}


def _needs_fields(schema: dict[str, Any], schemas: dict[str, Any]) -> bool:
    """Whether every body this schema allows has a required field (so no body is a 400).

    drf-spectacular works this out for one serializer, not for a ``oneOf`` of them (bulk)."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = schemas.get(ref.rsplit("/", 1)[1], {})
    if schema.get("required"):
        return True
    alternatives = schema.get("oneOf") or []
    return bool(alternatives) and all(_needs_fields(alt, schemas) for alt in alternatives)


def postprocess_schema(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """What the serializers and views enforce but drf-spectacular does not write down.

    * Request bodies allow no other keys (the serializers reject them).
    * A blank-allowed string with a pattern comes out as ``oneOf [pattern, maxLength 0]``; "" can
      match both, which ``oneOf`` forbids, so those become ``anyOf`` (what the server accepts).
    * ``EXCLUSIVE_FIELDS`` (flags and flags_patch) may not come together: ``not required``;
      a bulk update names at least one change (``minProperties``).
    * A comma-separated query parameter (``ordering``: style form, explode false) needs a value:
      the filters refuse an empty one (``StrictFilterSet``), so ``minItems: 1``.
    * A request body that always needs a field is required (a missing body is a 400).
    * Every API operation may answer 429 (the DRF throttles), with Retry-After.
    * /api/health, a plain Django view, is added by hand.
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in schemas.items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
            if set(EXCLUSIVE_FIELDS) <= set(schema.get("properties") or {}):
                schema["not"] = {"required": list(EXCLUSIVE_FIELDS)}
        if name in _MIN_PROPERTIES:
            schema["minProperties"] = _MIN_PROPERTIES[name]
        for prop in (schema.get("properties") or {}).values():
            alternatives = prop.get("oneOf") if isinstance(prop, dict) else None
            if alternatives and {"type": "string", "maxLength": 0} in alternatives:
                prop["anyOf"] = prop.pop("oneOf")
    for item in result.setdefault("paths", {}).values():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            for parameter in operation.get("parameters", []):
                if (
                    parameter.get("in") == "query"
                    and parameter.get("explode") is False
                    and parameter.get("schema", {}).get("type") == "array"
                ):
                    parameter["schema"]["minItems"] = 1
            body = operation.get("requestBody")
            if body and not body.get("required"):
                content = body.get("content", {}).get("application/json", {})
                if _needs_fields(content.get("schema", {}), schemas):
                    body["required"] = True
            operation.setdefault("responses", {})["429"] = _THROTTLED
    schemas["Health"] = _HEALTH_SCHEMA
    result["paths"]["/api/health"] = _HEALTH_PATH  # not DRF: no throttle, no 429
    return result
