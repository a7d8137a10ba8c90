"""GPU-hours and cost of the synced jobs, rolled up by user, experiment, group, accelerator or
cloud over a time window, and as a series per day, week or month.

A job's GPU-hours are nodes x GPUs per node x its run time: SkyPilot's ``job_duration``, which
adds up the attempts of a recovered job and, for a running job, counts up to the queue request;
a job still RUNNING also counts from its last sync up to now. A job counts in the window (and
the day) in which it ended; a running job counts now. Cost is GPU-hours x the price of its
accelerator (``AcceleratorPrice``: the job's cloud's own price, else the any-cloud one); hours of
an accelerator with no price are reported as such, never as a zero cost. Jobs that do not say
their GPUs or run time are counted apart (``unknown_jobs``).

Queries stay constant: one aggregate per roll-up (in SQL, over ``jobs_ended_idx``), one for the
running jobs, one for the prices.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Case, CharField, Count, F, Q, Sum, Value, When
from django.db.models.functions import Substr, TruncDay
from django.utils import timezone

from experiments.choices import JobStatus
from experiments.models import AcceleratorPrice, Job
from experiments.querysets import GPU_SECONDS as _GPU_SECONDS

#: What a roll-up can be by, and the job column (or join) each reads.
DIMENSIONS = {
    "user": "user_name",
    "experiment": "experiment_id",
    "group": "experiment__group_memberships__group__name",
    "accelerator": "accelerator",
    "cloud": "cloud",
}
#: What a job without the value is shown under.
NONE_LABELS = {
    "user": "(unknown user)",
    "experiment": "(unnamed)",
    "group": "(no group)",
    "accelerator": "(no accelerator)",
    "cloud": "(unknown cloud)",
}
BUCKETS = ("day", "week", "month")
#: Statuses in which SkyPilot's job_duration keeps growing (the time since the last sync counts).
RUNNING = (JobStatus.RUNNING, JobStatus.WINDING_DOWN)

_KNOWN = Q(nodes__isnull=False, gpus__isnull=False, duration__isnull=False)


@dataclass
class UsageRow:
    key: str
    jobs: int = 0
    gpu_hours: float = 0.0
    cost_usd: float = 0.0  # of the priced hours only
    unpriced_gpu_hours: float = 0.0
    unknown_jobs: int = 0  # jobs that do not say their GPUs or run time

    @property
    def priced(self) -> bool:
        """Every GPU-hour of it has a price (else its cost is a lower bound, shown as such)."""
        return self.unpriced_gpu_hours == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "jobs": self.jobs,
            "gpu_hours": round(self.gpu_hours, 3),
            "cost_usd": round(self.cost_usd, 2),
            "unpriced_gpu_hours": round(self.unpriced_gpu_hours, 3),
            "unknown_jobs": self.unknown_jobs,
        }


@dataclass
class UsageReport:
    by: str
    since: datetime
    until: datetime
    rows: list[UsageRow]
    total: UsageRow
    unpriced: list[str] = field(default_factory=list)  # accelerators without a price
    estimated: bool = False  # some cost uses a seeded estimate


class Prices:
    """The price table, read once: (accelerator, cloud) -> USD per GPU-hour."""

    def __init__(self) -> None:
        self.table: dict[tuple[str, str], float] = {}
        self.estimates: set[tuple[str, str]] = set()
        for price in AcceleratorPrice.objects.all():
            key = (price.accelerator.lower(), price.cloud.lower())
            self.table[key] = float(price.usd_per_gpu_hour)
            if price.estimate:
                self.estimates.add(key)
        self.used_estimate = False

    def of(self, accelerator: str, cloud: str) -> float | None:
        accelerator, cloud = (accelerator or "").lower(), (cloud or "").lower()
        for key in ((accelerator, cloud), (accelerator, "")):
            if key in self.table:
                self.used_estimate |= key in self.estimates
                return self.table[key]
        return None


def _window(since: datetime, until: datetime, now: datetime) -> Q:
    """Jobs that ended in [since, until), and, when the window reaches now, those still active."""
    ended = Q(ended_at__gte=since, ended_at__lt=until)
    if until > now and since <= now:
        return ended | Q(ended_at__isnull=True, status__in=JobStatus.active())
    return ended


def _running_extra(now: datetime, since: datetime, until: datetime, columns: list[str]) -> list:
    """Running jobs' GPU-seconds since their last sync (SkyPilot's figure is from then). A sync
    pass stamps every job it saw with one ``last_seen``, so grouping by it keeps the rows few
    (values x passes), however many jobs run."""
    if not (since <= now < until):
        return []
    rows = (
        Job.objects.filter(status__in=RUNNING, ended_at__isnull=True)
        .filter(nodes__isnull=False, gpus__isnull=False, duration__isnull=False)
        .values(*columns, "last_seen")
        .annotate(gpus_in_use=Sum(F("nodes") * F("gpus")))
        .order_by()
    )
    out = []
    for row in rows:
        last_seen = row["last_seen"]
        seconds = max(0.0, (now - last_seen).total_seconds()) if last_seen else 0.0
        out.append((*(row[c] for c in columns), row["gpus_in_use"] * seconds))
    return out


def usage(
    by: str, since: datetime, until: datetime | None = None, now: datetime | None = None
) -> UsageReport:
    """GPU-hours, cost and jobs per ``by`` value for the jobs that ended in [since, until)."""
    if by not in DIMENSIONS:
        raise ValueError(f"by: one of {', '.join(DIMENSIONS)}, not {by!r}")
    now = now or timezone.now()
    until = until or now + timedelta(seconds=1)
    column = DIMENSIONS[by]
    columns = [column, "accelerator", "cloud"]
    jobs = Job.objects.filter(_window(since, until, now))
    cells = jobs.values(*columns).annotate(
        jobs=Count("id"),
        unknown=Count("id", filter=~_KNOWN),
        gpu_seconds=Sum(_GPU_SECONDS),
    )
    prices = Prices()
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    unpriced: set[str] = set()

    def add(key: Any, accelerator: str, cloud: str, seconds: float, count: int, unknown: int):
        label = NONE_LABELS[by] if key in (None, "") else str(key)
        row = rows.setdefault(label, UsageRow(label))
        hours = seconds / 3600
        price = prices.of(accelerator, cloud) if hours else 0.0
        for target in (row, total):
            target.jobs += count
            target.unknown_jobs += unknown
            target.gpu_hours += hours
            if price is None:
                target.unpriced_gpu_hours += hours
            else:
                target.cost_usd += hours * price
        if price is None:
            unpriced.add(accelerator or NONE_LABELS["accelerator"])

    for cell in cells:
        add(
            cell[column],
            cell["accelerator"],
            cell["cloud"],
            cell["gpu_seconds"] or 0.0,
            cell["jobs"],
            cell["unknown"],
        )
    for key, accelerator, cloud, seconds in _running_extra(now, since, until, columns):
        add(key, accelerator, cloud, seconds, 0, 0)
    ordered = sorted(rows.values(), key=lambda r: (-r.gpu_hours, -r.jobs, r.key))
    return UsageReport(
        by, since, until, ordered, total, sorted(unpriced), estimated=prices.used_estimate
    )


@dataclass
class Series:
    """GPU-hours per bucket (day, week or month) and key: the Usage chart's stacks."""

    by: str
    bucket: str
    starts: list[datetime]
    keys: list[str]  # the largest first; the rest are folded into OTHER
    hours: dict[tuple[datetime, str], float]

    def stack(self, start: datetime) -> list[tuple[str, float]]:
        return [(key, self.hours.get((start, key), 0.0)) for key in self.keys]

    @property
    def peak(self) -> float:
        return max((sum(h for _, h in self.stack(s)) for s in self.starts), default=0.0)


