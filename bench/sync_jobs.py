"""Benchmark the SkyPilot job syncer on a simulated 50,000-job history.

The API server is simulated in-process with ``responses`` (tests/fake_skypilot.py, the real
request-id protocol), so the figures include JSON encoding/decoding on both sides but no network.
Prints jobs/s for the first full sync, split into the double's share (time inside the simulated
server's handlers: filtering, sorting and JSON-encoding 50,000 records per request) and SkyDeck's
own work (the rest: requests, decoding, mapping, YAML, writing), beside the raw rate of SQLite's
own bulk path on the same table in the same run (``executemany`` of one ``INSERT ... ON CONFLICT
DO UPDATE`` with the synced rows); then seconds for an incremental sync with 100 active jobs.

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
    import fake_skypilot
    import responses
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from fake_skypilot import ENDPOINT, FakeSkyPilot, job_record

    from experiments.models import Experiment, Job
    from syncing.runner import run_sync

    double = {"seconds": 0.0}

    def timed(method):
        def run(self, request):
            started = time.perf_counter()
            try:
                return method(self, request)
            finally:
                double["seconds"] += time.perf_counter() - started

        return run

    for name in ("_queue", "_status", "_get"):
        setattr(FakeSkyPilot, name, timed(getattr(fake_skypilot.FakeSkyPilot, name)))

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
        double_seconds = double["seconds"]
        raw_rate = raw_upsert_rate(connection)

        # the active jobs move on; one more job was submitted
        for record in server.jobs[-active:]:
            record["job_duration"] = record["job_duration"] + 30
        server.jobs.append(job_record(total + 1, "exp-1", "PENDING", submitted_at=time.time()))
        started = time.perf_counter()
        second = run_sync("skypilot")
        incremental_seconds = time.perf_counter() - started
        assert second.ok, second.error

    own = full_seconds - double_seconds
    print(f"jobs in history          : {total:,} ({active} active)")
    print(
        f"first full sync          : {full_seconds:.1f} s  = {total / full_seconds:,.0f} jobs/s "
        f"({first.counts['requests']} queue requests)"
    )
    print(f"  the double's share     : {double_seconds:.1f} s (the simulated server's handlers)")
    print(
        f"  SkyDeck's own work     : {own:.1f} s  = {total / own:,.0f} jobs/s "
        f"= {100 * total / own / raw_rate:.1f} % of the raw upsert rate"
    )
    print(f"raw SQLite upsert        : {raw_rate:,.0f} rows/s (executemany, same table)")
    print(
        f"incremental sync         : {incremental_seconds:.2f} s "
        f"(new {second.counts['new']}, updated {second.counts['updated']}, "
        f"unchanged {second.counts['unchanged']}, {second.counts['requests']} queue requests)"
    )


def raw_upsert_rate(connection) -> float:
    """Rows/s of SQLite's own bulk path into the jobs table: the synced rows deleted and written
    back with one ``executemany`` of ``INSERT ... ON CONFLICT (id) DO UPDATE``, in one
    transaction (the table keeps its indexes)."""
    raw = connection.connection  # the sqlite3 connection itself: no Django in between
    cursor = raw.cursor()
    cursor.execute("SELECT * FROM jobs ORDER BY id")
    columns = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    cursor.execute("DELETE FROM jobs")
    raw.commit()
    names = ", ".join(f'"{c}"' for c in columns)  # column names from the table itself
    updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != "id")
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO jobs ({names}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {updates}"  # noqa: S608
    started = time.perf_counter()
    cursor.execute("BEGIN")
    cursor.executemany(sql, rows)
    cursor.execute("COMMIT")
    return len(rows) / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
