"""Experiments: CRUD, start/stop/duplicate, launch preview, and bulk changes."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments import control, launching, services, validation
from experiments.api.bulk import BULK_RESULTS, BULK_VARIANTS, BulkResultSerializer, BulkSerializer
from experiments.api.common import (
    EXPERIMENT_LOOKUP_RE,
    ID_OR_NAME,
    IF_MATCH,
    READ_ERRORS,
    WRITE_ERRORS,
    BadGateway,
    StrictQueryParams,
    ValidatedRetrieveMixin,
    check_precondition,
    errors,
    etag,
    experiment_filter,
    resolve_refs,
    validation_detail,
)
from experiments.api.filters import ExperimentFilter
from experiments.api.serializers import (
    AdoptSerializer,
    DuplicateSerializer,
    ExperimentActionSerializer,
    ExperimentCreateSerializer,
    ExperimentDetailSerializer,
    ExperimentSerializer,
    ExperimentUpdateSerializer,
    LaunchPreviewSerializer,
    PreconditionSerializer,
    StartSerializer,
    StopSerializer,
)
from experiments.models import (
    Experiment,
    ExperimentGroup,
    RevisionSource,
)
from experiments.querysets import precompiled
from experiments.validation import is_experiment_name
from syncing import services as door


def name_notices(experiment: Experiment) -> list[str]:
    """Someone else's active jobs under the name: left alone; say so, and how to adopt them."""
    jobs = [
        j for j in control.active_jobs([experiment.name]).get(experiment.name, []) if not j.owned
    ]
    if not jobs:
        return []
    return [
        f"{control.users_notice(jobs)}. SkyDeck did not launch them and leaves them alone; "
        f"adopt them as this experiment's run with POST /api/experiments/{experiment.name}/adopt/."
    ]


def apply_experiment_changes(
    actor: Any,
    experiment: Experiment,
    data: dict[str, Any],
    source: str = RevisionSource.API,
) -> None:
    """Apply validated API input through ``services.update_experiment``.

    ``flags_patch`` (the services know only whole ``flags``) is resolved here against the
    locked row: ``remove`` deletes names, then ``set`` adds or overwrites; every other flag stays.
    """
    changes = dict(data)
    changes.pop("updated_at", None)
    patch = changes.pop("flags_patch", None)
    if patch is not None:
        flags = dict(experiment.flags or {})
        for key in patch.get("remove", []):
            flags.pop(key, None)
        flags.update(patch.get("set", {}))
        changes["flags"] = flags
    if changes:
        services.update_experiment(actor, experiment, source=source, **changes)


def check_values(changes: dict[str, Any]) -> None:
    """Run each model field's own validators on bulk changes, before touching any experiment.

    A value that is wrong whatever the experiment (a malformed git ref, a nested flag) makes the
    whole request a 400; only rules that depend on the experiment (its ``clean()``) remain
    per-item results.
    """
    problems: dict[str, Any] = {}
    for field, value in changes.items():
        try:
            if field == "flags_patch":
                validation.validate_flags(dict(value.get("set", {})))
            else:
                Experiment._meta.get_field(field).clean(value, None)
        except DjangoValidationError as exc:
            problems[field] = exc.messages
    if problems:
        raise exceptions.ValidationError({"changes": problems})


def locked_experiment(pk: int) -> Experiment:
    """The row, locked until the surrounding transaction ends (404 if it just vanished)."""
    experiment = Experiment.objects.select_for_update().filter(pk=pk).first()
    if experiment is None:
        raise exceptions.NotFound("No such experiment.")
    return experiment


#: experiment_queryset()'s annotations, compiled once per database (querysets.precompiled).
_ANNOTATED: dict[str, QuerySet] = {}


