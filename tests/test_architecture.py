"""The import picture of the README's "Architecture" section, checked on the source.

Every ``import`` (module level and inside functions) of every SkyDeck module is read with
``ast`` and placed in a layer; a module may import its own layer and the layers below, and the
web reaches the outside world only through ``syncing.services``. A forbidden arrow or a cycle
between layers fails here with the file and line, before it grows.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("experiments", "syncing", "backups", "skydeck_site")

#: Helpers that import no SkyDeck module: anyone may use them.
BASE = {"skydeck_site.env", "skydeck_site.filemodes", "skydeck_site.storage"}
#: The domain: models, rules and the database side of every act. Knows no web, no outside world.
DOMAIN = {
    "experiments",
    "experiments.apps",
    "experiments.models",
    "experiments.querysets",
    "experiments.validation",
    "experiments.services",
    "experiments.control",
    "experiments.launching",
    "experiments.choices",
    "experiments.deckchanges",
    "experiments.deckquery",
    "experiments.triage",
    "experiments.progress",
    "experiments.usage",
    "experiments.budgets",
    "experiments.revisions",
}
#: Layers from the bottom; a module imports its own layer or lower ones.
LAYERS = ["base", "domain", "syncing", "backups", "web", "site"]
#: Old dotted paths stored in django-q2 schedule rows and queued tasks (syncing.tasks).
ALIASES = {("syncing.tasks", "backups.tasks")}


def layer(module: str) -> str:
    if module in BASE:
        return "base"
    if module in DOMAIN or module.startswith("experiments.migrations"):
        return "domain"
    if module.startswith("experiments"):
        return "web"
    if module.startswith("syncing"):
        return "syncing"
    if module.startswith("backups"):
        return "backups"
    return "site"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every SkyDeck import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from syncing import services`` imports syncing.services
            names = [f"{base}.{alias.name}" if _is_module(f"{base}.{alias.name}") else base
                     for alias in node.names]  # fmt: skip
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in PACKAGES]
    return found


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def sources() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    )


@cache
def edges() -> list[tuple[str, int, str]]:
    return [(module_name(p), line, target) for p in sources() for line, target in imports(p)]


def test_the_source_tree_is_what_the_picture_names():
    names = {module_name(p) for p in sources()}
    assert {"syncing.services", "syncing.health", "backups.backup", "skydeck_site.admin"} <= names
    assert {"experiments.api.urls", "experiments.api.filters"} <= names
    assert not names & {"experiments.backup", "experiments.health", "experiments.serializers"}


def test_every_import_points_down_the_layers():
    wrong = [
        f"{source}:{line} imports {target} ({layer(source)} -> {layer(target)})"
        for source, line, target in edges()
        if LAYERS.index(layer(target)) > LAYERS.index(layer(source))
        and (source, target) not in ALIASES
    ]
    assert wrong == []


@pytest.mark.parametrize("outside", ["syncing.skypilot", "syncing.s3", "syncing.joblogs"])
def test_the_web_reaches_the_outside_world_only_through_syncing_services(outside):
    wrong = [
        f"{source}:{line} imports {target}"
        for source, line, target in edges()
        if layer(source) in {"web", "domain"} and target.startswith("syncing")
        and target != "syncing.services"
    ]  # fmt: skip
    assert wrong == []
    assert any(t == "syncing.services" for s, _, t in edges() if layer(s) == "web")
    assert any(t == outside for s, _, t in edges() if s.startswith("syncing"))


def test_no_import_cycle_between_modules():
    graph: dict[str, set[str]] = {}
    for source, _, target in edges():
        if target != source and not target.startswith(f"{source}."):
            graph.setdefault(source, set()).add(target)
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_every_package_is_installed_by_pip():
    """``pip install -e .`` maps only the packages pyproject.toml names: a new app must be listed
    (tests run from the checkout and would never notice; ``skydeck serve`` would not start)."""
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    assert {f"{package}*" for package in PACKAGES} <= set(include)
