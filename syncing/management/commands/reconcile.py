"""``skydeck reconcile [--dry-run] [--resume]``: sync jobs, then make SkyPilot match desired states.

``--dry-run`` prints the plan (launch X, cancel job 12, wait Y: backing off 4m) and changes
nothing on SkyPilot; without it, one pass acts and prints what it did — unless the reconciler is
dry-run, off or paused, which the first line then says. ``--resume`` lifts the pause a restore
puts on the reconciler.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments import control
from syncing.reconciler import sync_and_reconcile


class Command(BaseCommand):
    help = "Sync SkyPilot jobs, then launch/cancel so jobs match each experiment's desired state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        parser.add_argument(
            "--resume",
            action="store_true",
            help="resume a reconciler paused by a restore (then run one pass)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["resume"]:
            if control.resume_reconciler("command"):
                self.stdout.write("reconciler resumed")
            else:
                self.stdout.write("the reconciler was not paused")
        summary, result = sync_and_reconcile(dry_run=options["dry_run"])
        self.stdout.write(summary)
        if result is None:
            raise CommandError("not reconciling: the SkyPilot sync did not succeed")
        if result.header():
            self.stdout.write(result.header())
        for line in result.lines():
            self.stdout.write(line)
        if result.skipped:
            raise CommandError(f"reconcile skipped: {result.skipped}")
