"""Forms for the admin: thin ModelForms (the models validate) and the group picker of group actions.

Every limit a form states (max_length, number ranges) is the model's: read from its fields and
``experiments.validation``, never written here.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import QuerySet
from django.urls import reverse

from experiments import services, triage, usage, validation
from experiments.models import Experiment, ExperimentGroup, Job


def _max_length(model: type, field: str) -> int:
    return model._meta.get_field(field).max_length


class DescriptionField(forms.CharField):
    """A description (UI form and admin): at most ``DESCRIPTION_MAX_LENGTH``, counted as stored.

    Browsers post a textarea's newlines as CRLF; they are stored (and compared, and counted for
    the limit, as a browser's ``maxlength`` counts them) as LF.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["max_length"] = kwargs.get("max_length") or validation.DESCRIPTION_MAX_LENGTH
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> str:
        return super().to_python(value).replace("\r\n", "\n")


class _EmptyJSONMixin:
    """Turn a cleared JSON textarea into the field's empty default.

    ``forms.JSONField`` cleans an empty input to ``None``, which the model skips in ``full_clean``
    (blank) and then fails on the NOT NULL column; the empty default is what the user meant.
    """

    json_defaults: dict[str, type] = {}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # type: ignore[misc]
        for field, factory in self.json_defaults.items():
            if field in cleaned and cleaned[field] is None:
                cleaned[field] = factory()
        return cleaned


class JSONTextField(forms.JSONField):
    """The admin's JSON boxes: JSON escapes such as ``\\ud800`` decode to lone surrogates, which
    can be neither stored nor shown (a page holding one cannot be encoded as UTF-8)."""

    default_error_messages = {"surrogate": "Unpaired surrogate characters are not allowed."}

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if validation.has_lone_surrogate(value):
            raise ValidationError(self.error_messages["surrogate"], code="surrogate")
        return value

    def prepare_value(self, value: Any) -> Any:
        text = super().prepare_value(value)
        if isinstance(text, str) and validation.has_lone_surrogate(text):
            # re-shown after an error: as the escapes that were typed
            return json.dumps(value, cls=self.encoder)
        return text


class ExperimentAdminForm(_EmptyJSONMixin, forms.ModelForm):
    json_defaults = {"flags": dict, "tags": list}

    class Meta:
        model = Experiment
        fields = services.EDITABLE_FIELDS
        field_classes = {
            "description": DescriptionField,
            "flags": JSONTextField,
            "tags": JSONTextField,
        }


class ExperimentGroupAdminForm(_EmptyJSONMixin, forms.ModelForm):
    json_defaults = {"flags": list}

    class Meta:
        model = ExperimentGroup
        fields = ("name", "flags", "order", "collapsed", "stall_minutes", "metric_patterns")
        field_classes = {"flags": JSONTextField, "metric_patterns": JSONTextField}


