"""Benchmark the web UI on a large deck: 1,000 experiments in 50 groups, 50,000 jobs, 200,000
checkpoints (temporary SQLite database, rows seeded with bulk_create).

Prints the median server time (Django test client, logged in; no network), the SQL query count
and the response size (and its gzip size) of the dashboard ``/``, of its htmx refresh fragment
(the deck; the 10 s poll when nothing changed, and when one row changed), of a group section
scrolled into view and a "Show more", of ``/jobs``, ``/operations``, an expanded row's polled
panels, the API's experiment and job lists, and of starring an experiment (cells in place).

``--compare REV`` runs this benchmark twice in one run, on a git worktree of ``REV`` (before) and
on this tree (after), and prints both with the ratio after/before per line.

    .venv/bin/python bench/dashboard.py [--experiments 1000] [--groups 50] [--jobs 50000]
                                        [--checkpoints 200000] [--runs 15] [--compare REV]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]


def _triage_fields(status: str, j: int) -> dict:
    """What the job syncer and the log sampler keep for a job of this status (issue 16)."""
    from experiments import triage
    from experiments.models import JobStatus

    if status in triage.FAILED:
        reason = [
            f"CUDA out of memory. Tried to allocate {j % 7}.50 GiB on node 10.0.{j % 8}.{j % 250}",
            f"NCCL watchdog caught collective operation timeout after {j} ms on rank {j % 16}",
            "Job failed with return code list: [1]",
        ][j % 3]
        return {"failure_reason": reason, "failure_signature": triage.signature(status, reason)}
    if status == JobStatus.RUNNING:
        return {
            "progress": {
                "step": 1900,
                "total": 10_000,
                "epoch": None,
                "metrics": {"loss": 0.1, "tok/s": 400_019},
            },
            "stalled": "no log progress for 1 h 5 min" if j % 97 == 0 else None,
        }
    return {}


def seed(args: argparse.Namespace) -> None:
    from django.db import transaction

    from experiments.models import (
        Checkpoint,
        DesiredState,
        Experiment,
        ExperimentGroup,
        ExperimentGroupMember,
        GroupBudget,
        Job,
        JobSample,
        JobStatus,
    )

    now = datetime.now(UTC)
    statuses = list(JobStatus.values)
    active = set(JobStatus.active())
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
                    nodes=2,
                    gpus=8,
                    accelerator="H100",
                    cloud=["aws", "gcp"][j % 2],
                    submitted_at=now - timedelta(minutes=args.jobs - j),
                    started_at=now - timedelta(minutes=args.jobs - j - 1),
                    ended_at=None
                    if statuses[j % len(statuses)] in active
                    else now - timedelta(minutes=args.jobs - j - 11),
                    duration=600.0,
                    first_seen=now,
                    last_seen=now,
                    # issue 16: failed jobs carry a reason and its signature, running ones their
                    # last progress (a few of them stalled)
                    **_triage_fields(statuses[j % len(statuses)], j),
                )
                for j in range(args.jobs)
            ),
            batch_size=1000,
        )
        running = list(Job.objects.filter(status=JobStatus.RUNNING).values_list("id", flat=True))
        JobSample.objects.bulk_create(
            (
                JobSample(
                    job_id=job_id,
                    taken_at=now - timedelta(minutes=5 * (20 - k)),
                    step=100 * k,
                    total=10_000,
                    metrics={"loss": round(2.0 / (1 + k), 4), "tok/s": 400_000 + k},
                )
                for job_id in running
                for k in range(20)
            ),
            batch_size=2000,
        )
        for group in groups[:10]:
            GroupBudget.objects.create(group=group, gpu_hours=500 + 100 * group.order)
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


LINE = re.compile(
    r"^(?P<label>.+?)\s+(?P<ms>[\d.]+) ms\s+(?P<queries>\d+) queries\s+(?P<kib>\d+) KiB"
)


def report(label: str, median_ms: float, queries: int, body: bytes) -> None:
    packed = len(gzip.compress(body, 6)) if body else 0
    print(
        f"{label:<32} {median_ms:8.1f} ms  {queries:3d} queries  {len(body) / 1024:8.0f} KiB"
        f"  (gzip {packed / 1024:.0f} KiB)",
        flush=True,
    )


def measure(client, url: str, runs: int, **headers: str) -> tuple[float, int, bytes]:
    """Median milliseconds, query count and response body of ``runs`` GETs (after a warm-up)."""
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
    return statistics.median(times), count, response.content


def measure_changed_poll(client, runs: int, experiment_id: int) -> tuple[float, int, bytes]:
    """The 10 s poll after one row changed (a sync updated one experiment), as skydeck.js sends
    it: the version it shows and the rows of each section it has loaded."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from experiments.models import Experiment

    htmx_deck = {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "deck"}
    deck = client.get("/", **htmx_deck).content.decode()
    shown = ",".join(
        f"{key}:{len(re.findall('class=.exp-row', part))}"
        for key, part in re.findall(r'data-key="(\w+)" data-built(.*?)</section>', deck, re.S)
    )
    times, count, body = [], 0, b""
    for run in range(runs + 1):
        version = re.search(r'data-version="([^"]+)"', deck).group(1)
        Experiment.objects.filter(pk=experiment_id).update(reconcile_note=f"bench {run}")
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get("/", {"v": version, "shown": shown}, **htmx_deck)
            elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200
        body = response.content
        deck = body.decode()
        if run:  # the first is a warm-up
            times.append(elapsed)
            count = len(queries)
    return statistics.median(times), count, body


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
    return statistics.median(times), count, response.content


