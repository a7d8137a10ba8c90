"""Web views (thin: they call querysets and services).

Every UI page needs a login. Changes are POSTs that go through ``experiments.services`` (so they
are validated once and land in the operation log with the user as actor). htmx requests get the
re-rendered partial back; plain form posts get a redirect (or the page with the form errors).
Bad input is answered with 400 and the errors, never with a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, trigger_client_event

from experiments import dashboard, services
from experiments.forms import ExperimentCreateForm, ExperimentForm, GroupForm, add_service_errors
from experiments.health import health_report
from experiments.launching import commands_text, launch_preview
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentGroup,
    Job,
    JobStatus,
    Operation,
    OperationLog,
)
from syncing import joblogs
from syncing.skypilot import SkyPilotError

JOBS_PER_PAGE = 50
PLAIN_TEXT = "text/plain; charset=utf-8"
OPERATIONS_PER_PAGE = 50
DETAIL_LIMIT = 15  # recent jobs / checkpoints / operations in the expanded row

BAD_REQUEST = 400
STOP_POLLING = 286  # htmx: swap this response, then stop polling


@csrf_exempt  # read-only and public: an odd method must get 405, not the CSRF page
@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Unauthenticated liveness check: ``curl -s localhost:8000/api/health``."""
    report = health_report()
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)


# --- helpers --------------------------------------------------------------------------------


def ui_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Like ``login_required``; an htmx request is sent to the login page as a whole page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if getattr(request, "htmx", False):
            current = request.htmx.current_url_abs_path or "/"
            login = resolve_url(settings.LOGIN_URL)
            return HttpResponseClientRedirect(f"{login}?{urlencode({'next': current})}")
        return redirect_to_login(request.get_full_path())

    return never_cache(wrapper)


def current_query(request: HttpRequest) -> str:
    """The dashboard search of the page the request came from (``?q=``)."""
    if request.method == "GET" and "q" in request.GET:
        return request.GET.get("q", "")
    if getattr(request, "htmx", False) and request.htmx.current_url:
        values = parse_qs(urlsplit(request.htmx.current_url).query).get("q")
        return values[0] if values else ""
    return request.POST.get("q", "")


def safe_next(request: HttpRequest, default: str = "") -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    if default:
        return default
    query = current_query(request)
    return reverse("dashboard") + (f"?{urlencode({'q': query})}" if query else "")


def error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            parts = []
            for name, errors in exc.error_dict.items():
                for error in errors:
                    for message in error.messages:
                        parts.append(message if name == "__all__" else f"{name}: {message}")
            return " ".join(parts)
        return " ".join(exc.messages)
    return str(exc)


def render_deck(
    request: HttpRequest, status: int = 200, known_version: str | None = None
) -> HttpResponse:
    """The dashboard's groups (plus the header stats out-of-band) for htmx swaps into ``#deck``.

    When the client already shows ``known_version`` of the deck, only the header is sent
    (``HX-Reswap: none``: htmx still applies the out-of-band parts).
    """
    board = dashboard.build_dashboard(current_query(request), known_version=known_version)
    if board.unchanged:
        response = render(request, "experiments/_deck_unchanged.html", {"board": board})
        return reswap(response, "none")
    response = render(request, "experiments/_deck.html", {"board": board, "oob": True})
    response.status_code = status
    return response


def rows_response(request: HttpRequest, experiment_ids: list[int]) -> HttpResponse:
    """After star / start / stop: the changed cells of those rows, in place (htmx only).

    Re-rendering the whole deck for one star would cost as much as loading the dashboard; the
    next poll brings the rest (its version changed).
    """
    context = {
        "rows": dashboard.rows_for(experiment_ids),
        "board": dashboard.build_status(current_query(request)),
    }
    return reswap(render(request, "experiments/_row_cells.html", context), "none")


def deck_response(request: HttpRequest, *, error: bool = False) -> HttpResponse:
    """After a dashboard action: the deck for htmx, else a redirect back."""
    if request.htmx:
        return render_deck(request, status=BAD_REQUEST if error else 200)
    return redirect(safe_next(request))


def selected_experiments(request: HttpRequest) -> list[Experiment]:
    ids = []
    for raw in request.POST.getlist("ids"):
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            continue
    if not ids:
        return []
    return list(Experiment.objects.filter(pk__in=ids).order_by("name"))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- dashboard ------------------------------------------------------------------------------


