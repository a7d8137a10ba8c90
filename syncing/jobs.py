"""The job syncer: SkyPilot's managed-job queue (all users) into the ``jobs`` table.

The first pass pages through the whole history. Later passes are incremental: unfinished jobs,
jobs submitted since the last success (with a safety margin), and jobs we still think are active
(to catch their final state) — so a pass costs what the active work costs, not the history.

Everything is fetched before anything is written, so a network failure changes nothing; rows are
then upserted in bulk, one short transaction per chunk. A job missing from a listing is never
deleted: it keeps its last known state and ``last_seen``.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml
from django.db import connection, transaction
from django.utils import timezone

from experiments import control, deckchanges, triage
from experiments.models import (
    JOB_RESOURCE_FIELDS,
    JOB_RUN_FIELDS,
    Experiment,
    Job,
    JobStatus,
    Launch,
    SyncSource,
    SyncState,
)
from experiments.validation import NAME_MAX_LENGTH
from syncing.skypilot import MalformedResponse, SkyPilotClient, strip_ansi

logger = logging.getLogger(__name__)
# libyaml's safe loader is ~10x faster; the pure-Python one is the same rules, slower
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: The record fields SkyDeck stores (``user_yaml`` is fetched separately, for new jobs only).
QUEUE_FIELDS = [
    "job_id",
    "task_id",
    "job_name",
    "task_name",
    "status",
    "resources",
    "infra",
    "cloud",
    "region",
    "submitted_at",
    "start_at",
    "end_at",
    "job_duration",
    "recovery_count",
    "failure_reason",
    "details",
    "user_name",
    "user_hash",
    "workspace",
    "entrypoint",
    "metadata",
]
#: Top-level jobs per queue page: each request costs the API server a worker round trip.
PAGE_SIZE = 2000
ID_CHUNK = 200
#: Jobs per task-YAML request (a task YAML is about a kilobyte).
YAML_CHUNK = 1000
#: Task YAMLs a pass reads beyond the ones needed now: a large history is read in batches,
#: newest first, so that a first sync of 50,000 jobs does not wait for 50,000 YAMLs.
YAML_BATCH = 2000
#: Jobs written per transaction (one ``executemany`` upsert each: short write locks, big batches).
WRITE_CHUNK = 2000
#: How far before the last success an incremental pass looks for newly submitted jobs.
SAFETY_MARGIN = timedelta(minutes=10)
#: Keys of a task's ``envs`` that carry the git ref it runs.
GIT_REF_ENVS = ("SKYDECK_GIT_REF", "GIT_REF", "METTA_GIT_REF")

# Fields the syncer owns on a Job row (compared to decide "updated" vs "unchanged").
SYNCED_FIELDS = [
    "experiment_id",
    "job_name",
    "task_count",
    "status",
    *JOB_RESOURCE_FIELDS,
    *JOB_RUN_FIELDS,
    "raw",
]
YAML_FIELDS = ["command", "git_ref", "launch_token"]
#: The Job columns' lengths: what SkyPilot reports is cut to fit them (never refused).
LIMITS = {f.name: f.max_length for f in Job._meta.concrete_fields if getattr(f, "max_length", None)}
#: Status sets, classified once (not per record).
ACTIVE = frozenset(JobStatus.active())
_STATUS_MAX = LIMITS["status"]
KNOWN_STATUSES = frozenset(JobStatus.values)


@dataclass
class JobSyncResult:
    mode: str = "full"
    fetched: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    requests: int = 0
    tasks_read: int = 0
    tasks_waiting: int = 0
    unknown_statuses: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        data = {
            "mode": self.mode,
            "fetched": self.fetched,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "requests": self.requests,
            "tasks_read": self.tasks_read,
        }
        if self.tasks_waiting:
            data["tasks_waiting"] = self.tasks_waiting
        if self.unknown_statuses:
            data["unknown_statuses"] = sorted(set(self.unknown_statuses))
        return data


# --- parsing ----------------------------------------------------------------------------------

_NODES_RE = re.compile(r"^\s*(\d+)\s*x\b")
_ACCEL_RE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*:\s*(\d+(?:\.\d+)?)")
_NOT_GPUS = {"cpu", "cpus", "mem", "memory", "disk", "disk_size", "ports", "ram"}


@functools.lru_cache(maxsize=4096)
def parse_resources(text: str | None) -> tuple[int | None, int | None, str]:
    """``2x[H100:8]`` -> (2, 8, "H100"); ``1x[CPU:4]`` -> (1, 0, ""); any-of sets keep every name.

    GPUs are per node. CPU counts are not GPUs. Cached: a history repeats a few shapes.
    """
    if not text:
        return None, None, ""
    match = _NODES_RE.match(text)
    nodes = int(match.group(1)) if match else 1
    names: list[str] = []
    gpus = 0
    for name, count in _ACCEL_RE.findall(text):
        if name.lower() in _NOT_GPUS:
            continue
        if name not in names:
            names.append(name)
        gpus = max(gpus, int(float(count)))
    return nodes, gpus, ",".join(names)[: LIMITS["accelerator"]]


def epoch_to_datetime(value: Any, *, job_id: Any, key: str) -> datetime | None:
    """Epoch seconds (int/float) to aware UTC; null and non-positive mean "not yet"."""
    if value is None:
        return None
    # SkyPilot sends floats: the type checks only for the rest
    if value.__class__ is not float and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedResponse(f"job {job_id}: {key} is {value!r}, expected epoch seconds")
    if value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):  # inf, NaN, a year past 9999
        raise MalformedResponse(f"job {job_id}: {key} is {value!r}, not a time") from None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _current_task(records: list[dict]) -> dict:
    """The task that speaks for a multi-task job: the first unfinished one, else the last."""
    ordered = sorted(records, key=lambda r: r.get("task_id") or 0)
    for record in ordered:
        if record.get("status") in ACTIVE:
            return record
    return ordered[-1]


def map_job(records: list[dict], result: JobSyncResult | None = None) -> dict[str, Any]:
    """The Job fields for one job id, from its task record(s)."""
    record = records[0] if len(records) == 1 else _current_task(records)
    get = record.get
    job_id = get("job_id")
    status = get("status")
    if not isinstance(status, str) or not status:
        raise MalformedResponse(f"job {job_id}: no status in the record")
    if status not in KNOWN_STATUSES:
        logger.warning("job %s has a status SkyDeck does not know: %s", job_id, status)
        if result is not None:
            result.unknown_statuses.append(status)
    name = _text(get("job_name") or get("task_name"))
    resources = get("resources")
    nodes, gpus, accelerator = parse_resources(resources)
    recovery = get("recovery_count") or 0
    reason = strip_ansi(_text(get("failure_reason")))
    duration = get("job_duration")
    return {
        "experiment_id": name if name and len(name) <= NAME_MAX_LENGTH else None,
        "job_name": name,
        "task_count": len(records),
        "status": status[:_STATUS_MAX],
        "nodes": nodes,
        "gpus": gpus,
        "accelerator": accelerator,
        "resources": _text(resources),
        "user_name": _text(get("user_name"))[: LIMITS["user_name"]],
        "user_hash": _text(get("user_hash"))[: LIMITS["user_hash"]],
        "workspace": _text(get("workspace"))[: LIMITS["workspace"]],
        "infra": _text(get("infra"))[: LIMITS["infra"]],
        "cloud": _text(get("cloud"))[: LIMITS["cloud"]],
        "region": _text(get("region"))[: LIMITS["region"]],
        "submitted_at": epoch_to_datetime(get("submitted_at"), job_id=job_id, key="submitted_at"),
        "started_at": epoch_to_datetime(get("start_at"), job_id=job_id, key="start_at"),
        "ended_at": epoch_to_datetime(get("end_at"), job_id=job_id, key="end_at"),
        "duration": float(duration)
        if isinstance(duration, int | float) and duration >= 0
        else None,
        "recovery_count": int(recovery) if isinstance(recovery, int) and recovery >= 0 else 0,
        "failure_reason": reason,
        "failure_signature": triage.signature(status, reason),  # "" unless failed
        "details": strip_ansi(_text(get("details"))),
        "raw": records[0] if len(records) == 1 else {"tasks": records},
    }


def parse_task_yaml(text: str | None) -> dict[str, str]:
    """The command and git ref a job runs, from its task YAML (tolerates pipelines and junk)."""
    if not text:
        return {}
    try:
        docs = [d for d in yaml.load_all(text, Loader=_YAML_LOADER) if isinstance(d, dict)]
    except yaml.YAMLError:
        return {}
    for doc in docs:
        if "run" not in doc:
            continue
        out = {"command": _text(doc.get("run")).strip()}
        envs = doc.get("envs") if isinstance(doc.get("envs"), dict) else {}
        ref = next((envs[k] for k in GIT_REF_ENVS if envs.get(k)), None)
        workdir = doc.get("workdir")
        if ref is None and isinstance(workdir, dict):
            ref = workdir.get("ref")
        if ref:
            out["git_ref"] = _text(ref)[: LIMITS["git_ref"]]
        token = envs.get("SKYDECK_LAUNCH_ID")
        if isinstance(token, str) and token:
            out["launch_token"] = token[: LIMITS["launch_token"]]
        return out
    return {}


# --- fetching ---------------------------------------------------------------------------------


def _group(records: Iterable[dict], into: dict[int, list[dict]]) -> None:
    for record in records:
        if not isinstance(record, dict):
            raise MalformedResponse(f"a job record is a {type(record).__name__}, not an object")
        job_id = record.get("job_id")
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            raise MalformedResponse(f"a job record has no integer job_id: {job_id!r}")
        tasks = into.get(job_id)
        if tasks is None:  # the common case: a job's first (often only) task
            into[job_id] = [record]
            continue
        task_id = record.get("task_id")
        tasks[:] = [r for r in tasks if r.get("task_id") != task_id]
        tasks.append(record)


def _fetch_pages(client: SkyPilotClient, result: JobSyncResult, **filters: Any) -> Iterator[dict]:
    """Every record matching ``filters``, one page of top-level jobs at a time."""
    page = 1
    seen_jobs = 0
    while True:
        listing = client.queue(
            all_users=True, fields=QUEUE_FIELDS, page=page, limit=PAGE_SIZE, **filters
        )
        result.requests += 1
        jobs = listing.jobs
        yield from jobs
        on_page = len({r.get("job_id") for r in jobs})
        seen_jobs += on_page
        if not jobs or on_page < PAGE_SIZE:
            return
        if listing.total is not None and seen_jobs >= listing.total:
            return
        page += 1


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def fetch_jobs(
    client: SkyPilotClient, *, since: datetime | None, result: JobSyncResult
) -> dict[int, list[dict]]:
    """All records this pass needs, grouped by job id (no database writes)."""
    grouped: dict[int, list[dict]] = {}
    if since is None:
        result.mode = "full"
        _group(_fetch_pages(client, result), grouped)
    else:
        result.mode = "incremental"
        _group(_fetch_pages(client, result, skip_finished=True), grouped)
        after = (since - SAFETY_MARGIN).timestamp()
        _group(_fetch_pages(client, result, submitted_after=after), grouped)
        # Jobs we last saw active but that are no longer unfinished: fetch their final state.
        stale = sorted(set(Job.objects.active().values_list("id", flat=True)) - set(grouped))
        for chunk in _chunks(stale, ID_CHUNK):
            listing = client.queue(all_users=True, fields=QUEUE_FIELDS, job_ids=chunk)
            result.requests += 1
            _group(listing.jobs, grouped)
    return grouped


def fetch_task_yaml(
    client: SkyPilotClient, job_ids: list[int], result: JobSyncResult
) -> dict[int, dict[str, str]]:
    """Command and git ref for jobs seen for the first time (``user_yaml`` is kilobytes a job)."""
    found: dict[int, dict[str, str]] = {}
    for chunk in _chunks(job_ids, YAML_CHUNK):
        listing = client.queue(
            all_users=True, fields=["job_id", "task_id", "user_yaml"], job_ids=chunk
        )
        result.requests += 1
        for record in listing.jobs:
            if isinstance(record, dict) and isinstance(record.get("job_id"), int):
                parsed = parse_task_yaml(record.get("user_yaml"))
                if parsed and record["job_id"] not in found:
                    found[record["job_id"]] = parsed
    result.tasks_read += len(job_ids)
    return found


# --- writing ----------------------------------------------------------------------------------


_FIELDS = {f.attname: f for f in Job._meta.concrete_fields}
_DATETIMES = {n for n, f in _FIELDS.items() if f.get_internal_type() == "DateTimeField"}
_JSON = {n for n, f in _FIELDS.items() if f.get_internal_type() == "JSONField"}


def _sqlite_datetime(value: datetime | None) -> str | None:
    """What Django stores for an aware datetime on SQLite: naive UTC text (``str`` of the naive
    value is its ``isoformat(" ")``, so the UTC one is that text without its "+00:00")."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ")[:-6]


