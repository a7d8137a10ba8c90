from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SyncingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "syncing"
    verbose_name = "Syncing"

    def ready(self) -> None:
        # Schedules are rows in the database: create them after migrate, never at import time.
        from syncing.schedules import on_post_migrate

        post_migrate.connect(on_post_migrate, sender=self, dispatch_uid="skydeck-schedules")