@ui_login_required
@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    """``/``: every group as a table; htmx requests aimed at ``#deck`` get just the deck."""
    if request.htmx and request.htmx.target == "deck":
        response = render_deck(request, known_version=request.GET.get("v") or None)
    else:
        board = dashboard.build_dashboard(request.GET.get("q", ""))
        response = render(
            request,
            "experiments/dashboard.html",
            {
                "board": board,
                "create_form": ExperimentCreateForm(),
                "group_form": GroupForm(),
            },
        )
    patch_vary_headers(response, ["HX-Request", "HX-Target"])
    return response


# --- experiments ----------------------------------------------------------------------------


@ui_login_required
@require_http_methods(["GET", "POST"])
def experiment_create(request: HttpRequest) -> HttpResponse:
    """Create form (a page, or the dialog's partial for htmx)."""
    template = "experiments/_create_form.html" if request.htmx else "experiments/create.html"
    groups = list(ExperimentGroup.objects.all())
    if request.method == "GET":
        # "+" in a group's header opens this form with that group chosen
        initial = {"group": request.GET["group"]} if request.GET.get("group", "").isdigit() else {}
        return render(
            request, template, {"form": ExperimentCreateForm(initial=initial), "groups": groups}
        )
    form = ExperimentCreateForm(request.POST)
    created = None
    if not form.is_valid():
        form.add_model_errors()
    else:
        try:
            created = services.create_experiment(request.user, **form.changes())
        except ValidationError as exc:
            add_service_errors(form, exc)
        except IntegrityError:
            form.add_error("name", "An experiment with this name already exists.")
        else:
            group = form.cleaned_data.get("group")
            if group is not None:
                services.add_to_group(request.user, group, [created])
    if created is None:
        return render(request, template, {"form": form}, status=BAD_REQUEST)
    if request.htmx:
        response = render(request, template, {"form": ExperimentCreateForm(), "created": created})
        return trigger_client_event(response, "refresh-deck")
    messages.success(request, f"Created {created.name}.")
    return redirect(safe_next(request, reverse("dashboard")))


def _detail_context(experiment: Experiment) -> dict[str, Any]:
    jobs = list(Job.objects.filter(experiment_id=experiment.name)[:DETAIL_LIMIT])
    for job in jobs:
        job.tone = dashboard.state_tone(job.status)
    checkpoints = list(experiment.checkpoints.order_by("-epoch")[:DETAIL_LIMIT])
    operations = list(
        OperationLog.objects.for_experiment(experiment).order_by("-created_at", "-id")[
            :DETAIL_LIMIT
        ]
    )
    return {
        "experiment": experiment,
        "preview": launch_preview(experiment),
        "jobs": jobs,
        "checkpoints": checkpoints,
        "operations": operations,
        "wandb_url": dashboard.build_link("wandb", name=experiment.name),
    }


def _experiment_with_latest(pk: int) -> Experiment:
    experiment = Experiment.objects.with_latest().filter(pk=pk).first()
    if experiment is None:
        raise Http404("No such experiment.")
    return dashboard.decorate(experiment)


@ui_login_required
@require_GET
def experiment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The expanded row: editor, launch preview, jobs, checkpoints, operations."""
    experiment = _experiment_with_latest(pk)
    context = _detail_context(experiment)
    context["form"] = ExperimentForm(experiment=experiment)
    context["partial"] = bool(request.htmx)
    template = "experiments/_detail.html" if request.htmx else "experiments/detail.html"
    return render(request, template, context)


@ui_login_required
@require_GET
def experiment_panels(request: HttpRequest, pk: int) -> HttpResponse:
    """The polled half of the expanded row (everything but the editor)."""
    experiment = Experiment.objects.with_latest().filter(pk=pk).first()
    if experiment is None:
        return render(request, "experiments/_gone.html", status=STOP_POLLING)
    dashboard.decorate(experiment)
    return render(request, "experiments/_panels.html", _detail_context(experiment))


@ui_login_required
@require_http_methods(["GET", "POST"])
def experiment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Save the configuration editor; errors come back inline and nothing changes."""
    experiment = get_object_or_404(Experiment, pk=pk)
    if request.method == "GET":  # "Reset": a fresh editor from what is saved
        return render(
            request,
            "experiments/_editor.html",
            {"experiment": experiment, "form": ExperimentForm(experiment=experiment)},
        )
    form = ExperimentForm(request.POST, experiment=experiment)
    saved = False
    if not form.is_valid():
        form.add_model_errors()
    else:
        original = {f: getattr(experiment, f) for f in (*ExperimentForm.FIELDS, "flags")}
        try:
            services.update_experiment(request.user, experiment, **form.changes())
            saved = True
        except ValidationError as exc:
            for name, value in original.items():  # the instance was modified before validation
                setattr(experiment, name, value)
            add_service_errors(form, exc)
        except IntegrityError:
            for name, value in original.items():
                setattr(experiment, name, value)
            form.add_error("name", "An experiment with this name already exists.")
    if not saved:
        if request.htmx:
            return render(
                request,
                "experiments/_editor.html",
                {"experiment": experiment, "form": form},
                status=BAD_REQUEST,
            )
        context = _detail_context(_experiment_with_latest(pk))
        context["form"] = form
        return render(request, "experiments/detail.html", context, status=BAD_REQUEST)
    if request.htmx:
        response = render(
            request,
            "experiments/_editor.html",
            {
                "experiment": experiment,
                "form": ExperimentForm(experiment=experiment),
                "saved": True,
            },
        )
        return trigger_client_event(response, "refresh-deck")
    messages.success(request, f"Saved {experiment.name}.")
    return redirect("experiment_detail", pk=experiment.pk)