def compare(rev: str, argv: list[str]) -> None:
    """Run this benchmark on ``rev`` (a temporary git worktree) and on this tree, one after the
    other in this run, and print both figures and their ratio per line."""
    tree = Path(tempfile.mkdtemp(prefix="skydeck-bench-before-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=ROOT, check=True)
    try:
        results = {}
        for name, root in (("before", tree), ("after", ROOT)):
            print(f"--- {name}: {root} ({'rev ' + rev if name == 'before' else 'this tree'})")
            out = subprocess.run(
                [sys.executable, str(root / "bench" / "dashboard.py"), *argv],
                cwd=root,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            print(out, end="")
            results[name] = {
                m["label"].strip(): m.groupdict() for m in map(LINE.match, out.splitlines()) if m
            }
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(tree, ignore_errors=True)
    print(
        f"\n{'':<32} {'before ms':>10} {'after ms':>10} {'ratio':>7} {'KiB before':>11} {'after':>7}"
    )
    for label, before in results["before"].items():
        after = results["after"].get(label)
        if after is None:
            continue
        ratio = float(after["ms"]) / float(before["ms"]) if float(before["ms"]) else float("nan")
        print(
            f"{label:<32} {float(before['ms']):10.1f} {float(after['ms']):10.1f} {ratio:7.2f}"
            f" {int(before['kib']):11d} {int(after['kib']):7d}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--checkpoints", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--compare", metavar="REV", help="also run on REV; print the ratios")
    args = parser.parse_args()
    if args.compare:
        argv = [a for a in sys.argv[1:] if a != "--compare" and a != args.compare]
        argv = [a for a in argv if not a.startswith("--compare=")]
        compare(args.compare, argv)
        return

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

    from experiments.models import Experiment, Job

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
    version = re.search(r'data-version="([^"]+)"', deck).group(1)
    cases.insert(2, ("refresh fragment, unchanged", f"/?v={version}", htmx_deck))
    if "/section" in deck or "data-built" in deck:  # the deck builds sections lazily
        from experiments.models import ExperimentGroup

        last = ExperimentGroup.objects.order_by("-order", "-id").first()
        cases.append(("group scrolled into view", f"/groups/{last.pk}/section", htmx))
        cases.append(("show more (rows 51-100)", f"/groups/{last.pk}/rows?offset=50", htmx))
    if "/usage" in deck or 'href="/usage"' in client.get("/").content.decode():  # issue 16
        since = (datetime.now(UTC) - timedelta(days=29)).date().isoformat()
        cases.append(("/usage (30 days, by user)", f"/usage?since={since}", {}))
        cases.append(("/usage (30 days, by group)", f"/usage?since={since}&by=group", {}))
        cases.append(("/failures (30 days)", "/failures?days=30", {}))
        cases.append(("API /api/failures/ (30 days)", "/api/failures/?days=30", {}))
        cases.append(("API /api/budgets/ (10 groups)", "/api/budgets/", {}))
        sampled = Job.objects.filter(status="RUNNING").order_by("-id").first()
        cases.append(("API /api/jobs/<id>/samples/", f"/api/jobs/{sampled.id}/samples/", {}))
        cases.append(
            ("API /api/usage/ (by experiment)", f"/api/usage/?since={since}&by=experiment", {})
        )
    for label, url, headers in cases:
        report(label, *measure(client, url, args.runs, **headers))
    report("changed poll (one row)", *measure_changed_poll(client, args.runs, some.pk))
    report(
        "star (htmx, cells in place)",
        *measure_post(client, f"/experiments/{some.pk}/star", args.runs, **htmx),
    )


if __name__ == "__main__":
    main()
