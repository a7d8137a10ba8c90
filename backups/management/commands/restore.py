"""``skydeck restore PATH``: replace the database's contents with a checked snapshot.

A thin wrapper over :func:`backups.backup.restore`, safe while the web server and worker run
(they answer 503 "restoring" / skip syncs meanwhile). The previous database is kept next to the
live one. Every failure is one clear line and a non-zero exit; PostgreSQL points to pg_restore.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups import backup


class Command(BaseCommand):
    help = (
        "Restore the SQLite database from a snapshot made by `skydeck backup` (the current "
        "database is kept as <db>.pre-restore-<time>). PostgreSQL: use pg_restore."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="the snapshot to restore")
        parser.add_argument(
            "--check",
            action="store_true",
            help="only check that PATH can be restored; change nothing",
        )
        parser.add_argument(
            "--keep-revocations",
            action="store_true",
            help="accounts deactivated or deleted, and API tokens revoked, since the snapshot "
            "stay revoked (default: the snapshot's logins come back, and are listed)",
        )

    def handle(self, *args, path: str, check: bool, keep_revocations: bool, **options) -> None:
        try:
            live = backup.live_db_path()  # PostgreSQL / in-memory: say so before looking at PATH
            if check:
                info = backup.check_snapshot(path)
                access = backup.access_changes(live, info.path)
            else:
                result = backup.restore(path, keep_revocations=keep_revocations)
                info, access = result.info, result.access
        except backup.BackupError as exc:
            raise CommandError(str(exc)) from exc
        counts = backup.describe_counts(info.counts)
        if check:
            todo = f"; restoring it adds {len(info.missing)} migrations" if info.missing else ""
            self.stdout.write(f"{info.path} can be restored ({counts}){todo}")
            for line in access.lines():
                self.stdout.write(
                    f"Restoring it {line} (add --keep-revocations to keep them revoked)."
                )
            return
        self.stdout.write(f"Restored {info.path} into {result.database} ({counts}).")
        if result.migrated:
            self.stdout.write(f"Applied {len(result.migrated)} newer migrations.")
        if result.kept is not None:
            self.stdout.write(
                f"The previous database is kept at {result.kept} "
                f"(undo: skydeck restore {result.kept})."
            )
        for line in access.lines():
            if keep_revocations:
                self.stdout.write(f"Kept revoked (--keep-revocations): what the snapshot {line}.")
            else:
                self.stdout.write(
                    f"The restore {line}: revoke them again in the admin, or restore with "
                    "--keep-revocations."
                )
        self.stdout.write(
            "The reconciler is paused: nothing is launched or cancelled until you resume it "
            "(the Resume button in the header, or skydeck reconcile --resume)."
        )
