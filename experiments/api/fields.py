"""The API's strict fields: JSON types and sizes, patterns the schema states, experiment refs.

A string is a string and a boolean a boolean; unknown keys are errors (``StrictSerializer``).
The real rules are the model's ``full_clean()`` behind ``experiments.services``; the limits
here are read from the model and ``experiments.validation``, never written twice, and the
patterns the schema states are derived from validation's regexes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core.validators import MaxLengthValidator, RegexValidator
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject
from rest_framework.settings import api_settings

from experiments import validation
from experiments.validation import (
    ACCELERATOR_RE,
    FLAG_KEY_MAX_LENGTH,
    FLAG_KEY_RE,
    GIT_REF_RE,
    NAME_ID_RE,
    NAME_MAX_LENGTH,
    NAME_RE,
    TAG_RE,
    has_lone_surrogate,
)

#: Ids are 64-bit: larger numbers are rejected before they reach the database.
MAX_ID = 2**63 - 1
#: Most experiments one bulk request may name.
MAX_BULK_ITEMS = 1000
NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY


def is_digits(text: str) -> bool:
    """Only 0-9 (``str.isdigit`` also accepts characters such as "³" that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


class SchemaPattern(RegexValidator):
    """Documents a pattern in the OpenAPI schema without enforcing it here.

    The model's validators (run by the services' ``full_clean()``) stay the one place the rule
    is checked, with their own messages; the pattern lets clients and generators know it.
    """

    def __call__(self, value: Any) -> None:
        return None


class SchemaMaxLength(MaxLengthValidator):
    """States ``maxLength`` in the schema for a field whose rule (a validator function of
    ``experiments.validation``) checks the length itself, with its own message."""

    def __call__(self, value: Any) -> None:
        return None


def _whole(regex: re.Pattern[str], *, blank: bool = False, prefix: str = "") -> str:
    """A validator's (unanchored, ``fullmatch``) regex as a JSON Schema pattern.

    JSON Schema patterns are ECMA-262 regexes, where ``$`` (without the m flag) matches only at
    the very end: ``^(?:...)$`` there is the full match the validators do in Python.
    """
    body = f"(?:{regex.pattern})"
    return f"^{prefix}{body}{'?' if blank else ''}$"


def whole_numbers_up_to(limit: int) -> str:
    """A regex (unanchored) for the whole numbers 1 to ``limit``, without leading zeros."""
    digits = str(limit)
    parts = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    for i, digit in enumerate(digits):
        low, high = (1 if i == 0 else 0), int(digit) - 1
        if high >= low:
            rest = len(digits) - i - 1
            parts.append(f"{digits[:i]}[{low}-{high}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(digits)
    return "(?:" + "|".join(parts) + ")"


#: ``validate_experiment_name`` as a JSON Schema pattern: NAME_RE, and not NAME_ID_RE alone.
NAME_PATTERN = SchemaPattern(_whole(NAME_RE, prefix=f"(?!(?:{NAME_ID_RE.pattern})$)"))
ACCELERATOR_PATTERN = SchemaPattern(_whole(ACCELERATOR_RE, blank=True))
GIT_REF_PATTERN = SchemaPattern(
    _whole(GIT_REF_RE, blank=True, prefix=r"(?!.*\.\.)(?!.*(\.|/|\.lock)$)")
)
TAG_PATTERN = SchemaPattern(_whole(TAG_RE))
FLAG_KEY_PATTERN = SchemaPattern(_whole(FLAG_KEY_RE))
SINGLE_LINE_PATTERN = SchemaPattern(r"^[^\x00-\x08\x0a-\x1f]*$")


class UniqueListField(serializers.ListField):
    """A list whose items may not repeat (the model refuses repeats); the schema says
    ``uniqueItems`` (``UniqueListFieldExtension``)."""


class UniqueListFieldExtension(OpenApiSerializerFieldExtension):
    target_class = UniqueListField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "uniqueItems": True}


# --- strict scalar fields -------------------------------------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string and nothing else (DRF's CharField would turn 12 into "12")."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """``true`` or ``false`` only (DRF's BooleanField also takes "yes", 1, "on", ...)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only (no strings, floats or booleans)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class IdField(StrictIntegerField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class ExperimentNameField(StrictCharField):
    """An experiment's name, judged by ``validation.validate_experiment_name`` (the rule the
    model, the UI form and the admin apply: same verdict, same messages); the schema states it
    as NAME_PATTERN and NAME_MAX_LENGTH."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "Also the SkyPilot job name and the S3 folder name.")
        super().__init__(
            validators=[
                validation.validate_experiment_name,
                NAME_PATTERN,
                SchemaMaxLength(NAME_MAX_LENGTH),
            ],
            **kwargs,
        )


#: A flag name (``validate_flag_key``): FLAG_KEY_RE, 1 to FLAG_KEY_MAX_LENGTH characters.
FLAG_NAME_PATTERN = _whole(FLAG_KEY_RE, prefix=rf"(?![\s\S]{{{FLAG_KEY_MAX_LENGTH + 1}}})")
FLAG_VALUE_SCHEMA = {
    "oneOf": [
        {
            "type": "string",
            "maxLength": validation.MAX_FLAG_STRING,
            "pattern": SINGLE_LINE_PATTERN.regex.pattern,
        },
        {"type": "number"},
        {"type": "boolean"},
    ],
    "description": "A string, number or boolean.",
}


@extend_schema_field(
    {
        "type": "object",
        # Names as validate_flag_key takes them. OpenAPI 3.0 (JSON Schema draft 4) has no
        # propertyNames: a name is allowed by matching the one patternProperties key.
        "patternProperties": {FLAG_NAME_PATTERN: FLAG_VALUE_SCHEMA},
        "additionalProperties": False,
        "description": "Flag name -> value; names are dotted (trainer.batch_size), values are "
        "strings, numbers or booleans.",
    }
)
class FlagsField(serializers.Field):
    """A JSON object of flags; the model's validators judge names and values."""

    default_error_messages = {
        "invalid": "Flags must be an object of name: value pairs.",
        "surrogate": "Flags must not contain unpaired surrogate characters.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.fail("invalid")
        if has_lone_surrogate(data):
            self.fail("surrogate")
        return dict(data)

    def to_representation(self, value: Any) -> Any:
        return value


class ExperimentRef:
    """An experiment named in a request by id or by name."""

    __slots__ = ("id", "name", "raw")

    def __init__(self, raw: int | str) -> None:
        self.raw = raw
        self.id: int | None = None
        self.name: str | None = None
        if isinstance(raw, int):
            self.id = raw
        elif is_digits(raw):
            self.id = int(raw)
        else:
            self.name = raw

    @property
    def key(self) -> tuple[str, Any]:
        return ("id", self.id) if self.id is not None else ("name", self.name)

    def __repr__(self) -> str:
        return f"ExperimentRef({self.raw!r})"


#: An experiment named in a request body, as ``ExperimentRefField`` takes it: an integer id, or a
#: string of 1 to 128 characters: digits only are an id (1 to MAX_ID, leading zeros allowed),
#: anything else is a name. A name that breaks the naming rule is not refused here: it names no
#: experiment (the bulk answer reports it per item as invalid, the group calls as no such one).
EXPERIMENT_REF_ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
EXPERIMENT_REF_STRING_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": NAME_MAX_LENGTH,
    "pattern": rf"^(?:[\s\S]*[^0-9][\s\S]*|0*{whole_numbers_up_to(MAX_ID)})$",
}
EXPERIMENT_REF_SCHEMA = {
    "oneOf": [
        {**EXPERIMENT_REF_ID_SCHEMA, "description": "id"},
        {**EXPERIMENT_REF_STRING_SCHEMA, "description": "name (or an id as digits)"},
    ]
}


@extend_schema_field(
    {**EXPERIMENT_REF_SCHEMA, "description": "An experiment id (integer) or name (string)."}
)
class ExperimentRefField(serializers.Field):
    default_error_messages = {
        "invalid": "Name an experiment by id (an integer) or name (a string).",
        "range": f"Experiment ids are between 1 and {MAX_ID}.",
        "length": f"Experiment names are 1 to {NAME_MAX_LENGTH} characters long.",
    }

    def to_internal_value(self, data: Any) -> ExperimentRef:
        if isinstance(data, bool) or not isinstance(data, int | str):
            self.fail("invalid")
        if isinstance(data, int) and not 1 <= data <= MAX_ID:
            self.fail("range")
        if isinstance(data, str):
            if not 1 <= len(data) <= NAME_MAX_LENGTH:
                self.fail("length")
            if is_digits(data) and not 1 <= int(data) <= MAX_ID:
                self.fail("range")
        return ExperimentRef(data)

    def to_representation(self, value: Any) -> Any:
        return value.raw if isinstance(value, ExperimentRef) else value


class StrictSerializerMixin:
    """A JSON object; unknown or read-only keys are rejected (400), never ignored.

    ``refused_fields`` names keys that are not accepted here with the reason why.
    """

    refused_fields: dict[str, str] = {}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError(
                {NON_FIELD: [f"Expected a JSON object, got {type(data).__name__}."]},
                code="invalid",
            )
        errors = {}
        for key in data:
            field = self.fields.get(key)  # type: ignore[attr-defined]
            if key in self.refused_fields:
                errors[key] = [self.refused_fields[key]]
            elif field is None:
                errors[key] = ["Unknown field."]
            elif field.read_only:
                errors[key] = ["This field is read-only."]
        if errors:
            raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


class StrictSerializer(StrictSerializerMixin, serializers.Serializer):
    pass


# --- fast reading -----------------------------------------------------------------------------


def _fast_reader(serializer: serializers.Serializer, field: serializers.Field) -> Any:
    """How FastRepresentation reads one field: DRF's result, with less of its per-value path."""
    if isinstance(field, serializers.SerializerMethodField):
        return getattr(serializer, field.method_name)
    attrs = field.source_attrs
    kind = type(field)
    if len(attrs) == 1 and kind in _PLAIN:
        attr, convert = attrs[0], _PLAIN[kind]

        def plain(instance: Any) -> Any:
            value = getattr(instance, attr)
            return None if value is None else convert(value)

        return plain
    if (
        len(attrs) == 1
        and kind is serializers.DateTimeField
        and getattr(field, "format", api_settings.DATETIME_FORMAT) == ISO_8601
    ):
        attr = attrs[0]
        zone = field.timezone if hasattr(field, "timezone") else field.default_timezone()

        def moment(instance: Any) -> Any:
            value = getattr(instance, attr)
            if value is None or zone is None or value.utcoffset() is None:
                return None if value is None else field.to_representation(value)
            text = value.astimezone(zone).isoformat()
            return text[:-6] + "Z" if text.endswith("+00:00") else text

        return moment

    def general(instance: Any) -> Any:
        value = field.get_attribute(instance)
        check = value.pk if isinstance(value, PKOnlyObject) else value
        return None if check is None else field.to_representation(value)

    return general


_PLAIN = {
    serializers.CharField: str,
    serializers.IntegerField: int,
    serializers.FloatField: float,
    serializers.BooleanField: bool,
}


class FastRepresentation:
    """Mixed into the read serializers (before ModelSerializer): ``to_representation`` runs a
    plan of readers made once per serializer instance (a list's one child serves every row)
    instead of DRF's per-value path: the same answer (tests compare the two field by field),
    about three times faster on a page of 100 experiments or jobs.

    A field whose attribute is missing (SkipField) is left out, as DRF does."""

    def _reading_plan(self) -> list[tuple[str, Any]]:
        plan = self.__dict__.get("_reading")
        if plan is None:
            plan = [(f.field_name, _fast_reader(self, f)) for f in self._readable_fields]
            self.__dict__["_reading"] = plan
        return plan

    def to_representation(self, instance: Any) -> dict[str, Any]:
        out = {}
        for name, read in self._reading_plan():
            try:
                out[name] = read(instance)
            except SkipField:
                continue
        return out
