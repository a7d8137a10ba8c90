"""Template helpers for the web UI: relative times, durations, state badges and external links."""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any
from urllib.parse import quote

from django import template
from django.apps import apps
from django.conf import settings
from django.template.defaultfilters import truncatechars
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from experiments import dashboard, deckquery, triage

register = template.Library()


@register.simple_tag
def max_length(model: str, field: str) -> int:
    """A column's length for an input's ``maxlength`` (``{% max_length "ExperimentGroup" "name" %}``):
    read from the model, so a page never states a limit of its own."""
    return apps.get_model("experiments", model)._meta.get_field(field).max_length


@register.filter
def ago(value: datetime | None) -> str:
    """'12 s ago' (use with ``reltime`` to get the exact time in a title)."""
    return dashboard.ago(value)


@register.simple_tag
def reltime(value: datetime | None, empty: str = dashboard.MISSING) -> str:
    """``<time>`` with the relative time as text and the exact UTC time in ``title``."""
    return mark_safe(_reltime(value, empty))  # noqa: S308 - every value is escaped by _e


@register.filter
def duration(seconds: float | None) -> str:
    return dashboard.duration_text(seconds)


@register.filter
def state_tone(state: str | None) -> str:
    return dashboard.state_tone(state)


@register.filter
def state_label(state: str | None) -> str:
    return dashboard.state_label(state)


@register.simple_tag
def state_badge(state: str | None) -> str:
    return format_html(
        '<span class="badge tone-{}" title="{}">{}</span>',
        dashboard.state_tone(state),
        state or "NO_JOB",
        dashboard.state_label(state),
    )


@register.simple_tag
def link_url(kind: str, **values: Any) -> str:
    """The configured ``SKYDECK_LINK_*`` URL or "" (use ``{% link_url ... as url %}``)."""
    return dashboard.build_link(kind, **values)


@register.simple_tag(takes_context=True)
def query_with(context: template.Context, **changes: Any) -> str:
    """The current query string with some parameters replaced (None/"" removes them)."""
    request = context["request"]
    params = request.GET.copy()
    for key, value in changes.items():
        if value is None or value == "":
            params.pop(key, None)
        else:
            params[key] = value
    encoded = params.urlencode()
    return f"?{encoded}" if encoded else "?"


# --- row cells --------------------------------------------------------------------------------
# Dashboard rows are rendered in Python, not with a template: a deck can hold a thousand rows
# and the template engine spent ~0.3 ms on each. Every interpolated value goes through ``_e``
# (html.escape with quotes, what Django's autoescape does). The star and state cells are also
# sent alone, out of band, after star / start / stop: ``oob`` adds the hx-swap-oob selector
# that finds the cell in every group showing the experiment.


STAR_ON, STAR_OFF = "\u2605", "\u2606"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _oob_attr(cell: str, experiment_pk: int, oob: bool) -> str:
    if not oob:
        return ""
    return f" hx-swap-oob=\"outerHTML:#deck tr[data-exp-id='{int(experiment_pk)}'] > td.{cell}\""


def _badge(state: str | None) -> str:
    return (
        f'<span class="badge tone-{dashboard.state_tone(state)}" title="{_e(state or "NO_JOB")}">'
        f"{_e(dashboard.state_label(state))}</span>"
    )


def _star_cell(row: dashboard.Row, oob: bool = False) -> str:
    e = row.experiment
    return (
        f'<td class="c-star"{_oob_attr("c-star", e.pk, oob)}><button type="submit" form="af" '
        f'formaction="{_e(row.star_url)}" name="starred" value="{"0" if e.starred else "1"}" '
        f'class="star-btn" aria-pressed="{"true" if e.starred else "false"}" '
        f'aria-label="Star {_e(e.name)}">{STAR_ON if e.starred else STAR_OFF}</button></td>'
    )


