"""Sweeps: many experiments from one configuration, one flag axis at a time.

One axis per flag key, written as

* a list: ``0.1, 0.3, 1`` (each value parsed as the flags editor parses a value: ``true`` is a
  bool, ``3`` an int, ``0.3`` a float, ``"3"`` and anything else a string), or a JSON list from
  the API;
* a linear range: ``1..8 x4`` (4 evenly spaced values, both ends included; ints when both ends
  are ints and the step is whole, else floats);
* a log range: ``1e-4..1e-2 x3 log`` (1e-4, 1e-3, 1e-2; both ends must be positive);
* a stepped range: ``1..8 step 2`` (1, 3, 5, 7: up to the end, the end when it is hit).

Floats are cleaned to 12 significant digits (``0.1 + 0.2`` reads ``0.3``) and shown as Python's
shortest round-trip text. The axes combine as a ``grid`` (every combination, the first axis
varying slowest) or a ``zip`` (the n-th value of each axis; all axes must be the same length).
A sweep makes at most :data:`MAX_SWEEP_ITEMS` experiments.

Names come from a template (default :data:`DEFAULT_TEMPLATE`, ``{base}.{key}{value}``). The
part from the first ``{key}``/``{value}`` to the last is repeated once per swept key and joined
by ``.``: ``{base}.{key}{value}`` over ``trainer.lr`` and ``bs`` reads ``base.lr0.001.bs64``.
``{key}`` is the flag key's last dotted segment (``trainer.lr`` -> ``lr``); ``{i}`` is the
item's number from 1. The result is made a valid name (characters SkyPilot refuses become
``-``, runs of separators shortened, cut to ``NAME_MAX_LENGTH``) and unique: against existing
experiments and within the sweep, a clash becomes ``name.2``, ``name.3``, ... and the plan says
so. ``plan()`` is read-only; ``create_sweep()`` creates everything in one transaction or
nothing.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from experiments import services, validation
from experiments.forms import parse_flag_value, unparse_flag_value
from experiments.models import Experiment, ExperimentGroup, Operation, RevisionSource

#: Most experiments one sweep creates (a grid's product, a zip's length).
MAX_SWEEP_ITEMS = 200
#: Most flag keys one sweep varies.
MAX_AXES = 10
DEFAULT_TEMPLATE = "{base}.{key}{value}"
MODES = ("grid", "zip")
PLACEHOLDERS = ("base", "key", "value", "i")
TIMES = "\u00d7"

#: The base configuration a sweep copies (everything of an experiment a user sets but its name
#: and its star).
BASE_FIELDS = services.COPY_FIELDS

_NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(
    rf"\s*(?P<a>{_NUM})\s*\.\.\s*(?P<b>{_NUM})"
    rf"(?:\s+(?:x\s*(?P<count>\d+)(?P<log>\s+log)?|step\s+(?P<step>{_NUM})))?\s*",
    re.IGNORECASE,
)
_INT_RE = re.compile(r"[-+]?\d+")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_PER_KEY_RE = re.compile(r"\{(?:key|value)\}")


@dataclass(frozen=True)
class Axis:
    """One swept flag: its key and the values it takes, in order."""

    key: str
    values: tuple[Any, ...]
    spec: str = ""

    @property
    def short_key(self) -> str:
        return self.key.rsplit(".", 1)[-1]


def clean_float(value: float) -> float:
    """A computed float without its rounding noise: 12 significant digits."""
    return float(format(value, ".12g"))


def value_text(value: Any) -> str:
    """How a value reads in a name and in the preview (floats: shortest round-trip)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip; 2.0 stays "2.0": the flag is a float
    return str(value)


def _count_error(key: str, count: int | None) -> ValidationError:
    many = f"{count} values" if count is not None else "over a million values"
    return ValidationError(f"{key}: {many}; a sweep makes at most {MAX_SWEEP_ITEMS} experiments.")


