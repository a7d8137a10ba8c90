"""Config history: every change to an experiment's configuration is a numbered revision.

A revision keeps the whole configuration after the change (``config``) and what changed
(``changes``: field -> [old, new]), so any two revisions diff without replaying the ones between.
The services (experiments/services.py) call ``record_revision`` inside the transaction that saves
the experiment; nothing here writes on its own behalf or makes a network call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db.models import F, Max, OuterRef, Subquery

from experiments.models import Experiment, ExperimentRevision, Launch, RevisionSource

#: The configuration: what a revision keeps. A star is a bookmark and the desired state an
#: intent (Start/Stop), so neither is configuration.
CONFIG_FIELDS = (
    "name",
    "description",
    "tags",
    "flags",
    "nodes",
    "gpus",
    "accelerator",
    "base_command",
    "tool_path",
    "git_ref",
)
#: What a restore applies: a restore never renames (the name is the SkyPilot job and S3 folder).
RESTORE_FIELDS = tuple(f for f in CONFIG_FIELDS if f != "name")
#: The actor of a revision 1 written lazily for an experiment made before revisions were kept.
FOUND_ACTOR = "skydeck"
MINUS = "\u2212"  # the sign before a removed flag (U+2212)
VALUE_MAX = 40  # characters of one value in the operation log's text
TEXT_MAX = 2000


def snapshot(experiment: Experiment) -> dict[str, Any]:
    """The experiment's configuration now, as plain JSON values (copies, not references)."""
    config: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        value = getattr(experiment, name)
        if name == "flags":
            value = dict(value or {})
        elif name == "tags":
            value = list(value or [])
        config[name] = value
    return config


def same(a: Any, b: Any) -> bool:
    """Equal as stored: 1, 1.0 and True differ; key order does not matter."""
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (TypeError, ValueError):
        return a == b


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for each configuration field whose value differs."""
    return {
        name: [old.get(name), new.get(name)]
        for name in CONFIG_FIELDS
        if not same(old.get(name), new.get(name))
    }


def latest_number(experiment: Experiment) -> int:
    """The experiment's newest revision number (0: none yet)."""
    top = ExperimentRevision.objects.filter(experiment=experiment).aggregate(top=Max("number"))
    return top["top"] or 0


def _next_number(experiment: Experiment) -> int:
    return latest_number(experiment) + 1


def _create(
    experiment: Experiment,
    number: int,
    actor: str,
    source: str,
    config: dict[str, Any],
    changes: dict[str, Any],
    restored_from: int | None = None,
) -> ExperimentRevision:
    return ExperimentRevision.objects.create(
        experiment=experiment,
        experiment_name=experiment.name,
        number=number,
        actor=actor[:150],
        source=source,
        config=config,
        changes=changes,
        restored_from=restored_from,
    )


def record_revision(
    experiment: Experiment,
    actor: str,
    source: str,
    changes: dict[str, list[Any]],
    restored_from: int | None = None,
    *,
    before: dict[str, Any] | None = None,
) -> ExperimentRevision:
    """Store the experiment's (saved) configuration as its next revision.

    Call it inside the transaction that saved the experiment, after the save: the row is then
    write-locked until commit (SQLite's database lock, PostgreSQL's row lock), so two writers of
    one experiment cannot take the same number; the unique constraint is the backstop. An
    experiment made before revisions were kept gets a revision 1 "as found" first, from
    ``before`` (its values before this change), so its history has no hole.
    """
    number = _next_number(experiment)
    if number == 1 and before is not None:
        _create(experiment, 1, FOUND_ACTOR, source, before, {})
        number = 2
    return _create(experiment, number, actor, source, snapshot(experiment), changes, restored_from)


def latest_revision(experiment: Experiment, source: str = RevisionSource.COMMAND):
    """The experiment's newest revision, creating revision 1 "as found" when it has none.

    For a launch: it records the configuration it ran. The caller holds the row lock.
    """
    latest = ExperimentRevision.objects.filter(experiment=experiment).order_by("-number").first()
    if latest is None:
        latest = _create(experiment, 1, FOUND_ACTOR, source, snapshot(experiment), {})
    return latest


def is_as_found(revision: ExperimentRevision) -> bool:
    """A revision 1 written lazily: the configuration as found, what changed before unknown."""
    return revision.number == 1 and not revision.changes


# --- diffs ------------------------------------------------------------------------------------

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