def _state_cell(row: dashboard.Row, oob: bool = False) -> str:
    e = row.experiment
    desired = ""
    if e.desired_hint:
        verb = "launch" if e.desired_hint == "RUNNING" else "cancel"
        desired = (
            f' <span class="desired" title="Desired {_e(e.desired_hint)}: the reconciler will '
            f'{verb} it">\u2192 {_e(e.desired_hint)}</span>'
        )
    # Stop whenever something runs: desired RUNNING, or an active job under the name even when
    # it is already desired STOPPED (someone else's job, or one still winding down), so the
    # button always offers to end what the badge shows. Both confirm first: with JavaScript,
    # skydeck.js loads ``data-confirm-url`` into #confirm-dialog (one delegated listener, no
    # per-row htmx set-up); without, the form POST answers with the confirmation page.
    stop = e.desired_state == "RUNNING" or bool(getattr(e, "has_active_job", False))
    label = "Stop" if stop else "Start"
    state = "STOPPED" if stop else "RUNNING"
    button = (
        f'<button type="submit" form="af" formaction="{_e(row.desired_url)}" name="state" '
        f'value="{state}" data-confirm-url="{_e(row.desired_url)}?state={state}" '
        f'aria-haspopup="dialog" class="btn tiny state-btn" aria-label="{label} {_e(e.name)}">'
        f"{label}</button>"
    )
    note = ""
    if e.parked_reason:
        note = (
            f'<span class="note note-parked" title="{_e(e.parked_reason)}">Parked: '
            f"{_e(truncatechars(e.parked_reason, 90))}</span>"
        )
    elif e.reconcile_note:
        note = (
            f'<span class="note" title="{_e(e.reconcile_note)}">'
            f"{_e(truncatechars(e.reconcile_note, 90))}</span>"
        )
    badge = _badge(e.current_state)
    signature = getattr(e, "latest_job_failure_signature", None)
    if signature and e.current_state in triage.FAILED:
        badge = (
            f'<a class="badge-link" href="{_e(dashboard.failure_bucket_url(signature))}" '
            f'aria-label="{_e(e.current_state)}: its failure bucket">{badge}</a>'
        )
    badge += _job_flags(
        getattr(e, "latest_job_status", None),
        getattr(e, "latest_job_stalled", None),
        getattr(e, "latest_job_recovery_count", None),
        "Its latest job",
    )
    return (
        f'<td class="c-state"{_oob_attr("c-state", e.pk, oob)}><span class="state-line">'
        f"{badge}{desired} {button}</span>{note}</td>"
    )


def _job_flags(status: str | None, stalled: str | None, recoveries: int | None, who: str) -> str:
    """The stalled badge (a running job whose log stopped advancing: the sampler's reason in
    its title and, for screen readers, in its text) and the "recovered Nx" badge (more than
    ``SKYDECK_MAX_RECOVERIES`` recoveries), each with a leading space; "" when neither."""
    out = ""
    if stalled and status == "RUNNING":
        out += (
            f' <span class="badge tone-stall" title="Stalled: {_e(stalled)}">stalled'
            f'<span class="sr-only">: {_e(stalled)}</span></span>'
        )
    limit = settings.SKYDECK_MAX_RECOVERIES
    if recoveries and recoveries > limit:
        out += (
            f' <span class="badge tone-warn badge-recovered" title="{who} recovered '
            f"{int(recoveries)} times, more than SKYDECK_MAX_RECOVERIES ({int(limit)}): "
            f'preemptions or failing nodes">recovered {int(recoveries)}\u00d7</span>'
        )
    return out


def _sparkline(spark: tuple[str, list[float]] | None) -> str:
    """A ~60 by 14 px inline SVG line of a metric's values (oldest first), its first, last, min
    and max in the title and the label; "" without values."""
    if not spark:
        return ""
    metric, values = spark
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    width, height = 60, 14
    step = (width - 2) / (len(values) - 1)
    points = " ".join(
        f"{1 + i * step:.1f},{1 + (high - v) / span * (height - 2) if high > low else height / 2:.1f}"
        for i, v in enumerate(values)
    )
    label = (
        f"{metric}: {_num(values[0])} \u2192 {_num(values[-1])} over the last {len(values)} "
        f"samples (min {_num(low)}, max {_num(high)})"
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>'
        f'<polyline points="{points}"/></svg>'
    )


