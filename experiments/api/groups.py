"""Experiment groups: CRUD, members (add / move / remove / reorder) and the order of groups."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from experiments import services
from experiments.api.common import (
    ID_RE,
    IF_MATCH,
    READ_ERRORS,
    WRITE_ERRORS,
    StrictQueryParams,
    ValidatedRetrieveMixin,
    check_precondition,
    errors,
    etag,
    id_param,
    resolve_all,
)
from experiments.api.filters import GroupFilter
from experiments.api.serializers import (
    GroupCreateSerializer,
    GroupOrderResultSerializer,
    GroupOrderSerializer,
    GroupSerializer,
    GroupUpdateSerializer,
    MemberAddSerializer,
    MemberListSerializer,
    MemberOrderSerializer,
    PreconditionSerializer,
)
from experiments.models import ExperimentGroup, ExperimentGroupMember

GROUP_ID = id_param("group")


def group_queryset() -> QuerySet:
    return ExperimentGroup.objects.prefetch_related(
        Prefetch(
            "memberships",
            queryset=ExperimentGroupMember.objects.select_related("experiment").order_by(
                "order", "id"
            ),
            to_attr="api_memberships",
        )
    )


def locked_group(pk: int) -> ExperimentGroup:
    group = ExperimentGroup.objects.select_for_update().filter(pk=pk).first()
    if group is None:
        raise exceptions.NotFound("No such group.")
    return group


@extend_schema_view(
    list=extend_schema(
        summary="List groups",
        description="In display order, each with its members in order.",
        responses={200: GroupSerializer(many=True), **errors(*READ_ERRORS)},
    ),
    retrieve=extend_schema(
        summary="Get a group",
        parameters=[GROUP_ID],
        responses={200: GroupSerializer, **errors(404)},
    ),
    create=extend_schema(
        summary="Create a group",
        description="Placed after every existing group.",
        request=GroupCreateSerializer,
        responses={201: GroupSerializer, **errors(400, 403, 409, 415)},
    ),
    update=extend_schema(
        summary="Update a group",
        description="Changes the fields given (name is required).",
        parameters=[GROUP_ID, IF_MATCH],
        request=GroupUpdateSerializer,
        responses={200: GroupSerializer, **errors(*WRITE_ERRORS)},
    ),
    partial_update=extend_schema(
        summary="Change some fields of a group",
        parameters=[GROUP_ID, IF_MATCH],
        request=GroupUpdateSerializer,
        responses={200: GroupSerializer, **errors(*WRITE_ERRORS)},
    ),
    destroy=extend_schema(
        summary="Delete a group",
        description="Its experiments stay.",
        parameters=[GROUP_ID, IF_MATCH],
        responses={204: None, **errors(400, 403, 404, 409)},
    ),
)
class GroupViewSet(
    StrictQueryParams,
    ValidatedRetrieveMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = GroupSerializer
    filterset_class = GroupFilter
    lookup_value_regex = ID_RE
    lookup_url_kwarg = "id"

    def get_queryset(self) -> QuerySet:
        return group_queryset()

    def get_object(self) -> ExperimentGroup:
        group = self.get_queryset().filter(pk=int(self.kwargs["id"])).first()
        if group is None:
            raise exceptions.NotFound("No such group.")
        return group

    def _target_pk(self) -> int:
        pk = int(self.kwargs["id"])
        if not ExperimentGroup.objects.filter(pk=pk).exists():
            raise exceptions.NotFound("No such group.")
        return pk

    def _answer(self, pk: int, code: int = status.HTTP_200_OK) -> Response:
        group = group_queryset().get(pk=pk)
        response = Response(GroupSerializer(group).data, status=code)
        response["ETag"] = etag(group)
        return response

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._validated(GroupCreateSerializer, request)
        with transaction.atomic():
            group = services.create_group(request.user, data["name"], flags=data.get("flags", ()))
            if data.get("collapsed"):
                services.update_group(request.user, group, collapsed=True)
        return self._answer(group.pk, status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pk = self._target_pk()
        data = self._validated(GroupUpdateSerializer, request, partial=kwargs.get("partial", False))
        with transaction.atomic():
            group = locked_group(pk)
            check_precondition(request, group, data.pop("updated_at", None))
            if data:
                services.update_group(request.user, group, **data)
        return self._answer(pk)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pk = self._target_pk()
        data = self._validated(PreconditionSerializer, request)
        with transaction.atomic():
            group = locked_group(pk)
            check_precondition(request, group, data.get("updated_at"))
            services.delete_group(request.user, group)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Add experiments to a group",
        description="Appends them in the order given (members already there keep their "
        "place). mode add keeps their other groups; mode move takes them out of every other "
        "group. Every experiment must exist, or nothing changes (400).",
        parameters=[GROUP_ID, IF_MATCH],
        request=MemberAddSerializer,
        responses={200: GroupSerializer, **errors(*WRITE_ERRORS)},
    )
    @action(detail=True, methods=["post"])
    def members(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pk = self._target_pk()
        data = self._validated(MemberAddSerializer, request)
        with transaction.atomic():
            group = locked_group(pk)
            check_precondition(request, group, data.get("updated_at"))
            experiments = resolve_all(data["experiments"])
            if data["mode"] == "move":
                services.move_to_group(request.user, experiments, group)
            else:
                services.add_to_group(request.user, group, experiments)
        return self._answer(pk)

    @extend_schema(
        summary="Remove experiments from a group",
        description="The others keep their relative order; experiments not in the group are "
        "ignored. Every experiment must exist, or nothing changes (400).",
        parameters=[GROUP_ID, IF_MATCH],
        request=MemberListSerializer,
        responses={200: GroupSerializer, **errors(*WRITE_ERRORS)},
    )
    @action(detail=True, methods=["post"], url_path="members/remove")
    def remove_members(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pk = self._target_pk()
        data = self._validated(MemberListSerializer, request)
        with transaction.atomic():
            group = locked_group(pk)
            check_precondition(request, group, data.get("updated_at"))
            services.remove_from_group(request.user, group, resolve_all(data["experiments"]))
        return self._answer(pk)

    @extend_schema(
        summary="Reorder the members of a group",
        description="List every member exactly once, in the new order.",
        parameters=[GROUP_ID, IF_MATCH],
        request=MemberOrderSerializer,
        responses={200: GroupSerializer, **errors(*WRITE_ERRORS)},
    )
    @action(detail=True, methods=["post"], url_path="members/order")
    def order_members(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pk = self._target_pk()
        data = self._validated(MemberOrderSerializer, request)
        with transaction.atomic():
            group = locked_group(pk)
            check_precondition(request, group, data.get("updated_at"))
            experiments = resolve_all(data["experiments"])
            services.reorder_group(request.user, group, [e.pk for e in experiments])
        return self._answer(pk)

    @extend_schema(
        summary="Reorder the groups",
        description="List every group id exactly once, in the new order.",
        request=GroupOrderSerializer,
        responses={200: GroupOrderResultSerializer, **errors(400, 403, 415)},
    )
    @action(detail=False, methods=["post"])
    def reorder(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._validated(GroupOrderSerializer, request)
        services.reorder_groups(request.user, data["groups"])
        return Response({"groups": list(ExperimentGroup.objects.values_list("pk", flat=True))})