def _sqlite_json(value: Any) -> str | None:
    """A JSON column's text for SQLite, compact (Django's ``json.dumps`` adds a space after every
    separator: a first sync stores 50,000 raw records)."""
    return None if value is None else _COMPACT_JSON(value)


_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def _converters(columns: list[str]) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, function) for the values of a row layout the driver cannot take as they are:
    what ``Field.get_db_prep_save`` would give, chosen once per pass, not per value (a first
    sync writes a few hundred thousand). Datetimes are aware UTC here."""
    sqlite = connection.vendor == "sqlite"
    adapt_json = connection.ops.adapt_json_value
    out: list[tuple[int, Callable[[Any], Any]]] = []
    for index, column in enumerate(columns):
        if column in _DATETIMES and sqlite:
            out.append((index, _sqlite_datetime))
        elif column in _JSON and sqlite:
            out.append((index, _sqlite_json))
        elif column in _JSON:
            out.append((index, lambda value: None if value is None else adapt_json(value, None)))
    return out


def stored_ids(ids: list[int]) -> set[int]:
    """Which of ``ids`` the jobs table holds: one plain ``IN`` query per chunk through the
    cursor (the ORM prepares every value of a 2,000-id lookup one by one)."""
    found: set[int] = set()
    table = connection.ops.quote_name(Job._meta.db_table)
    with connection.cursor() as cursor:
        for chunk in _chunks(ids, WRITE_CHUNK):
            marks = ", ".join(["%s"] * len(chunk))
            cursor.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)  # noqa: S608
            found.update(row[0] for row in cursor.fetchall())
    return found


def _qn(name: str) -> str:
    return connection.ops.quote_name(Job._meta.get_field(name).column)


def _insert_sql(columns: list[str]) -> str:
    """One row's ``INSERT ... ON CONFLICT (id) DO NOTHING`` (SQLite and PostgreSQL alike), run
    with ``executemany``: the database's own bulk path (the ORM's bulk_create is capped at ~30
    rows a statement on SQLite and compiles every value). A job another pass wrote meanwhile is
    left to the next pass. Identifiers come from the model, values are parameters."""
    table = connection.ops.quote_name(Job._meta.db_table)
    names = ", ".join(_qn(c) for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"  # noqa: S608


def _update_sql(columns: list[str]) -> str:
    """One row's ``UPDATE ... WHERE id = %s`` for ``executemany`` (the id is the last value)."""
    table = connection.ops.quote_name(Job._meta.db_table)
    sets = ", ".join(f"{_qn(c)} = %s" for c in columns)
    return f"UPDATE {table} SET {sets} WHERE id = %s"  # noqa: S608


