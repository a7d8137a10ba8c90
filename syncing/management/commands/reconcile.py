"""``manage.py reconcile [--dry-run]``: sync jobs, then make SkyPilot match the desired states.

``--dry-run`` prints the plan (launch X, cancel job 12, wait Y: backing off 4m) and changes
nothing on SkyPilot; without it, one pass acts and prints what it did.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from syncing.reconciler import sync_and_reconcile


class Command(BaseCommand):
    help = "Sync SkyPilot jobs, then launch/cancel so jobs match each experiment's desired state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        summary, result = sync_and_reconcile(dry_run=options["dry_run"])
        self.stdout.write(summary)
        if result is None:
            raise CommandError("not reconciling: the SkyPilot sync did not succeed")
        for line in result.lines():
            self.stdout.write(line)
        if result.skipped:
            raise CommandError(f"reconcile skipped: {result.skipped}")
