"""View-model for the dashboard: groups of experiment rows built in a constant number of queries.

``build_dashboard`` costs what is visible, not the size of the deck: the version is one index
seek (``deckchanges``), every group's header figures are aggregated in SQL, and only the rows a
browser shows are built: the first ``FIRST_ROWS`` on a first load (groups further down load as
they scroll into view, long groups show ``GROUP_ROWS`` and a "Show more" row), or on a poll just
the sections that changed. The members and flags of the built sections come in one query and
their rows in one more, so the number of queries is constant.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, F, OuterRef, Q, Subquery, Sum
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from experiments import deckchanges, deckquery, triage
from experiments.control import Plan
from experiments.models import (
    NO_JOB,
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentGroupMember,
    Job,
    JobStatus,
)
from syncing.services import SCHEDULER_WAKE_SECONDS, health_report, recent_health_report

MISSING = "\u2013"  # en dash

#: Badge colour family of every state the State column can show.
STATE_TONES: dict[str, str] = {
    NO_JOB: "idle",
    JobStatus.PENDING: "wait",
    JobStatus.SUBMITTED: "wait",
    JobStatus.STARTING: "wait",
    JobStatus.RUNNING: "run",
    JobStatus.RECOVERING: "warn",
    JobStatus.WINDING_DOWN: "wind",
    JobStatus.CANCELLING: "wind",
    JobStatus.SUCCEEDED: "done",
    JobStatus.CANCELLED: "idle",
    JobStatus.FAILED: "fail",
    JobStatus.FAILED_SETUP: "fail",
    JobStatus.FAILED_PRECHECKS: "fail",
    JobStatus.FAILED_NO_RESOURCE: "fail",
    JobStatus.FAILED_CONTROLLER: "fail",
}


FAILED_STATES = frozenset(JobStatus.failed())
TIMES = "\u00d7"  # multiplication sign


def state_tone(state: str | None) -> str:
    return STATE_TONES.get(state or NO_JOB, "idle")


def state_label(state: str | None) -> str:
    if not state or state == NO_JOB:
        return "no job"
    return state.replace("_", " ").lower()


# --- values ---------------------------------------------------------------------------------


def exact_number(value: float | int) -> str:
    """A number exactly as stored: an int in full (131072, never "131.1K": 1000 and 1024 differ),
    a float in its shortest form that reads back the same (``repr``: 0.0003, 1e-05, 3.0)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def format_flag(value: Any) -> str:
    """A flag cell's text: ✓/✗ for booleans, numbers exact, missing as a dash (the row markup
    groups the digits of a wide integer with thin spaces that copy as nothing)."""
    if value is _ABSENT or value is None:
        return MISSING
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, int | float):
        return exact_number(value)
    return str(value)


def full_flag(value: Any) -> str:
    """The exact value, for titles and the editor."""
    if value is _ABSENT:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


_ABSENT = _Absent()


def order_by_parent(keys: list[str]) -> list[str]:
    """Keys with the same dotted parent brought together, in order of first appearance.

    ``[a.x, lr, a.y]`` -> ``[a.x, a.y, lr]``: a grouped header can then span its columns.
    """
    firsts: dict[str, int] = {}
    for index, key in enumerate(keys):
        firsts.setdefault(flag_parent(key), index)
    return sorted(keys, key=lambda k: firsts[flag_parent(k)])


def flag_parent(key: str) -> str:
    """``trainer.optimizer.lr`` -> ``trainer.optimizer``; ``lr`` -> ``""``."""
    return key.rpartition(".")[0]


# --- time -----------------------------------------------------------------------------------


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' (or 'in 5 s' for clock skew)."""
    if moment is None:
        return "never"
    now = now or timezone.now()
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{int(seconds)} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min"
    elif seconds < 86400 * 2:
        text = f"{int(seconds // 3600)} h"
    else:
        text = f"{int(seconds // 86400)} d"
    return f"in {text}" if future else f"{text} ago"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


# --- health ---------------------------------------------------------------------------------

SOURCE_LABELS = {"skypilot": "SkyPilot", "s3": "S3", "backup": "Backup"}


@dataclass
class HealthPill:
    source: str
    label: str
    tone: str  # ok | late | bad | unknown
    text: str
    title: str


def health_pills(report: dict[str, Any] | None = None) -> list[HealthPill]:
    """One pill per sync source; red whenever the last attempt failed, never green over a failure.

    A worker pill appears only when no background worker is alive (then nothing syncs).
    """
    report = report if report is not None else health_report()
    now = timezone.now()
    if report.get("database") != "ok":
        return [
            HealthPill("database", "Database", "bad", "unreachable", str(report.get("database")))
        ]
    pills = []
    sources = list((report.get("sync") or {}).items())
    if report.get("backup"):  # only when scheduled backups are on
        sources.append(("backup", report["backup"]))
    for source, entry in sources:
        label = SOURCE_LABELS.get(source, source)
        subject = "Scheduled backup" if source == "backup" else f"{label} sync"
        interval = entry.get("interval_seconds") or 60
        success = parse_datetime(entry["last_success"]) if entry.get("last_success") else None
        attempt = parse_datetime(entry["last_attempt"]) if entry.get("last_attempt") else None
        success_text = ago(success, now) if success else "never"
        every = f"every {interval} s"
        if entry.get("available") is False:
            pills.append(
                HealthPill(source, label, "unknown", "off", "This sync is not available here.")
            )
            continue
        if attempt is None:
            pills.append(HealthPill(source, label, "unknown", "not run yet", f"Runs {every}."))
            continue
        if entry.get("ok") is False:
            error = entry.get("last_error") or "unknown error"
            pills.append(
                HealthPill(
                    source,
                    label,
                    "bad",
                    f"failed, ok {success_text}" if success else "failed",
                    f"{subject}: the last attempt ({ago(attempt, now)}) failed: {error}",
                )
            )
            continue
        age = (now - success).total_seconds() if success else math.inf
        every = max(interval, SCHEDULER_WAKE_SECONDS)  # the scheduler wakes every 30 s
        if entry.get("stale") or age > 6 * every:
            tone = "bad" if age > 6 * every else "late"
        elif age <= 2 * every + 30:
            tone = "ok"
        else:
            tone = "late"
        detail = {"ok": "on schedule", "late": "late", "bad": "stale"}[tone]
        exact = success.isoformat() if success else "never"
        text = success_text
        title = f"{subject}: last success {exact} ({detail}; runs {every})."
        partial = entry.get("partial_errors") or 0
        if partial and tone == "ok":  # the pass worked, but not for everything it covers
            tone = "late"
            text = f"{partial} failed"
            title += (
                f" {partial} of its items failed in that pass: {entry.get('partial_detail', '')}"
            )
        pills.append(HealthPill(source, label, tone, text, title.strip()))
    worker = report.get("worker")
    if isinstance(worker, dict) and not worker.get("alive", True):
        if worker.get("error"):
            why = f"The worker status could not be read ({worker['error']})."
        elif worker.get("last_task_at"):
            last = parse_datetime(worker["last_task_at"])
            why = f"No task finished since {ago(last, now)}: syncs and launches are not running."
        else:
            why = "No background task has ever finished: start SkyDeck with its worker."
        pills.append(HealthPill("worker", "Worker", "bad", "down", why))
    pills += node_pills(report.get("nodes") or [])
    return pills


