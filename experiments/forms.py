"""Forms for the admin: thin ModelForms (the models validate) and the group picker of group actions."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db.models import QuerySet

from experiments import services
from experiments.models import Experiment, ExperimentGroup


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


class ExperimentAdminForm(_EmptyJSONMixin, forms.ModelForm):
    json_defaults = {"flags": dict, "tags": list}

    class Meta:
        model = Experiment
        fields = services.EDITABLE_FIELDS


class ExperimentGroupAdminForm(_EmptyJSONMixin, forms.ModelForm):
    json_defaults = {"flags": list}

    class Meta:
        model = ExperimentGroup
        fields = ("name", "flags", "order", "collapsed")


class GroupChoiceForm(forms.Form):
    """The group picked on the intermediate page of "add to / remove from / move to group"."""

    group = forms.ModelChoiceField(
        queryset=ExperimentGroup.objects.none(), empty_label="— choose a group —"
    )

    def __init__(self, *args: Any, groups: QuerySet[ExperimentGroup], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["group"].queryset = groups
