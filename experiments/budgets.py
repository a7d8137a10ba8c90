"""Group budgets: how much of its GPU-hour or cost budget a group has used this period.

A group's use is the Usage roll-up by group (``experiments.usage``): its experiments' jobs that
ended in the period, plus those still running. An experiment in two groups counts in both. Cost
counts priced hours only; hours of an accelerator without a price are reported beside it (the
USD figure is then a lower bound), never as zero. At 80 % of either limit a budget warns, at
100 % it is exceeded; ``syncing.budgets`` logs both once per period and, if the group says so,
stops the group's experiments.

Queries stay constant: one roll-up per period in use (at most three), whatever the groups.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from experiments import usage
from experiments.models import BudgetPeriod, ExperimentGroup, GroupBudget

WARNING_AT = 0.8
OK, WARNING, EXCEEDED = "ok", "warning", "exceeded"
#: "All time" starts before any job.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Period:
    key: str  # "2026-12", "2026-W49", "total": what a warning is given once for
    since: datetime
    until: datetime
    label: str  # "this month", ...


def period(kind: str, now: datetime) -> Period:
    """The period of kind ``kind`` (BudgetPeriod) that holds ``now``, in UTC."""
    now = now.astimezone(UTC)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    if kind == BudgetPeriod.MONTH:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return Period(f"{start:%Y-%m}", start, end, "this month")
    if kind == BudgetPeriod.WEEK:
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return Period(f"{year}-W{week:02d}", start, start + timedelta(days=7), "this week")
    if kind == BudgetPeriod.TOTAL:
        return Period("total", EPOCH, now + timedelta(days=1), "in all")
    raise ValueError(f"period: one of {', '.join(BudgetPeriod.values)}, not {kind!r}")


def gpu_text(value: Decimal | float) -> str:
    """A GPU-hour limit as typed: 50, 12.5, 1,000 (not 50.00)."""
    if isinstance(value, Decimal):
        return f"{value.normalize():,f}"
    return f"{value:,.1f}"


def usd_text(value: Decimal | float) -> str:
    return f"${value:,.2f}"


def _share(used: float, limit: float | None) -> float | None:
    if limit is None:
        return None
    if limit <= 0:
        return float("inf") if used > 0 else 0.0
    return used / limit


@dataclass
class BudgetStatus:
    budget: GroupBudget
    group_name: str
    period: Period
    gpu_hours: float = 0.0
    cost_usd: float = 0.0
    unpriced_gpu_hours: float = 0.0

    @property
    def gpu_share(self) -> float | None:
        limit = self.budget.gpu_hours
        return _share(self.gpu_hours, None if limit is None else float(limit))

    @property
    def usd_share(self) -> float | None:
        limit = self.budget.usd
        return _share(self.cost_usd, None if limit is None else float(limit))

    @property
    def share(self) -> float:
        """The larger of the two: a budget is as used as its most used limit."""
        return max((s for s in (self.gpu_share, self.usd_share) if s is not None), default=0.0)

    @property
    def level(self) -> str:
        if self.share >= 1:
            return EXCEEDED
        return WARNING if self.share >= WARNING_AT else OK

    @property
    def percent(self) -> str:
        share = self.share
        return "∞ %" if share == float("inf") else f"{share * 100:.0f} %"

    def parts(self) -> list[str]:
        """ "41.5 of 50 GPU-h", "$120.00 of $500" (with the unpriced hours when there are)."""
        out = []
        if self.budget.gpu_hours is not None:
            out.append(f"{gpu_text(self.gpu_hours)} of {gpu_text(self.budget.gpu_hours)} GPU-h")
        if self.budget.usd is not None:
            text = f"{usd_text(self.cost_usd)} of {usd_text(self.budget.usd)}"
            if self.unpriced_gpu_hours:
                text += f" (+{self.unpriced_gpu_hours:,.1f} GPU-h without a price)"
            out.append(text)
        return out

    def describe(self) -> str:
        """ "group vision: 41.5 of 50 GPU-h (83 %) this month (2026-12)"."""
        key = "" if self.period.key == "total" else f" ({self.period.key})"
        return (
            f"group {self.group_name}: {', '.join(self.parts())} ({self.percent}) "
            f"{self.period.label}{key}"
        )

    def as_dict(self) -> dict:
        b = self.budget
        return {
            "period": b.period,
            "period_key": self.period.key,
            "gpu_hours_limit": None if b.gpu_hours is None else float(b.gpu_hours),
            "usd_limit": None if b.usd is None else float(b.usd),
            "stop_at_limit": b.stop_at_limit,
            "gpu_hours": round(self.gpu_hours, 3),
            "cost_usd": round(self.cost_usd, 2),
            "unpriced_gpu_hours": round(self.unpriced_gpu_hours, 3),
            "used": None if self.share == float("inf") else round(self.share, 4),
            "level": self.level,
        }


def statuses(
    budgets: list[GroupBudget] | None = None, now: datetime | None = None
) -> dict[int, BudgetStatus]:
    """Each budget's use in its current period, by group id (``budgets``: all of them)."""
    now = now or timezone.now()
    if budgets is None:
        budgets = list(GroupBudget.objects.select_related("group"))
    out: dict[int, BudgetStatus] = {}
    for kind in {b.period for b in budgets}:
        span = period(kind, now)
        report = usage.usage("group", span.since, span.until, now=now)
        rows = {row.key: row for row in report.rows}
        for budget in (b for b in budgets if b.period == kind):
            name = budget.group.name
            status = BudgetStatus(budget, name, span)
            row = rows.get(name)
            if row is not None:
                status.gpu_hours = row.gpu_hours
                status.cost_usd = row.cost_usd
                status.unpriced_gpu_hours = row.unpriced_gpu_hours
            out[budget.group_id] = status
    return out


def for_experiments(experiment_ids: list[int], now: datetime | None = None) -> dict[int, list]:
    """The budget statuses of the groups these experiments are in, by experiment id (no query
    beyond one when none of their groups has a budget)."""
    budgets = list(
        GroupBudget.objects.filter(group__memberships__experiment_id__in=experiment_ids)
        .select_related("group")
        .distinct()
    )
    if not budgets:
        return {}
    found = statuses(budgets, now)
    members = ExperimentGroup.experiments.through.objects.filter(
        group_id__in=list(found), experiment_id__in=experiment_ids
    ).values_list("experiment_id", "group_id")
    out: dict[int, list] = {}
    for experiment_id, group_id in members:
        out.setdefault(experiment_id, []).append(found[group_id])
    return out