def keep_log_signatures(mapped: dict[int, dict[str, Any]], existing: dict[int, Any]) -> None:
    """A stored job whose log tail the sampler read keeps the signature its log gives while its
    reason stays generic (``map_job`` only sees the reason): one query for such jobs only."""
    candidates = [
        job_id
        for job_id in existing
        if mapped[job_id]["failure_signature"]
        and triage.is_generic(mapped[job_id]["failure_reason"])
    ]
    if not candidates:
        return
    tails = Job.objects.filter(id__in=candidates, log_tail__isnull=False).exclude(log_tail="")
    for job_id, tail in tails.values_list("id", "log_tail"):
        fields = mapped[job_id]
        fields["failure_signature"] = triage.signature(
            fields["status"], fields["failure_reason"], tail.splitlines()
        )


def write_jobs(
    grouped: dict[int, list[dict]],
    yaml_info: dict[int, dict[str, str]],
    result: JobSyncResult,
    read: set[int] | None = None,
) -> set[str]:
    """Upsert the jobs in bulk; returns the experiment names whose jobs changed.

    New jobs go through one ``executemany`` insert per chunk and changed ones one update;
    unchanged ones only get their ``last_seen``. A new job's command, git ref and launch token
    come from its task YAML when it was ``read`` (default: the jobs in ``yaml_info``); the others
    keep ``task_fetched_at`` empty for a later batch. An update never touches them.
    """
    read = set(yaml_info) if read is None else read
    mapped = {job_id: map_job(records, result) for job_id, records in grouped.items()}
    touched: set[str] = set()
    now = timezone.now()
    compare = ["experiment_id", *(f for f in SYNCED_FIELDS if f != "experiment_id")]
    new_columns = ["id", *compare, *YAML_FIELDS, "task_fetched_at", "first_seen", "last_seen"]
    changed_columns = [*compare, "last_seen", "id"]  # UPDATE ... SET <all but id> WHERE id
    stamped = len(new_columns) - 3  # task_fetched_at, first_seen, last_seen: ``now`` or None
    new_fix = [(i, f) for i, f in _converters(new_columns) if i < stamped]
    changed_fix = _converters(changed_columns)
    now_db = dict(_converters(["last_seen"])).get(0, lambda value: value)(now)
    no_yaml = dict.fromkeys(YAML_FIELDS, "")
    pick = operator.itemgetter(*compare)  # a row's compared values, in ``compare`` order
    for chunk in _chunks(sorted(mapped), WRITE_CHUNK):
        with transaction.atomic():
            present = sorted(stored_ids(chunk))
            existing = (
                {
                    row[0]: row[1:]
                    for row in Job.objects.filter(id__in=present).values_list("id", *compare)
                }
                if present
                else {}
            )
            keep_log_signatures(mapped, existing)
            create, update, unchanged = [], [], []
            names: set[str] = set()  # experiments whose jobs this chunk changes
            for job_id in chunk:
                fields = mapped[job_id]
                values = pick(fields)
                old = existing.get(job_id)
                if old is None:
                    extra = yaml_info.get(job_id) or no_yaml
                    tasks = (extra.get(f, "") for f in YAML_FIELDS)
                    row = [job_id, *values, *tasks]
                    for index, convert in new_fix:
                        row[index] = convert(row[index])
                    row += (now_db if job_id in read else None, now_db, now_db)
                    create.append(row)
                    names.add(fields["job_name"])
                    continue
                if old == values:  # both tuples in ``compare`` order
                    unchanged.append(job_id)
                    continue
                if old[0] and old[0] != fields["experiment_id"]:
                    names.add(old[0])  # it no longer belongs to that experiment
                row = [*values, now, job_id]
                for index, convert in changed_fix:
                    row[index] = convert(row[index])
                update.append(row)
                names.add(fields["job_name"])
            with connection.cursor() as cursor:
                if create:
                    cursor.executemany(_insert_sql(new_columns), create)
                if update:
                    cursor.executemany(_update_sql(changed_columns[:-1]), update)
            if unchanged:
                Job.objects.filter(id__in=unchanged).update(last_seen=now)
            # the jobs table has no deck trigger: the deck learns of these experiments here
            deckchanges.record_experiments(name for name in names if name)
        touched |= names
        result.new += len(create)
        result.updated += len(update)
        result.unchanged += len(unchanged)
    return {name for name in touched if name}


