"""``manage.py logs JOB_ID``: print a SkyPilot managed job's log, following it while it runs."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from syncing import joblogs

#: The exit code of a shell command stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130


class Command(BaseCommand):
    help = (
        "Print the last lines of a job's log from the SkyPilot API server; while the job is "
        "active, keep printing new lines until it ends (Ctrl-C stops)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("job_id", type=int, help="SkyPilot managed job id (as synced)")
        parser.add_argument(
            "--tail",
            default=str(joblogs.DEFAULT_TAIL),
            help=f"how many of the last lines (1 to {joblogs.MAX_TAIL}, default "
            f"{joblogs.DEFAULT_TAIL})",
        )
        parser.add_argument(
            "--follow",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="keep printing new lines (default: while the job is active)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            log_plan = joblogs.plan(options["job_id"], options["tail"], follow=options["follow"])
        except joblogs.JobLogError as exc:
            raise CommandError(str(exc)) from None
        if options["follow"] and not log_plan.follow:
            self.stderr.write(f"job {log_plan.job_id} is {log_plan.job_status}: not following")
        stream = joblogs.LogStream(log_plan)
        try:
            ended = self._print(stream)
        except KeyboardInterrupt:  # quietly: closing the stream (below) stops SkyPilot's side
            raise SystemExit(INTERRUPTED) from None
        except BrokenPipeError:  # e.g. piped into `head`: the reader is gone, so are we
            return
        finally:
            stream.close()
        if ended.outcome == joblogs.ERROR:
            raise CommandError(ended.message)
        if options["verbosity"] >= 1:
            self.stderr.write(f"-- {ended.message}")

    def _print(self, stream: joblogs.LogStream) -> joblogs.Ended:
        """Write lines as they come (flushed, so pipes see them at once) until the end."""
        for event in stream.events():
            if isinstance(event, joblogs.Lines):
                for line in event.lines:
                    self.stdout.write(line)
                self.stdout.flush()
            elif isinstance(event, joblogs.Ended):
                return event
        raise AssertionError("a log stream always ends with Ended")  # pragma: no cover
