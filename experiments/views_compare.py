"""``/compare?e=a,b,c``: experiments side by side (experiments.compare builds the rows).

The only-differences switch is a query parameter (``diff=1``), so what one sees is a link one
can share; the switch is a plain link, no JavaScript needed.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from experiments import compare
from experiments.views import BAD_REQUEST, ui_login_required


def wants_differences(value: str | None) -> bool:
    """``diff=1`` (also true/yes/on): show only the rows whose values differ."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def compare_query(names: list[str], only_differences: bool) -> str:
    """The canonical, shareable query of a comparison: names (never ids), then the switch."""
    query = {"e": ",".join(names)}
    if only_differences:
        query["diff"] = "1"
    return urlencode(query, safe=",")


@ui_login_required
@require_GET
def compare_view(request: HttpRequest) -> HttpResponse:
    """2 to 20 experiments side by side; bad input is the page with its message and a 400."""
    only = wants_differences(request.GET.get("diff"))
    try:
        refs = compare.parse_refs(request.GET.getlist("e"), request.GET.getlist("ids"))
        result = compare.comparison(refs)
    except ValidationError as exc:
        context = {
            "errors": exc.messages,
            "limits": (compare.MIN_EXPERIMENTS, compare.MAX_EXPERIMENTS),
        }
        return render(request, "experiments/compare.html", context, status=BAD_REQUEST)
    names = [e.name for e in result.experiments]
    rows = result.shown(only)
    sections = [
        (kind, title, [r for r in rows if r.kind == kind])
        for kind, title in (("config", "Config"), ("flag", "Flags"), ("status", "State"))
    ]
    return render(
        request,
        "experiments/compare.html",
        {
            "result": result,
            "experiments": result.experiments,
            "sections": [s for s in sections if s[2]],
            "only_differences": only,
            "total_rows": len(result.rows),
            "differences": result.differences,
            "toggle_query": compare_query(names, not only),
            "share_query": compare_query(names, only),
        },
    )