def _annotated() -> QuerySet:
    db = Experiment.objects.all().db
    built = _ANNOTATED.get(db)
    if built is None:
        forks = (  # how many were forked from each: a subquery of the same SELECT, no query more
            Experiment.objects.filter(parent_id=OuterRef("pk"))
            .order_by()
            .values("parent_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        built = _ANNOTATED[db] = precompiled(
            Experiment.objects.with_latest().annotate(forks_count=Coalesce(Subquery(forks[:1]), 0))
        )
    return built.all()


def experiment_queryset() -> QuerySet:
    """Experiments with their latest job and forks count; the serializers attach the groups and
    the latest checkpoint and job (``attach_related``): a fixed query count."""
    return _annotated()


def _change_schema(summary: str, description: str) -> Any:
    """PUT and PATCH of an experiment: the same parameters, body and answers."""
    return extend_schema(
        summary=summary,
        description=f"{description} Precondition: If-Match or updated_at.",
        parameters=[ID_OR_NAME, IF_MATCH],
        request=ExperimentUpdateSerializer,
        responses={200: ExperimentDetailSerializer, **errors(*WRITE_ERRORS)},
    )


@extend_schema_view(
    list=extend_schema(
        summary="List experiments",
        description="Paginated; each with its latest job and latest checkpoint.",
        responses={200: ExperimentSerializer(many=True), **errors(*READ_ERRORS)},
    ),
    retrieve=extend_schema(
        summary="Get an experiment",
        description="With its latest job and latest checkpoint. The ETag header holds "
        "updated_at for If-Match.",
        parameters=[ID_OR_NAME],
        responses={200: ExperimentDetailSerializer, **errors(404)},
    ),
    create=extend_schema(
        summary="Create an experiment",
        request=ExperimentCreateSerializer,
        responses={201: ExperimentSerializer, **errors(400, 403, 409, 415)},
    ),
    update=_change_schema(
        "Update an experiment",
        "Changes the fields given (name is required); flags replaces all flags, "
        "flags_patch changes some.",
    ),
    partial_update=_change_schema(
        "Change some fields of an experiment",
        'flags replaces all flags; flags_patch {"set": {...}, "remove": [...]} '
        "changes only the named ones.",
    ),
    destroy=extend_schema(
        summary="Delete an experiment",
        description="Its checkpoint rows go too; its jobs stay (as orphans) and are not cancelled.",
        parameters=[ID_OR_NAME, IF_MATCH],
        responses={204: None, **errors(400, 403, 404, 409)},
    ),
)
class ExperimentViewSet(
    StrictQueryParams,
    ValidatedRetrieveMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ExperimentSerializer
    filterset_class = ExperimentFilter
    lookup_url_kwarg = "id_or_name"
    lookup_value_regex = EXPERIMENT_LOOKUP_RE

    def get_queryset(self) -> QuerySet:
        return experiment_queryset()

    def get_serializer_class(self) -> type:
        # one experiment also lists its forks (one query); the list says how many
        return ExperimentDetailSerializer if self.action == "retrieve" else ExperimentSerializer

    def get_object(self) -> Experiment:
        experiment = (
            self.get_queryset().filter(**experiment_filter(self.kwargs["id_or_name"])).first()
        )
        if experiment is None:
            raise exceptions.NotFound("No such experiment.")
        return experiment

    def _plain_object(self) -> Experiment:
        experiment = Experiment.objects.filter(
            **experiment_filter(self.kwargs["id_or_name"])
        ).first()
        if experiment is None:
            raise exceptions.NotFound("No such experiment.")
        return experiment

    def _answer(self, pk: int, code: int = status.HTTP_200_OK) -> Response:
        experiment = experiment_queryset().get(pk=pk)
        response = Response(ExperimentDetailSerializer(experiment).data, status=code)
        response["ETag"] = etag(experiment)
        return response

    def _action_answer(
        self, pk: int, plan: dict | None, code: int = status.HTTP_200_OK
    ) -> Response:
        experiment = experiment_queryset().get(pk=pk)
        experiment.plan = plan
        experiment.notices = name_notices(experiment)
        response = Response(ExperimentActionSerializer(experiment).data, status=code)
        response["ETag"] = etag(experiment)
        return response

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._validated(ExperimentCreateSerializer, request)
        experiment = services.create_experiment(request.user, source=RevisionSource.API, **data)
        return self._action_answer(experiment.pk, None, status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self._plain_object()
        data = self._validated(
            ExperimentUpdateSerializer, request, partial=kwargs.get("partial", False)
        )
        with transaction.atomic():
            experiment = locked_experiment(target.pk)
            check_precondition(request, experiment, data.get("updated_at"))
            apply_experiment_changes(request.user, experiment, data)
        return self._answer(experiment.pk)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self._plain_object()
        data = self._validated(PreconditionSerializer, request)
        with transaction.atomic():
            experiment = locked_experiment(target.pk)
            check_precondition(request, experiment, data.get("updated_at"))
            services.delete_experiments(request.user, [experiment])
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Start an experiment",
        description="Sets desired state RUNNING; the reconciler launches it on its next pass. "
        "The answer's plan says what that requests (nodes x GPUs) or why it will not launch "
        "(someone else's active job under its name, a launch in flight, the reconciler not "
        "on). dry_run true answers the plan and changes nothing. Starting a running "
        "experiment changes nothing.",
        parameters=[ID_OR_NAME, IF_MATCH],
        request=StartSerializer,
        responses={200: ExperimentActionSerializer, **errors(*WRITE_ERRORS)},
    )
    @action(detail=True, methods=["post"])
    def start(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self._plain_object()
        data = self._validated(StartSerializer, request)
        if data["dry_run"]:
            return self._action_answer(
                target.pk, door.start(request.user, [target], dry_run=True).as_dict()
            )
        with transaction.atomic():
            experiment = locked_experiment(target.pk)
            check_precondition(request, experiment, data.get("updated_at"))
            plan = door.start(request.user, [experiment])
        return self._action_answer(experiment.pk, plan.as_dict())

    @extend_schema(
        summary="Stop an experiment",
        description="Sets desired state STOPPED and cancels its active jobs, whoever launched "
        "them (a person asked); the answer's plan lists them (cancel_jobs) and says which "
        "SkyPilot took (cancelled_jobs). jobs limits the cancels to the ids a dry run "
        "listed. Stop on an experiment already desired STOPPED still cancels its active "
        "jobs. dry_run true answers the plan and changes nothing. If SkyPilot refuses the "
        "cancel, the desired state is STOPPED anyway and the answer is a 502 naming the jobs.",
        parameters=[ID_OR_NAME, IF_MATCH],
        request=StopSerializer,
        responses={200: ExperimentActionSerializer, **errors(*WRITE_ERRORS, 502)},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self._plain_object()
        data = self._validated(StopSerializer, request)
        job_ids = data.get("jobs")
        if data["dry_run"]:
            result = door.stop(request.user, [target], job_ids=job_ids, dry_run=True)
            return self._action_answer(target.pk, result.as_dict())
        with transaction.atomic():
            experiment = locked_experiment(target.pk)
            check_precondition(request, experiment, data.get("updated_at"))
            plan = control.stop(request.user, [experiment], job_ids)
        result = door.cancel_planned(request.user, plan)  # after the commit: no lock held
        if result.error:
            raise BadGateway(
                f"Desired state is STOPPED, but SkyPilot did not cancel "
                f"{control.describe_jobs(plan.cancel_jobs)}: {result.error}"
            )
        return self._action_answer(experiment.pk, result.as_dict())

    @extend_schema(
        summary="Adopt the active jobs under its name",
        description="Makes the active jobs that carry the experiment's name and that SkyDeck "
        "did not launch its current run: desired RUNNING without a launch, and from now on "
        "SkyDeck answers for them (Stop and the reconciler may cancel them; when they "
        "succeed the experiment is done). 400 when there is nothing to adopt. dry_run true "
        "answers the plan and changes nothing.",
        parameters=[ID_OR_NAME],
        request=AdoptSerializer,
        responses={200: ExperimentActionSerializer, **errors(400, 403, 404, 415)},
    )
    @action(detail=True, methods=["post"])
    def adopt(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        target = self._plain_object()
        data = self._validated(AdoptSerializer, request)
        plan = door.adopt(request.user, target, dry_run=data["dry_run"])
        return self._action_answer(target.pk, plan.as_dict())

    @extend_schema(
        summary="Duplicate an experiment",
        description="Copies its configuration under a new name, right after it in its groups. "
        "The copy is STOPPED.",
        parameters=[ID_OR_NAME],
        request=DuplicateSerializer,
        responses={201: ExperimentDetailSerializer, **errors(400, 403, 404, 409, 415)},
    )
    @action(detail=True, methods=["post"])
    def duplicate(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        source = self._plain_object()
        data = self._validated(DuplicateSerializer, request)
        copy = services.duplicate_experiment(request.user, source, name=data.get("name"))
        return self._answer(copy.pk, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Preview the launch",
        description="The exact command and SkyPilot task YAML the reconciler would submit, or "
        "why it cannot launch (ok false).",
        parameters=[ID_OR_NAME],
        responses={200: LaunchPreviewSerializer, **errors(404)},
    )
    @action(detail=True, methods=["get"], url_path="launch-preview")
    def launch_preview(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        preview = launching.launch_preview(self._plain_object())
        return Response(
            {
                "ok": "error" not in preview,
                "command": preview.get("command"),
                "task_yaml": preview.get("task_yaml"),
                "error": preview.get("error"),
            }
        )


# --- bulk -----------------------------------------------------------------------------------


class BulkView(StrictQueryParams, APIView):
    """One request, many experiments, one result per item: never all-or-nothing."""

    @extend_schema(
        summary="Change many experiments",
        description="Applies one action to each listed experiment separately (each in its own "
        "transaction) and reports every item: ok, unchanged, not_found, invalid (with errors) "
        "or conflict (its updated_at differs). A malformed request (unknown action, missing "
        "desired_state/group/changes, more than 1000 items) is a 400 and changes nothing.",
        request=PolymorphicProxySerializer(
            component_name="Bulk",
            serializers={action: cls() for action, cls in BULK_VARIANTS.items()},
            resource_type_field_name="action",
        ),
        responses={200: BulkResultSerializer, **errors(400, 403, 415)},
    )
    def post(self, request: Request) -> Response:
        serializer = BulkSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        action_name = data["action"]
        if action_name == "update":
            check_values(data["changes"])
        group = None
        if "group" in data:
            group = ExperimentGroup.objects.filter(pk=data["group"]).first()
            if group is None:
                raise exceptions.ValidationError({"group": [f"No group with id {data['group']}."]})
        items = data["experiments"]
        found = resolve_refs(ref for ref, _ in items)
        results = []
        seen: set[int] = set()
        dry_run = data.get("dry_run", False)
        if dry_run and action_name != "set_desired_state":
            raise exceptions.ValidationError(
                {"dry_run": [f"Only set_desired_state has a dry run, not {action_name}."]}
            )
        plans: list[control.ItemPlan] = []
        for index, (ref, updated_at) in enumerate(items):
            entry: dict[str, Any] = {
                "index": index,
                "ref": ref.raw,
                "id": None,
                "name": None,
                "result": "ok",
                "detail": "",
                "errors": None,
            }
            results.append(entry)
            experiment = found.get(ref.key)
            if experiment is None:
                if ref.name is not None and not is_experiment_name(ref.name):
                    entry.update(result="invalid", detail="Not a valid experiment name.")
                else:
                    entry.update(result="not_found", detail="No such experiment.")
                continue
            entry.update(id=experiment.pk, name=experiment.name)
            if experiment.pk in seen:
                entry.update(result="invalid", detail="Listed more than once.")
                continue
            seen.add(experiment.pk)
            try:
                with transaction.atomic():
                    locked = Experiment.objects.select_for_update().filter(pk=experiment.pk).first()
                    if locked is None:
                        entry.update(result="not_found", detail="Deleted meanwhile.")
                        continue
                    if updated_at is not None and updated_at != locked.updated_at:
                        entry.update(
                            result="conflict", detail="Changed since the updated_at you sent."
                        )
                        continue
                    if action_name == "set_desired_state":
                        entry["result"] = self._desired(request, data, locked, plans, dry_run)
                    else:
                        entry["result"] = self._apply(request, action_name, data, locked, group)
            except DjangoValidationError as exc:
                entry.update(
                    result="invalid", detail="Refused by validation.", errors=validation_detail(exc)
                )
        counts = {name: 0 for name in BULK_RESULTS}
        for entry in results:
            counts[entry["result"]] += 1
        answer: dict[str, Any] = {"action": action_name, "counts": counts, "results": results}
        if action_name == "set_desired_state":
            running = data["desired_state"] == "RUNNING"
            plan = control.Plan("start" if running else "stop", plans, control.reconciler_mode())
            plan.dry_run = dry_run
            if running or dry_run:
                answer["plan"] = plan.as_dict()
            else:  # the cancels go after every item's transaction has committed
                answer["plan"] = door.cancel_planned(request.user, plan).as_dict()
        return Response(answer)

    @staticmethod
    def _desired(request: Request, data: dict, experiment: Experiment, plans: list, dry_run: bool):
        """Start or Stop one item (inside its transaction); its plan joins the request's."""
        running = data["desired_state"] == "RUNNING"
        if dry_run:
            plan = (control.start_plan if running else control.stop_plan)([experiment])
        elif running:
            plan = control.start(request.user, [experiment])
        else:
            plan = control.stop(request.user, [experiment])
        item = plan.items[0]
        plans.append(item)
        return "ok" if item.changes or item.cancel else "unchanged"

    @staticmethod
    def _apply(request: Request, action_name: str, data: dict, experiment: Experiment, group):
        user = request.user
        if action_name == "delete":
            services.delete_experiments(user, [experiment])
            return "ok"
        if action_name == "add_to_group":
            added = services.add_to_group(user, group, [experiment])
            return "ok" if added else "unchanged"
        if action_name == "move_to_group":
            memberships = set(experiment.group_memberships.values_list("group_id", flat=True))
            if memberships == {group.pk}:
                return "unchanged"
            services.move_to_group(user, [experiment], group)
            return "ok"
        # update
        before = experiment.updated_at
        apply_experiment_changes(user, experiment, data["changes"], RevisionSource.BULK)
        return "ok" if experiment.updated_at != before else "unchanged"
