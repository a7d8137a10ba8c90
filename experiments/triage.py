"""Failure signatures: why jobs fail, bucketed (issue 16's triage).

A failed job's *signature* is its status plus its failure reason with the volatile parts masked
(numbers, ids, hex, paths, addresses, hostnames, timestamps), so "CUDA out of memory. Tried to
allocate 2.50 GiB on node 10.0.3.7" and the same error with other numbers share one bucket.
Where SkyPilot's reason says nothing ("Job failed with return code list: [1]"), the last lines
of the job's log say more: known patterns first (out of memory, NCCL timeouts, preemption, a full
disk, a missing module), then a Python traceback's last line, then the last line.

Pure functions over text: the syncer stores what ``signature`` returns, the pages group by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from experiments.choices import JobStatus

#: The statuses that get a signature.
FAILED = frozenset(JobStatus.failed())
#: A signature's length in the database (masked text is cut to fit, never refused).
SIGNATURE_MAX_LENGTH = 300
#: The windows (days of submitted jobs) the Failures page and ``/api/failures/`` offer.
FAILURE_WINDOWS = (1, 7, 30, 90)
DEFAULT_FAILURE_WINDOW = 7
#: How much of a reason or a log line a signature keeps.
_TEXT_MAX = SIGNATURE_MAX_LENGTH - len("FAILED_NO_RESOURCE: ") - 1

# Most specific first: a timestamp holds numbers, a path may hold a hostname.
_MASKS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?(?![\w:])"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<id>",
    ),
    (re.compile(r"(?<![\w/])(?:/[\w.@%+~=-]+){2,}/?"), "<path>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"(?<![\w<-])\d+(?:\.\d+)? ?(?:[KMGTP]i?B|bytes)\b"), "<size>"),
    # host names with a number in them: ip-10-0-3-7.ec2.internal, sky-3f2a-alice-head
    (re.compile(r"\b(?=[\w-]*\d)[a-z][\w-]*(?:\.[a-z][\w-]*)+\b", re.I), "<host>"),
    (re.compile(r"\b(?=[a-z-]*\d)(?=[\w-]*-)[a-z][a-z0-9]*(?:-[a-z0-9]+){2,}\b", re.I), "<host>"),
    (re.compile(r"\b(?=[a-f]*\d)(?=\d*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"(?<![\w<-])[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?", re.I), "<n>"),
]
_SPACES = re.compile(r"\s+")

#: Reasons that name no cause: the log's last lines are asked instead.
_GENERIC = re.compile(
    r"^(?:(?:(?:job|task) )?(?:setup )?failed with return code list: \[[\d, ]*\]"
    r"|.*\bexit(?:ed)? (?:with )?(?:code|status) \d+"
    r"|user job failed|job failed|task failed|failed|)\.?$",
    re.I,
)

#: Known causes, looked for in a log's last lines (first match wins), as (pattern, signature).
KNOWN_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"CUDA out of memory|torch\.(?:cuda\.)?OutOfMemoryError|CUDA error: out of memory"
        ),
        "CUDA out of memory",
    ),
    (
        re.compile(r"NCCL.*(?:time(?:d)? ?out|Watchdog caught collective operation timeout)", re.I),
        "NCCL timeout",
    ),
    (
        re.compile(r"\bNCCL error\b|ncclInternalError|ncclSystemError|ncclUnhandled", re.I),
        "NCCL error",
    ),
    (
        re.compile(
            r"preempt|spot instance (?:was )?(?:interrupted|reclaimed)|instance-action", re.I
        ),
        "Preempted",
    ),
    (re.compile(r"No space left on device|disk quota exceeded", re.I), "Disk full"),
    (
        re.compile(r"Out of memory: Killed process|oom-kill|\bOOMKilled\b|MemoryError\b"),
        "Host out of memory",
    ),
    (re.compile(r"(ModuleNotFoundError: No module named '[\w.]+')"), r"\1"),
    (re.compile(r"(ImportError: cannot import name '\w+')"), r"\1"),
]
_TRACEBACK = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b")


def mask(text: str) -> str:
    """``text`` with its volatile parts replaced by placeholders, on one line, cut to size."""
    out = _SPACES.sub(" ", text).strip()
    for pattern, placeholder in _MASKS:
        out = pattern.sub(placeholder, out)
    return out[:_TEXT_MAX]


def is_generic(reason: str) -> bool:
    """True when a failure reason names no cause (a return code, or nothing at all)."""
    return bool(_GENERIC.match(reason.strip()))


def from_log(lines: Iterable[str]) -> str:
    """The cause the last lines of a log show: a known pattern, else a traceback's exception
    line, else the last non-empty line; masked. Empty for an empty log."""
    tail = [line.rstrip() for line in lines if line.strip()]
    for line in reversed(tail):
        for pattern, found in KNOWN_PATTERNS:
            match = pattern.search(line)
            if match:
                return mask(match.expand(found))
    if _TRACEBACK in "\n".join(tail):
        start = max(i for i, line in enumerate(tail) if _TRACEBACK in line)
        for line in reversed(tail[start + 1 :]):
            if _EXCEPTION_LINE.match(line.strip()):
                return mask(line.strip())
    return mask(tail[-1]) if tail else ""


def signature(status: str, reason: str, log_lines: Iterable[str] | None = None) -> str:
    """``STATUS: masked cause`` for a failed job, ``""`` for any other status.

    The cause is the failure reason, unless it is generic and log lines are given; a generic
    reason with no log keeps its masked text, so such jobs still share a bucket per status.
    """
    if status not in FAILED:
        return ""
    cause = ""
    if log_lines is not None and is_generic(reason or ""):
        cause = from_log(log_lines)
    if not cause:
        cause = mask(reason or "") or "no reason given"
    return f"{status}: {cause}"[:SIGNATURE_MAX_LENGTH]
