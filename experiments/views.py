"""Web views (thin: they call querysets and services).

Every UI page needs a login. Changes are POSTs that go through ``experiments.services`` (so they
are validated once and land in the operation log with the user as actor). htmx requests get the
re-rendered partial back; plain form posts get a redirect (or the page with the form errors).
Bad input is answered with 400 and the errors, never with a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget, trigger_client_event
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from experiments import budgets, control, dashboard, revisions, services, usage
from experiments import views_lists as lists
from experiments.api.filters import (
    JOB_SORT_COLUMNS,
    OPERATION_SORT_COLUMNS,
    JobFilter,
    OperationLogFilter,
)
from experiments.forms import (
    ExperimentCreateForm,
    ExperimentForm,
    FailureActionForm,
    FailureWindowForm,
    GroupForm,
    UsageForm,
    add_service_errors,
)
from experiments.launching import commands_text, launch_preview
from experiments.models import (
    DesiredState,
    Experiment,
    ExperimentGroup,
    ExperimentRevision,
    Job,
    JobStatus,
    Operation,
    OperationLog,
)
from experiments.validation import NAME_MAX_LENGTH
from syncing import services as actions

JOBS_PER_PAGE = 50
PLAIN_TEXT = "text/plain; charset=utf-8"
OPERATIONS_PER_PAGE = 50
DETAIL_LIMIT = 15  # recent jobs / checkpoints / operations in the expanded row

BAD_REQUEST = 400
CONFLICT = 409  # the job or experiment is no longer in a state the act applies to
STOP_POLLING = 286  # htmx: swap this response, then stop polling


HEALTH_DETAILS_HINT = "log in, or send an API token, for sync, worker and reconciler details"


@csrf_exempt  # read-only and public: an odd method must get 405, not the CSRF page
@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Liveness check without login (``curl -s localhost:8000/api/health``): the status only.

    The details (sync sources, their errors, the worker, the reconciler) name upstream
    endpoints and error texts, so they go only to a signed-in user or a valid API token.
    """
    try:
        user = _health_user(request)
    except AuthenticationFailed as exc:
        return JsonResponse({"detail": str(exc.detail)}, status=401)
    report = actions.health_report()
    code = 200 if report["status"] in {"ok", "degraded"} else 503
    if user is None:
        database = "ok" if report["database"] == "ok" else "unreachable"
        report = {
            "status": report["status"],
            "time": report["time"],
            "database": database,
            "detail": HEALTH_DETAILS_HINT,
        }
    return JsonResponse(report, status=code)


def _health_user(request: HttpRequest):
    """The session's user, or the API token's (as the API authenticates), or None."""
    if request.user.is_authenticated:
        return request.user
    found = TokenAuthentication().authenticate(request)  # raises on a bad token
    return found[0] if found else None


# --- helpers --------------------------------------------------------------------------------


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """403 with the reason the services gave (plain text for htmx, which shows it as a toast)."""
    message = str(exception) if exception is not None and str(exception) else "You may not do this."
    if getattr(request, "htmx", False):
        return HttpResponse(message, status=403, content_type=PLAIN_TEXT)
    return render(request, "403.html", {"message": message}, status=403)


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


def shown_rows(request: HttpRequest) -> tuple[dict[str, int] | None, dict[str, str]]:
    """``shown=12:50:<layout>,u:80:<layout>``: the rows each loaded section of the browser's
    deck shows and the layout its rows line up under (sent by skydeck.js with every deck
    request), so a re-rendered section keeps them all and a changed row can come alone."""
    raw = request.GET.get("shown") if request.method == "GET" else request.POST.get("shown")
    if raw is None:
        return None, {}
    shown: dict[str, int] = {}
    layouts: dict[str, str] = {}
    for part in filter(None, raw.split(",")):
        key, _, rest = part.partition(":")
        count, _, layout = rest.partition(":")
        if not dashboard.is_section_key(key) or not count.isdigit() or len(layout) > 32:
            raise BadInput(f"shown: {part!r} is not <section>:<rows>[:<layout>].")
        shown[key] = min(int(count), 10_000)
        if layout:
            layouts[key] = layout
    return shown, layouts


def render_deck(
    request: HttpRequest, status: int = 200, known_version: str | None = None
) -> HttpResponse:
    """The deck for htmx swaps into ``#deck`` (with the header stats out of band).

    A poll sends the version it shows: unchanged, only the header is sent; changed, only the
    sections that changed, out of band (both with ``HX-Reswap: none``).
    """
    try:
        shown, layouts = shown_rows(request)
    except BadInput as exc:
        return HttpResponse(str(exc), status=BAD_REQUEST, content_type="text/plain")
    board = dashboard.build_dashboard(
        current_query(request), known_version=known_version, shown=shown, layouts=layouts
    )
    if board.unchanged:
        response = render(request, "experiments/_deck_unchanged.html", {"board": board})
        return reswap(response, "none")
    if board.partial:
        response = render(request, "experiments/_deck_partial.html", {"board": board})
        return reswap(response, "none")
    response = render(request, "experiments/_deck.html", {"board": board, "oob": True})
    response.status_code = status
    return response


