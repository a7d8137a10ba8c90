"""Progress from training logs, and when a running job looks stalled (issue 16).

Pure functions over text and numbers (no database): the sampler (``syncing.sampler``) feeds
them a running job's last log lines and stores what comes out.

What a sample is, from the last lines of a log:

- **step** and **total** from the newest line that shows a step: ``[12/50]``, tqdm's
  ``12/50 [00:10<00:30]``, ``step 1200/5000``, ``step: 568``, ``iter=40``;
- **epoch** from the newest line that shows one: ``Epoch 3/10``, ``epoch=3`` (an epoch's own
  total is not kept: ``total`` is the steps');
- **metrics**, each key's value from the newest line carrying it: ``key=value`` and
  ``key: value`` on any line, ``key value`` (``step 568 | loss 0.5682 | tok/s 412083``) only
  on lines that also show a step or an epoch (elsewhere "allocate 2.50 GiB" would be a metric).
  At most MAX_METRICS keys, names of at most MAX_KEY_LENGTH characters of ``[A-Za-z0-9_./-]``;
  values are numbers (whole numbers stay exact ints), never nan or infinite.

A group's own patterns (regular expressions with named groups ``key`` and ``value``) are tried
on each line before the built-in ones; a pattern whose key is ``step``, ``total`` or ``epoch``
sets that part of the progress.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: At most this many metrics a sample (the newest keys win).
MAX_METRICS = 20
MAX_KEY_LENGTH = 64
#: Longer lines are cut before matching: a log line can be megabytes of JSON.
MAX_LINE_LENGTH = 2000
#: A group's patterns: how many, and how long each may be.
MAX_PATTERNS = 20
MAX_PATTERN_LENGTH = 500
#: Steps and epochs are stored in 64-bit integer columns.
_INT_MAX = 2**63 - 1

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_STEP_WORDS = r"(?:global[_ ]?step|step|iteration|iter)"
_STEP_PATTERNS = [
    # step 1200/5000, Step: 568, iter=40, global_step 7 of 100
    re.compile(
        rf"(?<![\w./-]){_STEP_WORDS}\s*[:=#]?\s*(\d+)(?:\s*(?:/|of)\s*(\d+))?(?![\w.])", re.I
    ),
    # [12/50]
    re.compile(r"\[\s*(\d+)\s*/\s*(\d+)\s*\]"),
    # tqdm: " 24%|██▍       | 12/50 [00:10<00:30, 1.20it/s]"
    re.compile(r"\|\s*(\d+)/(\d+)\s*\["),
]
_EPOCH = re.compile(r"(?<![\w./-])epoch\s*[:=#]?\s*(\d+)(?:\s*(?:/|of)\s*\d+)?(?![\w.])", re.I)
#: ``key=value`` / ``key: value`` (any line) and ``key value`` (progress lines only).
_KEY = r"(?<![\w./-])(?P<key>[A-Za-z_][\w./-]*?)"
_VALUE = rf"(?P<value>{_NUMBER})(?![\w./])"
_STRICT_PAIR = re.compile(rf"{_KEY}\s*(?:=|:)\s*{_VALUE}")
_LOOSE_PAIR = re.compile(rf"{_KEY}\s+{_VALUE}")
#: Keys that are progress, never metrics.
_PROGRESS_KEYS = frozenset(
    {"step", "global_step", "globalstep", "iteration", "iter", "epoch", "total"}
)
_KEY_CHARS = re.compile(r"[^\w./-]")


@dataclass(frozen=True)
class Sample:
    """What one reading of a log says. ``metrics`` maps a name to an int or a float."""

    step: int | None = None
    total: int | None = None
    epoch: int | None = None
    metrics: dict[str, int | float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The shape of ``Job.progress``."""
        return {
            "step": self.step,
            "total": self.total,
            "epoch": self.epoch,
            "metrics": dict(self.metrics),
        }


def number(text: str) -> int | float | None:
    """A log's number: an exact int for whole numbers, else a float; None for nan/inf/huge."""
    if re.fullmatch(r"[-+]?\d+", text):
        value = int(text)
        return value if abs(value) <= _INT_MAX else None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _count(text: str | None) -> int | None:
    """A step, total or epoch: a whole number that fits the column, else None."""
    if text is None:
        return None
    value = number(text)
    return value if isinstance(value, int) and 0 <= value <= _INT_MAX else None


def clean_key(key: str) -> str:
    """A metric name as stored: allowed characters only, at most MAX_KEY_LENGTH."""
    return _KEY_CHARS.sub("_", key.strip())[:MAX_KEY_LENGTH]


def compile_patterns(patterns: Iterable[str] | None) -> list[re.Pattern[str]]:
    """A group's metric patterns, compiled; ValueError names the first one that is not usable
    (so the caller can say so rather than silently read less)."""
    out = []
    for pattern in patterns or []:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"metric pattern {pattern!r}: a non-empty string is needed")
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ValueError(f"metric pattern is longer than {MAX_PATTERN_LENGTH} characters")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(
                f"metric pattern {pattern!r} is not a regular expression: {exc}"
            ) from None
        missing = {"key", "value"} - set(compiled.groupindex)
        if missing:
            names = " and ".join(f"(?P<{name}>...)" for name in sorted(missing))
            raise ValueError(f"metric pattern {pattern!r} has no named group {names}")
        out.append(compiled)
    return out


