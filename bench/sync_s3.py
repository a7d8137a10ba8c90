"""Benchmark the S3 checkpoint syncer against moto's S3 server on loopback.

Starts ``moto.server.ThreadedMotoServer`` on 127.0.0.1, seeds ``--experiments`` x
``--checkpoints`` Metta-named checkpoints (plus one replay per experiment), creates the
Experiment rows in a throwaway SQLite database, then times ``run_sync("s3")``:

1. the first pass (every experiment, everything new),
2. a second pass over every experiment with nothing changed (``all_experiments=True``),
3. a regular later pass (active experiments + one sweep slice).

It runs the three passes twice, from an empty checkpoints table each time: listing every
experiment's two prefixes (``ROOTS_MIN`` out of reach, as before the root listing), then as the
syncer chooses (the two roots whole when that takes fewer requests), and prints both with the
requests each pass sent.

The syncer talks HTTP to the server, so the figures include boto3, the HTTP round trips and
moto's own (single-process, GIL-bound) request handling. Seeding writes straight into the
server's in-process backend by default (``--seed direct``, fast); ``--seed http`` uses
``put_object`` from many threads instead.

    .venv/bin/python bench/sync_s3.py [--experiments 1000] [--checkpoints 100] [--seed direct]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from aws_isolation import isolated_environ  # noqa: E402 - tests/ is on the path from here

BUCKET = "skydeck-bench"
REGION = "us-east-1"


def isolate_aws(tmp: str) -> None:
    environ = isolated_environ(dict(os.environ), Path(tmp), REGION)
    os.environ.clear()
    os.environ.update(environ)


def keys_for(names: list[str], checkpoints: int) -> list[str]:
    keys = []
    for name in names:
        keys += [f"policies/{name}/{name}:v{e}.mpt" for e in range(1, checkpoints + 1)]
        keys.append(f"replays/{name}/{name}:v{checkpoints}.json.z")
    return keys


def seed_direct(keys: list[str]) -> None:
    """Write into the moto backend the in-process server serves (no HTTP)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(BUCKET, key, b"w")


def seed_http(raw, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda k: raw.put_object(Bucket=BUCKET, Key=k, Body=b"w"), keys))


def instrument() -> dict[str, float]:
    """Accumulate the seconds spent listing S3 and writing the database, per pass."""
    from syncing import checkpoints
    from syncing.s3 import S3Client

    spent = {"list": 0.0, "write": 0.0}
    write_listings = checkpoints.write_listings

    def timing(method):
        def timed_list(self, *args, **kwargs):
            started = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent["list"] += time.perf_counter() - started

        return timed_list

    def timed_write(*args, **kwargs):
        started = time.perf_counter()
        try:
            return write_listings(*args, **kwargs)
        finally:
            spent["write"] += time.perf_counter() - started

    S3Client.list_experiments = timing(S3Client.list_experiments)
    S3Client.list_roots = timing(S3Client.list_roots)
    checkpoints.write_listings = timed_write
    return spent


def timed(fn):
    started = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - started
    return value, seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--checkpoints", type=int, default=100)
    parser.add_argument("--seed", choices=["direct", "http"], default="direct")
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="skydeck-bench-")
    os.environ.update(SKYDECK_HOME=tmp, SKYDECK_DB_PATH=f"{tmp}/bench.db")
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "skydeck_site.settings")
    isolate_aws(tmp)
    import django

    django.setup()
    import boto3
    from django.conf import settings
    from django.core.management import call_command
    from moto.server import ThreadedMotoServer

    from experiments.models import Checkpoint, Experiment, SyncState
    from syncing import checkpoints
    from syncing.runner import run_sync

    call_command("migrate", verbosity=0)
    phase = instrument()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per moto request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        settings.SKYDECK_S3_BUCKET = BUCKET
        settings.SKYDECK_S3_ENDPOINT_URL = endpoint
        settings.SKYDECK_S3_REGION = REGION
        raw = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
        raw.create_bucket(Bucket=BUCKET)

        names = [f"exp-{i:05}" for i in range(args.experiments)]
        keys = keys_for(names, args.checkpoints)
        seeder = seed_direct if args.seed == "direct" else (lambda k: seed_http(raw, k))
        _, seed_seconds = timed(lambda: seeder(keys))
        Experiment.objects.bulk_create(Experiment(name=n) for n in names)
        total = args.experiments * args.checkpoints

        roots_min = checkpoints.ROOTS_MIN
        runs = {}
        for listing in ("prefixes", "chosen"):
            Checkpoint.objects.all().delete()
            SyncState.objects.filter(source="s3").delete()
            checkpoints.ROOTS_MIN = 10**9 if listing == "prefixes" else roots_min
            split = runs[listing] = {}
            for label in ("first", "second", "regular"):
                phase.update(list=0.0, write=0.0)
                kwargs = {"all_experiments": True} if label == "second" else {}
                outcome, seconds = timed(lambda kwargs=kwargs: run_sync("s3", **kwargs))
                assert outcome.ok, outcome.error
                split[label] = (outcome, seconds, dict(phase))
            assert Checkpoint.objects.count() == total, Checkpoint.objects.count()
            assert split["second"][0].counts["unchanged"] == total, split["second"][0].counts
    finally:
        server.stop()

    def line(pass_: tuple) -> str:
        outcome, seconds, spent = pass_
        c = outcome.counts
        return (
            f"{seconds:6.1f} s, {c['requests']:,} requests by {c['listing']}; "
            f"{c['experiments']} experiments listed, new {c['new']}, updated {c['updated']}, "
            f"unchanged {c['unchanged']}, missing {c['missing']}, errors {c['errors']} "
            f"[listing {spent['list']:.1f} s, db writes {spent['write']:.1f} s]"
        )

    print(
        f"tree                     : {args.experiments:,} experiments x {args.checkpoints} "
        f"checkpoints = {total:,} objects (+{args.experiments:,} replays)"
    )
    print(
        f"seeding ({args.seed:6})         : {seed_seconds:.1f} s = "
        f"{len(keys) / seed_seconds:,.0f} objects/s"
    )
    for listing, split in runs.items():
        print(f"-- listing {listing}:")
        for label, title in (
            ("first", "first pass (all, new)   "),
            ("second", "second pass (all, same) "),
            ("regular", "regular pass (hot+sweep)"),
        ):
            print(f"{title} : {line(split[label])}")
    for label in ("first", "second", "regular"):
        before, after = runs["prefixes"][label][1], runs["chosen"][label][1]
        print(f"{label} pass: chosen listing takes {after / before:.2f}x the prefixes' time")


if __name__ == "__main__":
    main()
