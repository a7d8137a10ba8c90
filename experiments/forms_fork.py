"""The "Fork from here" form: the experiment form (clone-modify) plus the flag for the URI.

The flag rows post as ``flag_key``/``flag_value`` (the shared flags editor), so the field that
names the URI's flag is ``uri_flag`` here and ``flag_key`` in the service and the API.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from experiments import services, validation
from experiments.forms import ExperimentForm, add_service_errors, unparse_flag_value
from experiments.models import Checkpoint


class ForkForm(ExperimentForm):
    """Prefilled with the parent's configuration and the next free ``<parent>.from<epoch>``."""

    uri_flag = forms.CharField(
        label="Flag for the checkpoint's URI",
        max_length=validation.FLAG_KEY_MAX_LENGTH,
        required=False,
        widget=forms.TextInput(
            attrs={
                "class": "mono",
                "spellcheck": "false",
                "autocomplete": "off",
                "placeholder": "trainer.initial_policy.uri",
            }
        ),
    )

    def __init__(self, *args: Any, checkpoint: Checkpoint, **kwargs: Any) -> None:
        self.checkpoint = checkpoint
        parent = checkpoint.experiment
        if not args and "data" not in kwargs:
            initial = {f: getattr(parent, f) for f in self.FIELDS}
            initial["name"] = services.next_fork_name(parent.name, checkpoint.epoch)
            initial["uri_flag"] = getattr(settings, "SKYDECK_FORK_FLAG", "")
            kwargs["initial"] = initial
        super().__init__(*args, experiment=parent, **kwargs)
        self.setting_flag = getattr(settings, "SKYDECK_FORK_FLAG", "")
        # asked, not optional, when no setting names the flag
        self.fields["uri_flag"].required = not self.setting_flag
        if not self.is_bound and self.setting_flag:  # show the flags the fork will have
            uri = {
                "key": self.setting_flag,
                "value": unparse_flag_value(checkpoint.model_path),
                "kind": "str",
            }
            rows = [uri if r["key"] == self.setting_flag else r for r in self.flag_rows]
            self.flag_rows = rows if uri in rows else [*rows, uri]

    def clean_uri_flag(self) -> str:
        key = self.cleaned_data["uri_flag"].strip()
        try:
            return services.fork_flag_key(key)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["flag_key"]) from None

    def fork_changes(self) -> dict[str, Any]:
        """What the service applies over the parent's configuration (only after is_valid())."""
        data = self.changes()
        data.pop("name")
        return data

    def add_fork_errors(self, exc: ValidationError) -> None:
        """A service error on the form: ``flag_key`` is this form's ``uri_flag``."""
        if hasattr(exc, "error_dict") and "flag_key" in exc.error_dict:
            errors = dict(exc.error_dict)
            errors["uri_flag"] = errors.pop("flag_key")
            exc = ValidationError(errors)
        add_service_errors(self, exc)