def refresh_experiment_states(names: Iterable[str]) -> None:
    """Recompute ``current_state`` for the experiments whose jobs changed."""
    for chunk in _chunks(sorted(names), WRITE_CHUNK):
        Experiment.objects.filter(name__in=chunk).refresh_current_state()


def tasks_needed_now(grouped: dict[int, list[dict]], new_ids: list[int]) -> list[int]:
    """The new jobs whose task YAML this pass must read before writing: active ones (their
    command is on the deck) and any whose name has a launch in flight (the reconciler finds a
    launch whose answer was lost by the token in its YAML). The rest wait for a batch."""
    pending = set(
        Launch.objects.filter(status__in=control.PENDING).values_list("experiment_name", flat=True)
    )
    needed = []
    for job_id in new_ids:
        records = grouped[job_id]
        name = records[0].get("job_name") or records[0].get("task_name")
        if name in pending or any(r.get("status") in ACTIVE for r in records):
            needed.append(job_id)
    return needed


def read_task_batch(client: SkyPilotClient, result: JobSyncResult) -> None:
    """Read the task YAML of up to ``YAML_BATCH`` stored jobs still without it, newest first
    (one index seek finds them; nothing to do once caught up)."""
    waiting = Job.objects.filter(task_fetched_at__isnull=True).order_by("-id")
    ids = list(waiting.values_list("id", flat=True)[:YAML_BATCH])
    if not ids:
        return
    info = fetch_task_yaml(client, ids, result)  # before any write: a failure changes nothing
    now = timezone.now()
    columns = [*YAML_FIELDS, "task_fetched_at"]
    fix = _converters([*columns, "id"])
    rows = []
    for job_id in ids:
        found = info.get(job_id, {})
        row = [*(found.get(f, "") for f in YAML_FIELDS), now, job_id]
        for index, convert in fix:
            row[index] = convert(row[index])
        rows.append(row)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(_update_sql(columns), rows)
    result.tasks_waiting = waiting.count() if len(ids) == YAML_BATCH else 0


def sync_jobs(client: SkyPilotClient | None = None, *, full: bool = False) -> JobSyncResult:
    """One pass of the job syncer. Raises a SkyPilotError (nothing written) when fetching fails."""
    client = client or SkyPilotClient.from_settings()
    result = JobSyncResult()
    state = SyncState.objects.filter(source=SyncSource.SKYPILOT).first()
    since = None
    if not full and state is not None and state.cursor.get("full_done"):
        since = state.last_success_at
    grouped = fetch_jobs(client, since=since, result=result)
    result.fetched = len(grouped)
    known = stored_ids(sorted(grouped))
    new_ids = sorted(set(grouped) - known)
    needed = tasks_needed_now(grouped, new_ids)
    yaml_info = fetch_task_yaml(client, needed, result) if needed else {}
    touched = write_jobs(grouped, yaml_info, result, read=set(needed))
    refresh_experiment_states(touched)
    read_task_batch(client, result)
    return result
