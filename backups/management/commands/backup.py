"""``skydeck backup PATH``: a consistent snapshot of the SQLite database while SkyDeck runs.

A thin wrapper over :func:`backups.backup.snapshot`; every failure is one clear line and a
non-zero exit. PostgreSQL is refused with a pointer to pg_dump.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups import backup


class Command(BaseCommand):
    help = (
        "Write a consistent snapshot of the SQLite database to PATH while SkyDeck keeps running "
        "(PostgreSQL: use pg_dump)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "path",
            help="the file to write, or an existing directory to write "
            "skydeck-YYYYmmdd-HHMMSS.db into",
        )
        parser.add_argument(
            "--keep",
            type=int,
            metavar="N",
            help="with a directory: then delete all but the newest N skydeck-*.db snapshots in it",
        )

    def handle(self, *args, path: str, keep: int | None, **options) -> None:
        target = Path(path).expanduser()
        if keep is not None and (keep < 1 or not target.is_dir()):
            raise CommandError("--keep needs N >= 1 and PATH must be an existing directory")
        try:
            result = backup.snapshot(target)
            removed = backup.prune(target, keep) if keep is not None else []
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:  # pruning
            raise CommandError(f"{target}: {exc.strerror or exc}") from exc
        self.stdout.write(f"Wrote {result.summary()}")
        for old in removed:
            self.stdout.write(f"Removed the older snapshot {old}")
