"""REST API routes (under /api/; ``/api/health`` itself is served by ``experiments.views``).

Trailing slashes are optional. Anything else under /api/ answers a JSON 404.
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import SimpleRouter

from experiments.api.budgets import BudgetsView
from experiments.api.compare import CompareView
from experiments.api.experiments import BulkView, ExperimentViewSet
from experiments.api.failures import FailuresView
from experiments.api.fork import CheckpointForkView
from experiments.api.groups import GroupViewSet
from experiments.api.records import CheckpointViewSet, JobViewSet, OperationLogViewSet
from experiments.api.revisions import (
    RevisionDetailView,
    RevisionDiffView,
    RevisionListView,
    RevisionRestoreView,
)
from experiments.api.sweeps import SweepView
from experiments.api.system import MetaView, SyncView, docs, not_found
from experiments.api.usage import UsageView

router = SimpleRouter()
router.trailing_slash = "/?"  # the constructor only knows "/" or ""
router.register("experiments", ExperimentViewSet, basename="api-experiment")
router.register("groups", GroupViewSet, basename="api-group")
router.register("jobs", JobViewSet, basename="api-job")
router.register("checkpoints", CheckpointViewSet, basename="api-checkpoint")
router.register("operations", OperationLogViewSet, basename="api-operation")

_REVISIONS = rf"^experiments/(?P<id_or_name>{ExperimentViewSet.lookup_value_regex})/revisions"

urlpatterns = [
    re_path(rf"{_REVISIONS}/?$", RevisionListView.as_view(), name="api-revisions"),
    re_path(rf"{_REVISIONS}/diff/?$", RevisionDiffView.as_view(), name="api-revision-diff"),
    re_path(
        rf"{_REVISIONS}/(?P<number>[0-9]{{1,9}})/?$",
        RevisionDetailView.as_view(),
        name="api-revision",
    ),
    re_path(
        rf"{_REVISIONS}/(?P<number>[0-9]{{1,9}})/restore/?$",
        RevisionRestoreView.as_view(),
        name="api-revision-restore",
    ),
    *router.urls,
    re_path(
        r"^checkpoints/(?P<id>[0-9]{1,18})/fork/?$",
        CheckpointForkView.as_view(),
        name="api-checkpoint-fork",
    ),
    re_path(r"^budgets/?$", BudgetsView.as_view(), name="api-budgets"),
    re_path(r"^bulk/?$", BulkView.as_view(), name="api-bulk"),
    re_path(r"^compare/?$", CompareView.as_view(), name="api-compare"),
    re_path(r"^failures/?$", FailuresView.as_view(), name="api-failures"),
    re_path(r"^sweeps/?$", SweepView.as_view(), name="api-sweeps"),
    re_path(r"^sync/?$", SyncView.as_view(), name="api-sync"),
    re_path(r"^usage/?$", UsageView.as_view(), name="api-usage"),
    re_path(r"^meta/?$", MetaView.as_view(), name="api-meta"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", docs, name="api-docs"),
    re_path(r"^[\s\S]*$", not_found),  # any path, even one with newlines
]