def _range_values(key: str, match: re.Match[str]) -> list[Any]:
    a_text, b_text = match.group("a"), match.group("b")
    a, b = float(a_text), float(b_text)
    ints = bool(_INT_RE.fullmatch(a_text) and _INT_RE.fullmatch(b_text))
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValidationError(f"{key}: the range's ends must be finite numbers.")
    if match.group("step") is not None:
        step_text = match.group("step")
        step = float(step_text)
        if step == 0 or not math.isfinite(step):
            raise ValidationError(f"{key}: the step must be a non-zero number.")
        if (b - a) * step < 0:
            raise ValidationError(
                f"{key}: a step of {step_text} never gets from {a_text} to {b_text}."
            )
        span = (b - a) / step
        if not math.isfinite(span) or span + 1 > MAX_SWEEP_ITEMS:
            raise _count_error(
                key, math.floor(span) + 1 if math.isfinite(span) and span < 1e6 else None
            )
        count = math.floor(span + 1e-9) + 1
        if count > MAX_SWEEP_ITEMS:
            raise _count_error(key, count)
        if ints and _INT_RE.fullmatch(step_text):
            return [int(a_text) + i * int(step_text) for i in range(count)]
        return [clean_float(a + i * step) for i in range(count)]
    if match.group("count") is None:
        raise ValidationError(
            f"{key}: say how many values the range has ({a_text}..{b_text} x4, "
            f"{a_text}..{b_text} x4 log) or its step ({a_text}..{b_text} step 2)."
        )
    count = int(match.group("count"))
    if count < 2:
        raise ValidationError(
            f"{key}: x{count}: a range needs at least 2 values (x2); list one value as it is."
        )
    if count > MAX_SWEEP_ITEMS:
        raise _count_error(key, count)
    if match.group("log"):
        if a <= 0 or b <= 0:
            raise ValidationError(
                f"{key}: a log range needs positive ends ({a_text}..{b_text} is not)."
            )
        la, lb = math.log10(a), math.log10(b)
        values = [clean_float(10 ** (la + i * (lb - la) / (count - 1))) for i in range(count)]
        values[0], values[-1] = a, b
        if ints and all(v.is_integer() for v in values):
            return [int(v) for v in values]
        return values
    if ints and (int(b_text) - int(a_text)) % (count - 1) == 0:
        start, step = int(a_text), (int(b_text) - int(a_text)) // (count - 1)
        return [start + i * step for i in range(count)]
    values = [clean_float(a + i * (b - a) / (count - 1)) for i in range(count)]
    values[0], values[-1] = a, b
    return values


def parse_axis(key: str, spec: Any) -> Axis:
    """One axis from its spec (a text as in the module's doc, or a list of values).

    Errors are ValidationErrors whose message starts with the key.
    """
    try:
        validation.validate_flag_key(key)
    except ValidationError as exc:
        raise ValidationError(f"{key}: {exc.messages[0]}") from None
    if isinstance(spec, list | tuple):
        values = list(spec)
        text = ", ".join(unparse_flag_value(v) for v in values)
    elif isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValidationError(f"{key}: give its values (0.1, 0.3 or 1..8 x4).")
        match = _RANGE_RE.fullmatch(text)
        if match:
            values = _range_values(key, match)
        else:
            parts = [p.strip() for p in text.split(",")]
            if any(not p for p in parts):
                raise ValidationError(f"{key}: an empty value in {text!r} (values: 0.1, 0.3, 1).")
            values = [parse_flag_value(p) for p in parts]
    else:
        raise ValidationError(f"{key}: give a list of values or a text such as 1..8 x4.")
    if not values:
        raise ValidationError(f"{key}: give at least one value.")
    if len(values) > MAX_SWEEP_ITEMS:
        raise _count_error(key, len(values))
    seen: list[Any] = []
    for value in values:
        try:
            validation.validate_flag_value(key, value)
        except ValidationError as exc:
            raise ValidationError(f"{key}: {exc.messages[0]}") from None
        if any(type(v) is type(value) and v == value for v in seen):
            raise ValidationError(f"{key}: the value {value_text(value)} is listed twice.")
        seen.append(value)
    return Axis(key=key, values=tuple(values), spec=text)


def parse_axes(specs: list[tuple[str, Any]] | dict[str, Any]) -> list[Axis]:
    """Every axis, or a ValidationError on ``axes`` listing each bad one."""
    pairs = list(specs.items()) if isinstance(specs, dict) else list(specs)
    errors: list[str] = []
    axes: list[Axis] = []
    keys: set[str] = set()
    if not pairs:
        errors.append("Add at least one flag to sweep.")
    if len(pairs) > MAX_AXES:
        errors.append(f"At most {MAX_AXES} flags per sweep (this has {len(pairs)}).")
    for key, spec in pairs:
        key = (key or "").strip() if isinstance(key, str) else key
        if key in keys:
            errors.append(f"{key}: listed twice.")
            continue
        keys.add(key)
        try:
            axes.append(parse_axis(key, spec))
        except ValidationError as exc:
            errors.extend(exc.messages)
    if errors:
        raise ValidationError({"axes": errors})
    return axes