@ui_login_required
@require_POST
def experiment_duplicate(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=pk)
    try:
        copy = services.duplicate_experiment(request.user, experiment)
    except (ValidationError, IntegrityError) as exc:
        messages.error(request, f"Could not duplicate {experiment.name}: {error_text(exc)}")
        return deck_response(request, error=True)
    messages.success(request, f"Duplicated {experiment.name} as {copy.name} (stopped).")
    return deck_response(request)


@ui_login_required
@require_http_methods(["GET", "POST"])
def experiment_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the confirmation page (without JavaScript); POST: delete."""
    experiment = get_object_or_404(Experiment, pk=pk)
    if request.method == "GET":
        return render(
            request,
            "experiments/confirm.html",
            {
                "title": f"Delete {experiment.name}?",
                "items": [experiment.name],
                "note": "Its checkpoint records go too; its SkyPilot jobs stay, shown as orphaned. "
                "Nothing is cancelled on SkyPilot.",
                "action": reverse("experiment_delete", args=[experiment.pk]),
                "fields": {},
                "button": "Delete",
            },
        )
    name = experiment.name
    services.delete_experiments(request.user, [experiment])
    messages.success(request, f"Deleted {name}.")
    if request.htmx:
        return render_deck(request)
    return redirect(safe_next(request, reverse("dashboard")))


@ui_login_required
@require_POST
def experiment_desired(request: HttpRequest, pk: int) -> HttpResponse:
    """Start (desired RUNNING) or stop (desired STOPPED) one experiment."""
    experiment = get_object_or_404(Experiment, pk=pk)
    state = request.POST.get("state", "")
    if state not in DesiredState.values:
        messages.error(request, f"Unknown desired state {state!r}.")
        return deck_response(request, error=True)
    services.set_desired_state(request.user, [experiment], state)
    if request.htmx:
        return rows_response(request, [experiment.pk])
    return deck_response(request)


@ui_login_required
@require_POST
def experiment_star(request: HttpRequest, pk: int) -> HttpResponse:
    experiment = get_object_or_404(Experiment, pk=pk)
    wanted = request.POST.get("starred")
    starred = (not experiment.starred) if wanted is None else wanted in {"1", "true", "on"}
    services.update_experiment(request.user, experiment, starred=starred)
    if request.htmx:
        return rows_response(request, [experiment.pk])
    return deck_response(request)


BULK_ACTIONS = {
    "start",
    "stop",
    "duplicate",
    "delete",
    "move",
    "add",
    "remove",
}


@ui_login_required
@require_POST
def bulk_action(request: HttpRequest) -> HttpResponse:
    """One action on the selected experiments (checkboxes named ``ids``)."""
    action = request.POST.get("action", "")
    experiments = selected_experiments(request)
    if action not in BULK_ACTIONS:
        messages.error(request, f"Unknown action {action!r}.")
        return deck_response(request, error=True)
    if not experiments:
        messages.error(request, "Select at least one experiment first.")
        return deck_response(request, error=True)
    group = None
    if action in {"move", "add", "remove"}:
        try:
            group = ExperimentGroup.objects.filter(pk=int(request.POST.get("group", ""))).first()
        except ValueError:
            group = None
        if group is None:
            messages.error(request, "Choose a group for this action.")
            return deck_response(request, error=True)
    if action == "delete" and not request.htmx and request.POST.get("confirmed") != "1":
        return render(
            request,
            "experiments/confirm.html",
            {
                "title": f"Delete {plural(len(experiments), 'experiment')}?",
                "items": [e.name for e in experiments],
                "note": "Their checkpoint records go too; their SkyPilot jobs stay, shown as "
                "orphaned. Nothing is cancelled on SkyPilot.",
                "action": reverse("bulk_action"),
                "fields": {"action": "delete", "confirmed": "1", "q": current_query(request)},
                "ids": [e.pk for e in experiments],
                "button": "Delete",
            },
        )
    user = request.user
    try:
        if action in {"start", "stop"}:
            state = DesiredState.RUNNING if action == "start" else DesiredState.STOPPED
            changed = services.set_desired_state(user, experiments, state)
            verb = "Started" if action == "start" else "Stopped"
            messages.success(request, f"{verb} {plural(changed, 'experiment')}.")
        elif action == "duplicate":
            copies = [services.duplicate_experiment(user, e) for e in experiments]
            messages.success(request, f"Duplicated {plural(len(copies), 'experiment')}.")
        elif action == "delete":
            count = services.delete_experiments(user, experiments)
            messages.success(request, f"Deleted {plural(count, 'experiment')}.")
        elif action == "move":
            count = services.move_to_group(user, experiments, group)
            messages.success(request, f"Moved {plural(count, 'experiment')} to {group.name}.")
        elif action == "add":
            count = services.add_to_group(user, group, experiments)
            messages.success(request, f"Added {plural(count, 'experiment')} to {group.name}.")
        elif action == "remove":
            count = services.remove_from_group(user, group, experiments)
            messages.success(request, f"Removed {plural(count, 'experiment')} from {group.name}.")
    except (ValidationError, IntegrityError) as exc:
        messages.error(request, f"Nothing changed: {error_text(exc)}")
        return deck_response(request, error=True)
    if action in {"start", "stop"} and request.htmx:
        return rows_response(request, [e.pk for e in experiments])
    return deck_response(request)


# --- groups ---------------------------------------------------------------------------------


@ui_login_required
@require_POST
def group_create(request: HttpRequest) -> HttpResponse:
    form = GroupForm(request.POST)
    group = None
    if form.is_valid():
        try:
            group = services.create_group(request.user, form.cleaned_data["name"].strip())
        except ValidationError as exc:
            add_service_errors(form, exc)
        except IntegrityError:
            form.add_error("name", "A group with this name already exists.")
    if request.htmx:
        if group is None:
            return render(
                request, "experiments/_group_form.html", {"group_form": form}, status=BAD_REQUEST
            )
        response = render(
            request, "experiments/_group_form.html", {"group_form": GroupForm(), "created": group}
        )
        return trigger_client_event(response, "refresh-deck")
    if group is None:
        messages.error(request, "Group not created: " + " ".join(form.errors.get("name", [])))
    else:
        messages.success(request, f"Created group {group.name}.")
    return redirect(safe_next(request))


@ui_login_required
@require_POST
def group_rename(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(ExperimentGroup, pk=pk)
    name = request.POST.get("name", "").strip()
    old = group.name
    try:
        if not name:
            raise ValidationError({"name": "A group needs a name."})
        services.update_group(request.user, group, name=name)
    except (ValidationError, IntegrityError) as exc:
        messages.error(request, f"Group {old} not renamed: {error_text(exc)}")
        return deck_response(request, error=True)
    if old != group.name:
        messages.success(request, f"Renamed group {old} to {group.name}.")
    return deck_response(request)


def _text(body: str, status: int = 200, **headers: str) -> HttpResponse:
    """A plain-text answer (SecurityMiddleware adds ``X-Content-Type-Options: nosniff``)."""
    return HttpResponse(body, status=status, content_type=PLAIN_TEXT, headers=headers or None)


@ui_login_required
@require_GET
def group_commands(request: HttpRequest, pk: int) -> HttpResponse:
    """Every member's command as plain text (the group header's "Copy commands")."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    return _text(commands_text(group.ordered_experiments()))


