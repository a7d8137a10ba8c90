"""``GET /api/budgets/``: each group budget's use in its current period."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import budgets
from experiments.api.common import StrictQueryParams, errors
from experiments.models import BudgetPeriod


class BudgetSerializer(serializers.Serializer):
    group = serializers.CharField()
    group_id = serializers.IntegerField()
    period = serializers.ChoiceField(choices=BudgetPeriod.choices)
    period_key = serializers.CharField(help_text='"2026-12", "2026-W49" or "total".')
    gpu_hours_limit = serializers.FloatField(allow_null=True)
    usd_limit = serializers.FloatField(allow_null=True)
    stop_at_limit = serializers.BooleanField(
        help_text="At 100 % the group's experiments are set to desired STOPPED (once a period)."
    )
    gpu_hours = serializers.FloatField(help_text="Used this period.")
    cost_usd = serializers.FloatField(help_text="Used this period, priced GPU-hours only.")
    unpriced_gpu_hours = serializers.FloatField()
    used = serializers.FloatField(
        allow_null=True, help_text="The larger share of the limits (1.0 = 100 %); null: infinite."
    )
    level = serializers.ChoiceField(choices=[budgets.OK, budgets.WARNING, budgets.EXCEEDED])


class BudgetsView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Group budgets",
        description="Every group budget (set in the admin) with its use in the current period "
        "(calendar month or ISO week in UTC, or all time): GPU-hours and cost of the group's "
        "jobs as on the Usage page. `level` is `warning` from 80 % of either limit and "
        "`exceeded` from 100 %.",
        responses={200: BudgetSerializer(many=True), **errors()},
    )
    def get(self, request: Request) -> Response:
        found = sorted(budgets.statuses().values(), key=lambda s: s.group_name)
        rows = [
            {"group": s.group_name, "group_id": s.budget.group_id, **s.as_dict()} for s in found
        ]
        return Response(BudgetSerializer(rows, many=True).data)