def _tag_chip(tag: str) -> str:
    """A tag as a chip: a link to the deck filtered by it (``tag:NAME`` in the filter box)."""
    href = dashboard.fast_url("dashboard") + "?q=" + quote(f"tag:{tag}", safe=":")
    return f'<a class="tag-chip" href="{_e(href)}" title="Show the experiments tagged {_e(tag)}">{_e(tag)}</a>'


def grouped_digits(text: str) -> str:
    """A wide integer's digits in groups of three, set apart by CSS (``.dg``) rather than by a
    character, so a copy gives the number as stored: 131072, shown as 131 072."""
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    if len(digits) < 5 or not digits.isdigit():
        return _e(text)
    head = len(digits) % 3 or 3
    rest = "".join(
        f'<span class="dg">{digits[i : i + 3]}</span>' for i in range(head, len(digits), 3)
    )
    return f"{sign}{digits[:head]}{rest}"


def _num(value: float) -> str:
    """A metric value, exact enough to compare (6 significant digits)."""
    return f"{value:.6g}"


def _progress_cell(e: Any) -> str:
    if not e.progress_text:
        return f'<td class="c-progress"><span class="muted">{dashboard.MISSING}</span></td>'
    return (
        f'<td class="c-progress"><span class="prog-line"><span class="prog" '
        f'title="{_e(e.progress_title)}">{_e(e.progress_text)}</span>'
        f"{_sparkline(e.spark)}</span></td>"
    )


@register.simple_tag
def star_cell(row: dashboard.Row, oob: bool = False) -> str:
    return mark_safe(_star_cell(row, oob))  # noqa: S308 - every value is escaped by _e


@register.simple_tag
def state_cell(row: dashboard.Row, oob: bool = False) -> str:
    return mark_safe(_state_cell(row, oob))  # noqa: S308 - every value is escaped by _e


@register.simple_tag
def exp_row(row: dashboard.Row, oob: bool = False) -> str:
    """One dashboard row (``<tr>``); templates/experiments/_group.html has the column heads.
    ``oob``: a poll's changed row, swapped in place of the one with its id."""
    e = row.experiment
    name = _e(e.name)
    description = ""
    if e.description:
        description = (
            f'<span class="desc" title="{_e(e.description)}">'
            f"{_e(truncatechars(e.description, 70))}</span>"
        )
    tags = ""
    if e.tags:
        tags = '<span class="tags">' + "".join(_tag_chip(tag) for tag in e.tags) + "</span>"
    if e.latest_epoch is not None:
        epoch = _e(e.latest_epoch)
    else:
        epoch = f'<span class="muted">{dashboard.MISSING}</span>'
    cells = "".join(
        f'<td class="c-flag{" missing" if c.missing else ""}{" num" if c.integer else ""}" '
        f'title="{_e(c.title)}">{grouped_digits(c.text) if c.integer else _e(c.text)}</td>'
        for c in row.cells
    )
    order = ""
    if row.group_id and row.sorted_by:
        why = _e(f"Sorted by {row.sorted_by}: clear the sort to move rows")
        order = (
            f'<button type="button" class="icon-btn" disabled title="{why}" '
            f'aria-label="Move {name} up ({why})">\u2191</button>'
            f'<button type="button" class="icon-btn" disabled title="{why}" '
            f'aria-label="Move {name} down ({why})">\u2193</button>'
        )
    elif row.group_id:
        url = _e(row.move_url)
        order = (
            f'<span class="drag-handle" draggable="true" data-place-url="{_e(row.place_url)}" '
            f'title="Drag to reorder (or use the arrows)" aria-hidden="true">\u283f</span>'
        ) + (
            f'<button type="submit" form="af" formaction="{url}" name="direction" value="up" '
            f'class="icon-btn" aria-label="Move {name} up"'
            f"{' disabled' if row.position == 0 else ''}>\u2191</button>"
            f'<button type="submit" form="af" formaction="{url}" name="direction" value="down" '
            f'class="icon-btn" aria-label="Move {name} down"'
            f"{' disabled' if row.last else ''}>\u2193</button>"
        )
    return mark_safe(  # noqa: S308 - every value is escaped by _e
        f'<tr id="{_e(row.dom_id)}" class="exp-row{" is-starred" if e.starred else ""}"'
        f"{_OOB if oob else ''} "
        f'data-exp-id="{int(e.pk)}" data-detail-id="{_e(row.detail_id)}">'
        f'<td class="c-select"><input type="checkbox" name="ids" value="{int(e.pk)}" '
        f'form="bulk-form" aria-label="Select {name}"></td>'
        f"{_star_cell(row)}"
        f'<td class="c-name"><a class="exp-name" href="{_e(row.detail_url)}" data-expand '
        f'aria-expanded="false">{name}</a>{tags}{description}</td>'
        f"{_state_cell(row)}{_progress_cell(e)}"
        f'<td class="c-epoch num">{epoch}</td><td class="c-shape">{_e(e.shape)}</td>'
        f'<td class="c-gpuh num">{dashboard.gpu_hours_text(e.gpu_seconds)}</td>{cells}'
        f'<td class="c-order">{order}</td></tr>\n'
    )