@dataclass
class Difference:
    """One difference between two configurations: a field, or one flag key (``field='flags'``)."""

    field: str
    kind: str  # ADDED, REMOVED or CHANGED
    old: Any = None
    new: Any = None
    key: str = ""  # the flag's name when field == "flags"

    @property
    def label(self) -> str:
        return self.key if self.field == "flags" else self.field

    @property
    def old_text(self) -> str:
        return "" if self.kind == ADDED else format_value(self.old)

    @property
    def new_text(self) -> str:
        return "" if self.kind == REMOVED else format_value(self.new)


def _flag_differences(old: Any, new: Any) -> list[Difference]:
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            out.append(Difference("flags", ADDED, None, new[key], key=key))
        elif key not in new:
            out.append(Difference("flags", REMOVED, old[key], None, key=key))
        elif not same(old[key], new[key]):
            out.append(Difference("flags", CHANGED, old[key], new[key], key=key))
    return out


def diff(config_a: dict[str, Any], config_b: dict[str, Any]) -> list[Difference]:
    """What differs from ``config_a`` to ``config_b``: fields in CONFIG_FIELDS order, flags key
    by key (added, removed, changed), so a one-flag edit reads as one line."""
    out: list[Difference] = []
    for name in CONFIG_FIELDS:
        if name == "flags":
            out.extend(_flag_differences(config_a.get(name), config_b.get(name)))
            continue
        in_a, in_b = name in config_a, name in config_b
        old, new = config_a.get(name), config_b.get(name)
        if in_a and in_b and same(old, new):
            continue
        if not in_a and not in_b:
            continue
        kind = ADDED if not in_a else REMOVED if not in_b else CHANGED
        out.append(Difference(name, kind, old, new))
    return out


# --- text for the operation log -----------------------------------------------------------------


def format_value(value: Any) -> str:
    """A value exactly: ints as written, floats as their shortest round-trip form (``repr``),
    booleans and null as in JSON, strings as they are, lists and objects as compact JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value if value else "''"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def shorten(text: str, limit: int = VALUE_MAX) -> str:
    """One line, at most ``limit`` characters, an ellipsis where cut."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    return shorten(format_value(value))


#: The operation log's order: a rename first, then the flags (what changes most), then the rest.
LOG_ORDER = ("name", "flags", *(f for f in CONFIG_FIELDS if f not in {"name", "flags"}))


def change_text(changes: dict[str, list[Any]]) -> str:
    """The operation log's words for a change, values shown and flags per key:
    ``trainer.lr 0.001 → 0.003, nodes 1 → 2, +trainer.seed 7, \u2212old.key`` (a minus sign)."""
    parts: list[str] = []
    for name in LOG_ORDER:
        if name not in changes:
            continue
        old, new = changes[name]
        if name == "flags":  # changed, then added, then removed; each by name
            found = _flag_differences(old, new)
            for d in found:
                if d.kind == CHANGED:
                    parts.append(f"{d.key} {_short(d.old)} → {_short(d.new)}")
            parts.extend(f"+{d.key} {_short(d.new)}" for d in found if d.kind == ADDED)
            parts.extend(f"{MINUS}{d.key}" for d in found if d.kind == REMOVED)
        elif name == "name" and old is not None:
            parts.append(f"renamed from {old!r}")
        elif old is None:
            parts.append(f"{name} {_short(new)}")
        else:
            parts.append(f"{name} {_short(old)} → {_short(new)}")
    text = ", ".join(parts)
    return shorten(text, TEXT_MAX) if text else "no configuration change"


def revision_text(revision: ExperimentRevision) -> str:
    """A revision's line in the history: its changes, or what it is when it has none."""
    if is_as_found(revision):
        return "as found (made before config history was kept)"
    if revision.number == 1 and all(old is None for old, _ in (revision.changes or {}).values()):
        return "created"
    text = change_text(revision.changes or {})
    if revision.restored_from:
        text = f"restored r{revision.restored_from}: {text}"
    return text


def launch_revision_number() -> Subquery:
    """Annotation for a Job queryset: the revision number its launch ran (None: not known).

    One subquery, so a table of jobs costs one query however many rows it has.
    """
    return Subquery(
        Launch.objects.filter(job_id=OuterRef("id"), revision__isnull=False)
        .order_by("-id")
        .values("revision__number")[:1]
    )


def job_revision(job_id: int) -> dict[str, Any] | None:
    """``{"number", "experiment_pk"}`` of the revision a job's launch ran, or None.

    One query, for the job's log page.
    """
    return (
        Launch.objects.filter(job_id=job_id, revision__isnull=False)
        .order_by("-id")
        .values(number=F("revision__number"), experiment_pk=F("revision__experiment_id"))
        .first()
    )