def _step_of(line: str) -> tuple[int, int | None] | None:
    for pattern in _STEP_PATTERNS:
        for match in pattern.finditer(line):
            step = _count(match.group(1))
            if step is not None:
                return step, _count(match.group(2))
    return None


def _pairs(
    line: str, patterns: Sequence[re.Pattern[str]], loose: bool
) -> list[tuple[str, str, bool]]:
    """(key, value text, from a group's pattern) found on a line: the group's patterns first,
    then the built-in ones on what they left (their matches are blanked out)."""
    found = []
    for pattern in patterns:
        spans = []
        for match in pattern.finditer(line):
            key, value = match.group("key"), match.group("value")
            if key and value:
                found.append((key, value, True))
                spans.append(match.span())
        for start, end in reversed(spans):
            line = f"{line[:start]} | {line[end:]}"
    found += [(m.group("key"), m.group("value"), False) for m in _STRICT_PAIR.finditer(line)]
    if loose:
        found += [(m.group("key"), m.group("value"), False) for m in _LOOSE_PAIR.finditer(line)]
    return found


def parse(lines: Iterable[str], patterns: Sequence[re.Pattern[str]] | None = None) -> Sample | None:
    """The progress and metrics the last lines of a log show (newest lines win), or None when
    no line shows any. ``patterns`` come from :func:`compile_patterns`."""
    patterns = patterns or []
    step: int | None = None
    total: int | None = None
    epoch: int | None = None
    have_step = have_epoch = False
    metrics: dict[str, int | float] = {}
    for raw in reversed(list(lines)):
        line = raw[:MAX_LINE_LENGTH]
        if not line.strip():
            continue
        line_step = _step_of(line)
        epoch_match = _EPOCH.search(line)
        line_epoch = _count(epoch_match.group(1)) if epoch_match else None
        own: dict[str, int] = {}
        loose = line_step is not None or line_epoch is not None
        for key, text, custom in _pairs(line, patterns, loose):
            name = clean_key(key)
            lowered = name.lower()
            if custom and lowered in ("step", "total", "epoch"):
                value = _count(text)
                if value is not None:
                    own.setdefault(lowered, value)
                continue
            if not name or lowered in _PROGRESS_KEYS or name in metrics:
                continue
            value = number(text)
            if value is not None and len(metrics) < MAX_METRICS:
                metrics[name] = value
        if "step" in own and not have_step:
            step, total, have_step = own["step"], own.get("total"), True
        if "epoch" in own and not have_epoch:
            epoch, have_epoch = own["epoch"], True
        if line_step is not None and not have_step:
            (step, total), have_step = line_step, True
        if line_epoch is not None and not have_epoch:
            epoch, have_epoch = line_epoch, True
    if not have_step and not have_epoch and not metrics:
        return None
    return Sample(step=step, total=total, epoch=epoch, metrics=metrics)


def advanced(previous: dict[str, Any] | None, sample: Sample) -> bool:
    """Whether the log moved on since ``previous`` (a stored ``Job.progress``): its step or
    epoch is new or different. A lower step counts: the run restarted (a recovery) and runs."""
    if sample.step is None and sample.epoch is None:
        return False
    before = previous or {}
    return (sample.step, sample.epoch) != (before.get("step"), before.get("epoch"))


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min``, ``1 h 12 min``, ``2 h``, ``3 d 4 h``: how long, for a reason.
    (The deck's ``dashboard.duration_text`` is web code, which the domain cannot import.)"""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def stall_reason(
    now: datetime,
    *,
    threshold_minutes: int,
    advanced_at: datetime | None,
    newest_checkpoint_at: datetime | None,
    started_at: datetime | None,
    recovery_count: int = 0,
    max_recoveries: int | None = None,
) -> str | None:
    """Why a RUNNING job looks stuck, or None.

    - its log showed progress once, and none for longer than the threshold;
    - its experiment wrote checkpoints, but none for longer than the threshold, and the job
      has run longer than that (a job that just started is given its time);
    - it recovered more than ``max_recoveries`` times.

    ``threshold_minutes`` 0 turns the first two off.
    """
    if threshold_minutes > 0:
        limit = threshold_minutes * 60
        if advanced_at is not None and (now - advanced_at).total_seconds() > limit:
            return f"no log progress for {duration_text((now - advanced_at).total_seconds())}"
        if newest_checkpoint_at is not None:
            quiet = (now - newest_checkpoint_at).total_seconds()
            running = (now - started_at).total_seconds() if started_at else quiet
            if quiet > limit and running > limit:
                return f"no new checkpoint for {duration_text(quiet)}"
    if max_recoveries is not None and recovery_count > max_recoveries:
        return f"recovered {recovery_count} times (more than {max_recoveries})"
    return None
