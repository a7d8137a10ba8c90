"""``skydeck sweep BASE --axis trainer.lr="1e-4..1e-2 x3 log" --axis bs=32,64``: a sweep from
the command line (thin: ``experiments.sweeps`` plans and creates). Prints the plan as a table;
``--dry-run`` creates nothing. Errors: one line on stderr, exit 1."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from experiments import sweeps
from experiments.models import Experiment, ExperimentGroup, RevisionSource


def _one_line(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = "Create experiments from BASE, one per combination of the axes' values (STOPPED)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("base", help="the experiment to copy (name or id)")
        parser.add_argument(
            "--axis",
            action="append",
            default=[],
            metavar="KEY=VALUES",
            help='a flag and its values: bs=32,64 or trainer.lr="1e-4..1e-2 x3 log" '
            '(ranges: "1..8 x4", "1..8 step 2"); repeat for more flags',
        )
        parser.add_argument(
            "--zip", action="store_true", help="n-th value with n-th (default: every combination)"
        )
        parser.add_argument(
            "--template", default="", help=f"name template (default {sweeps.DEFAULT_TEMPLATE})"
        )
        target = parser.add_mutually_exclusive_group()
        target.add_argument("--group", help="add them to this existing group (name or id)")
        target.add_argument("--new-group", help="a new group's name (default '<base> sweep')")
        parser.add_argument("--dry-run", action="store_true", help="print the plan only")
        parser.add_argument(
            "--actor",
            default="command",
            help="the user recorded in the operation log (default: command)",
        )

    def handle(self, *args, **options) -> None:
        ref = options["base"]
        base = Experiment.objects.filter(
            **({"pk": int(ref)} if ref.isdigit() else {"name": ref})
        ).first()
        if base is None:
            raise CommandError(f"no experiment {ref!r}")
        pairs = []
        for axis in options["axis"]:
            key, sep, spec = axis.partition("=")
            if not sep:
                raise CommandError(f"--axis {axis!r}: write KEY=VALUES, e.g. bs=32,64")
            pairs.append((key.strip(), spec))
        if not pairs:
            raise CommandError("give at least one --axis KEY=VALUES")
        group = None
        if options["group"]:
            name = options["group"]
            group = (
                ExperimentGroup.objects.filter(pk=int(name)).first() if name.isdigit() else None
            ) or ExperimentGroup.objects.filter(name=name).first()
            if group is None:
                raise CommandError(f"no group {name!r}")
        actor = self._actor(options["actor"])
        try:
            plan = sweeps.plan(
                sweeps.base_fields_of(base),
                sweeps.parse_axes(pairs),
                "zip" if options["zip"] else "grid",
                options["template"],
            )
        except ValidationError as exc:
            raise CommandError(_one_line(exc)) from None
        self._print(plan)
        if not plan.valid:
            raise CommandError(_one_line(ValidationError(plan.errors())))
        if options["dry_run"]:
            self.stdout.write("dry run: nothing created")
            return
        try:
            result = sweeps.create_sweep(
                actor,
                plan,
                group=group,
                new_group_name=options["new_group"],
                source=RevisionSource.COMMAND,
            )
        except ValidationError as exc:
            raise CommandError(_one_line(exc)) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"created {plan.count} experiment{'s' if plan.count != 1 else ''} (stopped) in group "
            f"{result.group.name}"
        )

    def _actor(self, name: str):
        """A user of that name if there is one (read-only users are refused), else the name."""
        user = get_user_model().objects.filter(username=name).first()
        return user if user is not None else name

    def _print(self, plan: sweeps.SweepPlan) -> None:
        headers = ["#", "name", *plan.keys, "nodes x GPUs", "notes"]
        rows = [
            [
                str(item.index),
                item.name,
                *item.shown_values,
                item.shape(),
                "; ".join(item.notes + [f"{f}: {' '.join(m)}" for f, m in item.errors.items()]),
            ]
            for item in plan.items
        ]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
        self.stdout.write(plan.summary())