class GroupChoiceForm(forms.Form):
    """The group picked on the intermediate page of "add to / remove from / move to group"."""

    group = forms.ModelChoiceField(
        queryset=ExperimentGroup.objects.none(), empty_label="— choose a group —"
    )

    def __init__(self, *args: Any, groups: QuerySet[ExperimentGroup], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["group"].queryset = groups


# --- web UI forms ---------------------------------------------------------------------------
# The UI forms only parse what the user typed, within the model's limits (and the name rule,
# the model's own validator); the services (and so the models) validate the rest, and their
# ValidationErrors are put back on the form by ``add_service_errors``.


def parse_flag_value(text: str) -> Any:
    """Typed value of what was typed in a flag row.

    ``true``/``false`` -> bool, integers -> int, other numbers -> float, ``"..."`` -> the string
    inside the quotes (to keep ``"123"`` a string), ``{...}``/``[...]``/``null`` -> the JSON value
    (which validation then rejects as nested), anything else -> the string as typed.
    """
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    if re.fullmatch(r"[-+]?\d+", stripped):
        try:
            return int(stripped)
        except ValueError:  # more digits than Python converts: keep the text
            return text
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", stripped):
        return float(stripped)  # 1e999 -> inf, which validation rejects
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        return stripped[1:-1]
    if lowered == "null" or (stripped[:1] in "{[" and stripped):
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            return text
    return text


def unparse_flag_value(value: Any) -> str:
    """The text that ``parse_flag_value`` turns back into ``value`` (strings quoted if needed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None or isinstance(value, dict | list):
        return json.dumps(value)
    text = str(value)
    if parse_flag_value(text) != text or type(parse_flag_value(text)) is not str:
        return f'"{text}"'
    return text


def flag_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def add_service_errors(form: forms.Form, exc: ValidationError) -> None:
    """Put a service's ValidationError on the form: per field when the form has it, else on top."""
    if hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            target = name if name in form.fields else None
            for error in errors:
                for message in error.messages:
                    if target is None and name != NON_FIELD_ERRORS:
                        message = f"{name}: {message}"
                    form.add_error(target, message)
    else:
        for message in exc.messages:
            form.add_error(None, message)


class ExperimentForm(forms.Form):
    """Create / edit an experiment: plain fields plus key-value flag rows (``flag_key``/``flag_value``)."""

    # The name rule is validation.validate_experiment_name (the model's, the admin's and the
    # API's), length included: the widget's maxlength only stops typing beyond it.
    name = forms.CharField(
        validators=[validation.validate_experiment_name],
        widget=forms.TextInput(
            attrs={
                "maxlength": str(validation.NAME_MAX_LENGTH),
                "autocomplete": "off",
                "spellcheck": "false",
                "placeholder": "alice.arena.lr.01",
                "title": "Letters, digits, '-', '_' and '.'; also the SkyPilot job and S3 folder name.",
            }
        ),
    )
    nodes = forms.IntegerField(
        min_value=validation.NODES_MIN,
        max_value=validation.NODES_MAX,
        initial=Experiment._meta.get_field("nodes").default,
    )
    gpus = forms.IntegerField(
        min_value=validation.GPUS_MIN,
        max_value=validation.GPUS_MAX,
        initial=Experiment._meta.get_field("gpus").default,
        label="GPUs per node",
    )
    accelerator = forms.CharField(
        max_length=_max_length(Experiment, "accelerator"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "H100"}),
    )
    tool_path = forms.CharField(
        max_length=_max_length(Experiment, "tool_path"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "tools/train.py", "spellcheck": "false"}),
    )
    base_command = forms.CharField(
        max_length=_max_length(Experiment, "base_command"),
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "uv run", "spellcheck": "false"}),
    )
    git_ref = forms.CharField(
        max_length=_max_length(Experiment, "git_ref"),
        required=False,
        label="Git ref",
        widget=forms.TextInput(attrs={"placeholder": "main", "spellcheck": "false"}),
    )
    description = DescriptionField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    # Filled from the flag rows in clean(); listed so service errors on "flags" land here.
    flags = forms.Field(required=False, widget=forms.HiddenInput)
    # The version the editor was loaded with (the experiment's updated_at) and the values it
    # showed then (JSON): a save applies only what the user changed and detects concurrent
    # changes of the same fields (services.update_experiment). Only the edit form renders them.
    version = forms.CharField(required=False, widget=forms.HiddenInput)
    base = forms.CharField(required=False, widget=forms.HiddenInput)

    FIELDS = (
        "name",
        "nodes",
        "gpus",
        "accelerator",
        "tool_path",
        "base_command",
        "git_ref",
        "description",
    )

    def __init__(self, *args: Any, experiment: Experiment | None = None, **kwargs: Any) -> None:
        self.experiment = experiment
        kwargs.setdefault("label_suffix", "")
        if experiment is not None and "initial" not in kwargs:
            kwargs["initial"] = {f: getattr(experiment, f) for f in self.FIELDS}
            kwargs["initial"].update(self.version_fields(experiment))
        super().__init__(*args, **kwargs)
        if self.is_bound:
            keys = self.data.getlist("flag_key") if hasattr(self.data, "getlist") else []
            values = self.data.getlist("flag_value") if hasattr(self.data, "getlist") else []
            values = values + [""] * (len(keys) - len(values))
            self.flag_rows = [
                {"key": k, "value": v} for k, v in zip(keys, values, strict=False) if k or v
            ]
        else:
            flags = experiment.flags if experiment is not None else {}
            self.flag_rows = [
                {"key": k, "value": unparse_flag_value(v), "kind": flag_kind(v)}
                for k, v in flags.items()
            ]

    @classmethod
    def version_fields(cls, experiment: Experiment) -> dict[str, str]:
        """The hidden ``version`` and ``base`` values for an editor showing ``experiment``."""
        values = {f: getattr(experiment, f) for f in (*cls.FIELDS, "flags")}
        return {
            "version": experiment.updated_at.isoformat() if experiment.updated_at else "",
            "base": json.dumps(values, ensure_ascii=False),
        }

    def clean_version(self) -> datetime | None:
        text = self.cleaned_data["version"]
        if not text:
            return None
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            raise ValidationError("The editor's version is unreadable: use Reset.") from None

    def clean_base(self) -> dict[str, Any] | None:
        text = self.cleaned_data["base"]
        if not text:
            return None
        try:
            base = json.loads(text)
        except (ValueError, RecursionError):
            base = None
        if not isinstance(base, dict):
            raise ValidationError("The editor's loaded values are unreadable: use Reset.")
        return {f: v for f, v in base.items() if f in (*self.FIELDS, "flags")}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        flags: dict[str, Any] = {}
        problems = []
        for row in self.flag_rows:
            key = row["key"].strip()
            if not key:
                problems.append(f"The value {row['value']!r} has no flag name.")
                continue
            if key in flags:
                problems.append(f"Flag {key!r} is listed twice.")
                continue
            flags[key] = parse_flag_value(row["value"])
        for problem in problems:
            self.add_error("flags", problem)
        cleaned["flags"] = flags
        return cleaned

    def add_model_errors(self) -> None:
        """After a failed is_valid(): also run the model's rules on the fields that did parse.

        So one submit shows every problem (a bad name *and* nodes 0), not one at a time. Nothing
        is saved: the check runs on an unsaved copy.
        """
        parsed = {
            f: self.cleaned_data[f]
            for f in (*self.FIELDS, "flags")
            if f in self.cleaned_data and f not in self.errors
        }
        candidate = copy.copy(self.experiment) if self.experiment is not None else Experiment()
        for name, value in parsed.items():
            setattr(candidate, name, value)
        skip = [f.name for f in Experiment._meta.fields if f.name not in parsed]
        try:
            candidate.full_clean(exclude=skip)
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for name, errors in exc.error_dict.items():
                    if name in self.errors:
                        continue
                    for error in errors:
                        for message in error.messages:
                            self.add_error(name if name in self.fields else None, message)

    def changes(self) -> dict[str, Any]:
        """Field values for the services (only after is_valid())."""
        data = {f: self.cleaned_data[f] for f in self.FIELDS}
        data["flags"] = self.cleaned_data["flags"]
        return data

    def rebased(self, experiment: Experiment) -> ExperimentForm:
        """After a conflict: the same editor, on the version saved now (only after is_valid()).

        The fields the user changed keep what was typed; the others show the saved values (so a
        second save does not revert what was saved meanwhile). The version and loaded values are
        the saved ones, so a second save overwrites the conflicting fields deliberately.
        """
        base = self.cleaned_data.get("base") or {}
        typed = self.changes()
        data = self.data.copy()
        for field in self.FIELDS:
            if field in base and services.same_value(typed[field], base[field]):
                value = getattr(experiment, field)
                data[field] = "" if value is None else str(value)
        if "flags" in base and services.same_value(typed["flags"], base["flags"]):
            data.setlist("flag_key", list(experiment.flags))
            data.setlist("flag_value", [unparse_flag_value(v) for v in experiment.flags.values()])
        for name, value in self.version_fields(experiment).items():
            data[name] = value
        form = type(self)(data, experiment=experiment)
        form.is_valid()
        return form

    def conflict_rows(self, exc: services.ConflictError) -> list[dict[str, str]]:
        """Per conflicting field: its label, the value saved now and the value typed."""
        typed = self.changes()
        return [
            {
                "field": field,
                "label": "Flags" if field == "flags" else str(self[field].label),
                "saved": _shown(exc.current[field]),
                "yours": _shown(typed.get(field)),
            }
            for field in exc.fields
        ]


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={unparse_flag_value(v)}" for k, v in value.items()) or "(none)"
    if value is None or value == "":
        return "(empty)"
    return str(value)


