"""Django's SQLite backend, creating the database file 0600 before SQLite opens it."""
