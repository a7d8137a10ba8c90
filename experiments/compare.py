"""Side-by-side comparison of 2 to 20 experiments: their config, flags and state, with the
values that differ marked. The page (``/compare``) and the API (``/api/compare/``) both show
:func:`comparison`'s rows, so they cannot disagree on what differs or how a value reads.

Values are compared as the text shown, so ``1`` and ``1.0`` (or ``true`` and ``1``) differ just
as they would on a command line. Two queries whatever the count: the experiments with their
latest job, epoch and latest failed job (index-backed subqueries), then those failed jobs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import OuterRef, Q, Subquery

from experiments import validation
from experiments.budgets import gpu_text
from experiments.choices import JobStatus
from experiments.models import Experiment, Job

MIN_EXPERIMENTS = 2
MAX_EXPERIMENTS = 20
#: A flag an experiment does not set.
MISSING = "\u2014"  # em dash
#: The largest id a database integer holds (bigger ones are refused, not looked up).
MAX_ID = 2**63 - 1

#: (field, label) of the config rows, in the order people read an experiment.
CONFIG_FIELDS = (
    ("name", "Name"),
    ("nodes", "Nodes"),
    ("gpus", "GPUs per node"),
    ("total_gpus", "Nodes \u00d7 GPUs"),
    ("accelerator", "Accelerator"),
    ("base_command", "Base command"),
    ("tool_path", "Tool path"),
    ("git_ref", "Git ref"),
    ("tags", "Tags"),
    ("description", "Description"),
)
STATUS_FIELDS = (
    ("current_state", "Current state"),
    ("desired_state", "Desired state"),
    ("latest_epoch", "Latest epoch"),
    ("gpu_hours", "GPU-hours"),
    ("last_failure", "Last failure"),
    ("latest_job", "Latest job"),
)
KINDS = ("config", "flag", "status")


def format_value(value: Any) -> str:
    """A value exactly as written: ints in full (131072, never 131.1K), floats as their
    shortest round-trip form, booleans true/false, strings as they are, lists and objects as
    compact JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@dataclass
class Row:
    field: str  # "nodes", "flags.trainer.lr", "current_state"
    label: str
    kind: str  # config, flag or status
    values: list[str]
    differs: bool
    present: list[bool] = field(default_factory=list)  # False: a flag not set (shown MISSING)

    @property
    def cells(self) -> list[tuple[str, bool]]:
        """(text, set) per experiment, for the page (a flag not set is shown muted)."""
        return list(zip(self.values, self.present, strict=True))

    def as_dict(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "label": self.label,
            "kind": self.kind,
            "values": self.values,
            "differs": self.differs,
        }


@dataclass
class Comparison:
    experiments: list[Experiment]
    rows: list[Row]

    @property
    def differences(self) -> int:
        return sum(1 for row in self.rows if row.differs)

    def shown(self, only_differences: bool = False) -> list[Row]:
        return [r for r in self.rows if r.differs] if only_differences else list(self.rows)


def _row(name: str, label: str, kind: str, cells: Sequence[tuple[bool, str]]) -> Row:
    return Row(
        field=name,
        label=label,
        kind=kind,
        values=[text if here else MISSING for here, text in cells],
        differs=len(set(cells)) > 1,
        present=[here for here, _ in cells],
    )


def _config(experiment: Experiment, name: str) -> Any:
    if name == "total_gpus":
        return experiment.nodes * experiment.gpus
    return getattr(experiment, name)


def _status(experiment: Experiment, name: str, failures: dict[int, Job]) -> str:
    if name == "latest_epoch":
        epoch = experiment.latest_epoch
        return MISSING if epoch is None else str(epoch)
    if name == "gpu_hours":
        seconds = experiment.gpu_seconds
        return MISSING if seconds is None else gpu_text(seconds / 3600)
    if name == "latest_job":
        return MISSING if experiment.latest_job_id is None else str(experiment.latest_job_id)
    if name == "last_failure":
        job = failures.get(experiment.last_failed_job_id)
        if job is None:
            return MISSING
        return job.failure_signature or job.failure_reason or job.status
    return str(getattr(experiment, name))