@register.simple_tag
def section_start(view: dashboard.GroupView, oob: bool = False) -> str:
    """A deck section's ``<section>`` tag and the first part of its header (toggle, name,
    counts): in Python, like the rows, because every group of the deck has one (most of them
    placeholders until they scroll into view) and the template engine cost a millisecond each."""
    classes = ["group"]
    if view.collapsed:
        classes.append("is-collapsed")
    if view.lazy:
        classes.append("is-lazy")
    if not view.group:
        classes.append("is-ungrouped")
    dom, name = view.dom_id, _e(view.name)
    attrs = (
        f'class="{" ".join(classes)}" id="{dom}" aria-labelledby="{dom}-title" '
        f'data-group-id="{view.id if view.id is not None else ""}" data-key="{view.key}"'
        + (f' data-built data-layout="{view.layout}"' if view.built else "")
        + (_OOB if oob else "")
    )
    toggle = ""
    if view.group:
        verb = "Expand" if view.collapsed else "Collapse"
        toggle = (
            f'<button type="submit" form="af" formaction="{dashboard.fast_url("group_collapse", view.id)}"'
            f' name="collapsed" value="{"0" if view.collapsed else "1"}" class="icon-btn toggle"'
            f' aria-expanded="{"false" if view.collapsed else "true"}" aria-controls="{dom}-table"'
            f' title="{verb} {name}"><span aria-hidden="true">{"▸" if view.collapsed else "▾"}'
            f'</span><span class="sr-only">{verb} {name}</span></button>'
        )
    handle = ""
    if view.group:
        handle = (
            f'<span class="drag-handle group-handle" draggable="true" '
            f'data-place-url="{dashboard.fast_url("group_place", view.id)}" '
            f'title="Drag to reorder the groups (or use the arrows)" aria-hidden="true">\u283f</span>'
        )
    return mark_safe(  # noqa: S308 - every value is escaped by _e or is a number
        f'<section {attrs}>\n  <header class="group-head">{handle}{toggle}'
        f'<h2 id="{dom}-title" class="group-name">{name}</h2>{_figures(view)}'
    )


_OOB = ' hx-swap-oob="true"'


@register.simple_tag
def sort_th(
    query: str,
    column: str,
    label: str,
    css: str = "",
    title: str = "",
    rowspan: int | str = 1,
) -> str:
    """A deck column head that sorts: a link to the deck with ``sort:`` set in the filter box
    (ascending, descending, then the deck's own order again), ``aria-sort`` when it is the one."""
    current = deckquery.parse(query).sort
    active = current is not None and current.column == column
    aria = ""
    arrow = ""
    if active:
        aria = f' aria-sort="{"descending" if current.descending else "ascending"}"'
        arrow = f'<span class="sort-arrow" aria-hidden="true">{"▼" if current.descending else "▲"}</span>'
    q = deckquery.with_sort(query, column)
    href = dashboard.fast_url("dashboard") + (f"?q={quote(q, safe='/:')}" if q else "")
    span = f' rowspan="{_e(rowspan)}"' if str(rowspan) != "1" else ""
    hint = title or label
    verb = (
        "sort descending"
        if active and not current.descending
        else ("the deck's own order" if active else "sort ascending")
    )
    return mark_safe(  # noqa: S308 - every value is escaped by _e
        f'<th class="{_e(css)}" scope="col"{span}{aria} title="{_e(hint)}">'
        f'<a class="sort-link" href="{_e(href)}" rel="nofollow" '
        f'aria-label="{_e(label)}: {verb}">{_e(label)}{arrow}</a></th>'
    )


