from django.apps import AppConfig


class BackupsConfig(AppConfig):
    """SQLite snapshots and restore: the commands, the admin page, the task, the middleware."""

    name = "backups"
    verbose_name = "Backups"
