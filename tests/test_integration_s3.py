"""``manage.py sync s3`` end to end against moto's standalone S3 server over loopback HTTP.

It needs no outside server, so it is not marked ``integration``; it serves S3 on loopback, so it
is marked ``slow`` (``pytest -m slow``; .ci/run runs it).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from aws_isolation import isolate_aws
from django.core.management import call_command

from experiments.models import Checkpoint, Experiment, SyncState
from syncing.checkpoints import unmatched_replays

# a loopback S3 server (.ci/run runs it: -m slow)
pytestmark = pytest.mark.slow

BUCKET = "skydeck-it"
REGION = "us-east-1"
NAMES = ("navigation", "arena_v2", "memory.lstm")
EPOCHS = 100


@pytest.fixture
def moto_endpoint(monkeypatch, tmp_path, settings):
    from moto.server import ThreadedMotoServer

    isolate_aws(monkeypatch, tmp_path, REGION)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    settings.SKYDECK_S3_BUCKET = BUCKET
    settings.SKYDECK_S3_POLICY_PREFIX = "policies"
    settings.SKYDECK_S3_REPLAY_PREFIX = "replays"
    settings.SKYDECK_S3_ENDPOINT_URL = endpoint
    settings.SKYDECK_S3_REGION = REGION
    try:
        yield endpoint
    finally:
        server.stop()


def seed_tree(endpoint: str) -> dict[str, dict[int, str]]:
    """A realistic tree: Metta names, a sub-folder, junk, replays by epoch and unmatched ones."""
    raw = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    raw.create_bucket(Bucket=BUCKET)
    expected: dict[str, dict[int, str]] = {}
    keys: list[str] = []
    for name in NAMES:
        expected[name] = {}
        for epoch in range(1, EPOCHS + 1):
            folder = "checkpoints/" if epoch % 10 == 0 else ""
            key = f"policies/{name}/{folder}{name}:v{epoch}.mpt"
            expected[name][epoch] = key
            keys.append(key)
        keys += [
            f"policies/{name}/README.md",
            f"policies/{name}/config.yaml",
            f"policies/{name}/archive/old/{name}:v999.mpt",  # too deep: ignored
            f"replays/{name}/{name}:v{EPOCHS}.json.z",
            f"replays/{name}/epoch_50/game_0.json.gz",
            f"replays/{name}/epoch_50/game_1.json.gz",
            f"replays/{name}/eval/summary.json",  # names no epoch
        ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: raw.put_object(Bucket=BUCKET, Key=k, Body=b"w" * 64), keys))
    return expected


def test_sync_command_end_to_end_against_moto_server(db, moto_endpoint, capsys):
    expected = seed_tree(moto_endpoint)
    Experiment.objects.bulk_create(Experiment(name=n) for n in NAMES)
    total = len(NAMES) * EPOCHS

    call_command("sync", "s3")
    out = capsys.readouterr().out
    assert out.startswith(f"s3: new {total}, updated 0, unchanged 0, missing 0, errors 0 in ")

    assert Checkpoint.objects.count() == total
    for name, by_epoch in expected.items():
        stored = {
            c.epoch: c for c in Checkpoint.objects.filter(experiment__name=name, missing=False)
        }
        assert {e: c.model_path for e, c in stored.items()} == {
            e: f"s3://{BUCKET}/{k}" for e, k in by_epoch.items()
        }
        assert all(c.size == 64 and c.policy_version == f"v{e}" for e, c in stored.items())
        assert all(c.last_modified is not None for c in stored.values())
        assert stored[EPOCHS].replay_paths == [
            f"s3://{BUCKET}/replays/{name}/{name}:v{EPOCHS}.json.z"
        ]
        assert len(stored[50].replay_paths) == 2
        assert unmatched_replays(name) == [f"s3://{BUCKET}/replays/{name}/eval/summary.json"]
    state = SyncState.objects.get(source="s3")
    assert state.ok and state.counts["experiments"] == len(NAMES)

    call_command("sync", "s3")
    out = capsys.readouterr().out
    assert out.startswith(f"s3: new 0, updated 0, unchanged {total}, missing 0, errors 0 in ")
    assert Checkpoint.objects.count() == total
