"""Validation rules shared by models, forms, admin and API.

Experiment names end up in SkyPilot task YAML, in shell command lines and in S3 prefixes, so they
are held to SkyPilot's task-name rule and kept free of anything a path could interpret.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, ProhibitNullCharactersValidator

from experiments import progress

# --- limits: the one place each is written --------------------------------------------------
# The model fields use these (max_length, validators, ``clean()``); the UI forms, the admin's
# ModelForms and the API serializers read them from there or from here, never as literals, so
# whatever one of them accepts the others accept too (an experiment saved in the UI or the admin
# survives an API GET -> PUT round trip: tests/test_round_trip.py).

NAME_MAX_LENGTH = 128
GROUP_NAME_MAX_LENGTH = 128
ACCELERATOR_MAX_LENGTH = 64
GIT_REF_MAX_LENGTH = 200
BASE_COMMAND_MAX_LENGTH = 500
TOOL_PATH_MAX_LENGTH = 500
DESCRIPTION_MAX_LENGTH = 100_000
TAG_MAX_LENGTH = 64
MAX_TAGS = 200
FLAG_KEY_MAX_LENGTH = 200
#: Longest string value of a flag.
MAX_FLAG_STRING = 10_000
#: Most flag names one list holds: a group's flag columns (and one flags_patch's ``remove``).
MAX_FLAG_NAMES = 1000
NODES_MIN = 1
NODES_MAX = 1024
GPUS_MIN = 0
#: GPUs per node.
GPUS_MAX = 64
#: nodes x GPUs per node (``Experiment.clean()``).
MAX_TOTAL_GPUS = 4096

# --- patterns --------------------------------------------------------------------------------

#: SkyPilot 0.14.1's task-name rule (``sky/task.py``), exactly: alphanumeric runs joined by one or
#: two of ``. _ -``. Every pattern here is unanchored and used with ``fullmatch`` only: ``$`` (and
#: ``match``) would also accept a value with a trailing newline.
NAME_RE = re.compile(r"[a-zA-Z0-9]+(?:[._-]{1,2}[a-zA-Z0-9]+)*")
#: A name that is only this would read as an experiment id (``validate_experiment_name``).
NAME_ID_RE = re.compile(r"[0-9]+")
# Dotted flag paths such as ``trainer.optimizer.learning_rate``; segments may hold dashes.
FLAG_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_0-9][A-Za-z0-9_-]*)*")
ACCELERATOR_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{ACCELERATOR_MAX_LENGTH - 1}}}")
GIT_REF_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._/@+-]{{0,{GIT_REF_MAX_LENGTH - 1}}}")
TAG_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{TAG_MAX_LENGTH - 1}}}")


_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(value: Any) -> bool:
    """Lone UTF-16 surrogates (valid in JSON escapes) cannot be stored in UTF-8 or jsonb, nor
    answered as JSON: in strings, and in the keys and values of dicts and lists."""
    if isinstance(value, str):
        return _SURROGATE_RE.search(value) is not None
    if isinstance(value, Mapping):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_lone_surrogate(v) for v in value)
    return False


def is_experiment_name(value: Any) -> bool:
    """Whether ``value`` passes :func:`validate_experiment_name` (the one name rule)."""
    try:
        validate_experiment_name(value)
    except ValidationError:
        return False
    return True


def validate_experiment_name(value: str) -> None:
    """SkyPilot's own task-name rule (:data:`NAME_RE`), at most NAME_MAX_LENGTH characters, not
    all digits. Every layer applies this one function: the model field, the UI form, the
    admin's ModelForm (through the model) and the API serializers; the OpenAPI pattern is
    derived from the same regexes (``experiments.api.fields.NAME_PATTERN``).

    The rule never yields ``.``, ``..``, a slash or whitespace, so a name is also one safe S3 path
    segment (``a..b`` included). The one extra restriction: a name of digits only would read as
    an experiment id in URLs and API references, so it could not be addressed by name.
    """
    if not isinstance(value, str) or not value:
        raise ValidationError("Name is required.", code="required")
    if len(value) > NAME_MAX_LENGTH:
        raise ValidationError(
            f"Name is {len(value)} characters long; the limit is {NAME_MAX_LENGTH}.",
            code="max_length",
        )
    if not NAME_RE.fullmatch(value):
        raise ValidationError(
            "Name %(value)r is not allowed (SkyPilot's rule): letters and digits, joined by one or "
            "two of '-', '_' and '.'; start and end with a letter or digit; no spaces, slashes, "
            "newlines or other characters.",
            code="invalid_name",
            params={"value": value},
        )
    if NAME_ID_RE.fullmatch(value):
        raise ValidationError(
            "Name %(value)r is only digits, which would read as an experiment id: add a letter.",
            code="invalid_name",
            params={"value": value},
        )


def validate_flag_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise ValidationError("Flag names must be non-empty strings.", code="invalid_flag_key")
    if len(key) > FLAG_KEY_MAX_LENGTH or not FLAG_KEY_RE.fullmatch(key):
        raise ValidationError(
            "Flag name %(key)r is not allowed: use dotted names such as trainer.batch_size "
            "(letters, digits, '_' and '-' between dots).",
            code="invalid_flag_key",
            params={"key": key},
        )


def validate_flag_value(key: str, value: Any) -> None:
    """Flag values are scalars: they become ``key=value`` on a command line."""
    if isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(
                "Flag %(key)r must be a finite number.",
                code="invalid_flag_value",
                params={"key": key},
            )
        return
    if isinstance(value, str):
        if len(value) > MAX_FLAG_STRING:
            raise ValidationError(
                "Flag %(key)r is too long.", code="invalid_flag_value", params={"key": key}
            )
        if any(ord(c) < 32 and c != "\t" for c in value):
            raise ValidationError(
                "Flag %(key)r contains control characters (such as a newline).",
                code="invalid_flag_value",
                params={"key": key},
            )
        if has_lone_surrogate(value):  # the admin's JSON box decodes "\ud800" escapes
            raise ValidationError(
                "Flag %(key)r contains unpaired surrogate characters.",
                code="invalid_flag_value",
                params={"key": key},
            )
        return
    kind = "null" if value is None else type(value).__name__
    raise ValidationError(
        "Flag %(key)r has a %(kind)s value; values must be a string, number or boolean "
        "(nested values are not allowed: use a dotted name such as a.b instead).",
        code="invalid_flag_value",
        params={"key": key, "kind": kind},
    )


def validate_flags(flags: Any) -> None:
    if not isinstance(flags, dict):
        raise ValidationError("Flags must be an object of name: value pairs.", code="invalid_flags")
    errors: list[ValidationError] = []
    for key, value in flags.items():
        try:
            validate_flag_key(key)
            validate_flag_value(key, value)
        except ValidationError as exc:
            errors.append(exc)
    if errors:
        raise ValidationError(errors)


def _at_most(items: list, limit: int, what: str, code: str) -> None:
    if len(items) > limit:
        raise ValidationError(
            f"At most %(limit)d {what} (this has %(count)d).",
            code=code,
            params={"limit": limit, "count": len(items)},
        )


def validate_flag_key_list(keys: Any) -> None:
    """A group's column list: unique flag names."""
    if not isinstance(keys, list):
        raise ValidationError(
            "Flag columns must be a list of flag names.", code="invalid_flag_list"
        )
    _at_most(keys, MAX_FLAG_NAMES, "flag columns", "invalid_flag_list")
    for key in keys:
        validate_flag_key(key)
    if len(set(keys)) != len(keys):
        raise ValidationError("Flag columns must not repeat.", code="invalid_flag_list")


