"""Benchmark the SkyPilot job syncer on a simulated 50,000-job history.

The API server is simulated in-process with ``responses`` (tests/fake_skypilot.py, the real
request-id protocol), so the figures include JSON encoding/decoding on both sides but no network.
Prints jobs/s for the first full sync and seconds for an incremental sync with 100 active jobs.

    .venv/bin/python bench/sync_jobs.py [--jobs 50000] [--active 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--active", type=int, default=100)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="skydeck-bench-")
    os.environ.update(SKYDECK_HOME=tmp, SKYDECK_DB_PATH=f"{tmp}/bench.db")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skydeck_site.settings")
    os.environ["SKYPILOT_API_COOKIE_FILE"] = f"{tmp}/no-cookies.txt"
    import django

    django.setup()
    import responses
    from django.conf import settings
    from django.core.management import call_command
    from fake_skypilot import ENDPOINT, FakeSkyPilot, job_record

    from experiments.models import Experiment, Job
    from syncing.runner import run_sync

    call_command("migrate", verbosity=0)
    settings.SKYDECK_SKYPILOT_ENDPOINT = ENDPOINT
    Experiment.objects.bulk_create(Experiment(name=f"exp-{i}") for i in range(1000))
    now = time.time()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        server = FakeSkyPilot(rsps)
        total, active = args.jobs, args.active
        server.jobs = [
            job_record(
                i,
                f"exp-{i % 1000}",
                "RUNNING" if i > total - active else "SUCCEEDED",
                submitted_at=now - (total - i) * 60.0,
            )
            for i in range(1, total + 1)
        ]
        started = time.perf_counter()
        first = run_sync("skypilot")
        full_seconds = time.perf_counter() - started
        assert first.ok, first.error
        assert Job.objects.count() == total

        # the active jobs move on; one more job was submitted
        for record in server.jobs[-active:]:
            record["job_duration"] = record["job_duration"] + 30
        server.jobs.append(job_record(total + 1, "exp-1", "PENDING", submitted_at=time.time()))
        started = time.perf_counter()
        second = run_sync("skypilot")
        incremental_seconds = time.perf_counter() - started
        assert second.ok, second.error

    print(f"jobs in history          : {total:,} ({active} active)")
    print(
        f"first full sync          : {full_seconds:.1f} s  = {total / full_seconds:,.0f} jobs/s "
        f"({first.counts['requests']} queue requests)"
    )
    print(
        f"incremental sync         : {incremental_seconds:.2f} s "
        f"(new {second.counts['new']}, updated {second.counts['updated']}, "
        f"unchanged {second.counts['unchanged']}, {second.counts['requests']} queue requests)"
    )


if __name__ == "__main__":
    main()