_BLANK_FIELDS: dict[tuple[type, str], str] = {}


@register.simple_tag
def form_fields(form: Any) -> str:
    """experiments/_fields.html for ``form``. An unbound form renders the same for the same
    initial values, and every page carries one (the create dialog), so that is rendered once
    per process (not under DEBUG, where templates change while it runs)."""
    if form.is_bound or settings.DEBUG:
        return render_to_string("experiments/_fields.html", {"form": form})
    key = (type(form), repr(sorted(form.initial.items())))
    html = _BLANK_FIELDS.get(key)
    if html is None:
        html = _BLANK_FIELDS[key] = render_to_string("experiments/_fields.html", {"form": form})
    return html


@register.simple_tag
def lazy_section(view: dashboard.GroupView, query: str = "", oob: bool = False) -> str:
    """A section whose rows load when it scrolls into view: header and placeholder, whole, in
    Python (most sections of a large deck are these; templates/experiments/_group.html's lazy
    branch cost a tenth of a millisecond each)."""
    url = reverse("group_section", args=[view.key])
    if query:
        url += f"?q={quote(query, safe='/')}"  # as the urlencode filter did
    n = view.matched
    return mark_safe(  # noqa: S308 - every value is escaped by _e or is a number
        f"{section_start(view, oob)}\n  </header>\n"
        f'  <div class="lazy-rows" hx-get="{_e(url)}" hx-trigger="intersect once" '
        f'hx-target="closest section" hx-swap="outerHTML"><p class="muted">Loading {int(n)} '
        f"experiment{'' if n == 1 else 's'}…</p></div>\n</section>\n"
    )


def _figures(view: dashboard.GroupView, oob: bool = False) -> str:
    """A section header's counts: its own element, so a poll can update them alone."""
    if view.matched != view.total:
        count = f"{view.matched} of {view.total}"
        title = f"{view.matched} of its {view.total} experiments match the filter"
    else:
        count, title = str(view.matched), f"{view.total} experiments"
    figures = ""
    if view.running:
        figures += f'<span class="mini tone-run">{view.running} running</span>'
    if view.failed:
        figures += f'<span class="mini tone-fail">{view.failed} failed</span>'
    if view.gpu_seconds:
        figures += (
            f'<span class="mini gpu-hours" title="GPU-hours of the jobs of its experiments, as of '
            f'the last sync">{dashboard.gpu_hours_text(view.gpu_seconds)} GPU-h</span>'
        )
    return (
        f'<span class="group-figures" id="{view.dom_id}-figures"{_OOB if oob else ""}>'
        f'<span class="group-count" title="{title}">{count}</span>{figures}</span>'
    )


@register.simple_tag
def section_figures(view: dashboard.GroupView) -> str:
    """A poll's update of a section's header counts (out of band)."""
    return mark_safe(_figures(view, oob=True))  # noqa: S308 - numbers and fixed text


# --- the Usage chart ---------------------------------------------------------------------------

_CHART_W, _CHART_H, _CHART_LEFT, _CHART_BOTTOM, _CHART_TOP = 960, 220, 56, 24, 8


