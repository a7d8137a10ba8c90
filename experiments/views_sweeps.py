"""Sweeps in the web UI: ``/sweeps/new`` (thin: ``experiments.sweeps`` plans and creates).

One view serves the page, its Preview (htmx swaps the form with the preview table in it; without
JavaScript the same POST answers the whole page) and Create (a plain POST that redirects to the
deck). Errors are form errors and nothing is created.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from experiments import services, sweeps, validation
from experiments.forms import ExperimentForm, add_service_errors
from experiments.models import Experiment, ExperimentGroup
from experiments.views import BAD_REQUEST, ui_login_required


class SweepForm(ExperimentForm):
    """The base configuration (the experiment form; ``name`` is the names' ``{base}``) plus the
    axes (rows ``axis_key``/``axis_spec``), the mode, the name template and the target group."""

    mode = forms.ChoiceField(
        choices=[("grid", "Grid (every combination)"), ("zip", "Zip (n-th with n-th)")],
        initial="grid",
        widget=forms.RadioSelect,
    )
    name_template = forms.CharField(
        required=False,
        max_length=validation.NAME_MAX_LENGTH,
        initial=sweeps.DEFAULT_TEMPLATE,
        label="Name template",
        widget=forms.TextInput(attrs={"class": "mono", "spellcheck": "false"}),
    )
    group = forms.ModelChoiceField(
        queryset=ExperimentGroup.objects.none(), required=False, label="Into group"
    )
    new_group = forms.CharField(
        required=False,
        max_length=validation.GROUP_NAME_MAX_LENGTH,
        label="or a new group",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    # filled from the axis rows in clean(); listed so their errors land here
    axes = forms.Field(required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, base: Experiment | None = None, **kwargs: Any) -> None:
        self.base = base
        if not args and "data" not in kwargs:
            initial = dict(kwargs.pop("initial", {}))
            if base is not None:
                initial.update({f: getattr(base, f) for f in self.FIELDS})
                initial["new_group"] = sweeps.default_group_name(base.name)
            kwargs["initial"] = initial
        super().__init__(*args, experiment=base, **kwargs)
        self.fields["name"].label = "Name base"
        self.fields["name"].widget.attrs["placeholder"] = "alice.arena.lr"
        self.fields["group"].queryset = ExperimentGroup.objects.all()
        if self.is_bound:
            keys = self.data.getlist("axis_key") if hasattr(self.data, "getlist") else []
            specs = self.data.getlist("axis_spec") if hasattr(self.data, "getlist") else []
            specs = specs + [""] * (len(keys) - len(specs))
            self.axis_rows = [
                {"key": k, "spec": v} for k, v in zip(keys, specs, strict=False) if k or v
            ]
        else:
            self.axis_rows = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        pairs = [(row["key"].strip(), row["spec"]) for row in self.axis_rows]
        try:
            cleaned["axes"] = sweeps.parse_axes(pairs)
        except ValidationError as exc:
            for message in exc.message_dict["axes"]:
                self.add_error("axes", message)
        if cleaned.get("group") is not None and (cleaned.get("new_group") or "").strip():
            self.add_error("new_group", "Choose an existing group or name a new one, not both.")
        return cleaned

    def sweep_base(self) -> dict[str, Any]:
        """The configuration the sweep copies (only after is_valid())."""
        data = self.changes()
        data["tags"] = list(self.base.tags or []) if self.base is not None else []
        return data

    def sweep_plan(self) -> sweeps.SweepPlan | None:
        """The plan, or None with the problems on the form."""
        if not self.is_valid():
            self.add_model_errors()
            return None
        try:
            return sweeps.plan(
                self.sweep_base(),
                self.cleaned_data["axes"],
                self.cleaned_data["mode"],
                self.cleaned_data["name_template"],
            )
        except ValidationError as exc:
            add_service_errors(self, exc)
            return None


def _base(request: HttpRequest) -> Experiment | None:
    ref = request.POST.get("from") if request.method == "POST" else request.GET.get("from")
    if not ref:
        return None
    if not ref.isdigit():
        return None
    return get_object_or_404(Experiment, pk=int(ref))


@ui_login_required
@require_http_methods(["GET", "POST"])
def sweep_new(request: HttpRequest) -> HttpResponse:
    """GET: the form (from ``?from=<experiment id>`` or blank); POST ``preview=1``: the plan;
    POST: create the sweep and go to the deck."""
    base = _base(request)
    groups = list(ExperimentGroup.objects.all())
    template = "experiments/_sweep_form.html" if request.htmx else "experiments/sweep.html"
    if request.method == "GET":
        return render(request, template, _context(SweepForm(base=base), base, groups))
    if not request.POST.get("preview"):  # Create is a writer's act: 403 before any form error
        services.check_can_write(request.user)
    form = SweepForm(request.POST, base=base)
    plan = form.sweep_plan()
    if plan is not None and not plan.valid:
        add_service_errors(form, ValidationError(plan.errors()))
    if request.POST.get("preview"):
        status = 200 if plan is not None and plan.valid else BAD_REQUEST
        return render(request, template, _context(form, base, groups, plan), status=status)
    result = None
    if plan is not None and plan.valid:
        try:
            result = sweeps.create_sweep(
                request.user,
                plan,
                group=form.cleaned_data.get("group"),
                new_group_name=form.cleaned_data.get("new_group") or None,
            )
        except ValidationError as exc:
            add_service_errors(form, exc)
    if result is None:
        return render(request, template, _context(form, base, groups, plan), status=BAD_REQUEST)
    messages.success(
        request,
        f"Created {plan.count} experiment{'s' if plan.count != 1 else ''} in group "
        f"{result.group.name}. They start stopped: select them and press Start when ready.",
    )
    return redirect("dashboard")


def _context(
    form: SweepForm,
    base: Experiment | None,
    groups: list[ExperimentGroup],
    plan: sweeps.SweepPlan | None = None,
) -> dict[str, Any]:
    return {
        "form": form,
        "base": base,
        "groups": groups,
        "plan": plan,
        "max_items": sweeps.MAX_SWEEP_ITEMS,
        "default_template": sweeps.DEFAULT_TEMPLATE,
    }
