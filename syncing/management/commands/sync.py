"""``manage.py sync [skypilot|s3 ...] [--full] [--loop --interval N]``.

One pass of every syncer (or the named ones), a one-line summary per source, and a non-zero exit
with a clear message when a source fails. The scheduled tasks run the very same function.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from syncing.runner import available_sources, run_sync


class Command(BaseCommand):
    help = "Sync jobs from SkyPilot and checkpoints from S3 (one pass, or --loop)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("sources", nargs="*", help="skypilot, s3 (default: all)")
        parser.add_argument(
            "--full", action="store_true", help="SkyPilot: re-read the whole history"
        )
        parser.add_argument("--loop", action="store_true", help="keep syncing until interrupted")
        parser.add_argument("--interval", type=float, default=30.0, help="seconds between passes")

    def handle(self, *args: Any, **options: Any) -> None:
        known = available_sources()
        sources = options["sources"] or known
        unknown = [s for s in sources if s not in known]
        if unknown:
            raise CommandError(
                f"unknown source {', '.join(unknown)}: choose from {', '.join(known)}"
            )
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive")
        if not options["loop"]:
            failed = self._pass(sources, options)
            if failed:
                raise CommandError(f"sync failed for {', '.join(failed)}")
            return
        try:
            while True:
                try:
                    self._pass(sources, options)
                except (DatabaseError, OSError) as exc:
                    # a full disk or a locked database is transient: say so and keep looping
                    detail = " ".join(str(exc).split()) or type(exc).__name__
                    self.stderr.write(
                        f"sync pass failed ({type(exc).__name__}: {detail[:300]}); "
                        f"trying again in {options['interval']} s"
                    )
                time.sleep(options["interval"])
        except KeyboardInterrupt:
            self.stdout.write("stopped")

    def _pass(self, sources: list[str], options: dict[str, Any]) -> list[str]:
        failed = []
        for source in sources:
            kwargs = {"full": True} if options["full"] and source == "skypilot" else {}
            outcome = run_sync(source, **kwargs)
            if outcome.ok:
                self.stdout.write(outcome.summary())
            else:
                self.stderr.write(outcome.summary())
                failed.append(source)
        return failed
