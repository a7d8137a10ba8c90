"""The admin's "Database backup" page (``/admin/backup/``, superusers only).

The admin site (``skydeck_site.admin.SkyDeckAdminSite``) mounts it before its catch-all pattern.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from backups import backup

BACKUP_TEMPLATE = "admin/backup.html"


def backup_view(request: HttpRequest) -> HttpResponse:
    """Show backup status; POST streams a fresh snapshot (``skydeck-YYYYmmdd-HHMMSS.db``).

    Superusers only: a snapshot holds every password hash, session and API token, so a staff
    member with narrower permissions must not be able to download one.
    """
    if not request.user.is_superuser:
        raise PermissionDenied("Only superusers may download database snapshots.")
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Database backup",
        "supported": True,
    }
    try:
        database = backup.live_db_path()
    except backup.BackupError as exc:  # PostgreSQL: the message points to pg_dump
        context.update(supported=False, unsupported=str(exc))
        return TemplateResponse(request, BACKUP_TEMPLATE, context)
    if request.method == "POST":
        try:
            handle, name = backup.download_snapshot(request.user)
        except backup.BackupError as exc:
            messages.error(request, f"No snapshot: {exc}")
            return HttpResponseRedirect(request.path)
        return FileResponse(
            handle, as_attachment=True, filename=name, content_type="application/vnd.sqlite3"
        )
    directory = settings.SKYDECK_BACKUP_DIR
    snapshots = []
    if directory and directory.is_dir():
        snapshots = [(p.name, p.stat().st_size) for p in reversed(backup.list_snapshots(directory))]
    context.update(
        database=database,
        database_size=database.stat().st_size if database.exists() else None,
        backup_dir=directory,
        keep=settings.SKYDECK_BACKUP_KEEP,
        interval=settings.SKYDECK_BACKUP_INTERVAL,
        snapshots=snapshots,
    )
    return TemplateResponse(request, BACKUP_TEMPLATE, context)
