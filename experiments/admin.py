"""Django admin for bulk edits.

A thin wrapper: every change goes through ``experiments.services`` so it is validated like any other
change and lands in the operation log with the admin user as actor. Synced data (jobs, checkpoints,
sync states) and the audit trail itself are read-only. Changelists use annotations,
``select_related`` and ``prefetch_related`` so their query count does not grow with the rows shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat, truncatechars
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from experiments import budgets, services
from experiments.forms import ExperimentAdminForm, ExperimentGroupAdminForm, GroupChoiceForm
from experiments.models import (
    JOB_RESOURCE_FIELDS,
    JOB_RUN_FIELDS,
    AcceleratorPrice,
    Checkpoint,
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentGroupMember,
    GroupBudget,
    Job,
    Launch,
    Notification,
    NotificationEvent,
    OperationLog,
    RevisionSource,
    SyncState,
    WebhookDestination,
)
from syncing import services as door

DESIRED_ACTION_TEMPLATE = "admin/experiments/desired_action.html"
admin.site.site_header = "SkyDeck admin"
admin.site.site_title = "SkyDeck admin"

GROUP_ACTION_TEMPLATE = "admin/experiments/group_action.html"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc)


# --- group memberships ----------------------------------------------------------------------
# Memberships are edited in inlines (on experiments and on groups) and on their own changelist.
# All three paths funnel into ``_apply_membership_edits`` so adds, removals and moves use the
# services (which keep the order dense and write the operation log) instead of raw saves.


@dataclass
class _MembershipEdit:
    member: ExperimentGroupMember  # the new values (group, experiment, order)
    original: ExperimentGroupMember | None  # the row as stored, None for a new membership
    order_requested: bool  # the user typed an order: place the member there


def _place_members(
    actor: services.Actor, group: ExperimentGroup, wanted: dict[int, tuple[int, int | None]]
) -> None:
    """Reorder ``group`` so members in ``wanted`` (experiment id -> (new order, old order)) sit
    at the typed positions; a member moved up goes before the one already there, moved down after.
    """
    members = list(group.memberships.order_by("order", "id"))

    def key(item: tuple[int, ExperimentGroupMember]) -> tuple[int, int, int]:
        index, member = item
        if member.experiment_id not in wanted:
            return (member.order, 0, index)
        new, old = wanted[member.experiment_id]
        tiebreak = -1 if old is None or new < old else (1 if new > old else 0)
        return (new, tiebreak, index)

    ordered = [m.experiment_id for _, m in sorted(enumerate(members), key=key)]
    if ordered != [m.experiment_id for m in members]:
        services.reorder_group(actor, group, ordered)


def _apply_membership_edits(
    actor: services.Actor,
    edits: Iterable[_MembershipEdit],
    removals: Iterable[ExperimentGroupMember] = (),
) -> None:
    """Apply membership edits through the services, in one transaction."""
    edits = list(edits)
    with transaction.atomic():
        for member in removals:
            services.remove_from_group(actor, member.group, [member.experiment])
        placements: dict[int, tuple[ExperimentGroup, dict[int, tuple[int, int | None]]]] = {}
        for edit in edits:
            member, original = edit.member, edit.original
            moved = original is None or (original.group_id, original.experiment_id) != (
                member.group_id,
                member.experiment_id,
            )
            if moved:
                if original is not None:
                    services.remove_from_group(actor, original.group, [original.experiment])
                services.add_to_group(actor, member.group, [member.experiment])
            if edit.order_requested:
                old = None if moved or original is None else original.order
                _, wanted = placements.setdefault(member.group_id, (member.group, {}))
                wanted[member.experiment_id] = (member.order, old)
        for group, wanted in placements.values():
            _place_members(actor, group, wanted)
        for edit in edits:
            stored = ExperimentGroupMember.objects.get(
                group_id=edit.member.group_id, experiment_id=edit.member.experiment_id
            )
            edit.member.pk, edit.member.order = stored.pk, stored.order


def _save_membership_formset(actor: services.Actor, formset: BaseInlineFormSet) -> None:
    """Save a membership inline through the services, filling the attributes the admin's
    change message reads (``new_objects``, ``changed_objects``, ``deleted_objects``)."""
    parent = formset.instance
    deleted = set(formset.deleted_forms) if formset.can_delete else set()
    originals = ExperimentGroupMember.objects.select_related("group", "experiment").in_bulk(
        [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
    )
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    edits: list[_MembershipEdit] = []
    removals: list[ExperimentGroupMember] = []
    for form in formset.initial_forms:
        original = originals.get(form.instance.pk)
        if original is None:  # removed meanwhile
            continue
        if form in deleted:
            removals.append(original)
            formset.deleted_objects.append(original)
        elif form.has_changed():
            edits.append(_MembershipEdit(form.instance, original, "order" in form.changed_data))
            formset.changed_objects.append((form.instance, form.changed_data))
    for form in formset.extra_forms:
        if form in deleted or not form.has_changed():
            continue
        setattr(form.instance, formset.fk.name, parent)
        edits.append(_MembershipEdit(form.instance, None, "order" in form.changed_data))
        formset.new_objects.append(form.instance)
    _apply_membership_edits(actor, edits, removals)


class MembershipFormsetMixin:
    """Route membership inlines through the services instead of ``formset.save()``."""

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        if formset.model is ExperimentGroupMember:
            _save_membership_formset(request.user, formset)
        else:
            super().save_formset(request, form, formset, change)  # type: ignore[misc]


class GroupMembershipInline(admin.TabularInline):
    """The groups of one experiment, on the experiment page."""

    model = ExperimentGroupMember
    fk_name = "experiment"
    fields = ("group", "order")
    ordering = ("group__order", "group__id")
    extra = 0
    verbose_name = "group membership"
    verbose_name_plural = "group memberships"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExperimentGroupMember]:
        """The row titles show group and experiment: fetch them with the rows."""
        return super().get_queryset(request).select_related("group", "experiment")


class GroupMemberInline(admin.TabularInline):
    """The members of one group, in display order, on the group page."""

    model = ExperimentGroupMember
    fk_name = "group"
    fields = ("experiment", "order")
    autocomplete_fields = ("experiment",)
    ordering = ("order", "id")
    extra = 0
    verbose_name = "member"
    verbose_name_plural = "members (by order; a new member goes last unless given an order)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExperimentGroupMember]:
        return super().get_queryset(request).select_related("group", "experiment")


# --- experiments ----------------------------------------------------------------------------


@admin.register(Experiment)
class ExperimentAdmin(MembershipFormsetMixin, admin.ModelAdmin):
    form = ExperimentAdminForm
    list_display = (
        "name",
        "desired_state",
        "current_state",
        "nodes",
        "gpus",
        "accelerator",
        "latest_job",
        "latest_epoch",
        "groups",
        "starred",
        "updated_at",
    )
    list_filter = ("desired_state", "current_state", "starred", "experiment_groups")
    search_fields = ("name", "description")
    # The desired state changes only through the Start / Stop actions, which say first what
    # they launch or cancel: an edit never launches or cancels anything.
    readonly_fields = (
        "desired_state",
        "current_state",
        "latest_job",
        "latest_epoch",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "name",
                    "desired_state",
                    "current_state",
                    "starred",
                    "description",
                    "tags",
                )
            },
        ),
        ("Resources", {"fields": ("nodes", "gpus", "accelerator")}),
        ("Launch", {"fields": ("base_command", "tool_path", "git_ref", "flags")}),
        ("Status", {"fields": ("latest_job", "latest_epoch", "created_at", "updated_at")}),
    )
    inlines = (GroupMembershipInline,)
    actions = (
        "desired_running",
        "desired_stopped",
        "duplicate",
        "add_to_group",
        "move_to_group",
        "remove_from_group",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        """Latest job/epoch come as annotations and groups as one prefetch: no query per row."""
        return super().get_queryset(request).with_latest().prefetch_related("experiment_groups")

    @admin.display(description="latest job", ordering="latest_job_status")
    def latest_job(self, obj: Experiment) -> str:
        status = getattr(obj, "latest_job_status", None)
        job_id = getattr(obj, "latest_job_id", None)
        if not status or job_id is None:
            return self.get_empty_value_display()
        url = reverse("admin:experiments_job_change", args=[job_id])
        return format_html('<a href="{}">{}</a>', url, status)

    @admin.display(description="latest epoch", ordering="latest_epoch")
    def latest_epoch(self, obj: Experiment) -> int | None:
        return getattr(obj, "latest_epoch", None)

    @admin.display(description="groups")
    def groups(self, obj: Experiment) -> str:
        return ", ".join(group.name for group in obj.experiment_groups.all())

    def save_model(
        self, request: HttpRequest, obj: Experiment, form: ModelForm, change: bool
    ) -> None:
        """Create or update through the services (which log the operation).

        The form already ran the model's validation; the services run it again inside their
        transaction. ``obj`` is the instance the inline formsets point at, so it gets the saved
        primary key and timestamps.
        """
        fields = {
            f: form.cleaned_data[f] for f in services.EDITABLE_FIELDS if f in form.cleaned_data
        }
        if change:
            stored = Experiment.objects.get(pk=obj.pk)
            saved = services.update_experiment(
                request.user, stored, source=RevisionSource.ADMIN, **fields
            )
        else:
            saved = services.create_experiment(request.user, source=RevisionSource.ADMIN, **fields)
            obj.pk = saved.pk
            obj._state.adding = False
            obj._state.db = saved._state.db
            obj.created_at = saved.created_at
        obj.updated_at = saved.updated_at

    def delete_model(self, request: HttpRequest, obj: Experiment) -> None:
        services.delete_experiments(request.user, [obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        services.delete_experiments(request.user, queryset)

    # --- actions ---

    def _set_desired(
        self, request: HttpRequest, queryset: QuerySet[Experiment], state: str
    ) -> TemplateResponse | None:
        """Start / Stop: first a page with the plan (GPUs, jobs cancelled), then the act."""

        experiments = list(queryset.order_by("name"))
        start = state == DesiredState.RUNNING
        if request.POST.get("post") != "yes":
            plan = (
                door.start(request.user, experiments, dry_run=True)
                if start
                else door.stop(request.user, experiments, dry_run=True).plan
            )
            context = {
                **self.admin_site.each_context(request),
                "title": "Start experiments" if start else "Stop experiments",
                "opts": self.opts,
                "plan": plan,
                "action": request.POST.get("action", ""),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "submit_label": "Yes, start them" if start else "Yes, stop them",
            }
            request.current_app = self.admin_site.name
            return TemplateResponse(request, DESIRED_ACTION_TEMPLATE, context)
        try:
            if start:
                plan = door.start(request.user, experiments)
                self.message_user(request, plan.summary() + ".", messages.SUCCESS)
            else:
                shown = [int(j) for j in request.POST.getlist("jobs") if j.isdigit()]
                result = door.stop(request.user, experiments, job_ids=shown)
                if result.error:
                    self.message_user(
                        request,
                        f"Desired state STOPPED, but SkyPilot did not cancel "
                        f"{_plural(len(result.plan.cancel_jobs), 'job')}: {result.error}",
                        messages.ERROR,
                    )
                else:
                    self.message_user(request, result.plan.summary() + ".", messages.SUCCESS)
        except (ValidationError, IntegrityError) as exc:
            self.message_user(request, f"Nothing changed: {_error_text(exc)}", messages.ERROR)
        return None

    @admin.action(
        description="Start (desired RUNNING; shows the GPUs first)", permissions=["change"]
    )
    def desired_running(
        self, request: HttpRequest, queryset: QuerySet[Experiment]
    ) -> TemplateResponse | None:
        return self._set_desired(request, queryset, DesiredState.RUNNING)

    @admin.action(
        description="Stop (desired STOPPED; cancels their active jobs, listed first)",
        permissions=["change"],
    )
    def desired_stopped(
        self, request: HttpRequest, queryset: QuerySet[Experiment]
    ) -> TemplateResponse | None:
        return self._set_desired(request, queryset, DesiredState.STOPPED)

    @admin.action(
        description="Duplicate (the copy starts STOPPED, right after the original)",
        permissions=["add"],
    )
    def duplicate(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        copies: list[str] = []
        for experiment in queryset:
            try:
                copies.append(services.duplicate_experiment(request.user, experiment).name)
            except (ValidationError, IntegrityError) as exc:
                self.message_user(
                    request,
                    f"Could not duplicate {experiment.name}: {_error_text(exc)}",
                    messages.ERROR,
                )
        if copies:
            noun = "copy" if len(copies) == 1 else "copies"
            self.message_user(
                request, f"Created {len(copies)} {noun}: {', '.join(copies)}.", messages.SUCCESS
            )

    def _group_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[Experiment],
        *,
        action: str,
        title: str,
        prompt: str,
        groups: QuerySet[ExperimentGroup],
        apply: Callable[[ExperimentGroup, list[Experiment]], str],
        no_groups: str = "There are no groups yet: add one first.",
    ) -> TemplateResponse | None:
        """The standard intermediate page: pick a group, then ``apply`` it to the selection.

        Returns the page (first visit, or a bad choice) or None to go back to the changelist
        (also, with ``no_groups`` as the error, when there is no group to pick).
        """
        if not groups.exists():
            self.message_user(request, no_groups, messages.ERROR)
            return None
        experiments = list(queryset)
        if "apply" in request.POST:
            form = GroupChoiceForm(request.POST, groups=groups)
            if form.is_valid():
                try:
                    message = apply(form.cleaned_data["group"], experiments)
                except (ValidationError, IntegrityError) as exc:
                    self.message_user(
                        request, f"Nothing changed: {_error_text(exc)}", messages.ERROR
                    )
                else:
                    self.message_user(request, message, messages.SUCCESS)
                return None
        else:
            form = GroupChoiceForm(groups=groups)
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "prompt": prompt,
            "opts": self.opts,
            "form": form,
            "experiments": experiments,
            "action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "submit_label": title.rstrip("…. "),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, GROUP_ACTION_TEMPLATE, context)

    @admin.action(description="Add to group…", permissions=["change"])
    def add_to_group(
        self, request: HttpRequest, queryset: QuerySet[Experiment]
    ) -> TemplateResponse | None:
        def apply(group: ExperimentGroup, experiments: list[Experiment]) -> str:
            added = services.add_to_group(request.user, group, experiments)
            already = len(experiments) - added
            note = f" ({already} already there)" if already else ""
            return f"Added {_plural(added, 'experiment')} to group {group.name}{note}."

        return self._group_action(
            request,
            queryset,
            action="add_to_group",
            title="Add to group…",
            prompt="Append these experiments, in this order, to the end of the group:",
            groups=ExperimentGroup.objects.all(),
            apply=apply,
        )

    @admin.action(description="Move to group… (out of every other group)", permissions=["change"])
    def move_to_group(
        self, request: HttpRequest, queryset: QuerySet[Experiment]
    ) -> TemplateResponse | None:
        def apply(group: ExperimentGroup, experiments: list[Experiment]) -> str:
            moved = services.move_to_group(request.user, experiments, group)
            return f"Moved {_plural(moved, 'experiment')} to group {group.name}."

        return self._group_action(
            request,
            queryset,
            action="move_to_group",
            title="Move to group…",
            prompt="Move these experiments to the end of the group, out of every other group:",
            groups=ExperimentGroup.objects.all(),
            apply=apply,
        )

    @admin.action(description="Remove from group…", permissions=["change"])
    def remove_from_group(
        self, request: HttpRequest, queryset: QuerySet[Experiment]
    ) -> TemplateResponse | None:
        groups = ExperimentGroup.objects.filter(
            Exists(
                ExperimentGroupMember.objects.filter(
                    group=OuterRef("pk"), experiment__in=queryset.values("pk")
                )
            )
        )

        def apply(group: ExperimentGroup, experiments: list[Experiment]) -> str:
            removed = services.remove_from_group(request.user, group, experiments)
            return f"Removed {_plural(removed, 'experiment')} from group {group.name}."

        return self._group_action(
            request,
            queryset,
            action="remove_from_group",
            title="Remove from group…",
            prompt="Remove these experiments from the group (the rest keep their order):",
            groups=groups,
            apply=apply,
            no_groups="None of the selected experiments is in a group.",
        )


# --- groups ---------------------------------------------------------------------------------


#: A group's settings for its experiments' runs (the log sampler's stall threshold and patterns).
GROUP_TUNING = ("stall_minutes", "metric_patterns")


@admin.register(ExperimentGroup)
class ExperimentGroupAdmin(MembershipFormsetMixin, admin.ModelAdmin):
    form = ExperimentGroupAdminForm
    list_display = ("name", "order", "collapsed", "member_count", "updated_at")
    list_editable = ("collapsed",)
    list_filter = ("collapsed",)
    search_fields = ("name",)
    inlines = (GroupMemberInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ExperimentGroup]:
        """Member count as an annotation: one query for the whole changelist."""
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    def get_fields(self, request: HttpRequest, obj: ExperimentGroup | None = None) -> list[str]:
        """A new group always goes last (``create_group``); order is set once it exists."""
        if obj is None:
            return ["name", "flags", "collapsed", *GROUP_TUNING]
        return ["name", "flags", "order", "collapsed", *GROUP_TUNING]

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: ExperimentGroup) -> int:
        return obj.member_count

    def save_model(
        self, request: HttpRequest, obj: ExperimentGroup, form: ModelForm, change: bool
    ) -> None:
        """Create/update/reorder through the services; ``order`` is the group's 0-based position."""
        data = form.cleaned_data
        if not change:
            saved = services.create_group(request.user, data["name"], flags=data.get("flags") or [])
            later = {f: data[f] for f in ("collapsed", *GROUP_TUNING) if data.get(f)}
            if later:
                saved = services.update_group(request.user, saved, **later)
            obj.pk = saved.pk
            obj._state.adding = False
            obj._state.db = saved._state.db
            obj.order, obj.created_at, obj.updated_at = (
                saved.order,
                saved.created_at,
                saved.updated_at,
            )
            return
        stored = ExperimentGroup.objects.get(pk=obj.pk)
        changes = {
            f: data[f]
            for f in ("name", "flags", "collapsed", *GROUP_TUNING)
            if f in form.changed_data
        }
        if changes:
            services.update_group(request.user, stored, **changes)
        if "order" in form.changed_data:
            ids = list(
                ExperimentGroup.objects.exclude(pk=obj.pk)
                .order_by("order", "id")
                .values_list("pk", flat=True)
            )
            position = max(0, min(len(ids), data["order"]))
            ids.insert(position, obj.pk)
            services.reorder_groups(request.user, ids)
            obj.order = position

    def delete_model(self, request: HttpRequest, obj: ExperimentGroup) -> None:
        services.delete_group(request.user, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ExperimentGroup]) -> None:
        with transaction.atomic():
            for group in queryset:
                services.delete_group(request.user, group)