OTHER = "(other)"


def series(
    by: str,
    since: datetime,
    until: datetime | None = None,
    bucket: str = "day",
    top: int = 8,
    now: datetime | None = None,
) -> Series:
    """GPU-hours per ``bucket`` of the jobs' end (running jobs: now) and ``by`` value; beyond the
    ``top`` keys by total, the rest are one stack (OTHER). Three queries: the top keys, the
    aggregate per day and key (at most top + 1 keys), the running jobs."""
    if by not in DIMENSIONS or bucket not in BUCKETS:
        raise ValueError(f"by: one of {', '.join(DIMENSIONS)}; bucket: one of {', '.join(BUCKETS)}")
    now = now or timezone.now()
    until = until or now + timedelta(seconds=1)
    column = DIMENSIONS[by]
    jobs = Job.objects.filter(_window(since, until, now)).filter(_KNOWN)
    # the largest keys first (one small aggregate), so the series groups by at most top + 1
    totals = jobs.values(column).annotate(s=Sum(_GPU_SECONDS)).order_by("-s", column)[: top + 1]
    ranked = [row[column] for row in totals]
    chosen = ranked[:top]
    folds = len(ranked) > top
    named = [v for v in chosen if v not in (None, "")]
    label = Case(
        When(**{f"{column}__in": named}, then=F(column)),
        When(**{f"{column}__isnull": True}, then=Value(NONE_LABELS[by])),
        When(**{column: ""}, then=Value(NONE_LABELS[by])),
        default=Value(OTHER),
        output_field=CharField(),
    )
    cells = jobs.annotate(at=_day(), key=label).values("at", "key").annotate(s=Sum(_GPU_SECONDS))
    keys = [NONE_LABELS[by] if v in (None, "") else str(v) for v in chosen]
    keys = list(dict.fromkeys(keys))  # None and "" share a label
    hours: dict[tuple[datetime, str], float] = defaultdict(float)
    today = trunc_value(now, bucket)
    for cell in cells:
        at = today if cell["at"] is None else trunc_value(_as_moment(cell["at"]), bucket)
        key = cell["key"] if cell["key"] in keys or cell["key"] == OTHER else OTHER
        hours[(at, key)] += (cell["s"] or 0.0) / 3600
    for raw, _accelerator, _cloud, seconds in _running_extra(
        now, since, until, [column, "accelerator", "cloud"]
    ):
        name = NONE_LABELS[by] if raw in (None, "") else str(raw)
        hours[(today, name if name in keys else OTHER)] += seconds / 3600
    if folds or any(key == OTHER for _, key in hours):
        keys.append(OTHER)
    starts = bucket_starts(trunc_value(since, bucket), trunc_value(min(until, now), bucket), bucket)
    return Series(by, bucket, starts, keys, dict(hours))