@register.simple_tag
def usage_chart(chart: Any) -> str:
    """GPU-hours per bucket, stacked by key, as inline SVG (no chart library, no script): each
    bar segment says its key, bucket and hours on hover; the table under it has every number."""
    starts = chart.starts
    if not starts:
        return ""
    peak = chart.peak or 1.0
    plot_w = _CHART_W - _CHART_LEFT
    plot_h = _CHART_H - _CHART_BOTTOM - _CHART_TOP
    slot = plot_w / len(starts)
    bar = max(1.0, slot * 0.8)
    fmt = "%Y-%m" if chart.bucket == "month" else "%Y-%m-%d"
    parts = []
    for i, start in enumerate(starts):
        x = _CHART_LEFT + i * slot + (slot - bar) / 2
        y = _CHART_TOP + plot_h
        for index, (key, hours) in enumerate(chart.stack(start)):
            if hours <= 0:
                continue
            h = hours / peak * plot_h
            y -= h
            parts.append(
                f'<rect class="s{index}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{max(h, 0.5):.1f}"><title>{_e(key)} · {start:{fmt}}: '
                f"{hours:,.1f} GPU-h</title></rect>"
            )
    step = max(1, len(starts) // 8)
    labels = [
        f'<text class="x" x="{_CHART_LEFT + i * slot + slot / 2:.1f}" y="{_CHART_H - 6}">'
        f"{start:{fmt}}</text>"
        for i, start in enumerate(starts)
        if i % step == 0 or i == len(starts) - 1
    ]
    top, base = _CHART_TOP, _CHART_TOP + plot_h
    axis = (
        f'<line class="axis" x1="{_CHART_LEFT}" y1="{base}" x2="{_CHART_W}" y2="{base}"/>'
        f'<line class="grid" x1="{_CHART_LEFT}" y1="{top}" x2="{_CHART_W}" y2="{top}"/>'
        f'<text class="y" x="{_CHART_LEFT - 6}" y="{top + 4}">{peak:,.1f}</text>'
        f'<text class="y" x="{_CHART_LEFT - 6}" y="{base}">0</text>'
    )
    label = f"GPU-hours per {chart.bucket} by {chart.by}"
    return mark_safe(  # noqa: S308 - keys are escaped by _e; the rest are numbers and dates
        f'<svg class="usage-chart" viewBox="0 0 {_CHART_W} {_CHART_H}" role="img" '
        f'aria-label="{_e(label)}">{axis}{"".join(parts)}'
        f"{''.join(labels)}</svg>"
    )


# --- the detail page's metric charts ----------------------------------------------------------

_MW, _MH, _ML, _MR, _MT, _MB = 220, 80, 46, 6, 7, 17


@register.simple_tag
def metric_chart(chart: dashboard.MetricChart) -> str:
    """One parsed metric over a job's samples as a small inline SVG line: min and max on the
    y axis, the first and last step (or time) on the x axis, the last value exact above it."""
    plot_w, plot_h = _MW - _ML - _MR, _MH - _MT - _MB
    x0, x1 = chart.xs[0], chart.xs[-1]
    xspan = (x1 - x0) or 1.0
    yspan = (chart.high - chart.low) or 1.0
    flat = chart.high == chart.low

    def y_of(value: float) -> float:
        return _MT + (plot_h / 2 if flat else (chart.high - value) / yspan * plot_h)

    points = " ".join(
        f"{_ML + (x - x0) / xspan * plot_w:.1f},{y_of(y):.1f}"
        for x, y in zip(chart.xs, chart.ys, strict=True)
    )
    if len(chart.xs) == 1:  # one sample: a dot, not a line of one point
        points = f"{_ML:.1f},{y_of(chart.ys[0]):.1f} {_ML + plot_w:.1f},{y_of(chart.ys[0]):.1f}"
    base, right = _MT + plot_h, _ML + plot_w
    name, last = _e(chart.name), _e(repr(chart.last))  # the shortest exact form
    label = (
        f"{chart.name}: last {chart.last!r}, min {_num(chart.low)}, max "
        f"{_num(chart.high)} over {chart.count} samples, {chart.x_label} {chart.x_min} to "
        f"{chart.x_max}"
    )
    return mark_safe(  # noqa: S308 - the name is escaped by _e; the rest are numbers
        f'<figure class="metric-chart"><figcaption><span class="metric-name" title="{name}">'
        f'{name}</span><span class="metric-last" title="The last value">{last}</span>'
        f'</figcaption><svg class="metric-svg" viewBox="0 0 {_MW} {_MH}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>'
        f'<line class="grid" x1="{_ML}" y1="{_MT}" x2="{right}" y2="{_MT}"/>'
        f'<line class="axis" x1="{_ML}" y1="{base}" x2="{right}" y2="{base}"/>'
        f'<text class="end y-max" x="{_ML - 4}" y="{_MT + 4}">{_e(_num(chart.high))}</text>'
        f'<text class="end y-min" x="{_ML - 4}" y="{base}">{_e(_num(chart.low))}</text>'
        f'<text class="x-min" x="{_ML}" y="{_MH - 3}">{_e(chart.x_min)}</text>'
        f'<text class="end x-max" x="{right}" y="{_MH - 3}">{_e(chart.x_max)}</text>'
        f'<polyline points="{points}"/></svg></figure>'
    )


# --- the Jobs page's rows ------------------------------------------------------------------------

_FOREIGN_MARK = (
    ' <span class="owner-mark is-foreign" title="No launch or adoption by SkyDeck carries this '
    'job id: someone started it outside SkyDeck">not launched by SkyDeck</span>'
)


def _reltime(value: datetime | None, empty: str = dashboard.MISSING) -> str:
    if value is None:
        return f'<span class="muted">{_e(empty)}</span>'
    exact = timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f'<time datetime="{_e(value.isoformat())}" title="{_e(exact)}" data-rel>'
        f"{_e(dashboard.ago(value))}</time>"
    )


