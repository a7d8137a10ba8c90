"""The checkpoint syncer: policy files under each experiment's S3 prefix into ``checkpoints``.

Which experiments a pass lists
    The first pass ever (and ``all_experiments=True``) lists every experiment. Later passes list
    the *hot* experiments — desired RUNNING, with an active job, with a job that ended in the last
    :data:`RECENT_JOB_WINDOW`, or never synced yet — plus a rotating *sweep* slice of the others
    (``max(SWEEP_MIN, ceil(total / SWEEP_PASSES))`` names, in name order, resuming after the last
    name swept), so every experiment is listed at least every ``SWEEP_PASSES`` (+1) passes.

How a pass lists
    Two requests or more per experiment (its policy and its replay prefix), on a thread pool —
    or, when a pass lists at least :data:`ROOTS_MIN` experiments, by listing the two roots whole
    (``policies/``, ``replays/``: one request per 1,000 keys) when that takes fewer requests. A
    root listing may use at most as many requests as the prefixes would (two per experiment); a
    root that needs more (a large shared bucket) is given up at that budget, the pass lists the
    prefixes instead, and the cursor remembers it for :data:`ROOTS_RETRY`. So does a root that
    cannot be listed (a bucket may allow listing single prefixes only). The pass counts say how
    it listed (``listing``, ``requests`` and, after a fall-back, ``roots``).

How a pass writes
    Experiments are listed in batches on :meth:`S3Client.list_experiments`' small thread pool;
    nothing is written while listing. Each batch is then upserted in bulk, one short transaction per
    chunk of experiments, with no network inside a transaction. A checkpoint whose object is gone is
    marked ``missing`` (never deleted) and is un-marked when the object returns. Only experiments
    whose listing succeeded are touched: a failing prefix (access denied, throttled, timed out) is
    recorded in the result (``errors``, ``failed``) and its rows stay as they are. If every listed
    experiment fails, the pass raises :class:`CheckpointSyncFailed` so it is recorded as failed.

Identity
    A row is one epoch of one experiment (``unique(experiment, epoch)``) and one object
    (``model_path`` is unique). When an epoch moves to another key the row of that epoch follows
    it; when a key is re-parsed to another epoch the row holding that key follows it. A row left
    holding a key that now belongs to another row is a duplicate of it and is removed (``merged``).

Replays that name no epoch (or an epoch without a checkpoint) are kept, not dropped: per
experiment, their count and the last :data:`UNMATCHED_KEEP` URIs are stored in
``SyncState(source="s3").cursor["unmatched_replays"]``; read them with :func:`unmatched_replays`.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from experiments.models import (
    Checkpoint,
    DesiredState,
    Experiment,
    Job,
    SyncSource,
    SyncState,
)
from syncing.s3 import (
    CheckpointObject,
    ExperimentListing,
    RootTooLarge,
    S3Client,
    S3Error,
    validate_experiment_name,
)

logger = logging.getLogger(__name__)

#: A job that ended this recently keeps its experiment in every pass (final checkpoints land late).
RECENT_JOB_WINDOW = timedelta(hours=6)
#: Every experiment is swept at least once every this many passes (one more while names change).
SWEEP_PASSES = 10
#: The smallest sweep slice.
SWEEP_MIN = 50
#: Threads listing S3 (capped again by ``syncing.s3.MAX_WORKERS``).
MAX_WORKERS = 8
#: A pass lists at least this many experiments before listing the roots whole is considered.
ROOTS_MIN = 50
#: How long a root that was too large or failed is not tried again.
ROOTS_RETRY = timedelta(minutes=15)
#: Experiments listed before their results are written (bounds memory, keeps progress).
LIST_BATCH = 200
#: A write transaction covers at most this many experiments / listed objects.
WRITE_EXPERIMENTS = 200
WRITE_OBJECTS = 2000
#: Ids / paths per ``__in`` lookup (below SQLite's historical 999-variable limit).
IN_CHUNK = 900
#: Unmatched replay URIs kept per experiment (the count is kept in full).
UNMATCHED_KEEP = 20
#: Failed experiments named in ``counts()["failed"]`` (``errors`` always has the full number).
FAILED_KEEP = 100

#: Fields the syncer owns on a Checkpoint row (compared to decide "updated" vs "unchanged").
SYNCED_FIELDS = [
    "experiment_id",
    "epoch",
    "model_path",
    "policy_version",
    "size",
    "last_modified",
    "replay_paths",
    "missing",
]


class CheckpointSyncFailed(S3Error):
    """Every experiment listed in a pass failed; nothing was written."""


@dataclass
class CheckpointSyncResult:
    selection: str = "all"
    experiments: int = 0
    hot: int = 0
    swept: int = 0
    listed: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    still_missing: int = 0
    merged: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    listing: str = "prefixes"
    requests: int = 0
    roots: str = ""

    @property
    def errors(self) -> int:
        return len(self.failed)

    def counts(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "missing": self.missing,
            "errors": self.errors,
            "experiments": self.experiments,
            "selection": self.selection,
            "hot": self.hot,
            "swept": self.swept,
            "listed": self.listed,
            "still_missing": self.still_missing,
            "merged": self.merged,
            "listing": self.listing,
            "requests": self.requests,
            "failed": dict(list(self.failed.items())[:FAILED_KEEP]),
        }
        if self.roots:
            data["roots"] = self.roots
        if self.errors > FAILED_KEEP:
            data["failed_truncated"] = self.errors - FAILED_KEEP
        return data


# --- selection --------------------------------------------------------------------------------


@dataclass
class PassPlan:
    """The experiments one pass lists (``names`` maps name -> id) and the cursor it leaves."""

    names: dict[str, int]
    selection: str
    hot: set[str] = field(default_factory=set)
    swept: list[str] = field(default_factory=list)
    sweep_after: str | None = None


def sweep_slice(remaining: Sequence[str], after: str | None, size: int) -> list[str]:
    """``size`` names of sorted ``remaining`` following ``after``, wrapping around once."""
    if not remaining or size <= 0:
        return []
    start = bisect_right(remaining, after) if after is not None else 0
    picked = list(remaining[start : start + size])
    if len(picked) < size:
        picked += remaining[: min(size - len(picked), start)]
    return picked


def plan_pass(
    cursor: dict[str, Any], *, all_experiments: bool = False, now: datetime | None = None
) -> PassPlan:
    """Choose the experiments for one pass (a constant number of queries)."""
    now = now or timezone.now()
    rows = list(Experiment.objects.values_list("name", "id", "desired_state"))
    ids = {name: pk for name, pk, _ in rows}
    if all_experiments or not cursor.get("full_done"):
        return PassPlan(names=dict(sorted(ids.items())), selection="all")

    running = {name for name, _, desired in rows if desired == DesiredState.RUNNING}
    active = set(Job.objects.active().values_list("experiment_id", flat=True))
    recent = set(
        Job.objects.filter(ended_at__gte=now - RECENT_JOB_WINDOW).values_list(
            "experiment_id", flat=True
        )
    )
    with_rows = set(Checkpoint.objects.values_list("experiment_id", flat=True).distinct())
    seen_empty = set(cursor.get("listed_empty") or ())
    never = {name for name, pk in ids.items() if pk not in with_rows and name not in seen_empty}
    hot = (running | active | recent | never) & ids.keys()

    remaining = sorted(ids.keys() - hot)
    size = max(SWEEP_MIN, math.ceil(len(ids) / SWEEP_PASSES))
    swept = sweep_slice(remaining, cursor.get("sweep_after"), size)
    chosen = sorted(hot | set(swept))
    return PassPlan(
        names={name: ids[name] for name in chosen},
        selection="active+sweep",
        hot=hot,
        swept=swept,
        sweep_after=swept[-1] if swept else cursor.get("sweep_after"),
    )


# --- writing ----------------------------------------------------------------------------------


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fields(experiment_id: int, obj: CheckpointObject) -> dict[str, Any]:
    return {
        "experiment_id": experiment_id,
        "epoch": obj.epoch,
        "model_path": obj.uri,
        "policy_version": obj.policy_version,
        "size": obj.size,
        "last_modified": obj.last_modified,
        "replay_paths": list(obj.replay_uris),
        "missing": False,
    }


def _tmp_path(pk: int) -> str:
    # Never a real model path (those start with s3://); unique because the id is.
    return f"skydeck-moving:{pk}"


def write_chunk(
    listings: Sequence[tuple[int, ExperimentListing]],
    result: CheckpointSyncResult,
    now: datetime,
) -> None:
    """Upsert the checkpoints of successfully listed experiments in one transaction.

    A constant number of queries plus the bulk batches, whatever the number of experiments.
    """
    ids = [pk for pk, _ in listings]
    with transaction.atomic():
        alive = dict(Experiment.objects.filter(id__in=ids).values_list("id", "name"))
        # skip experiments deleted or renamed since they were listed
        listings = [(pk, lst) for pk, lst in listings if alive.get(pk) == lst.experiment_name]
        ids = [pk for pk, _ in listings]
        if not ids:
            return
        rows = list(Checkpoint.objects.filter(experiment_id__in=ids))
        by_path: dict[str, Checkpoint] = {r.model_path: r for r in rows}
        listed_paths = {obj.uri for _, lst in listings for obj in lst.checkpoints}
        unknown = sorted(listed_paths - by_path.keys())
        for part in _chunks(unknown, IN_CHUNK):  # rows of other experiments holding these keys
            for row in Checkpoint.objects.filter(model_path__in=part):
                by_path[row.model_path] = row
                rows.append(row)
        by_epoch: dict[tuple[int, int], Checkpoint] = {(r.experiment_id, r.epoch): r for r in rows}

        # Match every listed object to a row: the row of its epoch first, else the row of its key.
        claimed: dict[int, Checkpoint] = {}
        matched: list[tuple[int, CheckpointObject, Checkpoint | None]] = []
        for pk, lst in listings:
            for obj in lst.checkpoints:
                row = by_epoch.get((pk, obj.epoch))
                if row is not None:
                    claimed[row.id] = row
                matched.append((pk, obj, row))
        for i, (pk, obj, row) in enumerate(matched):
            if row is None:
                row = by_path.get(obj.uri)
                if row is not None and row.id not in claimed:
                    claimed[row.id] = row
                    matched[i] = (pk, obj, row)

        create: list[Checkpoint] = []
        update: list[Checkpoint] = []
        moving: list[Checkpoint] = []
        unchanged: list[int] = []
        for pk, obj, row in matched:
            fields = _fields(pk, obj)
            if row is None:
                create.append(Checkpoint(synced_at=now, **fields))
                continue
            if all(getattr(row, f) == v for f, v in fields.items()):
                unchanged.append(row.id)
                continue
            if any(getattr(row, f) != fields[f] for f in ("experiment_id", "epoch", "model_path")):
                moving.append(row)
            for f, v in fields.items():
                setattr(row, f, v)
            row.synced_at = now
            update.append(row)

        delete: list[int] = []
        mark_missing: list[int] = []
        listed_ids = set(ids)
        for row in rows:
            if row.id in claimed:
                continue
            if row.model_path in listed_paths:
                delete.append(row.id)  # a duplicate: its object is another row's now
            elif row.experiment_id in listed_ids:
                if row.missing:
                    result.still_missing += 1
                else:
                    mark_missing.append(row.id)

        for part in _chunks(delete, IN_CHUNK):
            Checkpoint.objects.filter(id__in=part).delete()
        if moving:
            # Park the rows whose identity changes on values no real row can hold, so that the
            # final UPDATE never collides with a value another row is about to give up.
            parked = [Checkpoint(id=r.id, epoch=-r.id, model_path=_tmp_path(r.id)) for r in moving]
            Checkpoint.objects.bulk_update(parked, ["epoch", "model_path"])
        if update:
            Checkpoint.objects.bulk_update(update, [*SYNCED_FIELDS, "synced_at"])
        Checkpoint.objects.bulk_create(create)
        for part in _chunks(mark_missing, IN_CHUNK):
            Checkpoint.objects.filter(id__in=part).update(missing=True)
        if unchanged:
            # every present row of these experiments was just seen (missing ones keep the time
            # they were last seen); one statement instead of one per batch of unchanged ids
            Checkpoint.objects.filter(experiment_id__in=ids, missing=False).update(synced_at=now)

    result.new += len(create)
    result.updated += len(update)
    result.unchanged += len(unchanged)
    result.missing += len(mark_missing)
    result.merged += len(delete)
    if delete:
        logger.info("s3 sync removed %d duplicate checkpoint row(s)", len(delete))


def write_listings(
    listings: Sequence[tuple[int, ExperimentListing]],
    result: CheckpointSyncResult,
    now: datetime | None = None,
) -> None:
    """Write listings in chunks of at most WRITE_EXPERIMENTS experiments / WRITE_OBJECTS objects."""
    now = now or timezone.now()
    chunk: list[tuple[int, ExperimentListing]] = []
    objects = 0
    for item in listings:
        chunk.append(item)
        objects += len(item[1].checkpoints)
        if len(chunk) >= WRITE_EXPERIMENTS or objects >= WRITE_OBJECTS:
            write_chunk(chunk, result, now)
            chunk, objects = [], 0
    if chunk:
        write_chunk(chunk, result, now)


# --- the pass ---------------------------------------------------------------------------------


def _state() -> SyncState:
    state, _ = SyncState.objects.get_or_create(source=SyncSource.S3)
    return state


def unmatched_replays(experiment: Experiment | str) -> list[str]:
    """Replay URIs of ``experiment`` that matched no checkpoint at its last successful listing.

    At most :data:`UNMATCHED_KEEP` (the last ones in key order); see :func:`unmatched_replay_count`.
    """
    name = experiment if isinstance(experiment, str) else experiment.name
    state = SyncState.objects.filter(source=SyncSource.S3).first()
    entry = ((state.cursor if state else {}).get("unmatched_replays") or {}).get(name) or {}
    return list(entry.get("uris") or [])


def unmatched_replay_count(experiment: Experiment | str) -> int:
    name = experiment if isinstance(experiment, str) else experiment.name
    state = SyncState.objects.filter(source=SyncSource.S3).first()
    entry = ((state.cursor if state else {}).get("unmatched_replays") or {}).get(name) or {}
    return int(entry.get("count") or 0)


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def sync_checkpoints(
    client: S3Client | None = None, *, all_experiments: bool = False
) -> CheckpointSyncResult:
    """One pass of the checkpoint syncer (see the module docstring).

    Raises :class:`CheckpointSyncFailed` when every listed experiment failed.
    """
    client = client or S3Client.from_settings()
    cursor = dict(_state().cursor)
    plan = plan_pass(cursor, all_experiments=all_experiments)
    result = CheckpointSyncResult(
        selection=plan.selection,
        experiments=len(plan.names),
        hot=len(plan.hot),
        swept=len(plan.swept),
    )
    now = timezone.now()

    valid: list[str] = []
    for name in plan.names:
        try:
            valid.append(validate_experiment_name(name))
        except ValueError as exc:
            result.failed[name] = _reason(exc)

    succeeded: dict[str, ExperimentListing] = {}
    by_roots = _list_roots(client, valid, cursor, result, now)
    if by_roots is not None:  # one listing for all; written in the same batches
        for batch in _chunks(valid, LIST_BATCH):
            ok = [(plan.names[name], by_roots[name]) for name in batch]
            succeeded.update((name, by_roots[name]) for name in batch)
            result.listed += sum(len(listing.checkpoints) for _, listing in ok)
            write_listings(ok, result, now)
        valid = []
    for batch in _chunks(valid, LIST_BATCH):
        listed = client.list_experiments(list(batch), max_workers=MAX_WORKERS)
        ok: list[tuple[int, ExperimentListing]] = []
        for name, outcome in listed.items():
            if isinstance(outcome, S3Error):
                result.failed[name] = _reason(outcome)
                logger.warning("s3 sync: %s failed: %s", name, outcome)
                continue
            ok.append((plan.names[name], outcome))
            succeeded[name] = outcome
            result.requests += outcome.requests
            result.listed += len(outcome.checkpoints)
        write_listings(ok, result, now)

    if plan.names and not succeeded:
        first_name = next(iter(result.failed))
        raise CheckpointSyncFailed(
            client.bucket,
            "",
            f"all {len(result.failed)} listed experiments failed; "
            f"first ({first_name}): {result.failed[first_name]}",
        )

    _save_cursor(plan, succeeded, cursor.get("roots"))
    return result


def _list_roots(
    client: S3Client,
    names: list[str],
    cursor: dict[str, Any],
    result: CheckpointSyncResult,
    now: datetime,
) -> dict[str, ExperimentListing] | None:
    """The listings of ``names`` from the two roots, or None when the prefixes are listed instead.

    Leaves the outcome in ``cursor["roots"]`` (saved with the pass) and in ``result``.
    """
    if len(names) < ROOTS_MIN:
        return None
    budget = 2 * len(names)
    memory = cursor.get("roots") or {}
    held_back = "until" in memory and now < datetime.fromisoformat(memory["until"])
    if held_back and (memory.get("failed") or memory.get("over", 0) >= budget):
        result.roots = memory.get("failed") or f"over {memory['over']} requests"
        return None
    if memory.get("requests", 0) > budget:  # the last root listing took more than this pass may
        result.roots = f"{memory['requests']} requests last time"
        return None
    try:
        listings, requests = client.list_roots(names, budget=budget)
    except RootTooLarge as exc:
        result.requests += exc.pages
        result.roots = f"over {exc.pages} requests"
        cursor["roots"] = {"over": exc.pages, "until": (now + ROOTS_RETRY).isoformat()}
        return None
    except S3Error as exc:
        result.roots = f"failed: {_reason(exc)}"
        logger.warning("s3 sync: listing the roots failed, listing prefixes: %s", exc)
        cursor["roots"] = {"failed": result.roots, "until": (now + ROOTS_RETRY).isoformat()}
        return None
    result.listing = "roots"
    result.requests += requests
    cursor["roots"] = {"requests": requests}
    return listings


def _save_cursor(
    plan: PassPlan, succeeded: dict[str, ExperimentListing], roots: dict[str, Any] | None
) -> None:
    """Remember the sweep position, empty experiments, unmatched replays and the roots' outcome."""
    state = _state()
    cursor = dict(state.cursor)
    names = set(Experiment.objects.values_list("name", flat=True))
    empty = {n for n in cursor.get("listed_empty") or () if n in names}
    unmatched = {n: v for n, v in (cursor.get("unmatched_replays") or {}).items() if n in names}
    for name, listing in succeeded.items():
        if listing.checkpoints:
            empty.discard(name)
        else:
            empty.add(name)
        if listing.unmatched_replays:
            unmatched[name] = {
                "count": len(listing.unmatched_replays),
                "uris": listing.unmatched_replays[-UNMATCHED_KEEP:],
            }
        else:
            unmatched.pop(name, None)
    if plan.selection == "all":
        cursor["full_done"] = True
    else:
        cursor["sweep_after"] = plan.sweep_after
    cursor["listed_empty"] = sorted(empty)
    cursor["unmatched_replays"] = dict(sorted(unmatched.items()))
    if roots is not None:
        cursor["roots"] = roots
    SyncState.objects.filter(source=SyncSource.S3).update(cursor=cursor)