@admin.register(ExperimentGroupMember)
class ExperimentGroupMemberAdmin(admin.ModelAdmin):
    list_display = ("group", "order", "experiment")
    list_filter = ("group",)
    search_fields = ("experiment__name", "group__name")
    list_select_related = ("group", "experiment")
    autocomplete_fields = ("group", "experiment")
    ordering = ("group__order", "group__id", "order", "id")

    def save_model(
        self, request: HttpRequest, obj: ExperimentGroupMember, form: ModelForm, change: bool
    ) -> None:
        """Add, move between groups or reorder through the services (see the inlines)."""
        original = (
            ExperimentGroupMember.objects.select_related("group", "experiment").get(pk=obj.pk)
            if change
            else None
        )
        edit = _MembershipEdit(obj, original, "order" in form.changed_data)
        _apply_membership_edits(request.user, [edit])

    def delete_model(self, request: HttpRequest, obj: ExperimentGroupMember) -> None:
        services.remove_from_group(request.user, obj.group, [obj.experiment])

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[ExperimentGroupMember]
    ) -> None:
        _apply_membership_edits(request.user, [], queryset.select_related("group", "experiment"))


# --- synced data and the audit trail: read-only ----------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable (with view permission), never changed here: syncs and services own these rows."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class OrphanedFilter(admin.SimpleListFilter):
    """Jobs whose name matches no experiment, or the ones that do."""

    title = "orphaned"
    parameter_name = "orphaned"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Orphaned"), ("no", "Attached to an experiment")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        if self.value() == "yes":
            return queryset.orphaned()
        if self.value() == "no":
            return queryset.attached()
        return queryset


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "job_name",
        "experiment_link",
        "status",
        "user_name",
        "submitted_at",
        "started_at",
        "ended_at",
        "resources",
        "recovery_count",
    )
    list_filter = ("status", OrphanedFilter, "user_name", "cloud")
    search_fields = ("id__exact", "job_name", "user_name", "failure_reason")
    list_select_related = ("experiment",)
    date_hierarchy = "submitted_at"
    fields = (
        "id",
        "job_name",
        "experiment_link",
        "status",
        "task_count",
        "command",
        "git_ref",
        *JOB_RESOURCE_FIELDS,
        *JOB_RUN_FIELDS,
        "first_seen",
        "last_seen",
        "raw",
    )
    readonly_fields = ("experiment_link",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        """Whether the job's experiment exists, as an annotation (there is no DB constraint)."""
        return (
            super()
            .get_queryset(request)
            .annotate(attached=Exists(Experiment.objects.filter(name=OuterRef("experiment_id"))))
        )

    @admin.display(description="experiment", ordering="experiment_id")
    def experiment_link(self, obj: Job) -> str:
        if not getattr(obj, "attached", False):
            if obj.experiment_id:
                return format_html("orphaned ({})", obj.experiment_id)
            return "orphaned"
        # attached, so the select_related (or one lookup on the change page) finds it
        url = reverse("admin:experiments_experiment_change", args=[obj.experiment.pk])
        return format_html('<a href="{}">{}</a>', url, obj.experiment_id)


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    list_display = (
        "experiment",
        "epoch",
        "policy_version",
        "size_display",
        "last_modified",
        "missing",
    )
    list_filter = ("missing",)
    search_fields = ("experiment__name", "model_path", "policy_version")
    list_select_related = ("experiment",)
    date_hierarchy = "last_modified"

    @admin.display(description="size", ordering="size")
    def size_display(self, obj: Checkpoint) -> str:
        return filesizeformat(obj.size) if obj.size is not None else self.get_empty_value_display()


@admin.register(OperationLog)
class OperationLogAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "actor",
        "operation",
        "experiment_display",
        "job_id",
        "success",
        "message_short",
    )
    list_filter = ("operation", "success", "actor")
    search_fields = ("experiment_name", "actor", "message", "job_id__exact")
    list_select_related = ("experiment",)
    date_hierarchy = "created_at"

    @admin.display(description="experiment", ordering="experiment_name")
    def experiment_display(self, obj: OperationLog) -> str:
        """A link while the experiment still exists; the kept name once it is deleted."""
        if obj.experiment_id is None:
            return obj.experiment_name
        url = reverse("admin:experiments_experiment_change", args=[obj.experiment_id])
        return format_html('<a href="{}">{}</a>', url, obj.experiment_name)

    @admin.display(description="message")
    def message_short(self, obj: OperationLog) -> str:
        return truncatechars(obj.message, 80)


