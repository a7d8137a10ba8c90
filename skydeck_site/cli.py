"""The ``skydeck`` console script and ``manage.py``: one entry point for both.

Adds the global ``--db-path PATH`` option every command accepts, and makes ``skydeck`` with no
command (or with only options such as ``--port 8000``) start the server like the README's run
command does.
"""

from __future__ import annotations

import os
import sys


class UsageError(Exception):
    pass


def extract_db_path(argv: list[str]) -> tuple[list[str], str | None]:
    """Remove ``--db-path PATH`` / ``--db-path=PATH`` from argv and return (argv, path)."""
    rest: list[str] = []
    path: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--db-path":
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise UsageError(
                    "--db-path needs a file path, e.g. --db-path ~/.skydeck/skydeck.db"
                )
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("--db-path="):
            path = arg.split("=", 1)[1]
            if not path:
                raise UsageError(
                    "--db-path needs a file path, e.g. --db-path ~/.skydeck/skydeck.db"
                )
            i += 1
            continue
        rest.append(arg)
        i += 1
    return rest, path


def main(argv: list[str] | None = None, *, serve_by_default: bool = True) -> None:
    """Run a Django management command (``serve`` when none is given to ``skydeck``)."""
    argv = list(sys.argv if argv is None else argv)
    prog, args = argv[0], argv[1:]
    try:
        args, db_path = extract_db_path(args)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)
    if db_path:
        os.environ["SKYDECK_DB_PATH"] = db_path
    only_options = (
        bool(args) and args[0].startswith("-") and args[0] not in {"-h", "--help", "--version"}
    )
    if serve_by_default and (not args or only_options):
        args = ["serve", *args]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skydeck_site.settings")

    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line([prog, *args])
    except ImproperlyConfigured as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
