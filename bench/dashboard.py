"""Benchmark the web UI on a large deck: 1,000 experiments in 50 groups, 50,000 jobs, 200,000
checkpoints (temporary SQLite database, rows seeded with bulk_create).

Prints the median server time (Django test client, logged in; no network), the SQL query count
and the response size of the dashboard ``/``, of its htmx refresh fragment (the deck; also when
the deck is unchanged, which only refreshes the header), of ``/jobs``, ``/operations``, an
expanded row's polled panels, the API's experiment and job lists, and of starring an
experiment (cells updated in place).

    .venv/bin/python bench/dashboard.py [--experiments 1000] [--groups 50] [--jobs 50000]
                                        [--checkpoints 200000] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


def seed(args: argparse.Namespace) -> None:
    from django.db import transaction

    from experiments.models import (
        Checkpoint,
        DesiredState,
        Experiment,
        ExperimentGroup,
        ExperimentGroupMember,
        Job,
        JobStatus,
    )

    now = datetime.now(UTC)
    statuses = list(JobStatus.values)
    with transaction.atomic():
        Experiment.objects.bulk_create(
            (
                Experiment(
                    name=f"team.arena.exp-{i:05d}",
                    flags={
                        "trainer.optimizer.learning_rate": [0.001, 0.0003, 0.003][i % 3],
                        "trainer.batch_size": 524288 * (1 + i % 2),
                        "trainer.total_timesteps": 10_000_000_000,
                        "env.game.num_agents": 24,
                        "seed": i,
                    },
                    nodes=1 + i % 4,
                    gpus=8,
                    accelerator="H100",
                    base_command="uv run",
                    tool_path="tools/run.py",
                    desired_state=DesiredState.RUNNING if i % 5 == 0 else DesiredState.STOPPED,
                )
                for i in range(args.experiments)
            ),
            batch_size=500,
        )
        experiments = list(Experiment.objects.order_by("id").only("id", "name"))
        groups = ExperimentGroup.objects.bulk_create(
            ExperimentGroup(name=f"group-{g:02d}", order=g) for g in range(args.groups)
        )
        per_group = max(1, len(experiments) // max(1, args.groups))
        ExperimentGroupMember.objects.bulk_create(
            (
                ExperimentGroupMember(
                    group=groups[min(i // per_group, len(groups) - 1)],
                    experiment=e,
                    order=i % per_group,
                )
                for i, e in enumerate(experiments)
            ),
            batch_size=1000,
        )
        Job.objects.bulk_create(
            (
                Job(
                    id=j + 1,
                    experiment_id=experiments[j % len(experiments)].name
                    if j % 50
                    else f"orphan-{j}",
                    job_name=experiments[j % len(experiments)].name if j % 50 else f"orphan-{j}",
                    status=statuses[j % len(statuses)],
                    user_name=["alice", "bob", "carol"][j % 3],
                    resources="2x[H100:8]",
                    submitted_at=now - timedelta(minutes=args.jobs - j),
                    started_at=now - timedelta(minutes=args.jobs - j - 1),
                    duration=600.0,
                    first_seen=now,
                    last_seen=now,
                )
                for j in range(args.jobs)
            ),
            batch_size=1000,
        )
        per_experiment = max(1, args.checkpoints // len(experiments))
        Checkpoint.objects.bulk_create(
            (
                Checkpoint(
                    experiment_id=e.id,
                    epoch=epoch * 10,
                    model_path=f"s3://softmax-public/policies/{e.name}/{e.name}:v{epoch * 10}.mpt",
                    policy_version=f"v{epoch * 10}",
                    size=50_000_000,
                    last_modified=now,
                    missing=epoch % 97 == 0,
                    synced_at=now,
                )
                for e in experiments
                for epoch in range(per_experiment)
            ),
            batch_size=2000,
        )
        Experiment.objects.refresh_current_state()


def measure(client, url: str, runs: int, **headers: str) -> tuple[float, int, int]:
    """Median milliseconds, query count and response size of ``runs`` GETs (after a warm-up)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url, **headers)
    assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        client.get(url, **headers)
        count = len(queries)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, **headers)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), count, len(response.content)


def measure_post(client, url: str, runs: int, **headers: str) -> tuple[float, int, int]:
    """Like ``measure`` for a POST (here a toggle, so every run changes something)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.post(url, {}, **headers)
        count = len(queries)
    assert response.status_code == 200, (url, response.status_code)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.post(url, {}, **headers)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), count, len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--checkpoints", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="skydeck-bench-")
    os.environ.update(
        SKYDECK_HOME=tmp,
        SKYDECK_DB_PATH=f"{tmp}/bench.db",
        SKYDECK_ALLOWED_HOSTS="testserver",
        SKYDECK_LOG_LEVEL="WARNING",
    )
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skydeck_site.settings")
    import warnings

    warnings.filterwarnings("ignore", message="No directory at")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from experiments.models import Experiment

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    seed(args)
    seeded = time.perf_counter() - started
    user = User.objects.create_user("bench")  # force_login: no password needed
    client = Client()
    client.force_login(user)
    some = Experiment.objects.order_by("id")[len(range(args.experiments)) // 2]

    print(
        f"seeded {args.experiments:,} experiments in {args.groups} groups, {args.jobs:,} jobs, "
        f"{args.checkpoints:,} checkpoints in {seeded:.1f} s; median of {args.runs} runs"
    )
    htmx_deck = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "deck"}
    htmx = {"HTTP_HX_REQUEST": "true"}
    cases = [
        ("dashboard /", "/", {}),
        ("refresh fragment (deck)", "/", htmx_deck),
        ("dashboard /?q=exp-0001", "/?q=exp-0001", {}),
        ("/jobs", "/jobs", {}),
        ("/jobs?status=RUNNING&page=20", "/jobs?status=RUNNING&page=20", {}),
        ("/operations", "/operations", {}),
        ("expanded row panels", f"/experiments/{some.pk}/panels", htmx),
        ("API /api/experiments/ (100)", "/api/experiments/", {}),
        ("API /api/jobs/ (100)", "/api/jobs/", {}),
    ]
    deck = client.get("/", **htmx_deck).content.decode()
    version = re.search(r'data-version="([0-9a-f]+)"', deck).group(1)
    cases.insert(2, ("refresh fragment, unchanged", f"/?v={version}", htmx_deck))
    for label, url, headers in cases:
        median_ms, queries, size = measure(client, url, args.runs, **headers)
        print(f"{label:<32} {median_ms:8.1f} ms  {queries:3d} queries  {size / 1024:8.0f} KiB")
    median_ms, queries, size = measure_post(
        client, f"/experiments/{some.pk}/star", args.runs, **htmx
    )
    print(
        f"{'star (htmx, cells in place)':<32} {median_ms:8.1f} ms  {queries:3d} queries  "
        f"{size / 1024:8.0f} KiB"
    )


if __name__ == "__main__":
    main()
