"""The deck's filter box: free text, ``tag:NAME`` filters and one ``sort:COLUMN`` (``-`` first:
descending), all in the one ``q`` the deck's URLs already carry, so a sorted or tag-filtered
view is a link to share and every section, row page and poll keeps it without more plumbing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Columns every row has, sortable by these names; anything else after ``sort:`` is a flag key
#: (``sort:flags.name`` reaches a flag whose key is one of these names).
FIXED_SORTS = {
    "name": "Name",
    "state": "State",
    "epoch": "Epoch",
    "shape": "Nodes\u00d7GPUs",
    "gpuh": "GPU-h",
}
FLAG_PREFIX = "flags."


@dataclass(frozen=True)
class Sort:
    column: str  # a FIXED_SORTS key, or "flags.<key>"
    descending: bool = False

    @property
    def flag(self) -> str | None:
        """The flag key sorted by, or None for a fixed column."""
        return self.column[len(FLAG_PREFIX) :] if self.column.startswith(FLAG_PREFIX) else None

    @property
    def label(self) -> str:
        return self.flag if self.flag is not None else FIXED_SORTS[self.column]

    @property
    def token(self) -> str:
        return f"sort:{'-' if self.descending else ''}{public_name(self.column)}"


@dataclass(frozen=True)
class DeckQuery:
    text: str = ""  # the free text (matched against names, descriptions, states, flags)
    tags: tuple[str, ...] = ()
    sort: Sort | None = None
    words: tuple[str, ...] = field(default=(), repr=False)  # the tokens as typed, but sort

    @property
    def filters(self) -> bool:
        """Whether it hides anything (a sort alone shows every experiment)."""
        return bool(self.text or self.tags)


def public_name(column: str) -> str:
    """How a sort column is written after ``sort:``: a flag by its key, unless that is the name
    of a fixed column."""
    if column.startswith(FLAG_PREFIX):
        key = column[len(FLAG_PREFIX) :]
        return column if key in FIXED_SORTS else key
    return column


def sort_column(name: str) -> str:
    """The column of ``sort:NAME``: a fixed one, else the flag ``NAME``."""
    if name in FIXED_SORTS or name.startswith(FLAG_PREFIX):
        return name
    return FLAG_PREFIX + name


def parse(q: str | None) -> DeckQuery:
    """Split the filter box: the last ``sort:`` wins; ``tag:`` tokens all have to match."""
    words = (q or "").split()
    tags: list[str] = []
    rest: list[str] = []
    sort = None
    for word in words:
        lower = word.lower()
        if lower.startswith("sort:") and len(word) > len("sort:"):
            name = word[len("sort:") :]
            descending = name.startswith("-")
            name = name.lstrip("-")
            if name:
                sort = Sort(sort_column(name), descending)
            continue
        if lower.startswith("tag:") and len(word) > len("tag:"):
            tags.append(word[len("tag:") :])
        rest.append(word)
    text = " ".join(w for w in rest if not w.lower().startswith("tag:"))
    return DeckQuery(text=text, tags=tuple(tags), sort=sort, words=tuple(rest))


def with_sort(q: str | None, column: str) -> str:
    """The filter box after a click on ``column``'s header: ascending first, then descending,
    then back to the deck's own order; the rest of the box is kept."""
    current = parse(q)
    if current.sort is None or current.sort.column != column:
        sort: Sort | None = Sort(column)
    elif not current.sort.descending:
        sort = Sort(column, True)
    else:
        sort = None
    return " ".join([*current.words, *([sort.token] if sort else [])])


def without_sort(q: str | None) -> str:
    return " ".join(parse(q).words)