def _day() -> Any:
    """The day a job ended, as the database groups it cheaply: SQLite keeps datetimes as UTC
    text (its first ten characters are the day; Django's TruncDay calls back into Python for
    every row), PostgreSQL truncates natively."""
    if connection.vendor == "sqlite":
        return Substr("ended_at", 1, 10, output_field=CharField())
    return TruncDay("ended_at", tzinfo=UTC)


def _as_moment(value: Any) -> datetime:
    if isinstance(value, str):
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    return value


def trunc_value(moment: datetime, bucket: str) -> datetime:
    """The start of the bucket holding ``moment`` (UTC), as the database truncates it."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    if bucket == "month":
        return day.replace(day=1)
    return day


def bucket_starts(first: datetime, last: datetime, bucket: str) -> list[datetime]:
    starts = []
    at = first
    while at <= last:
        starts.append(at)
        if len(starts) > MAX_BUCKETS:
            raise ValueError(f"bucket: more than {MAX_BUCKETS} {bucket}s; choose a larger one.")
        if bucket == "month":
            at = (at.replace(day=28) + timedelta(days=4)).replace(day=1)
        else:
            at += timedelta(days=7 if bucket == "week" else 1)
    return starts


#: The most buckets a window may hold (a longer one asks for a larger bucket).
MAX_BUCKETS = 400


def window(since: date, until: date, bucket: str = "day") -> tuple[datetime, datetime]:
    """[since 00:00, the day after until 00:00) in UTC for dates a person chose (until inclusive);
    a ValueError says what is wrong with them."""
    if until < since:
        raise ValueError("until: must not be before since.")
    if bucket not in BUCKETS:
        raise ValueError(f"bucket: one of {', '.join(BUCKETS)}.")
    if until >= date.max:
        raise ValueError(f"until: must be before {date.max.isoformat()}.")
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(until, datetime.min.time(), tzinfo=UTC) + timedelta(days=1)
    days = (end - start).days
    per = {"day": 1, "week": 7, "month": 28}[bucket]
    bars = -(-days // per)
    if bars > MAX_BUCKETS:
        raise ValueError(
            f"bucket: {days} days make {bars} bars of a {bucket}, more than {MAX_BUCKETS}; "
            "choose a larger bucket or a shorter window."
        )
    return start, end


_SINCE_RE = re.compile(r"^(\d{1,5})([hdw])$")


def parse_since(text: str, now: datetime | None = None, name: str = "since") -> datetime:
    """``7d``, ``12h``, ``2w`` before now, or a date (``2026-11-01``, from its start, UTC)."""
    now = now or timezone.now()
    match = _SINCE_RE.match(text.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return now - timedelta(hours=amount * {"h": 1, "d": 24, "w": 168}[unit])
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{name}: {text!r} is neither a span (7d, 12h, 2w) nor a date (YYYY-MM-DD)"
        ) from None
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


CSV_COLUMNS = ["jobs", "gpu_hours", "cost_usd", "unpriced_gpu_hours", "unknown_jobs"]


def write_csv(report: UsageReport, out: Any) -> None:
    """The report's table as CSV into ``out`` (a file-like object): a header, its rows and the
    total. A key a spreadsheet would run as a formula (``=cmd()``) is quoted with a '."""
    writer = csv.writer(out)
    writer.writerow([report.by, *CSV_COLUMNS])
    for row in [*report.rows, report.total]:
        values = row.as_dict()
        key = values["key"]
        if key[:1] in ("=", "+", "-", "@", "\t", "\r"):
            key = "'" + key
        writer.writerow([key, *(values[c] for c in CSV_COLUMNS)])


def default_dates(since: date | None, until: date | None) -> tuple[date, date]:
    """A window a person left open: until today, since six days before until (a week)."""
    until = until or timezone.now().date()
    return since or until - timedelta(days=6), until
