"""SkyDeck's admin site: Django's, with the backup page and SkyDeck's index.

Installed through ``SkyDeckAdminConfig`` (in ``INSTALLED_APPS`` instead of
``django.contrib.admin``), so ``admin.site`` and every ``@admin.register`` use it.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import URLPattern, URLResolver, path


class SkyDeckAdminSite(admin.AdminSite):
    index_template = "admin/skydeck_index.html"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        """Django's admin URLs plus ``admin:backup`` (before the admin's catch-all pattern)."""
        from backups.admin import backup_view

        return [path("backup/", self.admin_view(backup_view), name="backup"), *super().get_urls()]


class SkyDeckAdminConfig(AdminConfig):
    default_site = "skydeck_site.admin.SkyDeckAdminSite"
