"""A group as a table (issue 17): its flag columns chosen in the UI (which flags, in which order,
or the automatic choice: every flag whose value differs), and rows and groups dropped in place."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from experiments import dashboard, services
from experiments.models import Experiment, ExperimentGroup
from experiments.views import deck_response, error_text, ui_login_required


@ui_login_required
@require_http_methods(["GET", "POST"])
def group_columns(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the chooser (the deck's dialog for htmx, else a page); POST: save the columns
    (``columns`` in the order given; ``automatic`` for the automatic choice)."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    if request.method == "GET":
        choices, automatic = dashboard.column_choices(group)
        context = {
            "group": group,
            "choices": choices,
            "automatic": automatic,
            "in_dialog": bool(request.htmx),
            "query": request.GET.get("q", ""),
        }
        template = "experiments/_columns.html" if request.htmx else "experiments/columns.html"
        return render(request, template, context)
    columns = [] if request.POST.get("automatic") else request.POST.getlist("columns")
    try:
        if not columns and not request.POST.get("automatic"):
            raise ValidationError(
                {"flags": "Choose at least one column, or use the automatic columns."}
            )
        services.update_group(request.user, group, flags=columns)
    except ValidationError as exc:
        text = f"Columns of {group.name} not changed: {error_text(exc)}"
        if not request.htmx:
            messages.error(request, text)
            return redirect(reverse("group_columns", args=[group.pk]))
        messages.error(request, text)
        return deck_response(request, error=True)
    shown = ", ".join(columns) if columns else "automatic (every flag that differs)"
    messages.success(request, f"Columns of {group.name}: {shown}.")
    if request.htmx:
        return deck_response(request)
    return redirect(reverse("dashboard"))


def _place(request: HttpRequest) -> dict[str, int] | None:
    """``before=<id>`` or ``after=<id>`` of a drop, or None."""
    for side in ("before", "after"):
        value = request.POST.get(side, "")
        if value.isdigit():
            return {side: int(value)}
    return None


@ui_login_required
@require_POST
def member_place(request: HttpRequest, pk: int, experiment_pk: int) -> HttpResponse:
    """A row dropped before or after another row of its group (drag and drop)."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    experiment = get_object_or_404(Experiment, pk=experiment_pk)
    place = _place(request)
    try:
        if place is None:
            raise ValidationError({"order": "Say where: before=<id> or after=<id>."})
        services.place_member(request.user, group, experiment, **place)
    except ValidationError as exc:
        messages.error(request, f"{experiment.name} not moved: {error_text(exc)}")
        return deck_response(request, error=True)
    return deck_response(request)


@ui_login_required
@require_POST
def group_place(request: HttpRequest, pk: int) -> HttpResponse:
    """A group dropped before or after another group (drag and drop of its header)."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    place = _place(request)
    try:
        if place is None:
            raise ValidationError({"order": "Say where: before=<id> or after=<id>."})
        services.place_group(request.user, group, **place)
    except ValidationError as exc:
        messages.error(request, f"Group {group.name} not moved: {error_text(exc)}")
        return deck_response(request, error=True)
    return deck_response(request)