def node_pills(nodes: list[dict[str, Any]]) -> list[HealthPill]:
    """With several nodes on one database, a pill per node that is running or gone (a cleanly
    stopped one is left out): amber when gone, never red (the other nodes still serve)."""
    if len(nodes) < 2:
        return []  # one machine: the worker pill says it all
    pills = []
    for node in nodes:
        if node["state"] == "stopped":
            continue
        roles = " + ".join(node["roles"]) or "no role"
        seen = f"last seen {node['seconds_since_seen']:.0f} s ago"
        title = f"Node {node['node']} ({roles}, version {node['version'] or 'unknown'}): {seen}."
        if node["state"] == "gone":
            pills.append(HealthPill(f"node:{node['node']}", node["node"], "late", "gone", title))
        else:
            pills.append(HealthPill(f"node:{node['node']}", node["node"], "ok", roles, title))
    return pills


@dataclass
class ReconcilerPill:
    """The header's "Reconciler: on / dry-run / off / paused" (on is ok; the others warn)."""

    mode: str
    why: str
    paused_at: str | None = None  # set while a restore's pause holds (Resume is offered)
    last_pass: str | None = None

    @property
    def tone(self) -> str:
        return "ok" if self.mode == "on" else "late"

    @property
    def title(self) -> str:
        title = f"Reconciler {self.mode}: {self.why}"
        if self.paused_at:
            title += f" (paused at {self.paused_at})"
        if self.last_pass:
            title += f". Last pass {ago(parse_datetime(self.last_pass))}."
        return title


def reconciler_pill(report: dict[str, Any]) -> ReconcilerPill | None:
    """From ``health_report()["reconciler"]`` (no query of its own)."""
    entry = report.get("reconciler")
    if not entry:
        return None
    return ReconcilerPill(
        entry.get("mode") or "?",
        entry.get("why") or "",
        entry.get("paused_at"),
        entry.get("last_pass"),
    )


# --- rows and groups ------------------------------------------------------------------------


@dataclass
class FlagCell:
    key: str
    text: str
    title: str
    missing: bool
    integer: bool = False  # a wide one is shown with its digits grouped


_SENTINELS = (987654321, 987654322)
_url_patterns: dict[str, str] = {}


def fast_url(name: str, *args: int) -> str:
    """``reverse(name, args=args)`` for integer args, reversing each URL name only once.

    Rendering a thousand rows reverses a handful of URLs per row; doing that through the
    resolver dominated the dashboard's render time.
    """
    pattern = _url_patterns.get(name)
    if pattern is None:
        pattern = reverse(name, args=_SENTINELS[: len(args)])
        for index, sentinel in enumerate(_SENTINELS[: len(args)]):
            pattern = pattern.replace(str(sentinel), "{" + str(index) + "}")
        _url_patterns[name] = pattern
    return pattern.format(*args)


@dataclass
class Row:
    experiment: Experiment
    group_id: int | None
    position: int = 0
    last: bool = False
    cells: list[FlagCell] = field(default_factory=list)
    sorted_by: str = ""  # the filter box's sort (then ↑/↓ cannot say where a row goes)

    @property
    def id(self) -> int:
        return self.experiment.pk

    @property
    def dom_id(self) -> str:
        return f"row-{self.group_id or 'u'}-{self.experiment.pk}"

    @property
    def detail_id(self) -> str:
        return f"detail-{self.group_id or 'u'}-{self.experiment.pk}"

    @property
    def detail_url(self) -> str:
        return fast_url("experiment_detail", self.experiment.pk)

    @property
    def star_url(self) -> str:
        return fast_url("experiment_star", self.experiment.pk)

    @property
    def desired_url(self) -> str:
        return fast_url("experiment_desired", self.experiment.pk)

    @property
    def place_url(self) -> str:
        return fast_url("member_place", self.group_id, self.experiment.pk)

    @property
    def move_url(self) -> str:
        return fast_url("member_move", self.group_id, self.experiment.pk) if self.group_id else ""


@dataclass
class Column:
    key: str
    label: str

    @property
    def sort_column(self) -> str:
        return deckquery.FLAG_PREFIX + self.key


@dataclass
class HeaderBand:
    """A cell of the first header row: a dotted parent spanning its columns, or a plain flag."""

    label: str
    title: str
    span: int  # columns under a parent band; 1 for a plain flag (which spans both rows)
    parent: bool

    @property
    def sort_column(self) -> str:
        return deckquery.FLAG_PREFIX + self.title  # a plain flag's title is its key


def header_bands(columns: list[Column]) -> list[HeaderBand]:
    """First header row over dotted flag columns (empty when no column name has a dot)."""
    if not any("." in column.key for column in columns):
        return []
    bands: list[HeaderBand] = []
    for column in columns:
        parent = flag_parent(column.key)
        if not parent:
            bands.append(HeaderBand(column.key, column.key, 1, False))
        elif bands and bands[-1].parent and bands[-1].label == parent:
            bands[-1].span += 1
        else:
            bands.append(HeaderBand(parent, f"{parent}.*", 1, True))
    return bands