@register.simple_tag
def job_row(job: Any, next_query: str) -> str:
    """One row of /jobs (``<tr>``), in Python like the deck's rows: 50 rows through the
    template engine cost more than the rest of the page. ``next_query`` is ``next=<this page>``,
    url-encoded; jobs.html has the column heads."""
    jid = int(job.id)
    if job.job_link:
        ident = f'<a href="{_e(job.job_link)}" target="_blank" rel="noopener noreferrer">{jid}</a>'
    else:
        ident = f'<span class="job-id">{jid}</span>'
    if job.logs_link:
        ident += (
            f' <a class="small" href="{_e(job.logs_link)}" target="_blank" '
            f'rel="noopener noreferrer">logs</a>'
        )
    ident += (
        f' <a class="small job-log-link" href="{dashboard.fast_url("job_log", jid)}" '
        f'title="Stream this job\'s log">log</a>'
    )
    if job.experiment_pk:
        name = (
            f'<a href="{dashboard.fast_url("experiment_detail", int(job.experiment_pk))}">'
            f"{_e(job.job_name or job.experiment_id)}</a>"
        )
    else:
        name = (
            f'<span class="mono">{_e(job.job_name or "(unnamed)")}</span> '
            '<span class="badge tone-idle" title="No experiment has this name">orphaned</span>'
        )
    state = _badge(job.status) + _job_flags(job.status, job.stalled, job.recovery_count, "This job")
    if job.is_active and job.status != "CANCELLING":
        cancel = dashboard.fast_url("job_cancel", jid)
        who = _e(job.user_name or "unknown user")
        state += (
            f' <a class="btn tiny danger job-cancel" href="{cancel}?{_e(next_query)}" '
            f'data-confirm-url="{cancel}" aria-haspopup="dialog" '
            f'aria-label="Cancel job {jid} ({who})">Cancel</a>'
        )
    user = f'<span class="job-user">{_e(job.user_name or dashboard.MISSING)}</span>'
    if not job.owned:
        user += _FOREIGN_MARK
    return mark_safe(  # noqa: S308 - every value is escaped by _e or is a number
        f'<tr>\n      <td class="num">{ident}</td>\n      <td>{name}</td>\n'
        f'      <td class="nowrap">{state}</td>\n      <td>{user}</td>\n'
        f'      <td class="nowrap">{_reltime(job.submitted_at)}</td>\n'
        f'      <td class="nowrap">{_reltime(job.started_at)}</td>\n'
        f'      <td class="nowrap">{_reltime(job.ended_at)}</td>\n'
        f'      <td class="nowrap">{_e(dashboard.duration_text(job.duration))}</td>\n'
        f'      <td class="clip" title="{_e(job.resources)}">{_e(job.resources or dashboard.MISSING)}</td>\n'
        f'      <td class="num">{int(job.recovery_count)}</td>\n'
        f'      <td class="clip failure" title="{_e(job.failure_reason)}">{_e(job.failure_reason)}</td>\n'
        f"    </tr>\n"
    )
