"""Sorting and self-refresh of the /jobs and /operations lists (helpers for experiments.views).

The sort names are the API's ``ordering`` names (experiments.api.filters ``*_SORT_COLUMNS``),
so ``/jobs?sort=-user`` and ``/api/jobs/?ordering=-user`` list the same rows in the same order.
A page sorts with ``?sort=``; an unknown name is named in a notice and the default order is
kept, so a shared link still opens. The self-refresh compares a fingerprint of what the table
shows (the rendered rows without their relative times, which the browser keeps current), so
an unchanged table costs the browser nothing: the answer is a 204 and htmx swaps nothing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import HttpRequest, QueryDict

#: Query parameters the list pages read themselves (besides their filters).
SORT_PARAM = "sort"
VERSION_PARAM = "v"
PAGE_OWN_PARAMS = frozenset({"page", SORT_PARAM, VERSION_PARAM})
#: How often /jobs asks whether its table changed (the deck's poll is 10 s too).
DEFAULT_REFRESH_SECONDS = 10

_RELATIVE_TIME = re.compile(r"(<time [^>]*>)[^<]*(</time>)")


def refresh_seconds() -> int:
    """The poll interval of /jobs; SKYDECK_LIST_REFRESH_SECONDS lets tests shorten it."""
    return max(1, int(getattr(settings, "SKYDECK_LIST_REFRESH_SECONDS", DEFAULT_REFRESH_SECONDS)))


def table_version(html: str) -> str:
    """A fingerprint of a rendered table: equal when the rows show the same thing.

    Relative times ("5 min ago") are left out: skydeck.js keeps them current by itself.
    """
    stable = _RELATIVE_TIME.sub(r"\1\2", html)
    return hashlib.sha256(stable.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Column:
    """One column head: its label, and the sort name it toggles (None: not sortable)."""

    label: str
    sort: str | None = None
    css: str = ""
    title: str = ""


@dataclass
class Sorting:
    """What ``?sort=`` asked for, checked against the list's columns.

    ``value`` is what goes to the filter set's ``ordering`` (None: the list's default order);
    ``notice`` says why a given value was not used.
    """

    columns: dict[str, tuple[str, ...]]
    default: str
    default_text: str
    value: str | None = None
    notice: str = ""
    keys: list[str] = field(default_factory=list)

    @classmethod
    def from_request(
        cls,
        request: HttpRequest,
        columns: dict[str, tuple[str, ...]],
        default: str,
        default_text: str,
    ) -> Sorting:
        sorting = cls(columns=columns, default=default, default_text=default_text)
        given = [value.strip() for value in request.GET.getlist(SORT_PARAM) if value.strip()]
        if not given:
            # the API's name works on the page too (the filter set reads it, and refuses a
            # bad one): the heads then show what it sorted by
            ordering = [p.strip() for p in request.GET.get("ordering", "").split(",")]
            valid = ordering != [""] and all(p.removeprefix("-") in columns for p in ordering)
            sorting.keys = ordering if valid else [default]
            return sorting
        keys = [part.strip() for part in ",".join(given).split(",") if part.strip()]
        unknown = [key for key in keys if key.removeprefix("-") not in columns]
        if unknown:
            names = ", ".join(f'"{key.removeprefix("-")}"' for key in unknown)
            noun = "column" if len(unknown) == 1 else "columns"
            sorting.notice = (
                f"Unknown sort {noun} {names}; sorted by {default_text}. "
                f"Sort by: {', '.join(columns)} (- in front: descending)."
            )
            sorting.keys = [default]
            return sorting
        sorting.value = ",".join(keys)
        sorting.keys = keys
        return sorting

    def heads(self, request: HttpRequest, columns: list[Column]) -> list[dict[str, Any]]:
        """Each column head with the link that sorts by it (ascending first, then toggling),
        keeping the filters and going back to page 1, and its aria-sort and arrow."""
        first = self.keys[0] if self.keys else ""
        current, descending = first.removeprefix("-"), first.startswith("-")
        heads = []
        for column in columns:
            head: dict[str, Any] = {"column": column, "href": "", "aria_sort": "", "arrow": ""}
            if column.sort:
                sorted_here = column.sort == current
                next_key = column.sort if (not sorted_here or descending) else f"-{column.sort}"
                params: QueryDict = request.GET.copy()
                for name in PAGE_OWN_PARAMS | {"ordering"}:
                    params.pop(name, None)
                params[SORT_PARAM] = next_key
                head["href"] = f"?{params.urlencode()}"
                if sorted_here:
                    head["aria_sort"] = "descending" if descending else "ascending"
                    head["arrow"] = "▼" if descending else "▲"
                direction = "descending" if next_key.startswith("-") else "ascending"
                head["hint"] = f"Sort by {column.label.lower()}, {direction}"
            heads.append(head)
        return heads


JOB_COLUMNS = [
    Column("Job", "id", "num"),
    Column("Name", "name"),
    Column("Status", "status"),
    Column("User", "user"),
    Column("Submitted", "submitted_at"),
    Column("Started", "started_at"),
    Column("Ended", "ended_at"),
    Column("Duration", "duration"),
    Column("Resources", "resources", title="Sorts by nodes, then GPUs per node, then accelerator"),
    Column("Rec.", "recoveries", "num", title="Recoveries"),
    Column("Failure", "failure"),
]

OPERATION_COLUMNS = [
    Column("When", "created_at"),
    Column("Actor", "actor"),
    Column("Operation", "operation"),
    Column("Experiment", "experiment"),
    Column("Job", "job_id", "num"),
    Column("Outcome", "success"),
    Column("Message"),
]


def page_path(request: HttpRequest) -> str:
    """This page's URL without the poll's ``v``: what links back to it and the poll ask for."""
    params: QueryDict = request.GET.copy()
    params.pop(VERSION_PARAM, None)
    query = params.urlencode()
    return f"{request.path}?{query}" if query else request.path


_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


def log_filename(job: Any) -> str:
    """``<experiment>-<job id>.log`` for a downloaded log, safe in a quoted header value
    (a job's name comes from SkyPilot: anything but letters, digits and ``._-`` becomes _)."""
    name = _UNSAFE_FILENAME.sub("_", job.experiment_id or job.job_name or "job").strip("._")
    return f"{name[:100] or 'job'}-{int(job.id)}.log"
