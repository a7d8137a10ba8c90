"""Run one sync source under its lease and record the attempt in ``SyncState``.

``manage.py sync`` and the django-q2 tasks both call :func:`run_sync`, so a pass behaves the same
wherever it starts, and two passes of one source never overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from experiments import deckchanges
from experiments.models import SyncSource, SyncState
from syncing.leases import LeaseHeld, lease, restore_in_progress

logger = logging.getLogger(__name__)


@dataclass
class SyncOutcome:
    source: str
    ok: bool
    seconds: float = 0.0
    counts: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    skipped: bool = False

    def summary(self) -> str:
        """The one line ``manage.py sync`` prints."""
        if self.skipped:
            return f"{self.source}: skipped: {self.error}"
        if not self.ok:
            return f"{self.source}: FAILED after {self.seconds:.1f}s: {self.error}"
        c = self.counts
        parts = [
            f"{k} {c[k]}" for k in ("new", "updated", "unchanged", "missing", "errors") if k in c
        ]
        extra = f" ({c['mode']})" if "mode" in c else ""
        listed = ""
        if "listing" in c:  # the S3 pass: how it listed, and why not by the roots
            listed = f", {c['requests']} requests by {c['listing']}"
            listed += f" (roots: {c['roots']})" if "roots" in c else ""
        return f"{self.source}{extra}: {', '.join(parts)} in {self.seconds:.1f}s{listed}"


def _syncers() -> dict[str, Callable[..., Any]]:
    from syncing.jobs import sync_jobs

    syncers: dict[str, Callable[..., Any]] = {SyncSource.SKYPILOT: sync_jobs}
    try:
        from syncing.checkpoints import sync_checkpoints
    except ImportError:  # the S3 syncer lands separately
        return syncers
    syncers[SyncSource.S3] = sync_checkpoints
    return syncers


def available_sources() -> list[str]:
    return list(_syncers())


def describe_error(exc: BaseException) -> str:
    """One line for users: our own exceptions already say what is wrong and never hold secrets."""
    from syncing.skypilot import SkyPilotError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SkyPilotError):
        return text or type(exc).__name__
    try:
        from syncing.s3 import S3Error
    except ImportError:  # pragma: no cover
        S3Error = ()
    if S3Error and isinstance(exc, S3Error):
        return text or type(exc).__name__
    return f"internal error ({type(exc).__name__}): {text}"[:500]


def run_sync(source: str, **kwargs: Any) -> SyncOutcome:
    """One pass of ``source``; never raises for a failed pass (the outcome says what happened)."""
    syncers = _syncers()
    if source not in syncers:
        raise ValueError(f"unknown sync source {source!r}: choose from {', '.join(syncers)}")

    restoring = restore_in_progress()
    if restoring is not None:  # the rows this pass would write are about to be replaced
        return SyncOutcome(
            source, ok=True, skipped=True, error=f"restoring: {restoring.describe()}"
        )
    ttl = settings.Q_CLUSTER["timeout"] + 60
    started = time.monotonic()
    try:
        with lease(source, ttl):
            SyncState.objects.filter(source=source).update(last_attempt_at=timezone.now())
            try:
                result = syncers[source](**kwargs)
            except Exception as exc:
                seconds = time.monotonic() - started
                message = describe_error(exc)
                if message.startswith("internal error"):
                    logger.exception("%s sync failed", source)
                else:
                    logger.warning("%s sync failed: %s", source, message)
                SyncState.objects.filter(source=source).update(
                    last_error=message, last_error_at=timezone.now(), duration=seconds
                )
                return SyncOutcome(source, ok=False, seconds=seconds, error=message)
            seconds = time.monotonic() - started
            counts = result.counts()
            state = SyncState.objects.get(source=source)
            cursor = dict(state.cursor)
            if counts.get("mode") == "full":
                cursor["full_done"] = True
            SyncState.objects.filter(source=source).update(
                last_success_at=timezone.now(),
                last_error="",
                counts=counts,
                duration=seconds,
                cursor=cursor,
            )
            deckchanges.prune()  # the deck's change log keeps its newest rows only
            return SyncOutcome(source, ok=True, seconds=seconds, counts=counts)
    except LeaseHeld as exc:
        return SyncOutcome(source, ok=True, skipped=True, error=str(exc))