@ui_login_required
@require_GET
def group_section(request: HttpRequest, key: str, rows: bool = False) -> HttpResponse:
    """One section of the deck, built when it scrolls into view; with ``rows``, the rows after
    ``offset`` (a "Show more" row) and the next "Show more"."""
    if not dashboard.is_section_key(key):
        raise Http404("no such section")
    group = None if key == dashboard.UNGROUPED else get_object_or_404(ExperimentGroup, pk=key)
    offset = request.GET.get("offset", "0")
    if not offset.isdigit():
        return HttpResponse(
            "offset: expected a row number.", status=BAD_REQUEST, content_type="text/plain"
        )
    query = request.GET.get("q", "").strip()
    view = dashboard.build_section(query, group, offset=int(offset) if rows else 0)
    context = {"view": view, "board": {"query": query}}
    template = "experiments/_group_rows.html" if rows else "experiments/_group.html"
    return render(request, template, context)


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


def selected_experiments(request: HttpRequest, data: Any = None) -> list[Experiment]:
    ids = []
    for raw in (request.POST if data is None else data).getlist("ids"):
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            continue
    if not ids:
        return []
    return list(Experiment.objects.filter(pk__in=ids).order_by("name"))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- confirmations (Start, Stop, Adopt, Cancel, Resume) -------------------------------------
# A GET shows what the act will launch or cancel: in the #confirm-dialog for htmx, as a page
# without JavaScript (where a POST without ``confirmed=1`` shows it too). Only the
# confirmation's own POST (``confirmed=1``) acts, and a Stop cancels only the jobs it listed.

CONFIRM_TARGET = "#confirm-dialog"


class BadInput(Exception):
    """A request parameter that cannot be used (answered with 400 and the message)."""


def _confirmed(request: HttpRequest) -> bool:
    return request.method == "POST" and request.POST.get("confirmed") == "1"


def _deck_mode(request: HttpRequest) -> bool:
    """The request comes from the dashboard: answers go into its deck (rows, messages)."""
    if not request.htmx:
        return False
    path = request.htmx.current_url_abs_path
    return bool(path) and urlsplit(path).path == reverse("dashboard")


def _return_url(request: HttpRequest) -> str:
    """Where a confirmation on its own page (or a plain form) goes back to."""
    current = request.htmx.current_url_abs_path if request.htmx else None
    for candidate in (request.POST.get("next"), request.GET.get("next"), current):
        if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            return candidate
    return safe_next(request)