def build_rows(experiments: Sequence[Experiment], failures: dict[int, Job]) -> list[Row]:
    """Config rows, one row per flag of any of them (sorted), then the state rows."""
    rows = [
        _row(name, label, "config", [(True, format_value(_config(e, name))) for e in experiments])
        for name, label in CONFIG_FIELDS
    ]
    keys = sorted({key for e in experiments for key in (e.flags or {})})
    for key in keys:
        cells = [
            (key in (e.flags or {}), format_value((e.flags or {}).get(key))) for e in experiments
        ]
        rows.append(_row(f"flags.{key}", key, "flag", cells))
    rows += [
        _row(name, label, "status", [(True, _status(e, name, failures)) for e in experiments])
        for name, label in STATUS_FIELDS
    ]
    return rows


def parse_refs(names: Iterable[str], ids: Iterable[str]) -> list[str | int]:
    """The experiments a query names: ``e=a,b`` (names; repeatable) then ``ids=1,2`` (ids),
    duplicates dropped, order kept. An id that is not a positive integer is a ValidationError."""
    refs: list[str | int] = []
    for raw in names:
        refs += [part.strip() for part in raw.split(",") if part.strip()]
    bad = []
    for raw in ids:
        for part in (p.strip() for p in raw.split(",")):
            if not part:
                continue
            if part.isascii() and part.isdigit() and 1 <= int(part) <= MAX_ID:
                refs.append(int(part))
            else:
                bad.append(part)
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5])
        raise ValidationError({"ids": [f"Experiment ids are positive integers, not {shown}."]})
    return list(dict.fromkeys(refs))


def _limits_error(count: int) -> ValidationError:
    return ValidationError(
        f"Compare {MIN_EXPERIMENTS} to {MAX_EXPERIMENTS} experiments "
        f"({count} {'was' if count == 1 else 'were'} given)."
    )


def _failed_latest() -> Subquery:
    failed = Job.objects.filter(
        experiment_id=OuterRef("name"), status__in=JobStatus.failed()
    ).order_by(models.F("submitted_at").desc(nulls_last=True), "-id")
    return Subquery(failed.values("id")[:1])


def comparison(refs: Sequence[str | int]) -> Comparison:
    """Compare the experiments named (``str``) or given by id (``int``), in the order given.

    2 to 20 distinct experiments, else a ValidationError; unknown ones are named in it.
    """
    refs = list(dict.fromkeys(refs))
    if len(refs) > MAX_EXPERIMENTS:
        raise _limits_error(len(refs))  # before any query: the list is the caller's
    names = [r for r in refs if isinstance(r, str)]
    ids = [r for r in refs if isinstance(r, int)]
    # a name no experiment can have (a NUL, 500 characters) is unknown without asking the database
    plausible = [
        n for n in names if len(n) <= validation.NAME_MAX_LENGTH and validation.NAME_RE.fullmatch(n)
    ]
    found = list(
        Experiment.objects.with_latest()
        .filter(Q(name__in=plausible) | Q(pk__in=ids))
        .annotate(last_failed_job_id=_failed_latest())
    )
    by_name = {e.name: e for e in found}
    by_id = {e.pk: e for e in found}
    errors: dict[str, list[str]] = {}
    unknown_names = [n for n in names if n not in by_name]
    unknown_ids = [i for i in ids if i not in by_id]
    if unknown_names:
        shown = ", ".join(unknown_names)
        errors["e"] = [f"No such experiment: {shown}."]
    if unknown_ids:
        shown = ", ".join(str(i) for i in unknown_ids)
        errors["ids"] = [f"No experiment with id {shown}."]
    if errors:
        raise ValidationError(errors)
    chosen: dict[int, Experiment] = {}
    for ref in refs:
        experiment = by_name[ref] if isinstance(ref, str) else by_id[ref]
        chosen.setdefault(experiment.pk, experiment)  # a name and its id are one
    experiments = list(chosen.values())
    if len(experiments) < MIN_EXPERIMENTS:
        raise _limits_error(len(experiments))
    failed_ids = [e.last_failed_job_id for e in experiments if e.last_failed_job_id]
    failures = (
        Job.objects.only("id", "status", "failure_reason", "failure_signature").in_bulk(failed_ids)
        if failed_ids
        else {}
    )
    return Comparison(experiments, build_rows(experiments, failures))