def validate_accelerator(value: str) -> None:
    if value and not ACCELERATOR_RE.fullmatch(value):
        raise ValidationError(
            "Accelerator %(value)r is not a valid name (e.g. H100, A10G, L4).",
            code="invalid_accelerator",
            params={"value": value},
        )


def validate_git_ref(value: str) -> None:
    if value and (
        not GIT_REF_RE.fullmatch(value) or ".." in value or value.endswith((".", "/", ".lock"))
    ):
        raise ValidationError(
            "Git ref %(value)r is not valid (a branch, tag or commit such as main or 1a2b3c4).",
            code="invalid_git_ref",
            params={"value": value},
        )


def validate_tags(tags: Any) -> None:
    if not isinstance(tags, list):
        raise ValidationError("Tags must be a list of strings.", code="invalid_tags")
    _at_most(tags, MAX_TAGS, "tags", "invalid_tags")
    for tag in tags:
        if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
            raise ValidationError(
                "Tag %(tag)r is not valid (letters, digits, '.', '_', ':', '-'; up to %(limit)d).",
                code="invalid_tags",
                params={"tag": tag, "limit": TAG_MAX_LENGTH},
            )


def validate_single_line(value: str) -> None:
    if value and any(ord(c) < 32 and c != "\t" for c in value):
        raise ValidationError(
            "Must be a single line without control characters.", code="single_line"
        )


def validate_description(value: str) -> None:
    """At most DESCRIPTION_MAX_LENGTH characters and no NUL (the API, UI and admin alike)."""
    MaxLengthValidator(DESCRIPTION_MAX_LENGTH)(value)
    ProhibitNullCharactersValidator()(value)


def validate_metric_patterns(value: Any) -> None:
    """A group's metric patterns: empty (None), or a list of regular expressions, each with
    the named groups ``key`` and ``value`` (the rules: ``experiments.progress``)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise ValidationError(
            "Metric patterns must be a list of regular expressions.", code="invalid_patterns"
        )
    _at_most(value, progress.MAX_PATTERNS, "metric patterns", "invalid_patterns")
    try:
        progress.compile_patterns(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid_patterns") from None


#: A JSON number token, or a string (skipped whole, so digits inside strings are left alone).
_JSON_NUMBER_OR_STRING = re.compile(r'"(?:\\.|[^"\\])*"|(-?\d+(?:\.\d+)?[eE]\+?\d+)')


class FlagsEncoder(json.JSONEncoder):
    """JSON for flag values that keeps a float a float on PostgreSQL.

    jsonb stores numbers as ``numeric``: ``1e+20`` (Python's form of a large float) comes back
    as the integer ``100000000000000000000``, so a float flag would turn into an int. A float
    with a positive exponent is always whole, so it is written out in full with ``.0``.
    """

    def encode(self, o: Any) -> str:
        def plain(match: re.Match[str]) -> str:
            number = match.group(1)
            return format(float(number), ".1f") if number else match.group(0)

        return _JSON_NUMBER_OR_STRING.sub(plain, super().encode(o))
