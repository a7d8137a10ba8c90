"""``skydeck usage --since 7d --by user``: GPU-hours and cost on the command line (the Usage
page's table; ``--format csv|json`` for scripts)."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from experiments import usage


class Command(BaseCommand):
    help = "GPU-hours and cost of the jobs that ended in a window (running jobs up to now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", default="7d", help="a span back from now (7d, 12h, 2w) or a date (UTC)"
        )
        parser.add_argument(
            "--until", help="a date (UTC, exclusive) or a span back from now; default: now"
        )
        parser.add_argument("--by", choices=list(usage.DIMENSIONS), default="user")
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        try:
            since = usage.parse_since(options["since"], now)
            until = usage.parse_since(options["until"], now, "until") if options["until"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if until is not None and until <= since:
            raise CommandError("--until must be after --since")
        report = usage.usage(options["by"], since, until, now=now)
        rows = [row.as_dict() for row in [*report.rows, report.total]]
        if options["format"] == "json":
            self.stdout.write(json.dumps({"by": report.by, "rows": rows[:-1], "total": rows[-1]}))
            return
        if options["format"] == "csv":
            usage.write_csv(report, self.stdout)
            return
        width = max([len(report.by), *(len(r["key"]) for r in rows)])
        head = f"{report.by:<{width}}  {'jobs':>7}  {'GPU-hours':>11}  {'cost USD':>11}  no price"
        self.stdout.write(head)
        for row in rows:
            unpriced = (
                f"{row['unpriced_gpu_hours']:,.1f} GPU-h" if row["unpriced_gpu_hours"] else ""
            )
            self.stdout.write(
                f"{row['key']:<{width}}  {row['jobs']:>7,}  {row['gpu_hours']:>11,.1f}  "
                f"{row['cost_usd']:>11,.2f}  {unpriced}".rstrip()
            )
        notes = []
        if report.unpriced:
            notes.append(f"no price for {', '.join(report.unpriced)} (set one in the admin)")
        if report.estimated:
            notes.append("some prices are seeded estimates")
        for note in notes:
            self.stderr.write(note)