@admin.register(SyncState)
class SyncStateAdmin(ReadOnlyAdmin):
    list_display = (
        "source",
        "ok",
        "last_attempt_at",
        "last_success_at",
        "last_error_at",
        "error_short",
        "duration",
        "lease_owner",
        "lease_expires_at",
        "counts_display",
    )
    search_fields = ("source", "last_error", "lease_owner")

    @admin.display(description="ok", boolean=True)
    def ok(self, obj: SyncState) -> bool:
        return obj.ok

    @admin.display(description="last error")
    def error_short(self, obj: SyncState) -> str:
        return truncatechars(obj.last_error, 80)

    @admin.display(description="counts")
    def counts_display(self, obj: SyncState) -> str:
        if not obj.counts:
            return self.get_empty_value_display()
        return format_html_join(", ", "{}: {}", sorted(obj.counts.items()))


@admin.register(Launch)
class LaunchAdmin(ReadOnlyAdmin):
    """The reconciler's launch requests, with the server's error when one was refused."""

    list_display = (
        "created_at",
        "experiment_name",
        "status",
        "job_id",
        "error_type",
        "error_short",
    )
    list_filter = ("status", "error_type")
    search_fields = ("experiment_name", "error_message", "job_id__exact")
    date_hierarchy = "created_at"

    @admin.display(description="error")
    def error_short(self, obj: Launch) -> str:
        return truncatechars(obj.error_message, 80)


