"""Django's SQLite backend; the one difference: the database file is private (0600).

SQLite creates a missing database with the process umask's mode (often 0644), and its ``-wal`` and
``-shm`` with the database's mode: creating the file 0600 first makes all three private.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.sqlite3 import base

from skydeck_site.filemodes import private_database


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        name = str(conn_params.get("database", ""))
        # a plain path; not ":memory:" or a "file:" URI (the test databases are in memory)
        if name and name != ":memory:" and not name.startswith("file:"):
            private_database(name)
        return super().get_new_connection(conn_params)
