"""``manage.py sample``: one pass of the log sampler (the scheduled task runs the same).

Failed jobs' log tails, running jobs' progress and stalled runs (``syncing.sampler``); prints
a one-line summary, and exits non-zero with one line when the pass failed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from syncing.sampler import run_pass


class Command(BaseCommand):
    help = (
        "Read failed jobs' log tails and running jobs' progress from SkyPilot, and flag "
        "stalled runs (one pass)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = run_pass()
        if not outcome.ok:
            raise CommandError(outcome.summary())
        self.stdout.write(outcome.summary())