class ThroughServices:
    """An admin whose saves and deletes go through logged services (``save_with(actor, obj)``,
    ``delete_with(actor, objects)``), never ``Model.save`` and ``QuerySet.delete``."""

    save_with: Callable[..., Any]
    delete_with: Callable[..., Any]

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        self.save_with(request.user, obj)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.delete_with(request.user, [obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        self.delete_with(request.user, queryset)


@admin.register(GroupBudget)
class GroupBudgetAdmin(ThroughServices, admin.ModelAdmin):
    """A group's GPU-hour and/or cost budget: each change through the services, logged."""

    save_with = staticmethod(services.save_budget)
    delete_with = staticmethod(services.delete_budgets)

    list_display = ("group", "gpu_hours", "usd", "period", "stop_at_limit", "updated_at")
    list_filter = ("period", "stop_at_limit")
    search_fields = ("group__name",)
    list_select_related = ("group",)
    readonly_fields = ("used_now", "warned_for", "exceeded_for", "updated_at")

    def get_list_display(self, request: HttpRequest) -> tuple:
        """Each row's use this period, from one roll-up per period for the whole page."""
        cache: dict[int, budgets.BudgetStatus] = {}

        @admin.display(description="used this period")
        def used(obj: GroupBudget) -> str:
            if not cache:
                cache.update(budgets.statuses())
            status = cache.get(obj.group_id)
            return _budget_use(status) if status else "-"

        return (*self.list_display[:5], used, self.list_display[5])

    @admin.display(description="used this period")
    def used_now(self, obj: GroupBudget) -> str:
        if not obj.pk:
            return "-"
        status = budgets.statuses([obj]).get(obj.group_id)
        return _budget_use(status) if status else "-"


def _budget_use(status: budgets.BudgetStatus) -> str:
    return f"{', '.join(status.parts())} ({status.percent}, {status.level})"


@admin.register(AcceleratorPrice)
class AcceleratorPriceAdmin(ThroughServices, admin.ModelAdmin):
    """Usage's prices per GPU-hour: each change through the services, in the operation log."""

    save_with = staticmethod(services.save_price)
    delete_with = staticmethod(services.delete_prices)

    list_display = (
        "accelerator",
        "cloud_label",
        "usd_per_gpu_hour",
        "estimate",
        "note",
        "updated_at",
    )
    list_filter = ("estimate", "cloud")
    search_fields = ("accelerator", "cloud", "note")
    readonly_fields = ("updated_at",)

    @admin.display(description="cloud", ordering="cloud")
    def cloud_label(self, obj: AcceleratorPrice) -> str:
        return obj.cloud or "any"


# --- notifications: webhook destinations (the URL is write-only) and the outbox -----------------


class WebhookDestinationForm(ModelForm):
    """The URL is a secret: never sent back to the browser. On a change page an empty input
    keeps the saved URL (the hint shows its scheme and host only); a new value replaces it."""

    url = forms.CharField(
        label="URL",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "size": 80}),
    )
    events = forms.MultipleChoiceField(
        choices=NotificationEvent.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="The events this destination wants; none: it gets nothing.",
    )

    class Meta:
        model = WebhookDestination
        fields = ("name", "url", "format", "events", "enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["url"] = ""  # the saved URL stays on the server
        saved = self.instance.url if self.instance.pk else ""
        field = self.fields["url"]
        if saved:
            field.help_text = (
                f"saved ({door.mask_url(saved)}): leave empty to keep it, type a new URL to "
                "replace it."
            )
        else:
            field.help_text = WebhookDestination._meta.get_field("url").help_text

    def clean_url(self) -> str:
        value = self.cleaned_data.get("url") or ""
        if not value:
            if self.instance.pk and self.instance.url:
                return self.instance.url  # not yet overwritten: the instance is filled after
            raise ValidationError("Give the webhook URL (http:// or https://).")
        URLValidator(schemes=["http", "https"], message="Enter an http:// or https:// URL.")(value)
        return value


@admin.register(WebhookDestination)
class WebhookDestinationAdmin(ThroughServices, admin.ModelAdmin):
    """Where notifications go: each change through the services, logged without the URL."""

    save_with = staticmethod(door.save_destination)
    delete_with = staticmethod(door.delete_destinations)

    form = WebhookDestinationForm
    list_display = ("name", "format", "events_display", "enabled", "url_hint", "updated_at")
    list_filter = ("format", "enabled")
    search_fields = ("name",)
    actions = ["send_test"]

    @admin.display(description="events")
    def events_display(self, obj: WebhookDestination) -> str:
        return ", ".join(obj.events or []) or "none"

    @admin.display(description="URL")
    def url_hint(self, obj: WebhookDestination) -> str:
        return door.mask_url(obj.url)

    @admin.action(description="Send a test notification")
    def send_test(self, request: HttpRequest, queryset: QuerySet[WebhookDestination]) -> None:
        count = door.send_test_notification(request.user, queryset)
        self.message_user(
            request,
            f"Queued a test notification to {_plural(count, 'destination')}: the worker sends "
            "it; Notifications and the operation log show the answer.",
            messages.SUCCESS,
        )


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The outbox: each message, how many events it collapsed, and the receiver's last answer."""

    list_display = (
        "created_at",
        "destination",
        "event",
        "title",
        "count",
        "status",
        "attempts",
        "answer_short",
    )
    list_filter = ("status", "event", "destination")
    search_fields = ("title", "key", "experiment_name", "answer")
    list_select_related = ("destination",)
    date_hierarchy = "created_at"

    @admin.display(description="answer")
    def answer_short(self, obj: Notification) -> str:
        return truncatechars(obj.answer, 80)