def confirm_response(
    request: HttpRequest, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The confirmation: the dialog's content for htmx, else a page (confirm.html)."""
    context = {
        "deck": _deck_mode(request),
        "next": _return_url(request),
        "query": current_query(request),
        "in_dialog": bool(request.htmx),
        "dismiss": "Back",
        **context,
    }
    if request.htmx:
        response = render(request, "experiments/_confirm.html", context, status=status)
        return reswap(retarget(response, CONFIRM_TARGET), "innerHTML")
    return render(request, "experiments/confirm.html", context, status=status)


def delete_page(
    request: HttpRequest,
    title: str,
    items: list[str],
    note: str,
    action: str,
    *,
    button: str = "Delete",
    fields: dict[str, str] | None = None,
    ids: list[int] | None = None,
) -> HttpResponse:
    """The confirmation page of a delete for browsers without JavaScript (confirm.html)."""
    context = {"title": title, "items": items, "note": note, "action": action, "button": button}
    return render(
        request, "experiments/confirm.html", {**context, "fields": fields or {}, "ids": ids}
    )


def refuse(request: HttpRequest, message: str, status: int = BAD_REQUEST) -> HttpResponse:
    """Nothing done: the message in the deck's messages (htmx POST) or as the confirmation."""
    if request.method == "POST" and request.htmx:
        messages.error(request, message)
        response = rows_response(request, [])
        response.status_code = status
        return response
    return confirm_response(request, {"title": "Nothing changed", "error": message}, status)


def act_response(request: HttpRequest, experiment_ids: list[int]) -> HttpResponse:
    """After an act: the changed rows in place (htmx, from the dashboard), else back."""
    if request.htmx:
        response = rows_response(request, experiment_ids)
        return trigger_client_event(response, "refresh-panels")
    return redirect(_return_url(request))


def _job_ids(request: HttpRequest) -> list[int]:
    """The ``jobs`` a Stop confirmation listed (none listed: none cancelled)."""
    ids = []
    for raw in request.POST.getlist("jobs"):
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            raise BadInput(f"jobs: {raw!r} is not a job id.") from None
    return ids


def _what(experiments: list[Experiment]) -> str:
    return experiments[0].name if len(experiments) == 1 else plural(len(experiments), "experiment")


def plan_confirmation(
    plan: control.Plan, action: str, fields: dict[str, Any], lists: list[tuple[str, Any]]
) -> dict[str, Any]:
    """The confirmation of a Start or Stop plan; its form posts the jobs it lists."""
    what = _what([item.experiment for item in plan.items])
    stop = plan.action == "stop"
    jobs = plan.cancel_jobs
    if stop:
        button = f"Stop and cancel {plural(len(jobs), 'job')}" if jobs else "Stop"
    else:
        button = "Start"
    return {
        "title": f"{'Stop' if stop else 'Start'} {what}?",
        "summary": plan.summary(),
        "lines": dashboard.plan_lines(plan),
        "notes": dashboard.plan_notes(plan),
        "action": action,
        "fields": {"confirmed": "1", **fields},
        "lists": [*lists, *(("jobs", job.id) for job in jobs)],
        "button": button,
        "button_class": "danger" if stop else "primary",
    }


def start_messages(request: HttpRequest, plan: control.Plan) -> None:
    experiments = [item.experiment for item in plan.items]
    changed = [item for item in plan.items if item.changes]
    launching = [item for item in plan.items if item.launches]
    if len(experiments) == 1 and not changed:
        messages.info(request, f"{experiments[0].name} is already desired RUNNING.")
    else:
        what = experiments[0].name if len(experiments) == 1 else plural(len(changed), "experiment")
        messages.success(request, f"Started {what}: {plan.spend()}.")
    for item in plan.items:
        if item.blocked_by:
            messages.warning(request, f"{item.experiment.name}: {item.note}.")
    if launching and not plan.mode.acts:
        messages.warning(request, f"Reconciler {plan.mode.mode}: nothing launches until it is on.")


def stop_messages(request: HttpRequest, result: actions.StopResult) -> None:
    plan = result.plan
    what = _what([item.experiment for item in plan.items])
    jobs = plan.cancel_jobs
    pending = sum(1 for item in plan.items if item.pending_launch)
    in_flight = (
        f" {plural(pending, 'launch')} in flight: cancelled once SkyPilot lists "
        f"{'its job' if pending == 1 else 'their jobs'}."
        if pending
        else ""
    )
    if result.error:
        messages.error(
            request,
            f"{what} {'is' if len(plan.items) == 1 else 'are'} desired STOPPED, but SkyPilot did "
            f"not cancel {control.describe_jobs(jobs)}: {result.error}",
        )
    elif result.cancelled:
        messages.success(
            request,
            f"Stopped {what}: cancelled {control.describe_jobs(result.cancelled)}.{in_flight}",
        )
    else:
        messages.success(request, f"Stopped {what}: no active job to cancel.{in_flight}")
    for item in plan.items:
        if item.note:
            messages.warning(request, f"{item.experiment.name}: {item.note}.")


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
        return render(request, template, {"form": form, "groups": groups}, status=BAD_REQUEST)
    jobs = control.active_jobs([created.name]).get(created.name, [])
    notice = control.users_notice(jobs) if jobs else ""
    if request.htmx:
        # the next one goes to the same group: a run of creates into a group is the usual case
        group = form.cleaned_data.get("group")
        again = ExperimentCreateForm(initial={"group": group.pk} if group is not None else {})
        response = render(
            request,
            template,
            {"form": again, "groups": groups, "created": created, "created_notice": notice},
        )
        return trigger_client_event(response, "refresh-deck")
    text = f"Created {created.name}. It starts stopped: press Start when it is ready."
    if notice:
        text += (
            f" {notice}: creating did not touch them. Adopt them from its expanded row to make "
            "them its current run."
        )
    messages.success(request, text)
    return redirect(safe_next(request, reverse("dashboard")))


@ui_login_required
@require_GET
def experiment_name_check(request: HttpRequest) -> HttpResponse:
    """The create dialog's live note: active jobs (anyone's) already using the typed name."""
    if "name" not in request.GET:
        return render(
            request,
            "experiments/_name_check.html",
            {"error": "name: this parameter is required."},
            status=BAD_REQUEST,
        )
    name = request.GET["name"].strip()
    if len(name) > NAME_MAX_LENGTH:
        return render(
            request,
            "experiments/_name_check.html",
            {"error": f"A name has at most {NAME_MAX_LENGTH} characters."},
            status=BAD_REQUEST,
        )
    context: dict[str, Any] = {"name": name}
    if name:
        context["taken"] = Experiment.objects.filter(name=name).exists()
        jobs = control.active_jobs([name]).get(name, [])
        context["notice"] = control.users_notice(jobs) if jobs else ""
    return render(request, "experiments/_name_check.html", context)


#: What the Progress panel names when a job has no samples yet (the sampler's knobs).
SAMPLER_SETTINGS = ("SKYDECK_SAMPLE_INTERVAL", "SKYDECK_SAMPLE_LINES", "SKYDECK_SAMPLE_MAX_JOBS")


def _selected_job(request: HttpRequest) -> int | None:
    """The ``job`` whose progress the detail page charts (``?job=<id>``; else the latest)."""
    value = request.GET.get("job", "")
    return int(value) if value.isdigit() else None


def _detail_context(experiment: Experiment, job_id: int | None = None) -> dict[str, Any]:
    jobs = list(
        Job.objects.filter(experiment_id=experiment.name).annotate(
            owned=control.owned_exists(), revision_number=revisions.launch_revision_number()
        )[:DETAIL_LIMIT]
    )
    for job in jobs:
        job.tone = dashboard.state_tone(job.status)
    active = control.active_jobs([experiment.name]).get(experiment.name, [])
    foreign = [job for job in active if not job.owned]
    checkpoints = list(experiment.checkpoints.order_by("-epoch")[:DETAIL_LIMIT])
    operations = list(
        OperationLog.objects.for_experiment(experiment).order_by("-created_at", "-id")[
            :DETAIL_LIMIT
        ]
    )
    chosen = next((job for job in jobs if job_id is not None and job.pk == job_id), None)
    latest = next((job for job in jobs if job.pk == experiment.latest_job_id), None)
    return {
        "experiment": experiment,
        "progress": dashboard.job_progress(chosen or latest),
        "progress_selected": chosen is not None and chosen is not latest,
        "progress_jobs": [job for job in jobs if job.progress is not None][:8],
        "sampler": {name: getattr(settings, name, None) for name in SAMPLER_SETTINGS},
        "preview": launch_preview(experiment),
        "jobs": jobs,
        "checkpoints": checkpoints,
        "operations": operations,
        "wandb_url": dashboard.build_link("wandb", name=experiment.name),
        "foreign_jobs": foreign,
        "foreign_notice": control.users_notice(foreign) if foreign else "",
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
    context = _detail_context(experiment, _selected_job(request))
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
    context = _detail_context(experiment, _selected_job(request))
    return render(request, "experiments/_panels.html", context)


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
    conflict = None
    if not form.is_valid():
        form.add_model_errors()
    else:
        original = {f: getattr(experiment, f) for f in (*ExperimentForm.FIELDS, "flags")}
        try:
            services.update_experiment(
                request.user,
                experiment,
                expected_updated_at=form.cleaned_data["version"],
                base=form.cleaned_data["base"],
                **form.changes(),
            )
            saved = True
        except services.ConflictError as exc:  # nothing saved; experiment holds the saved values
            conflict = {"rows": form.conflict_rows(exc), "by": exc.last_update}
            form = form.rebased(experiment)
        except ValidationError as exc:
            for name, value in original.items():  # the instance was modified before validation
                setattr(experiment, name, value)
            add_service_errors(form, exc)
        except IntegrityError:
            for name, value in original.items():
                setattr(experiment, name, value)
            form.add_error("name", "An experiment with this name already exists.")
    if not saved:
        status = CONFLICT if conflict else BAD_REQUEST
        if request.htmx:
            return render(
                request,
                "experiments/_editor.html",
                {"experiment": experiment, "form": form, "conflict": conflict},
                status=status,
            )
        context = _detail_context(_experiment_with_latest(pk))
        context["form"] = form
        context["conflict"] = conflict
        return render(request, "experiments/detail.html", context, status=status)
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
        return delete_page(
            request,
            f"Delete {experiment.name}?",
            [experiment.name],
            "Its checkpoint records go too; its SkyPilot jobs stay, shown as orphaned. "
            "Nothing is cancelled on SkyPilot.",
            reverse("experiment_delete", args=[experiment.pk]),
        )
    name = experiment.name
    services.delete_experiments(request.user, [experiment])
    messages.success(request, f"Deleted {name}.")
    if request.htmx:
        return render_deck(request)
    return redirect(safe_next(request, reverse("dashboard")))


@ui_login_required
@require_http_methods(["GET", "POST"])
def experiment_desired(request: HttpRequest, pk: int) -> HttpResponse:
    """Start (desired RUNNING) or Stop (desired STOPPED) one experiment, after a confirmation.

    GET (or a POST without ``confirmed=1``: the row button without JavaScript) shows what it
    launches or cancels; the confirmation's POST acts. Stop cancels the listed active jobs
    whoever launched them, also when the experiment is already desired STOPPED.
    """
    experiment = get_object_or_404(Experiment, pk=pk)
    data = request.POST if request.method == "POST" else request.GET
    state = data.get("state", "")
    if state not in DesiredState.values:
        return refuse(request, f"Unknown desired state {state!r}: RUNNING or STOPPED.")
    if not _confirmed(request):
        if state == DesiredState.RUNNING:
            plan = actions.start(request.user, [experiment], dry_run=True)
        else:
            plan = actions.stop(request.user, [experiment], dry_run=True).plan
        action = reverse("experiment_desired", args=[experiment.pk])
        context = plan_confirmation(plan, action, {"state": state}, [])
        return confirm_response(request, context)
    try:
        if state == DesiredState.RUNNING:
            start_messages(request, actions.start(request.user, [experiment]))
        else:
            job_ids = _job_ids(request)
            stop_messages(request, actions.stop(request.user, [experiment], job_ids=job_ids))
    except BadInput as exc:
        return refuse(request, str(exc))
    except (ValidationError, IntegrityError) as exc:
        return refuse(request, f"Nothing changed: {error_text(exc)}")
    return act_response(request, [experiment.pk])


@ui_login_required
@require_http_methods(["GET", "POST"])
def experiment_adopt(request: HttpRequest, pk: int) -> HttpResponse:
    """Make the active jobs SkyDeck did not launch under its name the experiment's current run."""
    experiment = get_object_or_404(Experiment, pk=pk)
    if not _confirmed(request):
        plan = actions.adopt(request.user, experiment, dry_run=True)
        if not plan.items[0].adopt:
            return refuse(request, f"Nothing to adopt: {plan.items[0].note}.", CONFLICT)
        return confirm_response(
            request,
            {
                "title": f"Adopt {plural(len(plan.items[0].adopt), 'job')} as "
                f"{experiment.name}'s run?",
                "summary": plan.summary(),
                "lines": dashboard.plan_lines(plan),
                "notes": dashboard.plan_notes(plan),
                "action": reverse("experiment_adopt", args=[experiment.pk]),
                "fields": {"confirmed": "1"},
                "button": "Adopt",
                "button_class": "primary",
            },
        )
    try:
        plan = actions.adopt(request.user, experiment)
    except ValidationError as exc:
        return refuse(request, f"Nothing adopted: {' '.join(exc.messages)}", CONFLICT)
    jobs = plan.items[0].adopt
    messages.success(
        request,
        f"Adopted {control.describe_jobs(jobs)} as {experiment.name}'s current run: "
        "it is desired RUNNING.",
    )
    return act_response(request, [experiment.pk])


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
        return delete_page(
            request,
            f"Delete {plural(len(experiments), 'experiment')}?",
            [e.name for e in experiments],
            "Their checkpoint records go too; their SkyPilot jobs stay, shown as orphaned. "
            "Nothing is cancelled on SkyPilot.",
            reverse("bulk_action"),
            fields={"action": "delete", "confirmed": "1", "q": current_query(request)},
            ids=[e.pk for e in experiments],
        )
    if action in {"start", "stop"} and not _confirmed(request):
        return confirm_response(request, bulk_confirmation(request, action, experiments))
    user = request.user
    try:
        if action == "start":
            start_messages(request, actions.start(user, experiments))
        elif action == "stop":
            stop_messages(request, actions.stop(user, experiments, job_ids=_job_ids(request)))
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
    except BadInput as exc:
        messages.error(request, f"Nothing changed: {exc}")
        return deck_response(request, error=True)
    except (ValidationError, IntegrityError) as exc:
        messages.error(request, f"Nothing changed: {error_text(exc)}")
        return deck_response(request, error=True)
    if action in {"start", "stop"}:
        return act_response(request, [e.pk for e in experiments])
    return deck_response(request)


def bulk_confirmation(
    request: HttpRequest, action: str, experiments: list[Experiment]
) -> dict[str, Any]:
    if action == "start":
        plan = actions.start(request.user, experiments, dry_run=True)
    else:
        plan = actions.stop(request.user, experiments, dry_run=True).plan
    return plan_confirmation(
        plan,
        reverse("bulk_action"),
        {"action": action, "q": current_query(request)},
        [("ids", e.pk) for e in experiments],
    )


@ui_login_required
@require_GET
def bulk_confirm(request: HttpRequest) -> HttpResponse:
    """What the bulk bar's Start or Stop would do to the selected experiments."""
    action = request.GET.get("action", "")
    if action not in {"start", "stop"}:
        return refuse(request, f"Unknown action {action!r}: only Start and Stop ask first.")
    experiments = selected_experiments(request, request.GET)
    if not experiments:
        return refuse(request, "Select at least one experiment first.")
    return confirm_response(request, bulk_confirmation(request, action, experiments))


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
        return delete_page(
            request,
            f"Delete group {group.name}?",
            [e.name for e in group.ordered_experiments()],
            "The experiments stay (ungrouped unless they are in another group).",
            reverse("group_delete", args=[group.pk]),
            button="Delete group",
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


class ListFilters:
    """A UI list filtered through the API's filter set (experiments.api.filters).

    So a parameter means the same on the page as on the API (``user`` is exact on both; the
    search box is ``q``, substring on both). What an HTML form needs besides: a field left empty
    means no filter (a form sends every field); ``page`` is the page's own; any other parameter
    is ignored and named in a notice, so a shared link still opens. A bad value is an error
    shown above the list, which then lists nothing (the page answers 400), as the API refuses it.
    """

    def __init__(
        self,
        request: HttpRequest,
        filterset_class: Any,
        queryset: Any,
        ordering: str | None = None,
    ) -> None:
        known = set(filterset_class.base_filters)
        self.values = QueryDict(mutable=True)
        self.ignored: list[str] = []
        for name, values in request.GET.lists():
            if name in lists.PAGE_OWN_PARAMS:  # page, sort (as ``ordering``), the poll's v
                continue
            if name not in known:
                self.ignored.append(name)
                continue
            given = [value for value in values if value.strip()]
            if given:
                self.values.setlist(name, given)
        if ordering:
            self.values["ordering"] = ordering
        filterset = filterset_class(self.values, queryset=queryset, request=request)
        self.errors = (
            []
            if filterset.is_valid()
            else [
                f"{name}: {message}"
                for name, messages in filterset.errors.items()
                for message in messages
            ]
        )
        self.queryset = queryset.none() if self.errors else filterset.qs
        self.status = BAD_REQUEST if self.errors else 200

    def context(self) -> dict[str, Any]:
        return {
            "filters": self.values,
            "filter_errors": self.errors,
            "ignored_params": self.ignored,
        }


@ui_login_required
@require_GET
def jobs_view(request: HttpRequest) -> HttpResponse:
    """All synced jobs, newest first or as ``?sort=`` says, with filters kept in the URL
    (JobFilter, as /api/jobs/). The page polls itself: an htmx GET with ``v`` (the version of
    the table it shows) gets 204 when the table is unchanged, else the new table."""
    sorting = lists.Sorting.from_request(
        request, JOB_SORT_COLUMNS, "-submitted_at", "submitted, newest first"
    )
    listed = ListFilters(
        request,
        JobFilter,
        Job.objects.order_by("-submitted_at", "-id")
        .defer("raw", "details")
        .annotate(owned=control.owned_exists()),
        ordering=sorting.value,
    )
    page = _page(request, listed.queryset, JOBS_PER_PAGE)
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
    here = lists.page_path(request)
    context = {
        "page": page,
        "jobs": rows,
        "next_query": f"next={quote(here, safe='/')}",
        "statuses": JobStatus.values,
        "heads": sorting.heads(request, lists.JOB_COLUMNS),
        "sort_notice": sorting.notice,
        "sort_value": sorting.value,
        "poll_url": here,
        "refresh_seconds": lists.refresh_seconds(),
        **listed.context(),
    }
    table = render_to_string("experiments/_jobs_table.html", context, request)
    context["table"] = table
    context["version"] = lists.table_version(f"{page.paginator.count}:{table}")
    if request.htmx and lists.VERSION_PARAM in request.GET:
        if request.GET[lists.VERSION_PARAM] == context["version"]:
            return HttpResponse(status=204)  # unchanged: htmx swaps nothing
        return render(
            request, "experiments/_jobs_live.html", {**context, "oob": True}, status=listed.status
        )
    return render(request, "experiments/jobs.html", context, status=listed.status)


@ui_login_required
@require_GET
def operations_view(request: HttpRequest) -> HttpResponse:
    """The operation log, newest first, with filters kept in the URL (OperationLogFilter, as
    /api/operations/)."""
    sorting = lists.Sorting.from_request(
        request, OPERATION_SORT_COLUMNS, "-created_at", "time, newest first"
    )
    listed = ListFilters(
        request,
        OperationLogFilter,
        OperationLog.objects.order_by("-created_at", "-id"),
        ordering=sorting.value,
    )
    page = _page(request, listed.queryset, OPERATIONS_PER_PAGE)
    rows = list(page.object_list)
    return render(
        request,
        "experiments/operations.html",
        {
            "page": page,
            "operations": rows,
            "kinds": Operation.values,
            "heads": sorting.heads(request, lists.OPERATION_COLUMNS),
            "sort_notice": sorting.notice,
            "sort_value": sorting.value,
            **listed.context(),
        },
        status=listed.status,
    )


#: The Failures page shows this many last lines of a bucket's example job's log.
EXCERPT_LINES = 15


def log_excerpt(log_tail: str | None, count: int = EXCERPT_LINES) -> list[str]:
    """The last ``count`` lines of a failed job's stored log tail (trailing blank lines
    dropped); [] when it was not read or is empty."""
    lines = (log_tail or "").rstrip().splitlines()
    return lines[-count:]


@ui_login_required
@require_GET
def failures_view(request: HttpRequest) -> HttpResponse:
    """Failed jobs of the last N days in buckets of one failure signature, most jobs first, each
    with an example reason, a link to its jobs (``/jobs?failure_signature=...``) and Stop all /
    Retry all for its experiments. ``signature`` shows one bucket (the deck's badges link so)."""
    form = FailureWindowForm(request.GET)
    if not form.is_valid():
        return render(request, "experiments/failures.html", {"form": form}, status=400)
    days, signature = form.cleaned_data["days"], form.cleaned_data["signature"] or None
    since = timezone.now() - timedelta(days=days)
    buckets = Job.objects.failure_buckets(since, signature)
    examples = [b["example"] for b in buckets if b["example"] is not None]
    names = {job.experiment_id for job in examples if job.experiment_id}
    pks = dict(Experiment.objects.filter(name__in=names).values_list("name", "pk")) if names else {}
    for job in examples:
        job.experiment_pk = pks.get(job.experiment_id)
    for bucket in buckets:
        key = bucket["failure_signature"]
        lines = log_excerpt(bucket["example"].log_tail if bucket["example"] else None)
        bucket["excerpt"] = "\n".join(lines)  # escaped by the template, like every log line
        bucket["excerpt_lines"], bucket["excerpt_last"] = len(lines), lines[-1] if lines else ""
        bucket["jobs_query"] = urlencode({"failure_signature": key})
        bucket["act_query"] = urlencode({"signature": key, "days": days})
    return render(
        request,
        "experiments/failures.html",
        {
            "form": form,
            "days": days,
            "signature": signature,
            "buckets": buckets,
            "total": sum(b["jobs"] for b in buckets),
            "here": request.get_full_path(),
        },
    )


@ui_login_required
@require_GET
def failures_confirm(request: HttpRequest) -> HttpResponse:
    """Stop all or Retry all of one bucket: the same confirmation as the bulk bar's, listing the
    experiments it acts on; its form posts them to ``bulk_action`` (which acts only then)."""
    form = FailureActionForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return refuse(request, f"Nothing to confirm: {errors}")
    data = form.cleaned_data
    since = timezone.now() - timedelta(days=data["days"])
    names = Job.objects.bucket_experiments(since, data["signature"]).get(data["signature"], [])
    experiments = list(Experiment.objects.filter(name__in=names).order_by("name"))
    if not experiments:
        return refuse(request, "No experiment has a failed job in this bucket and window.")
    return confirm_response(request, bulk_confirmation(request, data["action"], experiments))


@ui_login_required
@require_GET
def usage_view(request: HttpRequest) -> HttpResponse:
    """GPU-hours and cost over a window, by user, experiment, group, accelerator or cloud: a
    stacked chart per day (week, month), a table with totals, the same as CSV (``format=csv``)."""
    form = UsageForm(request.GET)
    wants_csv = request.GET.get("format") == "csv"
    if not form.is_valid():
        if wants_csv:
            return HttpResponse(
                form.errors.as_text(), status=BAD_REQUEST, content_type="text/plain"
            )
        return render(request, "experiments/usage.html", {"form": form}, status=BAD_REQUEST)
    data = form.cleaned_data
    report = usage.usage(data["by"], data["start"], data["end"])
    if wants_csv:
        return usage_csv(report, data)
    chart = usage.series(data["by"], data["start"], data["end"], data["bucket"])
    query = {k: v for k, v in request.GET.items() if k != "format"}
    return render(
        request,
        "experiments/usage.html",
        {
            "form": form,
            "data": data,
            "report": report,
            "chart": chart,
            "budgets": sorted(budgets.statuses().values(), key=lambda b: b.group_name),
            "csv_query": urlencode({**query, "format": "csv"}),
            "spans": [
                (
                    label,
                    urlencode(
                        {**query, "since": (data["until"] - timedelta(days=n - 1)).isoformat()}
                    ),
                )
                for label, n in (("7 days", 7), ("30 days", 30), ("90 days", 90))
            ],
        },
    )


def usage_csv(report: usage.UsageReport, data: dict[str, Any]) -> HttpResponse:
    """The Usage table as a CSV download (usage.write_csv, as ``skydeck usage --format csv``)."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"usage-by-{report.by}-{data['since']}-{data['until']}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    usage.write_csv(report, response)
    return response


@ui_login_required
@require_http_methods(["GET", "POST"])
def job_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel one active job, whoever launched it, after a confirmation naming its user."""
    job = (
        Job.objects.defer("raw", "details")
        .annotate(owned=control.owned_exists())
        .filter(pk=pk)
        .first()
    )
    if job is None:
        raise Http404("No such job.")
    ref = control.JobRef(job.id, job.status, job.user_name, bool(job.owned))
    experiment = (
        Experiment.objects.filter(name=job.experiment_id)
        .only("pk", "name", "desired_state")
        .first()
        if job.experiment_id
        else None
    )
    ids = [experiment.pk] if experiment is not None else []
    if not job.is_active:
        return refuse(
            request,
            f"Job {ref.label} is no longer active ({job.status}): nothing to cancel.",
            CONFLICT,
        )
    owner = "It was launched by SkyDeck." if ref.owned else "It was not launched by SkyDeck."
    if not _confirmed(request):
        notes = []
        if experiment is not None and experiment.desired_state == DesiredState.RUNNING:
            notes.append(
                f"{experiment.name} is still desired RUNNING: with this job gone, the reconciler "
                "launches it again. Stop the experiment to end it for good."
            )
        return confirm_response(
            request,
            {
                "title": f"Cancel job {ref.label}?",
                "summary": owner,
                "lines": [
                    dashboard.ConfirmLine(
                        f"job {ref.label}: {job.job_name or '(unnamed)'}",
                        dashboard.OWNER_TEXT[ref.owned],
                        not ref.owned,
                        job.status,
                    )
                ],
                "notes": notes,
                "action": reverse("job_cancel", args=[job.id]),
                "fields": {"confirmed": "1"},
                "button": "Cancel job",
                "button_class": "danger",
                "dismiss": "Keep it",
            },
        )
    try:
        warning = actions.cancel_job(request.user, job)
    except actions.CancelFailed as exc:
        messages.error(request, str(exc))
        return act_response(request, ids)
    messages.success(
        request,
        f"Cancelled job {ref.label}, {dashboard.OWNER_TEXT[ref.owned]}: SkyPilot shows it "
        "cancelling from the next sync.",
    )
    if warning:
        messages.warning(request, warning)
    return act_response(request, ids)


@ui_login_required
@require_http_methods(["GET", "POST"])
def reconciler_resume(request: HttpRequest) -> HttpResponse:
    """Let reconcile passes act again after a restore paused them."""
    mode = control.reconciler_mode()
    if not mode.paused:
        return refuse(request, "The reconciler is not paused: nothing to resume.", CONFLICT)
    if not _confirmed(request):
        paused = mode.paused
        notes = []
        setting = settings.SKYDECK_RECONCILE
        if setting == "on":
            notes.append(
                "Its next pass launches and cancels (SkyDeck's own jobs only) to match the "
                "desired states again: check them first."
            )
        else:
            notes.append(f"SKYDECK_RECONCILE is {setting}: after resuming it is {setting}.")
        return confirm_response(
            request,
            {
                "title": "Resume the reconciler?",
                "summary": f"Paused since {paused.get('reason') or 'a restore'} "
                f"(by {paused.get('by') or 'someone'}, {paused.get('at') or '?'}).",
                "notes": notes,
                "action": reverse("reconciler_resume"),
                "fields": {"confirmed": "1"},
                "button": "Resume",
                "button_class": "primary",
            },
        )
    if control.resume_reconciler(request.user):
        messages.success(request, f"Reconciler resumed: {control.reconciler_mode().mode}.")
    else:
        messages.info(request, "The reconciler was not paused (someone resumed it meanwhile).")
    return act_response(request, [])


# --- job logs ---------------------------------------------------------------------------------


@ui_login_required
@require_GET
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    """A job's log page (skydeck.js fills it from ``job_log_stream``).

    ``?format=text`` answers the last ``tail`` lines as plain text, for use without JavaScript;
    like every log read it takes a slot (503 with Retry-After when none is free).
    """
    output = request.GET.get("format", "")
    if output not in {"", "html", "text"}:
        return _text("format: html or text.\n", BAD_REQUEST)
    try:
        log_plan = actions.log_plan(pk, request.GET.get("tail"), follow=False)
    except actions.UnknownJob as exc:
        raise Http404(str(exc)) from None
    except actions.JobLogError as exc:
        if output == "text":
            return _text(f"{exc}\n", BAD_REQUEST)
        job = Job.objects.filter(pk=pk).only("id", "job_name", "status", "experiment_id").get()
        context = _job_log_context(job, actions.DEFAULT_TAIL, error=str(exc))
        return render(request, "experiments/job_log.html", context, status=BAD_REQUEST)
    if output == "text":
        try:
            return _text(actions.log_tail_text(log_plan))
        except actions.TooManyStreams as exc:
            return _busy(exc)
        except actions.NoLog as exc:
            return _text(f"{exc}\n", 404)
        except actions.SkyPilotError as exc:
            return _text(actions.log_error_message(exc) + "\n", 502)
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
        "config_revision": revisions.job_revision(job.id),
        "tail": tail,
        "tail_choices": sorted({*actions.TAIL_CHOICES, tail}),
        "active": job.is_active,
        "stream_url": f"{reverse('job_log_stream', args=[job.id])}?{query}",
        "text_url": f"{reverse('job_log', args=[job.id])}?{query}&format=text",
        "download_url": reverse("job_log_download", args=[job.id]),
        "error": error,
    }


@ui_login_required
@require_GET
def job_log_stream(request: HttpRequest, pk: int) -> HttpResponse:
    """The log as Server-Sent Events, followed while the job is active.

    Closing the page ends the response at the next keep-alive, and that closes the upstream
    SkyPilot stream. Every stream (tail or follow) takes one of SKYDECK_LOG_STREAMS_MAX slots:
    beyond that, 503 with Retry-After, whose text the page shows.
    """
    try:
        follow = actions.parse_follow(request.GET.get("follow"))
        log_plan = actions.log_plan(pk, request.GET.get("tail"), follow=follow)
    except actions.UnknownJob as exc:
        raise Http404(str(exc)) from None
    except actions.JobLogError as exc:
        return _text(f"{exc}\n", BAD_REQUEST)
    try:
        stream = actions.open_log_stream(log_plan)
    except actions.TooManyStreams as exc:
        return _busy(exc)
    return actions.log_response(stream, request.META, events=True)


@ui_login_required
@require_GET
def job_log_download(request: HttpRequest, pk: int) -> HttpResponse:
    """The job's whole log as a file, streamed from SkyPilot as it comes (never held in memory).

    It takes a log-read slot like every log read (503 with Retry-After when none is free); a
    SkyPilot that cannot be reached is a 502 with the reason, before the file starts. If the
    log breaks off midway the file's last line says so (``# skydeck: ...``).
    """
    job = Job.objects.filter(pk=pk).only("id", "job_name", "experiment_id").first()
    if job is None:
        raise Http404(f"No job {pk} in SkyDeck (only synced jobs have logs here).")
    try:
        stream = actions.open_full_log(pk)
    except actions.UnknownJob as exc:
        raise Http404(str(exc)) from None
    except actions.TooManyStreams as exc:
        return _busy(exc)
    stream.wait_settled(
        float(settings.SKYDECK_LOG_CONNECT_TIMEOUT) + float(settings.SKYDECK_LOG_READ_TIMEOUT)
    )
    if stream.error is not None:
        error = stream.error
        stream.close()
        return _text(actions.log_error_message(error) + "\n", 502)
    response = actions.log_response(stream, request.META, events=False)
    response["Content-Disposition"] = f'attachment; filename="{lists.log_filename(job)}"'
    return response


def _busy(exc: actions.TooManyStreams) -> HttpResponse:
    """Every log-read slot is taken: 503, and when to try again."""
    return _text(f"{exc}\n", 503, **{"Retry-After": str(exc.retry_after)})


# --- config history (revisions) ---------------------------------------------------------------

HISTORY_PER_PAGE = 50
HISTORY_PARAMS = {"a", "b", "page"}


def _history_pair(experiment: Experiment, data: QueryDict) -> tuple[int, int, int, str]:
    """The latest revision number, the two to diff (``?a=&b=``; default the latest against
    the one before) and an error text for bad input (then the two are the defaults)."""
    latest = revisions.latest_number(experiment)
    default = (latest, max(latest - 1, 0), latest)
    unknown = sorted(set(data) - HISTORY_PARAMS)
    if unknown:
        return *default, f"Unknown parameter {', '.join(unknown)}: only a, b and page."
    chosen: dict[str, int] = {}
    for name in ("a", "b"):
        raw = data.get(name, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= latest:
            return *default, f"{name}: {experiment.name} has no revision {raw[:20]!r}."
        chosen[name] = int(raw)
    b = chosen.get("b", latest)
    a = chosen.get("a", max(b - 1, 0))
    return latest, a, b, ""


def _history_context(request: HttpRequest, experiment: Experiment) -> dict[str, Any]:
    latest, a, b, error = _history_pair(experiment, request.GET)
    listed = ExperimentRevision.objects.filter(experiment=experiment).order_by("-number")
    page = Paginator(listed, HISTORY_PER_PAGE).get_page(request.GET.get("page"))
    pair = {
        r.number: r
        for r in ExperimentRevision.objects.filter(experiment=experiment, number__in=[a, b])
    }
    old, new = pair.get(a), pair.get(b)
    return {
        "experiment": experiment,
        "page": page,
        "rows": [(r, revisions.revision_text(r)) for r in page],
        "latest": latest,
        "a": a,
        "b": b,
        "old": old,
        "new": new,
        "differences": revisions.diff(old.config if old else {}, new.config if new else {})
        if new
        else [],
        "error": error,
    }


def _history_response(
    request: HttpRequest, experiment: Experiment, status: int = 200
) -> HttpResponse:
    context = _history_context(request, experiment)
    if context["error"]:
        status = BAD_REQUEST
    template = "experiments/_history.html" if request.htmx else "experiments/history.html"
    return render(request, template, context, status=status)


@ui_login_required
@require_GET
def experiment_history(request: HttpRequest, pk: int) -> HttpResponse:
    """The experiment's config history: every revision newest first, and a diff of any two."""
    experiment = get_object_or_404(Experiment, pk=pk)
    return _history_response(request, experiment)


@ui_login_required
@require_POST
def experiment_restore(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """Restore revision ``number`` (a new revision; never renames, launches or stops)."""
    experiment = get_object_or_404(Experiment, pk=pk)
    status = 200
    try:
        revision = services.restore_revision(request.user, experiment, number)
    except ValidationError as exc:
        messages.error(request, f"Nothing restored: {error_text(exc)}")
        status = BAD_REQUEST
    else:
        if revision is None:
            messages.info(request, f"Nothing restored: r{number} is what is saved already.")
        else:
            messages.success(
                request, f"Restored r{number} of {experiment.name} as r{revision.number}."
            )
    if not request.htmx:
        return redirect("experiment_history", pk=experiment.pk)
    request.GET = QueryDict()  # the fresh history: the latest against the one before
    return _history_response(request, experiment, status)
