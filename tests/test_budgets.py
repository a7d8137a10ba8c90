"""Group budgets (issue 16): use per period, the 80 % warning and the 100 % stop (once per
period, owned jobs only, through the logged Stop path), the admin, and the scheduled pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from fake_skypilot import job_record

from experiments import budgets, services
from experiments.models import (
    AcceleratorPrice,
    GroupBudget,
    Launch,
    LaunchStatus,
    OperationLog,
    SyncState,
)
from syncing import budgets as enforcing
from syncing import reconciler

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)  # a Thursday


@pytest.fixture
def group(make_experiment):
    g = services.create_group("alice", "vision")
    for name in ("vis-a", "vis-b"):
        e = make_experiment(name)
        services.add_to_group("alice", g, [e])
    return g


def used(make_job, job_id, name, hours, *, gpus=8, ended=NOW - timedelta(hours=1), **kw):
    kw.setdefault("status", "SUCCEEDED")
    return make_job(
        job_id, name, nodes=1, gpus=gpus, accelerator="H100", cloud="aws",
        duration=hours * 3600, started_at=ended - timedelta(hours=hours), ended_at=ended, **kw,
    )  # fmt: skip


def budget(group, **fields) -> GroupBudget:
    return services.save_budget("alice", GroupBudget(group=group, **fields))


def test_periods_are_utc_calendar_month_iso_week_and_all_time():
    month = budgets.period("month", NOW)
    assert (month.key, month.since, month.until) == (
        "2026-12",
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    week = budgets.period("week", NOW)
    assert (week.key, week.since.date().isoformat(), week.until.date().isoformat()) == (
        "2026-W50",
        "2026-12-07",
        "2026-12-14",
    )
    assert budgets.period("total", NOW).since.year == 1970
    with pytest.raises(ValueError, match="period"):
        budgets.period("year", NOW)


def test_use_counts_the_groups_jobs_in_the_period_and_the_larger_limit_decides(make_job, group):
    AcceleratorPrice.objects.filter(accelerator="H100").update(usd_per_gpu_hour=Decimal("2"))
    used(make_job, 1, "vis-a", 3)  # 24 GPU-h, $48
    used(make_job, 2, "vis-b", 2)  # 16 GPU-h, $32
    used(make_job, 3, "vis-a", 5, ended=NOW - timedelta(days=40))  # last month: not counted
    used(make_job, 4, "other", 9)  # not in the group
    b = budget(group, gpu_hours=Decimal("100"), usd=Decimal("90"))
    status = budgets.statuses(now=NOW)[group.pk]
    assert (status.gpu_hours, status.cost_usd) == (40.0, 80.0)
    assert status.gpu_share == 0.4 and round(status.usd_share, 4) == 0.8889
    assert status.level == budgets.WARNING and status.percent == "89 %"
    assert status.describe() == (
        "group vision: 40.0 of 100 GPU-h, $80.00 of $90.00 (89 %) this month (2026-12)"
    )
    assert b.period == "month"


def test_unpriced_hours_are_reported_beside_the_cost_never_as_zero(make_job, group):
    make_job(5, "vis-a", nodes=1, gpus=4, accelerator="MI300X", duration=3600,
             ended_at=NOW - timedelta(hours=1), status="SUCCEEDED")  # fmt: skip
    budget(group, usd=Decimal("10"))
    status = budgets.statuses(now=NOW)[group.pk]
    assert status.cost_usd == 0 and status.unpriced_gpu_hours == 4
    assert "(+4.0 GPU-h without a price)" in status.parts()[0]


def test_a_budget_needs_a_limit_and_limits_are_not_negative(group):
    with pytest.raises(ValidationError, match="GPU-hour budget, a USD budget, or both"):
        budget(group)
    with pytest.raises(ValidationError) as err:
        budget(group, gpu_hours=Decimal("-1"))
    assert "gpu_hours" in err.value.message_dict
    assert not GroupBudget.objects.exists()
    assert not OperationLog.objects.filter(operation="budget").exists()


def test_changes_are_logged_with_old_and_new_values_and_rearm_the_period(group):
    b = budget(group, gpu_hours=Decimal("50"))
    b.warned_for = b.exceeded_for = "2026-12"
    b.save()
    b.gpu_hours, b.stop_at_limit = Decimal("80"), True
    services.save_budget("alice", b)
    b.refresh_from_db()
    assert (b.warned_for, b.exceeded_for) == ("", "")
    messages = list(
        OperationLog.objects.filter(operation="budget")
        .order_by("id")
        .values_list("message", flat=True)
    )
    assert messages == [
        "budget set for group vision: 50 GPU-h per calendar month (UTC), warns only at 100 %",
        "budget of group vision changed: 50 GPU-h per calendar month (UTC), warns only at "
        "100 % -> 80 GPU-h per calendar month (UTC), stops its experiments at 100 %",
    ]
    services.delete_budgets("alice", [b])
    assert OperationLog.objects.filter(
        message__startswith="budget of group vision removed"
    ).exists()


def test_a_read_only_user_cannot_set_a_budget(group, readonly_api):
    from django.contrib.auth.models import User
    from django.core.exceptions import PermissionDenied

    reader = User.objects.get(groups__name=services.READ_ONLY_GROUP)
    with pytest.raises(PermissionDenied):
        services.save_budget(reader, GroupBudget(group=group, gpu_hours=Decimal("1")))


def test_warning_at_80_percent_is_logged_once_per_period(make_job, group):
    budget(group, gpu_hours=Decimal("50"), stop_at_limit=True)
    used(make_job, 1, "vis-a", 5)  # 40 of 50: 80 %
    lines = enforcing.enforce(now=NOW)
    assert lines == [
        "warning: group vision: 40.0 of 50 GPU-h (80 %) this month (2026-12); "
        "its experiments stop at 100 %"
    ]
    assert enforcing.enforce(now=NOW) == []  # the same period: not again
    assert enforcing.enforce(now=NOW + timedelta(days=25)) == []  # January: nothing used
    used(make_job, 2, "vis-b", 5, ended=NOW + timedelta(days=25))
    assert enforcing.enforce(now=NOW + timedelta(days=25, hours=1))[0].startswith(
        "warning: group vision: 40.0 of 50 GPU-h (80 %) this month (2027-01)"
    )
    assert (
        OperationLog.objects.filter(operation="budget", message__startswith="warning:").count() == 2
    )


def test_exceeded_without_stop_only_logs(make_job, group, make_experiment):
    budget(group, gpu_hours=Decimal("10"))
    group.experiments.update(desired_state="RUNNING")
    used(make_job, 1, "vis-a", 2)  # 16 of 10
    lines = enforcing.enforce(now=NOW)
    assert lines == [
        "exceeded: group vision: 16.0 of 10 GPU-h (160 %) this month (2026-12); "
        "the group does not ask to stop"
    ]  # one message (not a warning too)
    assert set(group.experiments.values_list("desired_state", flat=True)) == {"RUNNING"}
    assert enforcing.enforce(now=NOW) == []


def test_exceeded_with_stop_stops_the_group_and_cancels_only_skydecks_own_jobs(
    make_job, group, server
):
    budget(group, gpu_hours=Decimal("10"), stop_at_limit=True)
    group.experiments.update(desired_state="RUNNING")
    used(make_job, 1, "vis-a", 2)  # 16 GPU-h done
    mine = make_job(20, "vis-a", status="RUNNING", user_name="skydeck")
    theirs = make_job(21, "vis-b", status="RUNNING", user_name="dave")  # someone's, same name
    Launch.objects.create(
        experiment=group.experiments.get(name="vis-a"),
        experiment_name="vis-a",
        status=LaunchStatus.SUBMITTED,
        job_id=mine.id,
    )
    lines = enforcing.enforce(now=NOW)
    assert lines == [
        "exceeded: group vision: 16.0 of 10 GPU-h (160 %) this month (2026-12); "
        "stopped 2: vis-a, vis-b; cancelled 1 job(s) SkyDeck launched"
    ]
    assert server.cancel_bodies == [{"job_ids": [mine.id]}]
    assert set(group.experiments.values_list("desired_state", flat=True)) == {"STOPPED"}
    stops = OperationLog.objects.filter(operation="stop", actor="budget").order_by(
        "experiment_name"
    )
    assert [s.experiment_name for s in stops] == ["vis-a", "vis-b"]
    assert stops[0].message == "desired state STOPPED; cancels jobs 20 (skydeck)"
    cancel = OperationLog.objects.get(operation="cancel", actor="budget")
    assert cancel.job_id == mine.id and "budget stopped it" in cancel.message
    assert not OperationLog.objects.filter(operation="cancel", job_id=theirs.id).exists()
    # a person starts one again: the budget does not stop it twice in one period
    services.set_desired_state("alice", group.experiments.filter(name="vis-a"), "RUNNING")
    assert enforcing.enforce(now=NOW) == []
    assert group.experiments.get(name="vis-a").desired_state == "RUNNING"


def test_in_dry_run_mode_the_budget_says_what_it_would_stop(make_job, group, settings):
    settings.SKYDECK_RECONCILE = "dry-run"
    budget(group, gpu_hours=Decimal("1"), stop_at_limit=True)
    group.experiments.update(desired_state="RUNNING")
    used(make_job, 1, "vis-a", 1)
    (line,) = enforcing.enforce(now=NOW)
    assert line.endswith("; would stop its experiments (reconciler dry-run)")
    assert set(group.experiments.values_list("desired_state", flat=True)) == {"RUNNING"}


def test_queries_stay_constant_in_the_number_of_groups(make_job, make_experiment):
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            budgets.statuses(now=NOW)
        return len(ctx.captured_queries)

    for i in range(2):
        g = services.create_group("alice", f"g{i}")
        budget(g, gpu_hours=Decimal("100"))
    few = count()
    for i in range(2, 12):
        g = services.create_group("alice", f"g{i}")
        services.add_to_group("alice", g, [make_experiment(f"e{i}")])
        used(make_job, 100 + i, f"e{i}", 1)
        budget(g, gpu_hours=Decimal("100"), period="week" if i % 2 else "month")
    assert count() <= few * 2  # one roll-up per period in use, not per group


def test_the_scheduled_pass_checks_budgets_after_a_good_sync(make_job, group, server, monkeypatch):
    budget(group, gpu_hours=Decimal("1"))
    used(make_job, 1, "vis-a", 1, ended=datetime.now(UTC) - timedelta(minutes=5))
    server.jobs.append(job_record(99, "someone-else", "SUCCEEDED"))
    summary, result = reconciler.sync_and_reconcile()
    assert "exceeded: group vision" in summary and result is not None
    assert SyncState.objects.get(source="skypilot").last_error == ""


def test_a_failing_budget_check_is_reported_and_the_reconciler_still_runs(server, monkeypatch):
    def broken(now=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(enforcing, "enforce", broken)
    summary, result = reconciler.sync_and_reconcile()
    assert "budget check failed: RuntimeError: boom" in summary
    assert result is not None and not result.skipped


def test_admin_lists_use_and_saves_through_the_services(admin_client, make_job, group):
    used(make_job, 1, "vis-a", 1, ended=datetime.now(UTC) - timedelta(minutes=5))
    response = admin_client.post(
        "/admin/experiments/groupbudget/add/",
        {"group": group.pk, "gpu_hours": "100", "usd": "", "period": "month"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert OperationLog.objects.filter(message__startswith="budget set for group vision").exists()
    page = admin_client.get("/admin/experiments/groupbudget/").content.decode()
    assert "8.0 of 100 GPU-h (8 %, ok)" in page
    bad = admin_client.post(
        "/admin/experiments/groupbudget/add/", {"group": group.pk, "period": "month"}
    )
    assert bad.status_code == 200 and "a USD budget, or both" in bad.content.decode()


def test_start_says_before_it_spends_that_the_group_is_over_its_budget(make_job, group):
    from experiments import control

    budget(group, gpu_hours=Decimal("10"), stop_at_limit=True)
    used(make_job, 1, "vis-a", 2, ended=datetime.now(UTC) - timedelta(minutes=5))  # 16 of 10
    plan = control.start_plan(list(group.experiments.order_by("name")))
    assert [item.launches for item in plan.items] == [True, True]
    assert plan.items[0].note.startswith("over budget: group vision: 16.0 of 10 GPU-h (160 %)")


def test_start_plan_costs_one_query_more_when_no_group_has_a_budget(
    group, django_assert_num_queries
):
    from experiments import control

    experiments = list(group.experiments.all())
    with django_assert_num_queries(4):  # active jobs, pending launches, the mode, budgets
        plan = control.start_plan(experiments)
    assert all(item.note == "" for item in plan.items)


def test_api_lists_each_budget_with_its_use(api, make_job, group, django_assert_max_num_queries):
    budget(group, gpu_hours=Decimal("10"), period="week")
    used(make_job, 1, "vis-a", 1, ended=datetime.now(UTC) - timedelta(minutes=5))
    with django_assert_max_num_queries(8):
        response = api.get("/api/budgets/")
    assert response.status_code == 200
    (row,) = response.json()
    assert row["group"] == "vision" and row["period"] == "week"
    assert (row["gpu_hours"], row["gpu_hours_limit"], row["used"], row["level"]) == (
        8.0,
        10.0,
        0.8,
        "warning",
    )
    assert api.get("/api/budgets/?group=1").status_code == 400  # unknown parameter, named


def test_the_usage_page_shows_each_budget_and_its_share(web, make_job, group):
    budget(group, gpu_hours=Decimal("10"), stop_at_limit=True)
    used(make_job, 1, "vis-a", 2, ended=datetime.now(UTC) - timedelta(minutes=5))
    body = web.get("/usage").content.decode()
    assert "Group budgets" in body and '<tr class="budget-exceeded"><td>vision</td>' in body
    assert "16.0 of 10 GPU-h" in body and "160 %" in body and "stops its experiments" in body
