"""Experiment names on both sides of the one name rule (SkyPilot's task-name rule, issue 13).

Every place that checks a name (the validator, the model, the forms, the serializers, the
OpenAPI pattern) is tested against all of these, so they all agree on each one.
"""

from __future__ import annotations

from experiments.validation import NAME_MAX_LENGTH

#: 128 characters, separators included, valid.
LONGEST_NAME = ("a1._" * NAME_MAX_LENGTH)[: NAME_MAX_LENGTH - 1] + "z"

# a leading digit and two separators ("a..b") are fine
GOOD_NAMES = [
    "a",
    "ab",
    "A1",
    "exp1",
    "baseline",
    "lr-0.1",
    "relh.sweep-3_lr.0001",
    "A.b-c_d9",
    "a..b",
    "a__b",
    "a._b",
    "a-_b",
    "run_2024-01-01",
    "1a",
    "1abc",
    "9lives",
    "007x",
    "1.2",
    "x" * NAME_MAX_LENGTH,
    LONGEST_NAME,
]
BAD_NAMES = [
    "",
    "1",
    "0",
    "123",  # digits only would read as an id
    "12345",
    "-a",
    "-abc",
    "a-",
    "abc-",
    ".a",
    "a.",
    "abc.",
    "_abc",
    "..",
    "../etc",
    "a...b",
    "a-_-b",
    "a b",
    "foo bar",
    "foo (copy)",
    "a/b",
    "foo/bar",
    "a\\b",
    "a\nb",
    "a:b",
    "a;b",
    "a;rm",
    "a$b",
    "é",
    "naïve",
    "١٢",  # digits, but not ASCII ones
    "\uff211",  # a fullwidth A
    "a\x00",
    "a\x00b",
    "x" * (NAME_MAX_LENGTH + 1),
]
#: Refused as they stand; the UI and admin forms strip the whitespace around them first.
PADDED_NAMES = ["a\n", "abc\n", "\na"]
