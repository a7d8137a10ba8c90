"""An experiment's config history over the API: its revisions, a diff of two, and restore.

``GET /api/experiments/{id_or_name}/revisions/`` (newest first, paginated), ``.../revisions/{n}/``,
``.../revisions/diff/?a=&b=`` and ``POST .../revisions/{n}/restore/``. Thin: the history page's
functions (experiments.revisions) and ``services.restore_revision`` decide everything.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import revisions, services
from experiments.api.common import (
    ID_OR_NAME,
    StrictQueryParams,
    StrictQuerySerializer,
    errors,
    experiment_filter,
)
from experiments.api.fields import StrictSerializer
from experiments.models import Experiment, ExperimentRevision

NUMBER_MAX = 10**9 - 1  # the URL takes at most 9 digits
NUMBER = OpenApiParameter(
    "number",
    {"type": "integer", "minimum": 1, "maximum": NUMBER_MAX},
    OpenApiParameter.PATH,
    description="The revision's number (from 1, per experiment).",
)


class RevisionSerializer(serializers.ModelSerializer):
    text = serializers.SerializerMethodField(
        help_text='What changed, with values: "trainer.lr 0.001 → 0.003, nodes 1 → 2, '
        '+trainer.seed 7, \u2212old.key".'
    )

    class Meta:
        model = ExperimentRevision
        fields = [
            "number",
            "created_at",
            "actor",
            "source",
            "experiment",
            "experiment_name",
            "restored_from",
            "text",
            "changes",
            "config",
        ]
        read_only_fields = fields

    def get_text(self, revision: ExperimentRevision) -> str:
        return revisions.revision_text(revision)


class DifferenceSerializer(serializers.Serializer):
    field = serializers.CharField(help_text='A configuration field; "flags" for one flag.')
    key = serializers.CharField(help_text="The flag's name (field flags), else empty.")
    kind = serializers.ChoiceField(choices=[revisions.ADDED, revisions.REMOVED, revisions.CHANGED])
    old = serializers.JSONField(allow_null=True, help_text="In a (null when added).")
    new = serializers.JSONField(allow_null=True, help_text="In b (null when removed).")
    old_text = serializers.CharField(help_text="old, exactly as written.")
    new_text = serializers.CharField(help_text="new, exactly as written.")


class DiffSerializer(serializers.Serializer):
    a = serializers.IntegerField()
    b = serializers.IntegerField()
    differences = DifferenceSerializer(many=True)


class DiffQuerySerializer(StrictQuerySerializer):
    a = serializers.IntegerField(
        required=False, min_value=1, max_value=NUMBER_MAX, help_text="Default: b - 1."
    )
    b = serializers.IntegerField(
        required=False, min_value=1, max_value=NUMBER_MAX, help_text="Default: the latest."
    )


class RestoreSerializer(StrictSerializer):
    """No fields: a restore takes none (an unknown key is a 400)."""


class RestoreResultSerializer(serializers.Serializer):
    restored = serializers.BooleanField(help_text="False: nothing differed, nothing stored.")
    detail = serializers.CharField()
    revision = RevisionSerializer(allow_null=True, help_text="The new revision (or null).")


def experiment_or_404(id_or_name: str) -> Experiment:
    experiment = Experiment.objects.filter(**experiment_filter(id_or_name)).first()
    if experiment is None:
        raise exceptions.NotFound("No such experiment.")
    return experiment


class RevisionListView(StrictQueryParams, generics.ListAPIView):
    serializer_class = RevisionSerializer
    extra_query_params = ("page", "page_size")

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # the schema generator: no experiment
            return ExperimentRevision.objects.none()
        experiment = experiment_or_404(self.kwargs["id_or_name"])
        return ExperimentRevision.objects.filter(experiment=experiment).order_by("-number")

    @extend_schema(
        summary="List an experiment's revisions",
        description="Its config history, newest first (paginated): every change from any door "
        "(ui, api, bulk, admin, duplicate, restore, ...) with the old and new values.",
        parameters=[ID_OR_NAME],
        responses={200: RevisionSerializer(many=True), **errors(404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RevisionDetailView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Get one revision",
        description="The whole configuration after the change (config) and what changed.",
        parameters=[ID_OR_NAME, NUMBER],
        responses={200: RevisionSerializer, **errors(404)},
    )
    def get(self, request: Request, id_or_name: str, number: str) -> Response:
        experiment = experiment_or_404(id_or_name)
        revision = ExperimentRevision.objects.filter(
            experiment=experiment, number=int(number)
        ).first()
        if revision is None:
            raise exceptions.NotFound(f"{experiment.name} has no revision {number}.")
        return Response(RevisionSerializer(revision).data)


class RevisionDiffView(StrictQueryParams, APIView):
    extra_query_params = ("a", "b")

    @extend_schema(
        summary="Diff two revisions",
        description="What differs from revision a to revision b: fields, and flags key by key "
        "(added, removed, changed). Default: the latest against the one before (b = 1 diffs "
        "against nothing: every field added). An unknown number is a 400.",
        parameters=[ID_OR_NAME, DiffQuerySerializer],
        responses={200: DiffSerializer, **errors(404)},
    )
    def get(self, request: Request, id_or_name: str) -> Response:
        experiment = experiment_or_404(id_or_name)
        query = DiffQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        latest = revisions.latest_number(experiment)
        b = query.validated_data.get("b", latest)
        a = query.validated_data.get("a", max(b - 1, 0))
        pair = {
            r.number: r
            for r in ExperimentRevision.objects.filter(experiment=experiment, number__in=[a, b])
        }
        problems = {
            name: [f"{experiment.name} has no revision {n}."]
            for name, n in (("a", a), ("b", b))
            if n not in pair and not (name == "a" and n == 0)
        }
        if problems:
            raise exceptions.ValidationError(problems)
        old = pair[a].config if a in pair else {}
        differences = revisions.diff(old, pair[b].config)
        return Response(
            DiffSerializer(
                {
                    "a": a,
                    "b": b,
                    "differences": [
                        {
                            "field": d.field,
                            "key": d.key,
                            "kind": d.kind,
                            "old": d.old,
                            "new": d.new,
                            "old_text": d.old_text,
                            "new_text": d.new_text,
                        }
                        for d in differences
                    ],
                }
            ).data
        )


class RevisionRestoreView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Restore a revision",
        description="Makes the revision's configuration current again, all but the name (a "
        "restore never renames), as a new revision (restored_from) logged as revert. It "
        "never launches or stops anything. When nothing differs, nothing is stored "
        "(restored false). An unknown number is a 400.",
        parameters=[ID_OR_NAME, NUMBER],
        request=RestoreSerializer,
        responses={200: RestoreResultSerializer, **errors(403, 404, 415)},
    )
    def post(self, request: Request, id_or_name: str, number: str) -> Response:
        RestoreSerializer(data=request.data or {}).is_valid(raise_exception=True)
        experiment = experiment_or_404(id_or_name)
        revision = services.restore_revision(request.user, experiment, int(number))
        if revision is None:
            answer = {
                "restored": False,
                "detail": f"r{number} is what is saved already: nothing restored.",
                "revision": None,
            }
        else:
            answer = {
                "restored": True,
                "detail": f"Restored r{number} as r{revision.number}.",
                "revision": revision,
            }
        return Response(RestoreResultSerializer(answer).data)
