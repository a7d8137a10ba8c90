"""What an experiment launches: the command line and the SkyPilot task YAML.

The reconciler submits exactly what :func:`build_task_yaml` returns, and the UI and API show the
same text as the launch preview. Every part of the command is shell-quoted, so flag values such
as ``a; rm -rf /`` or ``$(x)`` reach the program as plain strings.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from experiments.models import Experiment


class LaunchConfigError(Exception):
    """The experiment (or the site template) cannot be turned into a task."""


def format_flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_command_parts(experiment: Experiment) -> list[str]:
    """``base_command tool_path run={name} key=value ...`` as unquoted argv parts (flags sorted)."""
    if not experiment.base_command.strip() and not experiment.tool_path.strip():
        raise LaunchConfigError(
            f"{experiment.name} has no command: set its base command and/or tool path"
        )
    try:
        parts = shlex.split(experiment.base_command) if experiment.base_command else []
    except ValueError as exc:
        raise LaunchConfigError(
            f"{experiment.name}: base command cannot be parsed: {exc}"
        ) from None
    if experiment.tool_path:
        parts.append(experiment.tool_path)
    parts.append(f"run={experiment.name}")
    for key in sorted(experiment.flags):
        parts.append(f"{key}={format_flag_value(experiment.flags[key])}")
    return parts


def build_command(experiment: Experiment) -> str:
    """The shell command the task runs, every part quoted."""
    return shlex.join(build_command_parts(experiment))


def commands_text(experiments: Iterable[Experiment]) -> str:
    """Every experiment's command, one line each, ready to paste into a shell.

    An experiment that has no valid command becomes a ``#`` comment saying why, so a pasted
    block never runs half of a broken line.
    """
    lines = []
    for experiment in experiments:
        try:
            lines.append(build_command(experiment))
        except LaunchConfigError as exc:
            lines.append("# " + " ".join(str(exc).split()))
    return "".join(line + "\n" for line in lines)


def load_task_template() -> dict[str, Any]:
    """The site's task template (``SKYDECK_TASK_TEMPLATE``), or an empty one when unset."""
    path = settings.SKYDECK_TASK_TEMPLATE
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as exc:
        raise ImproperlyConfigured(f"SKYDECK_TASK_TEMPLATE {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ImproperlyConfigured(
            f"SKYDECK_TASK_TEMPLATE {path} is not valid YAML: {exc}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f"SKYDECK_TASK_TEMPLATE {path} must hold a YAML mapping")
    for key in ("name", "run", "num_nodes"):
        if key in data:
            raise ImproperlyConfigured(
                f"SKYDECK_TASK_TEMPLATE {path} sets {key!r}, which comes from each experiment"
            )
    return data


def accelerator_for(experiment: Experiment) -> str | None:
    """``H100:8`` style request, or None for a CPU-only task."""
    if not experiment.gpus:
        return None
    name = experiment.accelerator or settings.SKYDECK_DEFAULT_ACCELERATOR
    if not name:
        raise LaunchConfigError(
            f"{experiment.name} asks for {experiment.gpus} GPUs per node but names no accelerator, "
            "and SKYDECK_DEFAULT_ACCELERATOR is not set"
        )
    return f"{name}:{experiment.gpus}"


def build_task(experiment: Experiment, *, launch_id: str = "") -> dict[str, Any]:
    """The task as a mapping: the site template with the experiment's own parts on top.

    ``launch_id`` (the reconciler's launch token) goes into the envs as ``SKYDECK_LAUNCH_ID``,
    so the job of a launch whose answer was lost is found by it, never guessed by name.
    """
    task = copy.deepcopy(load_task_template())
    task["name"] = experiment.name
    task["num_nodes"] = experiment.nodes
    resources = dict(task.get("resources") or {})
    accelerator = accelerator_for(experiment)
    if accelerator:
        resources["accelerators"] = accelerator
    else:
        resources.pop("accelerators", None)
    if resources:
        task["resources"] = resources
    else:
        task.pop("resources", None)
    envs = dict(task.get("envs") or {})
    envs["SKYDECK_EXPERIMENT"] = experiment.name
    if launch_id:
        envs["SKYDECK_LAUNCH_ID"] = launch_id
    if experiment.git_ref:
        envs["SKYDECK_GIT_REF"] = experiment.git_ref
        if isinstance(task.get("workdir"), dict):
            task["workdir"] = {**task["workdir"], "ref": experiment.git_ref}
    task["envs"] = envs
    task["run"] = build_command(experiment)
    return task


def build_task_yaml(experiment: Experiment, *, launch_id: str = "") -> str:
    """The exact YAML text the reconciler submits (the preview shows it without a launch id)."""
    return yaml.safe_dump(
        build_task(experiment, launch_id=launch_id), sort_keys=False, default_flow_style=False
    )


def launch_preview(experiment: Experiment) -> dict[str, str]:
    """Command and YAML, or the reason there is none, for the UI and API."""
    try:
        return {"command": build_command(experiment), "task_yaml": build_task_yaml(experiment)}
    except (LaunchConfigError, ImproperlyConfigured) as exc:
        return {"error": str(exc)}
