"""``manage.py backfill_versions [--dry-run]``.

Recompute ``epoch`` and ``policy_version`` of every stored checkpoint from its ``model_path`` with
the current key parser (:func:`syncing.s3.parse_checkpoint_key`). Idempotent: a second run
changes nothing. Paths that parse to nothing are reported and left alone; a new epoch that another
row of the same experiment keeps is reported as a conflict and that row is left alone too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from experiments.models import Checkpoint
from syncing.s3 import parse_checkpoint_key

BATCH = 500


def key_of(model_path: str) -> str:
    """``s3://bucket/key`` -> ``key`` (anything else is taken as a key)."""
    if model_path.startswith("s3://"):
        return model_path[len("s3://") :].partition("/")[2]
    return model_path


def plan_experiment(rows: list[dict[str, Any]]) -> tuple[list[dict], list[dict], list[dict]]:
    """(changes, conflicts, unparsable) for one experiment's rows.

    A change is the row plus ``new_epoch``/``new_version``. A row whose new epoch would collide
    with another row's final epoch is not moved (and may in turn keep its own epoch occupied,
    hence the loop until nothing collides).
    """
    unparsable = []
    target: dict[int, tuple[int, str]] = {}
    for row in rows:
        parsed = parse_checkpoint_key(key_of(row["model_path"]))
        if parsed is None:
            unparsable.append(row)
            target[row["id"]] = (row["epoch"], row["policy_version"])
        else:
            target[row["id"]] = parsed
    current = {row["id"]: row["epoch"] for row in rows}
    by_id = {row["id"]: row for row in rows}
    conflicts: dict[int, dict] = {}
    while True:
        holders: dict[int, list[int]] = defaultdict(list)
        for pk, (epoch, _) in target.items():
            holders[epoch].append(pk)
        reverted = False
        for epoch, pks in holders.items():
            if len(pks) < 2:
                continue
            for pk in pks:
                if target[pk][0] != current[pk]:  # a mover into an occupied epoch stays put
                    row = by_id[pk]
                    conflicts[pk] = {**row, "new_epoch": epoch, "holders": sorted(pks)}
                    target[pk] = (current[pk], row["policy_version"])
                    reverted = True
        if not reverted:
            break
    changes = []
    for row in rows:
        epoch, version = target[row["id"]]
        if (epoch, version) != (row["epoch"], row["policy_version"]):
            changes.append({**row, "new_epoch": epoch, "new_version": version})
    return changes, list(conflicts.values()), unparsable


class Command(BaseCommand):
    help = "Recompute checkpoint epochs and policy versions from their model paths."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="print the changes without writing them"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
        fields = ("id", "experiment__name", "epoch", "policy_version", "model_path")
        for row in Checkpoint.objects.order_by("experiment__name", "epoch").values(*fields):
            grouped[row["experiment__name"]].append(row)

        changes: list[dict] = []
        conflicts = unparsable = 0
        for name, rows in grouped.items():
            changed, conflicting, bad = plan_experiment(rows)
            for row in bad:
                self.stderr.write(f"{name}: cannot parse {row['model_path']}; left unchanged")
            for row in conflicting:
                self.stderr.write(
                    f"{name}: conflict: {row['model_path']} parses to epoch {row['new_epoch']}, "
                    f"which another checkpoint of {name} has; left at epoch {row['epoch']}"
                )
            for row in changed:
                self.stdout.write(
                    f"{name}: epoch {row['epoch']} -> {row['new_epoch']}, "
                    f"version {row['policy_version'] or '(none)'} -> {row['new_version']}"
                )
            changes += changed
            conflicts += len(conflicting)
            unparsable += len(bad)

        if changes and not dry_run:
            self._write(changes)
        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            f"{verb} {len(changes)} checkpoint(s); {unparsable} unparsable, "
            f"{conflicts} conflict(s) left unchanged"
        )

    def _write(self, changes: list[dict]) -> None:
        with transaction.atomic():
            moving = [c for c in changes if c["new_epoch"] != c["epoch"]]
            # Park moving rows on a negative epoch (never a real one) so swaps cannot collide.
            Checkpoint.objects.bulk_update(
                [Checkpoint(id=c["id"], epoch=-c["id"]) for c in moving],
                ["epoch"],
                batch_size=BATCH,
            )
            Checkpoint.objects.bulk_update(
                [
                    Checkpoint(id=c["id"], epoch=c["new_epoch"], policy_version=c["new_version"])
                    for c in changes
                ],
                ["epoch", "policy_version"],
                batch_size=BATCH,
            )