class ExperimentCreateForm(ExperimentForm):
    group = forms.ModelChoiceField(
        queryset=ExperimentGroup.objects.none(),
        required=False,
        empty_label="— no group —",
        label="Add to group",
    )

    #: _fields.html shows the live "already used by" note under the name (issue 12)
    checks_name = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the template renders the options from a list it already has (no query here)
        self.fields["group"].queryset = ExperimentGroup.objects.all()
        # while typing, ask which active jobs (anyone's) already carry the name
        self.fields["name"].widget.attrs.update(
            {
                "hx-get": reverse("experiment_name_check"),
                "hx-trigger": "input changed delay:300ms",
                "hx-target": "#name-check",
                "hx-swap": "innerHTML",
                "hx-sync": "this:replace",
                "hx-params": "name",
                "aria-describedby": "name-check",
            }
        )


class GroupForm(forms.Form):
    """A new group's name (the service validates it)."""

    name = forms.CharField(
        max_length=_max_length(ExperimentGroup, "name"),
        widget=forms.TextInput(attrs={"placeholder": "New group name"}),
    )


class FailureWindowForm(forms.Form):
    """The Failures page's window: the last N days of submitted jobs."""

    days = forms.TypedChoiceField(
        choices=[(d, f"{d} day{'s' if d > 1 else ''}") for d in triage.FAILURE_WINDOWS],
        coerce=int,
        required=False,
        empty_value=triage.DEFAULT_FAILURE_WINDOW,
    )
    signature = forms.CharField(
        required=False,
        strip=False,
        max_length=Job._meta.get_field("failure_signature").max_length,
        help_text="Only this bucket.",
    )


class FailureActionForm(FailureWindowForm):
    """Stop all or Retry all of one bucket: its signature, window and the act."""

    action = forms.ChoiceField(choices=[("stop", "Stop all"), ("start", "Retry all")])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["signature"].required = True


class UsageForm(forms.Form):
    """The Usage page's window (dates, until inclusive), what to roll up by and the bars."""

    by = forms.ChoiceField(
        choices=[(d, d) for d in usage.DIMENSIONS], required=False, initial="user"
    )
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    bucket = forms.ChoiceField(choices=[(b, b) for b in usage.BUCKETS], required=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        data["by"] = data.get("by") or "user"
        data["bucket"] = data.get("bucket") or "day"
        data["since"], data["until"] = usage.default_dates(data.get("since"), data.get("until"))
        if not self.errors:
            try:
                data["start"], data["end"] = usage.window(
                    data["since"], data["until"], data["bucket"]
                )
            except ValueError as exc:
                field, _, message = str(exc).partition(": ")
                self.add_error(field if field in self.fields else None, message)
        return data