@dataclass
class CommonFlag:
    key: str
    text: str
    title: str


#: Rows a group shows at first; its "Show more" row loads as many again.
GROUP_ROWS = 50
#: Rows the first response builds in all (some screens' worth); groups after them load as they
#: scroll into view.
FIRST_ROWS = 100
#: The key of the "Ungrouped" section (groups are keyed by their id).
UNGROUPED = "u"


@dataclass
class GroupView:
    """One section of the deck: a group (or "Ungrouped"), built with rows or as a header only."""

    group: ExperimentGroup | None
    rows: list[Row]
    columns: list[Column]
    common: list[CommonFlag]
    total: int  # members before the search filter
    matched: int = 0  # members that match the search: shown rows plus those not loaded yet
    running: int = 0
    failed: int = 0
    built: bool = True  # False: only the header; the rows load when it scrolls into view
    offset: int = 0  # position of the first row (a "Show more" answer starts further down)
    rows_only: bool = False  # a poll's answer: only these changed rows and the header figures
    gpu_seconds: float | None = None  # of the matching members' jobs (the header's GPU-h)
    first: bool = False
    last: bool = False

    @property
    def id(self) -> int | None:
        return self.group.pk if self.group else None

    @property
    def key(self) -> str:
        return str(self.group.pk) if self.group else UNGROUPED

    @property
    def name(self) -> str:
        return self.group.name if self.group else "Ungrouped"

    @property
    def collapsed(self) -> bool:
        return bool(self.group and self.group.collapsed)

    @property
    def lazy(self) -> bool:
        """Expanded but not built: a placeholder that asks for its rows once it is in view."""
        return not self.built and not self.collapsed

    @property
    def dom_id(self) -> str:
        return f"group-{self.group.pk}" if self.group else "group-ungrouped"

    @property
    def more(self) -> int:
        """Matching rows after the ones built (the "Show more" row offers them)."""
        return max(0, self.matched - self.offset - len(self.rows)) if self.built else 0

    @property
    def next_offset(self) -> int:
        return self.offset + len(self.rows)

    @property
    def next_count(self) -> int:
        return min(self.more, GROUP_ROWS)

    @property
    def colspan(self) -> int:
        return len(FIXED_COLUMNS) + 1 + len(self.columns)  # and the order column

    @property
    def layout(self) -> str:
        """The fingerprint of its flag columns and shared flags (the section's ``data-layout``):
        while the browser's is the same, a changed row can be swapped in alone."""
        return layout_fingerprint(self.columns, self.common)

    @cached_property
    def bands(self) -> list[HeaderBand]:
        """Grouped headers for dotted flag names: ``trainer.lr`` sits under ``trainer``."""
        return header_bands(self.columns)

    @property
    def dotted_columns(self) -> list[Column]:
        """The second header row: the leaf names of dotted columns."""
        return [c for c in self.columns if "." in c.key]


def desired_hint(experiment: Experiment) -> str:
    """The desired state when the reconciler will act on it: launch, or cancel its own job.

    Someone else's active job under the name is never cancelled by a pass (only a person's
    Stop does that), so it gets no "→ STOPPED".
    """
    active = bool(getattr(experiment, "has_active_job", False))
    owned = bool(getattr(experiment, "has_owned_active_job", False))
    if experiment.desired_state == DesiredState.RUNNING and not active:
        return DesiredState.RUNNING
    if experiment.desired_state == DesiredState.STOPPED and owned:
        return DesiredState.STOPPED
    return ""


def gpu_hours_text(seconds: float | None) -> str:
    """GPU-seconds as the deck shows GPU-hours: one decimal, grouped; the dash when unknown."""
    return MISSING if seconds is None else f"{seconds / 3600:,.1f}"


def failure_bucket_url(signature: str) -> str:
    """The Failures page showing one bucket, over its longest window."""
    query = urlencode({"signature": signature, "days": max(triage.FAILURE_WINDOWS)})
    return f"{reverse('failures')}?{query}"


def decorate(experiment: Experiment) -> Experiment:
    """Attach display attributes used by the row templates (no queries)."""
    experiment.state_tone = state_tone(experiment.current_state)
    experiment.state_label = state_label(experiment.current_state)
    experiment.desired_hint = desired_hint(experiment)
    if experiment.gpus:
        accel = f" {experiment.accelerator}" if experiment.accelerator else ""
        experiment.shape = f"{experiment.nodes}{TIMES}{experiment.gpus}{accel}"
    else:
        experiment.shape = f"{experiment.nodes}{TIMES} CPU"
    experiment.progress_text, experiment.progress_title = progress_text(
        getattr(experiment, "latest_job_progress", None)
        if getattr(experiment, "latest_job_status", None) == JobStatus.RUNNING
        else None
    )
    experiment.spark = None  # (metric, values): attach_sparklines, for the rows it builds
    return experiment


# --- progress -------------------------------------------------------------------------------

#: At most this many points in a deck row's sparkline (the samples are thinned in SQL).
SPARK_POINTS = 48
#: At most this many points in a line of the detail page's metric charts (thinned in Python).
CHART_POINTS = 240


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _percent(step: int, total: int) -> str:
    """11.36 -> "11", 0.42 -> "0.4" (never rounded up to a finished 100)."""
    share = step * 100 / total
    return f"{math.floor(share * 10) / 10:.1f}" if share < 1 else str(math.floor(share))


def progress_text(progress: Any) -> tuple[str, str]:
    """A job's parsed progress as the deck shows it, and its title: ``568 / 5,000 · 11 %``,
    ``step 568`` (no total), ``epoch 3`` (no step); ("", "") when there is nothing to show."""
    if not isinstance(progress, dict):
        return "", ""
    step, total = _int(progress.get("step")), _int(progress.get("total"))
    epoch = _int(progress.get("epoch"))
    if step is not None and total:
        share = step * 100 / total
        return (
            f"{step:,} / {total:,} \u00b7 {_percent(step, total)} %",
            f"Step {step:,} of {total:,} ({share:.2f} %)"
            + (f", epoch {epoch:,}" if epoch is not None else ""),
        )
    if step is not None:
        return f"step {step:,}", f"Step {step:,} (the log gives no total)" + (
            f", epoch {epoch:,}" if epoch is not None else ""
        )
    if epoch is not None:  # the sampler keeps no epoch total (``total`` is the steps')
        return f"epoch {epoch:,}", f"Epoch {epoch:,} (the log gives no step)"
    return "", ""


