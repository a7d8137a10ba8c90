"""Group budgets acted on: a warning at 80 %, and at 100 % a Stop if the group says so.

Run after each successful SkyPilot job sync, before the reconciler (``sync_and_reconcile``), so
the use is as fresh as the listing. Each crossing is logged once per period (``warned_for``,
``exceeded_for``, claimed with a conditional UPDATE so two workers never both act). The Stop is a
person's Stop made by the actor "budget" (``control.stop``: desired STOPPED, logged with its
plan), but it cancels only the jobs SkyDeck launched or adopted: a job someone else started
under the same name is never cancelled by a budget. A person who starts an experiment again
after the stop wins: the budget stops a group once per period.

The operation log rows (operation ``budget``) start with "warning:" or "exceeded:"; the
notification checks turn them into webhooks.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from experiments import budgets, control, services
from experiments.models import DesiredState, Experiment, GroupBudget, Operation
from syncing import services as sync_services

logger = logging.getLogger(__name__)
ACTOR = "budget"


def _claim(budget: GroupBudget, field: str, key: str) -> bool:
    """Mark the period as handled; False when another pass (or worker) already did."""
    updated = (
        GroupBudget.objects.filter(pk=budget.pk)
        .filter(~Q(**{field: key}))
        .update(**{field: key}, updated_at=timezone.now())
    )
    return bool(updated)


def stop_group(status: budgets.BudgetStatus) -> str:
    """Desired STOPPED for the group's desired-RUNNING experiments; cancel their owned jobs."""
    experiments = list(
        Experiment.objects.filter(
            group_memberships__group_id=status.budget.group_id,
            desired_state=DesiredState.RUNNING,
        ).order_by("name")
    )
    if not experiments:
        return "none of its experiments is desired RUNNING"
    active = control.active_jobs([e.name for e in experiments])
    owned = [j.id for jobs in active.values() for j in jobs if j.owned]
    plan = control.stop(ACTOR, experiments, job_ids=owned)
    result = sync_services.cancel_planned(ACTOR, plan)
    names = ", ".join(e.name for e in experiments)
    text = f"stopped {len(experiments)}: {names}"
    if result.cancelled:
        text += f"; cancelled {len(result.cancelled)} job(s) SkyDeck launched"
    if result.error:
        text += f"; cancel failed: {result.error}"
    return text


def enforce(now: datetime | None = None) -> list[str]:
    """Log the budgets crossed this period and stop the groups that ask for it; one line each."""
    all_budgets = list(GroupBudget.objects.select_related("group"))
    if not all_budgets:
        return []
    acts = control.reconciler_mode().acts
    lines = []
    for status in budgets.statuses(all_budgets, now).values():
        budget, key = status.budget, status.period.key
        if status.level == budgets.EXCEEDED and _claim(budget, "exceeded_for", key):
            _claim(budget, "warned_for", key)  # past 80 % too: one message, not two
            message = f"exceeded: {status.describe()}"
            if not budget.stop_at_limit:
                message += "; the group does not ask to stop"
            elif not acts:
                message += (
                    f"; would stop its experiments (reconciler {control.reconciler_mode().mode})"
                )
            else:
                message += f"; {stop_group(status)}"
            services.record(ACTOR, Operation.BUDGET, message=message)
            lines.append(message)
        elif status.level == budgets.WARNING and _claim(budget, "warned_for", key):
            message = f"warning: {status.describe()}"
            if budget.stop_at_limit:
                message += "; its experiments stop at 100 %"
            services.record(ACTOR, Operation.BUDGET, message=message)
            lines.append(message)
    return lines
