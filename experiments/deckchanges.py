"""The deck's version and what changed since a version, from the ``deck_changes`` log.

The triggers of migration 0009 append a row for every change the deck shows, whoever makes it.
A poll sends the version it shows (``<token>-<last id>``): the same version costs one indexed
lookup, whatever the size of the deck; another one names the experiments and groups to re-render.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Max, Min, Subquery

from experiments.models import DeckChange, DeckState, Experiment

#: The triggers of migration 0009 (``deck_<table>_<insert|update|delete>``).
TRIGGERS = [
    f"deck_{table}_{op}"
    for table in (
        "experiments",
        "experiment_groups",
        "experiment_group_members",
        "checkpoints",
        "launches",
    )
    for op in ("insert", "update", "delete")
]
#: The log keeps this many rows; a browser further behind gets the whole deck.
KEEP_CHANGES = 20_000
#: More changed experiments than this since a version: re-render the deck, not its parts.
MAX_PARTIAL = 300


@dataclass
class Delta:
    """What to re-render for a browser showing an older version of the deck."""

    full: bool = False  # the whole deck (groups added/removed/reordered, too far behind, ...)
    experiments: set[int] = field(default_factory=set)  # rows whose fields changed
    groups: set[int] = field(default_factory=set)  # groups whose header or members changed
    ungrouped: bool = False  # memberships changed: the Ungrouped section may have too


def current_version() -> str:
    """``<token>-<last change id>`` in one query (an index seek on the log's primary key)."""
    last = DeckChange.objects.order_by("-id").values("id")[:1]
    row = DeckState.objects.annotate(last=Subquery(last)).values_list("token", "last").first()
    if row is None:  # migration 0009 writes the row; an emptied database (flush) has none yet
        DeckState.objects.get_or_create(pk=1, defaults={"token": secrets.token_hex(8)})
        row = DeckState.objects.annotate(last=Subquery(last)).values_list("token", "last")[0]
    token, last_id = row
    return f"{token}-{last_id or 0}"


def parse_version(version: str | None) -> tuple[str, int] | None:
    token, _, number = (version or "").rpartition("-")
    if not token or not number.isdigit():
        return None
    return token, int(number)


def changes_since(known: str | None, current: str) -> Delta | None:
    """None when ``known`` is ``current``; else what changed in between (or ``full``)."""
    if known == current:
        return None
    old, new = parse_version(known), parse_version(current)
    if old is None or new is None or old[0] != new[0] or old[1] > new[1]:
        return Delta(full=True)  # another history (a restore) or not a version at all
    since, until = old[1], new[1]
    oldest = DeckChange.objects.aggregate(m=Min("id"))["m"]
    if oldest is None or oldest > since + 1:
        return Delta(full=True)  # the log was pruned past what this browser shows
    delta = Delta()
    rows = (
        DeckChange.objects.filter(id__gt=since, id__lte=until)
        .values_list("experiment_id", "group_id", "layout")
        .distinct()
    )
    for experiment_id, group_id, layout in rows.iterator():
        if layout:
            return Delta(full=True)
        if group_id is not None:
            delta.groups.add(group_id)
            if experiment_id is not None:
                delta.ungrouped = True
        elif experiment_id is not None:
            delta.experiments.add(experiment_id)
        if len(delta.experiments) > MAX_PARTIAL:
            return Delta(full=True)
    return delta


def missing_triggers() -> list[str]:
    """The deck triggers the database lacks (a table rebuilt by a later SQLite migration drops
    its triggers: that migration must create them again). Checked by the tests."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        else:
            cursor.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        present = {name for (name,) in cursor.fetchall()}
    return sorted(set(TRIGGERS) - present)


def record_experiments(names: Iterable[str]) -> None:
    """Log a change of the experiments of these names (the job syncer's jobs: no trigger),
    one ``INSERT ... SELECT`` per 500 names."""
    names = sorted(set(names))
    table = connection.ops.quote_name(DeckChange._meta.db_table)
    experiments = connection.ops.quote_name(Experiment._meta.db_table)
    false = "false" if connection.vendor == "postgresql" else "0"
    with connection.cursor() as cursor:
        for start in range(0, len(names), 500):
            part = names[start : start + 500]
            marks = ", ".join(["%s"] * len(part))
            cursor.execute(
                f"INSERT INTO {table} (experiment_id, group_id, layout) "  # noqa: S608 - names
                f"SELECT id, NULL, {false} FROM {experiments} WHERE name IN ({marks})",
                part,
            )


def reset() -> None:
    """A new token (after a restore): every browser's next poll re-renders its whole deck."""
    DeckState.objects.update(token=secrets.token_hex(8))


def prune(keep: int = KEEP_CHANGES) -> int:
    """Drop all but the newest ``keep`` log rows (the syncers call this after a pass)."""
    last = DeckChange.objects.aggregate(m=Max("id"))["m"]
    if last is None or last <= keep:
        return 0
    deleted, _ = DeckChange.objects.filter(id__lte=last - keep).delete()
    return deleted