def spark_metric(names: Any) -> str | None:
    """The metric a sparkline follows: ``loss``, else ``train/loss``, else the first name with
    "loss" in it; None when there is none (no sparkline rather than some other metric)."""
    names = [n for n in names if isinstance(n, str)]
    for wanted in ("loss", "train/loss"):
        if wanted in names:
            return wanted
    return next((n for n in names if "loss" in n.lower()), None)


def metric_value(metrics: Any, name: str) -> float | None:
    """A finite number from a sample's metrics (a missing, non-numeric or NaN value: None)."""
    value = metrics.get(name) if isinstance(metrics, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def attach_sparklines(experiments: list[Experiment]) -> None:
    """``spark`` = (metric, values) on each decorated experiment whose latest job is running
    and has progress: ONE query for all of them (its samples thinned to ``SPARK_POINTS`` per
    job in SQL), none when no row needs one."""
    from django.db.models import F, Window
    from django.db.models.functions import RowNumber

    from experiments.models import JobSample

    wanted: dict[int, list[Experiment]] = {}
    for experiment in experiments:
        if experiment.progress_text and experiment.latest_job_id is not None:
            wanted.setdefault(experiment.latest_job_id, []).append(experiment)
    if not wanted:
        return
    newest = Window(
        RowNumber(), partition_by=[F("job_id")], order_by=[F("taken_at").desc(), F("id").desc()]
    )
    every = Window(Count("id"), partition_by=[F("job_id")])
    samples = (
        JobSample.objects.filter(job_id__in=list(wanted))
        .annotate(newest=newest, every=every)
        .annotate(keep=(F("newest") - 1) % ((F("every") + SPARK_POINTS - 1) / SPARK_POINTS))
        .filter(keep=0)
        .order_by("job_id", "taken_at", "id")
        .values_list("job_id", "metrics")
    )
    series: dict[int, list[Any]] = {}
    for job_id, metrics in samples:
        series.setdefault(job_id, []).append(metrics)
    for job_id, rows in series.items():
        for experiment in wanted[job_id]:
            latest = (experiment.latest_job_progress or {}).get("metrics") or {}
            names = list(latest) if isinstance(latest, dict) else []
            metric = spark_metric(names) or spark_metric(
                dict.fromkeys(k for m in rows if isinstance(m, dict) for k in m)
            )
            if metric is None:
                continue
            values = [v for v in (metric_value(m, metric) for m in rows) if v is not None]
            if len(values) >= 2:
                experiment.spark = (metric, values)


@dataclass
class MetricChart:
    """One parsed metric of a job over its samples, for the detail page's Progress panel."""

    name: str
    xs: list[float]  # the step (or seconds since the first sample when the log has no step)
    ys: list[float]
    x_label: str  # "step" | "time"
    x_min: str
    x_max: str
    last: float
    low: float
    high: float
    count: int  # samples with this metric (before thinning)


@dataclass
class JobProgress:
    """The Progress panel: a job's parsed step / total, stalled reason and metric charts."""

    job: Job | None
    text: str = ""
    title: str = ""
    charts: list[MetricChart] = field(default_factory=list)
    samples: int = 0


def _thin(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """Every n-th point (the first and the last kept), at most about ``limit``."""
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def job_progress(job: Job | None) -> JobProgress:
    """A job's Progress panel: one query (its samples), none for a job never sampled."""
    from experiments.models import JobSample

    if job is None:
        return JobProgress(None)
    text, title = progress_text(job.progress)
    view = JobProgress(job, text, title)
    if job.progress is None and job.progress_at is None:
        return view  # never sampled: no samples to read
    rows = list(
        JobSample.objects.filter(job_id=job.pk)
        .order_by("taken_at", "id")
        .values_list("taken_at", "step", "metrics")
    )
    view.samples = len(rows)
    if not rows:
        return view
    by_step = all(step is not None for _, step, _ in rows)
    start = rows[0][0]
    names: dict[str, None] = {}
    for _, _, metrics in rows:
        if isinstance(metrics, dict):
            names.update(dict.fromkeys(k for k in metrics if isinstance(k, str)))
    for name in names:
        points = []
        for taken_at, step, metrics in rows:
            value = metric_value(metrics, name)
            if value is not None:
                x = float(step) if by_step else (taken_at - start).total_seconds()
                points.append((x, value))
        if not points:
            continue
        ys = [y for _, y in points]
        xs = [x for x, _ in points]
        if by_step:
            x_min, x_max = f"{int(xs[0]):,}", f"{int(xs[-1]):,}"
        else:
            x_min = timezone.localtime(start).strftime("%H:%M")
            x_max = timezone.localtime(rows[-1][0]).strftime("%H:%M")
        thinned = _thin(points, CHART_POINTS)
        view.charts.append(
            MetricChart(
                name,
                [x for x, _ in thinned],
                [y for _, y in thinned],
                "step" if by_step else "time",
                x_min,
                x_max,
                ys[-1],
                min(ys),
                max(ys),
                len(points),
            )
        )
    return view


def flag_layout(
    group: ExperimentGroup | None, all_flags: list[dict[str, Any]]
) -> tuple[list[Column], list[CommonFlag]]:
    """A section's flag columns and its shared flags, from the flags of *every* matching member
    (not only the rows built), so rows loaded later line up under the same columns."""
    if group is not None and group.flags:  # chosen: every one a column, in the chosen order
        columns = [Column(key, key.rpartition(".")[2]) for key in order_by_parent(group.flags)]
        return columns, []
    seen: dict[str, None] = {}
    for flags in all_flags:
        for key in flags:
            seen.setdefault(key, None)
    keys = sorted(seen)
    common: list[CommonFlag] = []
    columns_keys: list[str] = []
    for key in keys:
        values = [flags.get(key, _ABSENT) for flags in all_flags]
        first = values[0] if values else _ABSENT
        same = (
            len(values) >= 2
            and first is not _ABSENT
            and all(v is not _ABSENT and v == first and type(v) is type(first) for v in values)
        )
        if same:
            common.append(CommonFlag(key, f"{key}={format_flag(first)}", full_flag(first)))
        else:
            columns_keys.append(key)
    columns = [Column(key, key.rpartition(".")[2]) for key in order_by_parent(columns_keys)]
    return columns, common


@dataclass
class ColumnChoice:
    key: str
    shown: bool
    common: bool = False  # the same in every member (shown as a pill when automatic)


def column_choices(group: ExperimentGroup) -> tuple[list[ColumnChoice], bool]:
    """A group's column chooser: its flag columns in order (chosen, or the automatic ones: every
    flag whose value differs), then every other flag key of its members; and whether the columns
    are automatic. Two queries (the group's members' flags, in one)."""
    all_flags = list(
        ExperimentGroupMember.objects.filter(group=group)
        .order_by("order", "id")
        .values_list("experiment__flags", flat=True)
    )
    automatic = not group.flags
    columns, common = flag_layout(group, all_flags)
    shown = [c.key for c in columns]
    if not automatic:
        shown = list(group.flags)
    known: dict[str, None] = {}
    for flags in all_flags:
        for key in flags:
            known.setdefault(key, None)
    common_keys = {c.key for c in common}
    choices = [ColumnChoice(key, True, key in common_keys) for key in shown]
    choices += [
        ColumnChoice(key, False, key in common_keys) for key in sorted(known) if key not in shown
    ]
    return choices, automatic


def build_rows(
    group_id: int | None,
    experiments: list[Experiment],
    columns: list[Column],
    offset: int,
    matched: int,
) -> list[Row]:
    return [
        build_row(group_id, experiment, columns, offset + index, matched)
        for index, experiment in enumerate(experiments)
    ]


def build_row(
    group_id: int | None, experiment: Experiment, columns: list[Column], position: int, matched: int
) -> Row:
    cells = []
    for column in columns:
        value = experiment.flags.get(column.key, _ABSENT)
        cells.append(
            FlagCell(
                column.key,
                format_flag(value),
                f"{column.key} = {full_flag(value)}",
                value is _ABSENT,
                isinstance(value, int) and not isinstance(value, bool),
            )
        )
    return Row(experiment, group_id, position, position == matched - 1, cells)


#: The columns every row has before its flags: in the layout fingerprint, so a browser showing
#: rows of an older set of columns gets its sections whole, not rows it cannot line up.
FIXED_COLUMNS = ["select", "star", "name", "state", "progress", "epoch", "shape", "gpuh"]


def layout_fingerprint(columns: list[Column], common: list[CommonFlag]) -> str:
    """A short hash of a section's flag columns and shared flags (what its rows line up under)."""
    text = json.dumps([FIXED_COLUMNS, [c.key for c in columns], [[c.key, c.text] for c in common]])
    return hashlib.blake2s(text.encode(), digest_size=6).hexdigest()


@dataclass
class Dashboard:
    groups: list[GroupView]
    query: str
    total_experiments: int
    shown_experiments: int
    active_jobs: int
    desired_running: int
    health: list[HealthPill]
    all_groups: list[ExperimentGroup]
    version: str = ""
    unchanged: bool = False  # the caller already shows this version: groups were not built
    partial: bool = False  # ``groups`` are only the sections that changed (out-of-band swaps)
    reconciler: ReconcilerPill | None = None

    @cached_property
    def parsed(self) -> deckquery.DeckQuery:
        return deckquery.parse(self.query)

    @property
    def filters(self) -> bool:
        return self.parsed.filters

    @property
    def sort(self) -> deckquery.Sort | None:
        return self.parsed.sort

    @property
    def unsorted_query(self) -> str:
        """The filter box without its sort (the "clear sort" link)."""
        return deckquery.without_sort(self.query)


@dataclass
class _Summary:
    total: int = 0
    matched: int = 0
    running: int = 0
    failed: int = 0
    gpu_seconds: float | None = None  # of the matching members' jobs


def _search_ids(query: str):
    return Experiment.objects.search(query).values("id")


def is_section_key(key: str) -> bool:
    """A group's id, or ``UNGROUPED``."""
    return key == UNGROUPED or key.isdigit()


def section_summaries(
    query: str, groups: list[ExperimentGroup], keys: set[str] | None = None
) -> dict[str, _Summary]:
    """Per section (every one, or those in ``keys``): members, members matching the search,
    running and failed, aggregated in SQL (2-4 queries, whatever the number of rows built)."""
    state = "experiment__current_state"
    members = ExperimentGroupMember.objects.all()
    if keys is not None:
        members = members.filter(group_id__in=[int(k) for k in keys if k != UNGROUPED])
    filters = deckquery.parse(query).filters
    query = query if filters else ""  # a sort alone hides nothing
    if query:
        members = members.filter(experiment_id__in=_search_ids(query))
    summaries = {str(g.pk): _Summary() for g in groups}
    for row in members.values("group_id").annotate(
        matched=Count("id"),
        running=Count("id", filter=Q(**{state: JobStatus.RUNNING})),
        failed=Count("id", filter=Q(**{f"{state}__in": FAILED_STATES})),
        gpu_seconds=Sum("experiment__gpu_seconds"),
    ):
        summary = summaries.setdefault(str(row["group_id"]), _Summary())
        summary.matched, summary.running, summary.failed = (
            row["matched"],
            row["running"],
            row["failed"],
        )
        summary.total, summary.gpu_seconds = row["matched"], row["gpu_seconds"]
    if query:
        everyone = ExperimentGroupMember.objects.filter(group_id__in=[g.pk for g in groups])
        for row in everyone.values("group_id").annotate(n=Count("id")):
            summaries.setdefault(str(row["group_id"]), _Summary()).total = row["n"]
    if keys is not None and UNGROUPED not in keys:
        return summaries
    ungrouped = Experiment.objects.ungrouped()
    if query:
        ungrouped = ungrouped.search(query)
    counts = ungrouped.aggregate(
        matched=Count("id"),
        running=Count("id", filter=Q(current_state=JobStatus.RUNNING)),
        failed=Count("id", filter=Q(current_state__in=FAILED_STATES)),
        gpu_seconds=Sum("gpu_seconds"),
    )
    summaries[UNGROUPED] = _Summary(counts["matched"], **counts)
    return summaries


def _sort_expression(sort: deckquery.Sort, prefix: str) -> Any:
    """What a fixed column sorts by, read in the members' query (``prefix``: the path to the
    experiment from the queried model)."""
    column = sort.column
    if column == "epoch":  # the deck's own form: ORDER BY epoch DESC LIMIT 1 on the index
        return Subquery(
            Checkpoint.objects.filter(experiment_id=OuterRef(f"{prefix}id"), missing=False)
            .order_by("-epoch")
            .values("epoch")[:1]
        )
    if column == "shape":
        return F(f"{prefix}nodes") * F(f"{prefix}gpus")
    field_name = {"name": "name", "state": "current_state", "gpuh": "gpu_seconds"}[column]
    return F(prefix + field_name)


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers (and booleans) before text before anything else; each kind in its own order."""
    if isinstance(value, bool | int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value.lower())
    return (2, json.dumps(value, sort_keys=True))


def sort_members(
    members: list[tuple[int, dict[str, Any]]], values: list[Any], sort: deckquery.Sort
) -> list[tuple[int, dict[str, Any]]]:
    """``members`` (in the deck's order) sorted by ``values`` (one each; a flag sort reads the
    flags instead): ties keep the deck's order, and rows without a value come last either way."""
    if sort.flag is not None:
        values = [flags.get(sort.flag) for _, flags in members]
    present = [(v, m) for v, m in zip(values, members, strict=True) if v is not None]
    missing = [m for v, m in zip(values, members, strict=True) if v is None]
    # (reverse=True keeps equal values in their original order: the deck's)
    present.sort(key=lambda item: _sort_key(item[0]), reverse=sort.descending)
    return [m for _, m in present] + missing


def _members(query: str, keys: set[str]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """(experiment id, flags) of every matching member of the ``keys`` sections, in order: the
    group's order (the ungrouped by name), or the filter box's ``sort:``."""
    parsed = deckquery.parse(query)
    sort = parsed.sort
    query = query if parsed.filters else ""
    fixed = sort is not None and sort.flag is None
    out: dict[str, list[tuple[int, dict[str, Any]]]] = {key: [] for key in keys}
    values: dict[str, list[Any]] = {key: [] for key in keys}
    group_ids = [int(k) for k in keys if k != UNGROUPED]
    if group_ids:
        members = ExperimentGroupMember.objects.filter(group_id__in=group_ids)
        if query:
            members = members.filter(experiment_id__in=_search_ids(query))
        fields = ["group_id", "experiment_id", "experiment__flags"]
        if fixed:
            members = members.annotate(sort_value=_sort_expression(sort, "experiment__"))
            fields.append("sort_value")
        for row in members.order_by("group_id", "order", "id").values_list(*fields):
            out[str(row[0])].append((row[1], row[2]))
            values[str(row[0])].append(row[3] if fixed else None)
    if UNGROUPED in keys:
        ungrouped = Experiment.objects.ungrouped()
        if query:
            ungrouped = ungrouped.search(query)
        fields = ["id", "flags"]
        if fixed:
            ungrouped = ungrouped.annotate(sort_value=_sort_expression(sort, ""))
            fields.append("sort_value")
        for row in ungrouped.order_by("name").values_list(*fields):
            out[UNGROUPED].append((row[0], row[1]))
            values[UNGROUPED].append(row[2] if fixed else None)
    if sort is not None:
        out = {key: sort_members(rows, values[key], sort) for key, rows in out.items()}
    return out


def build_sections(
    query: str,
    groups: list[ExperimentGroup],
    summaries: dict[str, _Summary],
    plan: dict[str, int],
    *,
    only: set[str] | None = None,
    offset: int = 0,
) -> list[GroupView]:
    """The deck's sections in order (or just those in ``only``).

    ``plan`` maps a section key to the rows to build from ``offset`` on; a section not in it is
    a header only. Members and flags of the built sections come in one query, their rows in one
    more (``with_latest``), whatever the number of sections.
    """
    sections: list[tuple[ExperimentGroup | None, str]] = [(g, str(g.pk)) for g in groups]
    sections.append((None, UNGROUPED))
    if only is not None:
        sections = [(g, k) for g, k in sections if k in only]
    parsed = deckquery.parse(query)
    filters, sort = parsed.filters, parsed.sort
    built_keys = {k for _, k in sections if k in plan}
    members = _members(query, built_keys) if built_keys else {}
    wanted: list[int] = []
    for key in built_keys:
        wanted.extend(pk for pk, _ in members[key][offset : offset + plan[key]])
    experiments = (
        {e.pk: decorate(e) for e in Experiment.objects.with_latest().filter(pk__in=wanted)}
        if wanted
        else {}
    )
    attach_sparklines(list(experiments.values()))  # one query, for every running row
    views: list[GroupView] = []
    for group, key in sections:
        summary = summaries.get(key, _Summary())
        if filters and not summary.matched and only is None:
            continue  # a search hides the groups it does not match
        view = GroupView(
            group, [], [], [], summary.total, summary.matched, summary.running, summary.failed
        )
        view.gpu_seconds = summary.gpu_seconds
        if key in plan:
            flags = [f for _, f in members[key]]
            view.columns, view.common = flag_layout(group, flags)
            ids = [pk for pk, _ in members[key][offset : offset + plan[key]]]
            chosen = [experiments[pk] for pk in ids if pk in experiments]
            view.rows = build_rows(
                group.pk if group else None, chosen, view.columns, offset, len(flags)
            )
            if sort is not None:
                for row in view.rows:
                    row.sorted_by = sort.label
            view.matched = len(flags)
            view.offset = offset
        else:
            view.built = False
        views.append(view)
    return views


def _first_plan(
    groups: list[ExperimentGroup], summaries: dict[str, _Summary], shown: dict[str, int] | None
) -> dict[str, int]:
    """How many rows each section builds: what the browser already shows (``shown``), or, on a
    first load, the first ``FIRST_ROWS`` rows of the expanded groups in order."""
    plan: dict[str, int] = {}
    budget = FIRST_ROWS
    for group, key in [*((g, str(g.pk)) for g in groups), (None, UNGROUPED)]:
        if group is not None and group.collapsed:
            continue
        matched = summaries.get(key, _Summary()).matched
        if shown is not None:
            if key in shown:
                plan[key] = max(shown[key], GROUP_ROWS)
            continue
        if budget <= 0:
            break
        plan[key] = min(matched, GROUP_ROWS)
        budget -= max(plan[key], 1)
    return plan


def _affected(delta: deckchanges.Delta) -> tuple[set[str], dict[str, set[int]]]:
    """What a (partial) delta touches: the keys of the sections to re-render whole (their
    header or members changed) and, per section, the experiments whose rows changed."""
    keys = {str(g) for g in delta.groups}
    if delta.ungrouped:
        keys.add(UNGROUPED)
    rows: dict[str, set[int]] = {}
    if delta.experiments:
        found: set[int] = set()
        for group_id, experiment_id in ExperimentGroupMember.objects.filter(
            experiment_id__in=delta.experiments
        ).values_list("group_id", "experiment_id"):
            rows.setdefault(str(group_id), set()).add(experiment_id)
            found.add(experiment_id)
        if delta.experiments - found:  # ungrouped (or deleted) experiments: sorted by name,
            keys.add(UNGROUPED)  # which a rename changes, so that section is re-rendered
    return keys, rows


def _changed_rows(
    groups: list[ExperimentGroup],
    plan: dict[str, int],
    changed: dict[str, set[int]],
    layouts: dict[str, str],
) -> list[GroupView]:
    """Sections whose rows alone changed, where the browser's layout is still the one their
    rows line up under: each with just those rows (of the ones it shows). One query for the
    members of all of them and one (``with_latest``) for the rows; the caller re-renders
    the rest whole."""
    by_key = {str(g.pk): g for g in groups}
    keys = {k for k in changed if k in plan and k in layouts and k in by_key}
    if not keys:
        return []
    members = _members("", keys)
    views: list[GroupView] = []
    wanted: dict[int, list[tuple[GroupView, int, list[Column]]]] = {}
    for key in keys:
        flags = [f for _, f in members[key]]
        columns, common = flag_layout(by_key[key], flags)
        if layout_fingerprint(columns, common) != layouts[key]:
            continue
        view = GroupView(by_key[key], [], columns, common, 0, rows_only=True)
        views.append(view)
        for position, (pk, _) in enumerate(members[key][: plan[key]]):
            if pk in changed[key]:
                wanted.setdefault(pk, []).append((view, position, columns))
    if wanted:
        found = [decorate(e) for e in Experiment.objects.with_latest().filter(pk__in=list(wanted))]
        attach_sparklines(found)
        for experiment in found:
            for view, position, columns in wanted[experiment.pk]:
                matched = len(members[view.key])
                view.rows.append(build_row(view.id, experiment, columns, position, matched))
    for view in views:
        view.rows.sort(key=lambda row: row.position)
    return views


def build_dashboard(
    query: str = "",
    known_version: str | None = None,
    shown: dict[str, int] | None = None,
    layouts: dict[str, str] | None = None,
) -> Dashboard:
    """What ``/`` (or its poll) shows, in a constant number of queries.

    - ``known_version`` equal to the current version: nothing is built (the header only);
    - an older version (a poll): only the sections that changed since, built as the browser
      shows them (``shown``: rows per loaded section), for out-of-band swaps; a section whose
      rows alone changed, while its ``layouts`` fingerprint is the browser's, sends just those
      rows and its header figures;
    - otherwise the whole deck: headers of every group, and rows of the first ``FIRST_ROWS``
      (or, with ``shown``, of what the browser shows).
    """
    query = (query or "").strip()
    version = deckchanges.current_version()  # query 1
    unchanged = known_version is not None and known_version == version
    views: list[GroupView] = []
    partial = False
    groups: list[ExperimentGroup] = []
    if not unchanged:
        groups = list(ExperimentGroup.objects.all())  # ordered by order, id
        delta = deckchanges.changes_since(known_version, version) if known_version else None
        parsed = deckquery.parse(query)
        partial = delta is not None and not delta.full and not parsed.filters
        if partial:
            whole, changed = _affected(delta)
            if parsed.sort is not None:  # a changed row may have moved: its section whole
                whole |= set(changed)
                changed = {}
            only = (whole | set(changed)) & ({str(g.pk) for g in groups} | {UNGROUPED})
            if shown is None:  # not said (no skydeck.js): as on a first load
                plan = {k: GROUP_ROWS for k in only}
            else:
                plan = {k: max(n, GROUP_ROWS) for k, n in shown.items() if k in only}
            collapsed = {str(g.pk) for g in groups if g.collapsed}
            plan = {k: n for k, n in plan.items() if k not in collapsed}
            summaries = section_summaries(query, groups, only)
            changed = {k: ids for k, ids in changed.items() if k not in whole}
            row_views = _changed_rows(groups, plan, changed, layouts or {})
            for view in row_views:
                summary = summaries.get(view.key, _Summary())
                view.total, view.matched = summary.total, summary.matched
                view.running, view.failed = summary.running, summary.failed
                view.gpu_seconds = summary.gpu_seconds
            rest = only - {view.key for view in row_views}
            views = row_views + build_sections(query, groups, summaries, plan, only=rest)
        else:
            summaries = section_summaries(query, groups)
            views = build_sections(query, groups, summaries, _first_plan(groups, summaries, shown))
        _mark_ends(views, [g.pk for g in groups])
    status = build_status(query)
    status.groups = views
    status.all_groups = groups
    status.version = version
    status.unchanged = unchanged
    status.partial = partial
    return status


def _mark_ends(views: list[GroupView], order: list[int]) -> None:
    """The first and last group of the deck (their "move up" / "move down" are disabled)."""
    for view in views:
        if view.group is not None and order:
            view.first, view.last = view.group.pk == order[0], view.group.pk == order[-1]


def build_section(
    query: str, group: ExperimentGroup | None, offset: int = 0, count: int = GROUP_ROWS
) -> GroupView:
    """One section built (a placeholder scrolled into view, or its "Show more" rows)."""
    key = str(group.pk) if group else UNGROUPED
    groups = [group] if group else []
    summaries = section_summaries(query, groups, {key})
    view = build_sections(query, groups, summaries, {key: count}, only={key}, offset=offset)[0]
    if group is not None:
        _mark_ends([view], list(ExperimentGroup.objects.values_list("pk", flat=True)))
    return view


def build_status(query: str = "") -> Dashboard:
    """Only the header's figures (no groups): for answers that update a few rows in place."""
    query = (query or "").strip()
    filters = deckquery.parse(query).filters
    shown_qs = Experiment.objects.search(query) if filters else Experiment.objects.all()
    counts = shown_qs.aggregate(
        shown=Count("id"), running=Count("id", filter=Q(desired_state=DesiredState.RUNNING))
    )
    report = recent_health_report()
    return Dashboard(
        groups=[],
        query=query,
        total_experiments=Experiment.objects.count() if filters else counts["shown"],
        shown_experiments=counts["shown"],
        active_jobs=Job.objects.active().count(),
        desired_running=counts["running"],
        health=health_pills(report),
        all_groups=[],
        reconciler=reconciler_pill(report),
    )


def rows_for(experiment_ids: list[int]) -> list[Row]:
    """Decorated rows (without flag cells) of some experiments, for in-place cell updates."""
    experiments = Experiment.objects.with_latest().filter(pk__in=experiment_ids).order_by("name")
    return [Row(decorate(e), None) for e in experiments]


# --- links ----------------------------------------------------------------------------------

LINK_SETTINGS = {
    "wandb": "SKYDECK_LINK_WANDB",
    "job": "SKYDECK_LINK_SKYPILOT_JOB",
    "logs": "SKYDECK_LINK_LOGS",
    "checkpoint": "SKYDECK_LINK_CHECKPOINT_VIEWER",
}


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


def build_link(kind: str, **values: Any) -> str:
    """The configured URL template filled in, or "" when the template is unset or unusable."""
    from urllib.parse import quote

    template = getattr(settings, LINK_SETTINGS[kind], "") or ""
    if not template:
        return ""
    filled = _Blank({k: quote(str(v), safe="") for k, v in values.items() if v is not None})
    try:
        url = template.format_map(filled)
    except (ValueError, IndexError, AttributeError, KeyError):
        return ""
    if not url.lower().startswith(("http://", "https://", "/")):
        return ""  # never a javascript: or data: URL
    return url


# --- confirmations of Start / Stop / Adopt / Cancel -------------------------------------------

OWNER_TEXT = {True: "launched by SkyDeck", False: "not launched by SkyDeck"}


@dataclass
class ConfirmLine:
    """One line of a confirmation: ``cancels job 4398 (dave)`` — not launched by SkyDeck."""

    text: str
    mark: str = ""  # who launched the job
    foreign: bool = False  # not launched by SkyDeck
    status: str = ""  # the job's status, shown as a badge
    tone: str = ""  # "" | "warn" | "muted"


def item_spend(plan: Any, item: Any) -> str:
    """``2 nodes \u00d7 8 H100 = 16 GPUs`` for one experiment of a Start plan."""

    return Plan(plan.action, [item], plan.mode).spend()


def plan_lines(plan: Any) -> list[ConfirmLine]:
    """What a Start / Stop / Adopt plan does to each experiment, one line per job or launch."""
    many = len(plan.items) > 1
    lines: list[ConfirmLine] = []
    for item in plan.items:
        prefix = f"{item.experiment.name}: " if many else ""
        if plan.action == "stop":
            for job in item.cancel:
                lines.append(
                    ConfirmLine(
                        f"{prefix}cancels job {job.label}",
                        OWNER_TEXT[job.owned],
                        not job.owned,
                        job.status,
                    )
                )
            if not item.cancel and many:
                lines.append(ConfirmLine(f"{prefix}no active job to cancel", tone="muted"))
            if item.pending_launch:
                lines.append(
                    ConfirmLine(
                        f"{prefix}a launch in flight: its job is cancelled once SkyPilot lists it",
                        tone="muted",
                    )
                )
        elif plan.action == "start":
            if item.launches:
                if many:
                    lines.append(ConfirmLine(f"{prefix}{item_spend(plan, item)}"))
            else:
                tone = "warn" if item.blocked_by else "muted"
                lines.append(ConfirmLine(f"{prefix}does not launch: {item.note}", tone=tone))
        else:  # adopt
            for job in item.adopt:
                lines.append(
                    ConfirmLine(
                        f"adopts job {job.label}", OWNER_TEXT[job.owned], not job.owned, job.status
                    )
                )
    return lines


def plan_notes(plan: Any) -> list[str]:
    """The warnings under a plan's lines (reconciler mode, what Stop does besides cancelling)."""
    notes = []
    if plan.action == "start":
        if not plan.mode.acts:
            notes.append(
                f"The reconciler is {plan.mode.mode} ({plan.mode.why}). Start records the "
                "desired state now; nothing launches until the reconciler is on."
            )
    elif plan.action == "stop":
        if len(plan.items) == 1 and not plan.items[0].changes:
            notes.append("It is already desired STOPPED: this only cancels its active jobs.")
        if plan.cancel_jobs:
            foreign = [j for j in plan.cancel_jobs if not j.owned]
            if foreign:
                one = len(foreign) == 1
                notes.append(
                    f"{len(foreign)} of these jobs {'was' if one else 'were'} not launched by "
                    f"SkyDeck: Stop cancels {'it' if one else 'them'} anyway, because you ask it to."
                )
    elif plan.action == "adopt":
        one = len(plan.items[0].adopt) == 1
        notes.append(
            "The experiment becomes desired RUNNING without a launch: the adopted "
            f"{'job is' if one else 'jobs are'} its current run, and SkyDeck owns "
            f"{'it' if one else 'them'} from now on, like a job it launched."
        )
        if not plan.mode.acts:
            notes.append(f"The reconciler is {plan.mode.mode} ({plan.mode.why}).")
    return notes
