"""Fork from a checkpoint: the clone-modify page (thin: ``services.fork_experiment`` decides)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from experiments import services
from experiments.forms_fork import ForkForm
from experiments.models import Checkpoint
from experiments.views import BAD_REQUEST, ui_login_required


@ui_login_required
@require_http_methods(["GET", "POST"])
def checkpoint_fork(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the form prefilled from the checkpoint's experiment; POST: create the fork."""
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("experiment"), pk=pk)
    if request.method == "GET":
        form = ForkForm(checkpoint=checkpoint)
        return render(request, "experiments/fork.html", _context(form, checkpoint))
    form = ForkForm(request.POST, checkpoint=checkpoint)
    child = None
    if not form.is_valid():
        form.add_model_errors()
    else:
        try:
            child = services.fork_experiment(
                request.user,
                checkpoint,
                name=form.cleaned_data["name"],
                flag_key=form.cleaned_data["uri_flag"],
                changes=form.fork_changes(),
            )
        except ValidationError as exc:
            form.add_fork_errors(exc)
        except IntegrityError:
            form.add_error("name", "An experiment with this name already exists.")
    if child is None:
        return render(
            request, "experiments/fork.html", _context(form, checkpoint), status=BAD_REQUEST
        )
    messages.success(
        request,
        f"Forked {checkpoint.experiment.name} @ epoch {checkpoint.epoch} as {child.name}. "
        "It starts stopped: press Start when it is ready.",
    )
    return redirect("experiment_detail", pk=child.pk)


def _context(form: ForkForm, checkpoint: Checkpoint) -> dict[str, object]:
    return {"form": form, "checkpoint": checkpoint, "parent": checkpoint.experiment}
