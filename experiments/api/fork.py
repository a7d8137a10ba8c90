"""``POST /api/checkpoints/{id}/fork/``: a new experiment that continues from a checkpoint.

Thin: the body is checked for JSON types and unknown keys here, ``services.fork_experiment``
decides the rest (the flag for the URI, the name, the lineage), as for the UI's Fork form.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import services
from experiments.api.common import StrictQueryParams, errors, etag, id_param
from experiments.api.experiments import experiment_queryset
from experiments.api.fields import (
    FLAG_KEY_PATTERN,
    ExperimentNameField,
    StrictCharField,
    StrictSerializer,
)
from experiments.api.serializers import ExperimentChangesSerializer, ExperimentDetailSerializer
from experiments.models import Checkpoint
from experiments.validation import FLAG_KEY_MAX_LENGTH


@extend_schema_serializer(component_name="ForkChanges")
class ForkChangesSerializer(ExperimentChangesSerializer):
    """What differs from the parent's configuration (a fork starts unstarred)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields.pop("starred")
        return fields


@extend_schema_serializer(component_name="Fork")
class ForkSerializer(StrictSerializer):
    name = ExperimentNameField(
        required=False,
        help_text="The fork's name; default: <parent>.from<epoch> (then -2, -3, ...).",
    )
    flag_key = StrictCharField(
        max_length=FLAG_KEY_MAX_LENGTH,
        required=False,
        validators=[FLAG_KEY_PATTERN],
        help_text="The flag set to the checkpoint's URI; default: the SKYDECK_FORK_FLAG "
        "setting (required when it is not set).",
    )
    changes = ForkChangesSerializer(
        required=False,
        help_text="Changes to the parent's configuration: the fields of an experiment update "
        "(flags replaces all flags, flags_patch changes some), without name and starred.",
    )


def resolved_changes(changes: dict[str, Any], parent_flags: dict[str, Any]) -> dict[str, Any]:
    """``flags_patch`` applied to the parent's flags (the services take whole ``flags``)."""
    changes = dict(changes)
    patch = changes.pop("flags_patch", None)
    if patch is not None:
        flags = dict(parent_flags or {})
        for key in patch.get("remove", []):
            flags.pop(key, None)
        flags.update(patch.get("set", {}))
        changes["flags"] = flags
    return changes


class CheckpointForkView(StrictQueryParams, APIView):
    @extend_schema(
        summary="Fork from a checkpoint",
        description="Creates an experiment with the checkpoint's experiment's configuration, "
        "the changes given, and the checkpoint's URI in the flag flag_key (default: the "
        "SKYDECK_FORK_FLAG setting). The lineage (parent, parent_name, parent_epoch, "
        "parent_uri) is recorded; the fork is STOPPED and placed right after its parent in "
        "its groups. A checkpoint marked missing cannot be forked (400).",
        parameters=[id_param("checkpoint")],
        request=ForkSerializer,
        responses={201: ExperimentDetailSerializer, **errors(400, 403, 404, 409, 415)},
    )
    def post(self, request: Request, id: str) -> Response:
        checkpoint = Checkpoint.objects.select_related("experiment").filter(pk=id).first()
        if checkpoint is None:
            raise exceptions.NotFound("No such checkpoint.")
        serializer = ForkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        changes = resolved_changes(data.get("changes", {}), checkpoint.experiment.flags)
        child = services.fork_experiment(
            request.user,
            checkpoint,
            name=data.get("name"),
            flag_key=data.get("flag_key"),
            changes=changes,
        )
        experiment = experiment_queryset().get(pk=child.pk)
        response = Response(
            ExperimentDetailSerializer(experiment).data, status=status.HTTP_201_CREATED
        )
        response["ETag"] = etag(experiment)
        return response
