from django.apps import AppConfig


class SyncingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "syncing"
    verbose_name = "Syncing"
