"""The Django admin's change forms as a browser would post them back."""

from __future__ import annotations

from typing import Any


def form_data(response) -> dict[str, Any]:
    """POST data reproducing a rendered change form as is (main form, inlines, management forms)."""
    forms = [response.context["adminform"].form]
    data: dict[str, Any] = {}
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        forms.extend(inline.formset.forms)
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None:
                data[form.add_prefix(name)] = value
    return data