@ui_login_required
@require_POST
def group_collapse(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(ExperimentGroup, pk=pk)
    wanted = request.POST.get("collapsed")
    collapsed = (not group.collapsed) if wanted is None else wanted in {"1", "true", "on"}
    services.update_group(request.user, group, collapsed=collapsed)
    return deck_response(request)


@ui_login_required
@require_http_methods(["GET", "POST"])
def group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(ExperimentGroup, pk=pk)
    if request.method == "GET":
        return render(
            request,
            "experiments/confirm.html",
            {
                "title": f"Delete group {group.name}?",
                "items": [e.name for e in group.ordered_experiments()],
                "note": "The experiments stay (ungrouped unless they are in another group).",
                "action": reverse("group_delete", args=[group.pk]),
                "fields": {},
                "button": "Delete group",
            },
        )
    name = group.name
    services.delete_group(request.user, group)
    messages.success(request, f"Deleted group {name}; its experiments stay.")
    return deck_response(request)


def _direction(request: HttpRequest) -> int | None:
    return {"up": -1, "down": 1}.get(request.POST.get("direction", ""))


@ui_login_required
@require_POST
def group_move(request: HttpRequest, pk: int) -> HttpResponse:
    """Move a group one place up or down."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    delta = _direction(request)
    if delta is None:
        messages.error(request, "Direction must be up or down.")
        return deck_response(request, error=True)
    ids = list(ExperimentGroup.objects.values_list("pk", flat=True))
    index = ids.index(group.pk)
    target = max(0, min(len(ids) - 1, index + delta))
    if target != index:
        ids.insert(target, ids.pop(index))
        try:
            services.reorder_groups(request.user, ids)
        except ValidationError as exc:  # a group appeared or vanished meanwhile
            messages.error(request, f"Groups not reordered: {error_text(exc)}")
            return deck_response(request, error=True)
    return deck_response(request)


@ui_login_required
@require_POST
def member_move(request: HttpRequest, pk: int, experiment_pk: int) -> HttpResponse:
    """Move an experiment one place up or down within a group."""
    group = get_object_or_404(ExperimentGroup, pk=pk)
    experiment = get_object_or_404(Experiment, pk=experiment_pk)
    delta = _direction(request)
    if delta is None:
        messages.error(request, "Direction must be up or down.")
        return deck_response(request, error=True)
    try:
        services.move_member(request.user, group, experiment, delta)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return deck_response(request, error=True)
    return deck_response(request)


# --- jobs and operations --------------------------------------------------------------------


def _page(request: HttpRequest, queryset: Any, per_page: int) -> Any:
    paginator = Paginator(queryset, per_page)
    return paginator.get_page(request.GET.get("page"))


def _checked(request: HttpRequest, name: str) -> bool:
    return request.GET.get(name) in {"1", "on", "true"}


@ui_login_required
@require_GET
def jobs_view(request: HttpRequest) -> HttpResponse:
    """All synced jobs, newest first, with filters kept in the URL."""
    filters = {
        "status": request.GET.get("status", "").strip(),
        "user": request.GET.get("user", "").strip(),
        "experiment": request.GET.get("experiment", "").strip(),
        "orphaned": _checked(request, "orphaned"),
        "active": _checked(request, "active"),
    }
    jobs = Job.objects.order_by("-submitted_at", "-id").defer("raw", "details")
    if filters["status"] in JobStatus.values:
        jobs = jobs.filter(status=filters["status"])
    elif filters["status"] == "FAILED_ANY":
        jobs = jobs.filter(status__in=JobStatus.failed())
    if filters["user"]:
        jobs = jobs.filter(user_name__icontains=filters["user"])
    if filters["experiment"]:
        jobs = jobs.filter(job_name__icontains=filters["experiment"])
    if filters["orphaned"]:
        jobs = jobs.orphaned()
    if filters["active"]:
        jobs = jobs.active()
    page = _page(request, jobs, JOBS_PER_PAGE)
    rows = list(page.object_list)
    names = {j.experiment_id for j in rows if j.experiment_id}
    experiment_ids = dict(
        Experiment.objects.filter(name__in=names).values_list("name", "pk") if names else []
    )
    for job in rows:
        job.experiment_pk = experiment_ids.get(job.experiment_id)
        job.tone = dashboard.state_tone(job.status)
        job.job_link = dashboard.build_link(
            "job", name=job.job_name or job.experiment_id or "", job_id=job.id
        )
        job.logs_link = dashboard.build_link(
            "logs", name=job.job_name or job.experiment_id or "", job_id=job.id
        )
    return render(
        request,
        "experiments/jobs.html",
        {
            "page": page,
            "jobs": rows,
            "filters": filters,
            "statuses": [*JobStatus.values, "FAILED_ANY"],
        },
    )


@ui_login_required
@require_GET
def operations_view(request: HttpRequest) -> HttpResponse:
    """The operation log, newest first, with filters kept in the URL."""
    filters = {
        "experiment": request.GET.get("experiment", "").strip(),
        "actor": request.GET.get("actor", "").strip(),
        "operation": request.GET.get("operation", "").strip(),
        "failed": _checked(request, "failed"),
    }
    operations = OperationLog.objects.order_by("-created_at", "-id")
    if filters["experiment"]:
        operations = operations.filter(experiment_name__icontains=filters["experiment"])
    if filters["actor"]:
        operations = operations.filter(actor__icontains=filters["actor"])
    if filters["operation"] in Operation.values:
        operations = operations.filter(operation=filters["operation"])
    if filters["failed"]:
        operations = operations.failed()
    page = _page(request, operations, OPERATIONS_PER_PAGE)
    rows = list(page.object_list)
    return render(
        request,
        "experiments/operations.html",
        {"page": page, "operations": rows, "filters": filters, "kinds": Operation.values},
    )


# --- job logs ---------------------------------------------------------------------------------


@ui_login_required
@require_GET
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    """A job's log page (skydeck.js fills it from ``job_log_stream``).

    ``?format=text`` answers the last ``tail`` lines as plain text, for use without JavaScript.
    """
    output = request.GET.get("format", "")
    if output not in {"", "html", "text"}:
        return _text("format: html or text.\n", BAD_REQUEST)
    try:
        log_plan = joblogs.plan(pk, request.GET.get("tail"), follow=False)
    except joblogs.UnknownJob as exc:
        raise Http404(str(exc)) from None
    except joblogs.JobLogError as exc:
        if output == "text":
            return _text(f"{exc}\n", BAD_REQUEST)
        job = Job.objects.filter(pk=pk).only("id", "job_name", "status", "experiment_id").get()
        context = _job_log_context(job, joblogs.DEFAULT_TAIL, error=str(exc))
        return render(request, "experiments/job_log.html", context, status=BAD_REQUEST)
    if output == "text":
        try:
            return _text(joblogs.tail_text(log_plan))
        except joblogs.NoLog as exc:
            return _text(f"{exc}\n", 404)
        except SkyPilotError as exc:
            return _text(joblogs.error_message(exc) + "\n", 502)
    job = Job.objects.filter(pk=pk).only("id", "job_name", "status", "experiment_id").get()
    return render(request, "experiments/job_log.html", _job_log_context(job, log_plan.tail))


def _job_log_context(job: Job, tail: int, error: str = "") -> dict[str, Any]:
    experiment = (
        Experiment.objects.filter(name=job.experiment_id).only("pk", "name").first()
        if job.experiment_id
        else None
    )
    query = urlencode({"tail": tail})
    return {
        "job": job,
        "experiment": experiment,
        "tail": tail,
        "tail_choices": sorted({*joblogs.TAIL_CHOICES, tail}),
        "active": job.is_active,
        "stream_url": f"{reverse('job_log_stream', args=[job.id])}?{query}",
        "text_url": f"{reverse('job_log', args=[job.id])}?{query}&format=text",
        "error": error,
    }


@ui_login_required
@require_GET
def job_log_stream(request: HttpRequest, pk: int) -> HttpResponse:
    """The log as Server-Sent Events, followed while the job is active.

    Closing the page ends the response at the next keep-alive, and that closes the upstream
    SkyPilot stream. Following takes one of SKYDECK_LOG_STREAMS_MAX slots: beyond that, 503.
    """
    try:
        follow = joblogs.parse_follow(request.GET.get("follow"))
        log_plan = joblogs.plan(pk, request.GET.get("tail"), follow=follow)
    except joblogs.UnknownJob as exc:
        raise Http404(str(exc)) from None
    except joblogs.JobLogError as exc:
        return _text(f"{exc}\n", BAD_REQUEST)
    try:
        stream = joblogs.open_web_stream(log_plan)
    except joblogs.TooManyStreams as exc:
        return _text(f"{exc}\n", 503, **{"Retry-After": "30"})
    return joblogs.streaming_response(stream, request.META, events=True)