def combinations(axes: list[Axis], mode: str) -> list[tuple[Any, ...]]:
    """The value tuples, in order: a grid (first axis slowest) or a zip."""
    if mode not in MODES:
        raise ValidationError({"mode": f"Mode {mode!r} is not one of {', '.join(MODES)}."})
    if mode == "zip":
        lengths = {len(a.values) for a in axes}
        if len(lengths) > 1:
            detail = ", ".join(f"{a.key} has {len(a.values)}" for a in axes)
            raise ValidationError(
                {"mode": f"zip needs the same number of values on every flag ({detail})."}
            )
        return list(zip(*(a.values for a in axes), strict=True))
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_SWEEP_ITEMS:
        detail = f" {TIMES} ".join(str(len(a.values)) for a in axes)
        raise ValidationError(
            {
                "axes": f"The grid is {detail} = {count} experiments; a sweep makes at most "
                f"{MAX_SWEEP_ITEMS}."
            }
        )
    return list(itertools.product(*(a.values for a in axes)))


def check_template(template: str) -> str:
    """The template, or a ValidationError on ``name_template`` naming an unknown placeholder."""
    template = (template or "").strip() or DEFAULT_TEMPLATE
    unknown = sorted({m for m in _PLACEHOLDER_RE.findall(template) if m not in PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise ValidationError(
            {
                "name_template": f"Unknown placeholder {', '.join('{' + u + '}' for u in unknown)}"
                f" (known: {known})."
            }
        )
    return template


def render_name(template: str, base: str, axes: list[Axis], values: tuple[Any, ...], i: int) -> str:
    """The raw name of one item (before it is made valid and unique)."""
    found = list(_PER_KEY_RE.finditer(template))
    if found:
        start, end = found[0].start(), found[-1].end()
        part = template[start:end]
        pieces = [
            part.replace("{key}", axis.short_key).replace("{value}", value_text(value))
            for axis, value in zip(axes, values, strict=True)
        ]
        template = template[:start] + ".".join(pieces) + template[end:]
    return template.replace("{base}", base).replace("{i}", str(i))


def valid_name(raw: str) -> str:
    """``raw`` made a valid experiment name: characters SkyPilot refuses become ``-``, runs of
    three or more separators are cut to their first two, it starts and ends with a letter or
    digit and fits ``NAME_MAX_LENGTH``; all digits gets an ``s`` in front."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", raw)
    name = re.sub(r"[._-]{3,}", lambda m: m.group(0)[:2], name).strip("._-")
    name = name[: validation.NAME_MAX_LENGTH].rstrip("._-")
    if not name:
        name = "sweep"
    if validation.NAME_ID_RE.fullmatch(name):
        name = ("s" + name)[: validation.NAME_MAX_LENGTH]
    return name


def numbered(name: str, number: int) -> str:
    """``name.2``, ``name.3``, ... cut to fit (the stem loses trailing separators)."""
    suffix = f".{number}"
    return name[: validation.NAME_MAX_LENGTH - len(suffix)].rstrip("._-") + suffix


# --- the plan -----------------------------------------------------------------------------------


@dataclass
class SweepItem:
    """One experiment a sweep creates."""

    index: int
    name: str
    values: dict[str, Any]  # swept key -> value
    fields: dict[str, Any]  # what create_experiment gets (the name included)
    notes: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def nodes(self) -> int:
        return self.fields.get("nodes") or 1

    @property
    def gpus_per_node(self) -> int:
        return self.fields.get("gpus") or 0

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def differing(self) -> dict[str, Any]:
        """The swept flags, as they differ from the base (every swept key is shown)."""
        return self.values

    @property
    def shown_values(self) -> list[str]:
        """The swept values as the preview shows them, in the axes' order."""
        return [value_text(v) for v in self.values.values()]

    def shape(self) -> str:
        """``2 nodes x 8 H100 = 16 GPUs`` (a multiplication sign): what a Start of this item requests."""
        nodes = self.nodes
        word = "node" if nodes == 1 else "nodes"
        if not self.gpus_per_node:
            return f"{nodes} CPU {word}"
        accelerator = self.fields.get("accelerator") or settings.SKYDECK_DEFAULT_ACCELERATOR
        return (
            f"{nodes} {word} {TIMES} {self.gpus_per_node} {accelerator or 'GPU'} = "
            f"{self.gpus} GPU{'s' if self.gpus != 1 else ''}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "values": self.values,
            "flags": self.fields.get("flags", {}),
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "gpus": self.gpus,
            "notes": self.notes,
            "errors": self.errors or None,
        }


@dataclass
class SweepPlan:
    """What a sweep creates: its items, in order, and what starting them all requests."""

    base: str
    axes: list[Axis]
    mode: str
    template: str
    items: list[SweepItem]

    @property
    def keys(self) -> list[str]:
        return [a.key for a in self.axes]

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def nodes(self) -> int:
        return sum(i.nodes for i in self.items)

    @property
    def gpus(self) -> int:
        return sum(i.gpus for i in self.items)

    @property
    def gpus_each(self) -> int | None:
        """The GPUs of one item when every item requests the same (it does: only flags vary)."""
        each = {i.gpus for i in self.items}
        return each.pop() if len(each) == 1 else None

    @property
    def valid(self) -> bool:
        return not any(i.errors for i in self.items)

    def summary(self) -> str:
        """``12 experiments, 8 GPUs each, 96 GPUs if all started``."""
        what = f"{self.count} experiment{'s' if self.count != 1 else ''}"
        each = self.gpus_each
        if each is not None and self.count > 1:
            return f"{what}, {each} GPU{'s' if each != 1 else ''} each, {self.gpus} GPUs if all started"
        return f"{what}, {self.gpus} GPU{'s' if self.gpus != 1 else ''} if all started"

    def errors(self) -> dict[str, list[str]]:
        """Per-item errors as ``{"items": ["#3 name: field: message", ...]}`` (empty if valid)."""
        lines = [
            f"#{item.index} {item.name}: {fname}: {message}"
            for item in self.items
            for fname, messages in item.errors.items()
            for message in messages
        ]
        return {"items": lines} if lines else {}

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "keys": self.keys,
            "mode": self.mode,
            "name_template": self.template,
            "count": self.count,
            "nodes": self.nodes,
            "gpus": self.gpus,
            "gpus_each": self.gpus_each,
            "summary": self.summary(),
            "valid": self.valid,
            "items": [i.as_dict() for i in self.items],
        }


def base_fields_of(experiment: Experiment) -> dict[str, Any]:
    """A sweep's base configuration from an experiment (its name is the names' ``{base}``)."""
    fields = {f: getattr(experiment, f) for f in BASE_FIELDS}
    fields["flags"] = dict(experiment.flags or {})
    fields["tags"] = list(experiment.tags or [])
    fields["name"] = experiment.name
    return fields


def _unique_names(raw: list[str]) -> list[tuple[str, list[str]]]:
    """Each name made unique against the database and the earlier items, with notes.

    One query for the names as rendered; another per round of renames only if a clash needs one.
    """
    names = list(raw)
    notes: list[list[str]] = [[] for _ in raw]
    taken = set(Experiment.objects.filter(name__in=set(names)).values_list("name", flat=True))
    numbers = [1] * len(names)
    for _ in range(20):
        used: set[str] = set()
        pending = []
        for i, name in enumerate(names):
            if name in taken or name in used:
                pending.append(i)
            else:
                used.add(name)
        if not pending:
            break
        candidates = {}
        for i in pending:
            numbers[i] += 1
            candidates[i] = numbered(raw[i], numbers[i])
        taken |= set(
            Experiment.objects.filter(name__in=set(candidates.values())).values_list(
                "name", flat=True
            )
        )
        for i, candidate in candidates.items():
            old = names[i]
            why = "name taken" if old in taken else "same name as another item"
            if not notes[i]:
                notes[i].append(f"{raw[i]}: {why} {chr(0x2192)} renamed {candidate}")
            else:
                notes[i][0] = f"{raw[i]}: {why} {chr(0x2192)} renamed {candidate}"
            names[i] = candidate
    return list(zip(names, notes, strict=True))


def _item_errors(fields: dict[str, Any]) -> dict[str, list[str]]:
    """The model's rules on one item, without a query (uniqueness is the names' own pass)."""
    candidate = Experiment(**fields)
    try:
        candidate.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        return exc.message_dict
    return {}


def plan(
    base_fields: dict[str, Any],
    axes: list[Axis] | dict[str, Any],
    mode: str = "grid",
    template: str = "",
) -> SweepPlan:
    """Every experiment a sweep would create, without creating any.

    ``base_fields`` is a configuration (``BASE_FIELDS``) with its ``name``: the ``{base}`` of the
    names. A few queries whatever the number of items.
    """
    if not isinstance(axes, list):
        axes = parse_axes(axes)
    template = check_template(template)
    combos = combinations(axes, mode)
    base = str(base_fields.get("name") or "").strip() or "sweep"
    fields_base = {f: v for f, v in base_fields.items() if f in BASE_FIELDS}
    flags_base = dict(fields_base.get("flags") or {})
    raw = [
        valid_name(render_name(template, base, axes, values, i))
        for i, values in enumerate(combos, start=1)
    ]
    items = []
    for i, ((name, notes), values) in enumerate(zip(_unique_names(raw), combos, strict=True), 1):
        swept = dict(zip((a.key for a in axes), values, strict=True))
        fields = {**fields_base, "flags": {**flags_base, **swept}, "name": name}
        fields["tags"] = list(fields_base.get("tags") or [])
        item = SweepItem(index=i, name=name, values=swept, fields=fields, notes=notes)
        item.errors = _item_errors(fields)
        items.append(item)
    return SweepPlan(base=base, axes=axes, mode=mode, template=template, items=items)


# --- creating -----------------------------------------------------------------------------------


@dataclass
class SweepResult:
    plan: SweepPlan
    experiments: list[Experiment]
    group: ExperimentGroup


def default_group_name(base: str) -> str:
    """A new sweep group's name: ``<base> sweep``."""
    return f"{base} sweep"[: validation.GROUP_NAME_MAX_LENGTH]


def free_group_name(base: str) -> str:
    """``<base> sweep``, or ``<base> sweep 2``, ... when taken."""
    first = default_group_name(base)
    taken = set(
        ExperimentGroup.objects.filter(name__startswith=first).values_list("name", flat=True)
    )
    name, number = first, 1
    while name in taken:
        number += 1
        suffix = f" {number}"
        name = first[: validation.GROUP_NAME_MAX_LENGTH - len(suffix)] + suffix
    return name


@services.writes
def create_sweep(
    actor: services.Actor,
    sweep: SweepPlan,
    *,
    group: ExperimentGroup | None = None,
    new_group_name: str | None = None,
    source: str = RevisionSource.SWEEP,
) -> SweepResult:
    """Create every planned experiment (STOPPED: creating never launches) and their group.

    All or nothing: a plan with an invalid item, or an item the database refuses, creates
    nothing and raises a ValidationError listing the items (``items``). The experiments go into
    ``group`` (its flag columns gain the swept keys unless they are automatic) or a new group
    ``new_group_name`` (default ``<base> sweep``) whose flag columns are the swept keys. One
    SWEEP row in the operation log says what was made.
    """
    if not sweep.valid:
        raise ValidationError(sweep.errors())
    if group is not None and new_group_name:
        raise ValidationError({"group": "Choose an existing group or name a new one, not both."})
    keys = sweep.keys
    created: list[Experiment] = []
    with transaction.atomic():
        if group is None:
            name = (new_group_name or "").strip()
            if not name:
                name = free_group_name(sweep.base)
            elif ExperimentGroup.objects.filter(name=name).exists():
                raise ValidationError({"new_group": f"A group named {name!r} already exists."})
            group = services.create_group(actor, name, flags=keys)
        elif group.flags:
            missing = [k for k in keys if k not in group.flags]
            if missing:
                services.update_group(actor, group, flags=[*group.flags, *missing])
        problems: list[str] = []
        for item in sweep.items:
            try:
                with transaction.atomic():
                    created.append(services.create_experiment(actor, source=source, **item.fields))
            except ValidationError as exc:
                for fname, messages in getattr(exc, "message_dict", {"": exc.messages}).items():
                    problems.extend(f"#{item.index} {item.name}: {fname}: {m}" for m in messages)
            except IntegrityError:
                problems.append(f"#{item.index} {item.name}: name: the name was just taken.")
        if problems:  # raised inside the transaction: nothing stays
            raise ValidationError({"items": problems})
        services.add_to_group(actor, group, created)
        services.record(
            actor,
            Operation.SWEEP,
            message=f"sweep of {sweep.base}: {len(created)} experiments ({sweep.mode} over "
            f"{', '.join(keys)}) into group {group.name}",
        )
    return SweepResult(plan=sweep, experiments=created, group=group)
