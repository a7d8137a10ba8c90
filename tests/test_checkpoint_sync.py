"""The checkpoint syncer (syncing.checkpoints) and ``manage.py backfill_versions``; S3 is moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock

import boto3
import pytest
from aws_isolation import isolate_aws
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from moto import mock_aws
from s3_requests import ListRecorder, inject_s3_error, record_list_calls

from experiments.models import Checkpoint, DesiredState, Experiment, JobStatus, SyncState
from syncing import checkpoints as ckpt_sync
from syncing.checkpoints import (
    CheckpointSyncFailed,
    plan_pass,
    sweep_slice,
    sync_checkpoints,
    unmatched_replay_count,
    unmatched_replays,
)
from syncing.runner import run_sync
from syncing.s3 import S3Client

BUCKET = "softmax-public"
REGION = "us-east-1"

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path, settings):
    """Isolate from the developer's AWS setup; fake credentials; S3 settings for moto."""
    isolate_aws(monkeypatch, tmp_path, REGION)
    settings.SKYDECK_S3_BUCKET = BUCKET
    settings.SKYDECK_S3_POLICY_PREFIX = "policies"
    settings.SKYDECK_S3_REPLAY_PREFIX = "replays"
    settings.SKYDECK_S3_ENDPOINT_URL = None
    settings.SKYDECK_S3_REGION = REGION


@pytest.fixture
def s3(db):
    """Moto-mocked S3 with the bucket; yields a raw boto3 client for seeding."""
    with mock_aws():
        raw = boto3.client("s3", region_name=REGION)
        raw.create_bucket(Bucket=BUCKET)
        yield raw


def put(raw, key: str, body: bytes = b"x") -> None:
    raw.put_object(Bucket=BUCKET, Key=key, Body=body)


def put_at(raw, key: str, at: datetime, body: bytes = b"x") -> None:
    """Put an object whose LastModified is ``at`` (naive UTC, as moto keeps it)."""
    with mock.patch("moto.s3.models.utcnow", lambda: at):
        raw.put_object(Bucket=BUCKET, Key=key, Body=body)


def seed(keys, body: bytes = b"x") -> None:
    """Write objects straight into moto's backend (fast; seeding is not under test)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(BUCKET, key, body)


def uri(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def experiments(*names: str, **fields) -> list[Experiment]:
    return Experiment.objects.bulk_create(Experiment(name=n, **fields) for n in names)


def recording_client() -> tuple[S3Client, ListRecorder]:
    client = S3Client.from_settings()
    return client, record_list_calls(client)


def rows(name: str) -> dict[int, Checkpoint]:
    return {c.epoch: c for c in Checkpoint.objects.filter(experiment__name=name)}


# --------------------------------------------------------------------------- storing


def test_metta_naming_is_stored_with_every_field(s3):
    (exp,) = experiments("navigation")
    t1 = datetime(2025, 3, 1, 12, 0, 0)
    t2 = datetime(2025, 3, 2, 8, 30, 15)
    put_at(s3, "policies/navigation/navigation:v1.mpt", t1, b"a" * 10)
    put_at(s3, "policies/navigation/navigation:v12.mpt", t2, b"b" * 1234)

    result = sync_checkpoints()

    assert (result.new, result.updated, result.unchanged, result.errors) == (2, 0, 0, 0)
    stored = rows("navigation")
    assert sorted(stored) == [1, 12]
    one, twelve = stored[1], stored[12]
    assert one.experiment_id == exp.id
    assert one.model_path == uri("policies/navigation/navigation:v1.mpt")
    assert (one.policy_version, one.size) == ("v1", 10)
    assert one.last_modified == t1.replace(tzinfo=UTC)
    assert twelve.model_path == uri("policies/navigation/navigation:v12.mpt")
    assert (twelve.policy_version, twelve.size) == ("v12", 1234)
    assert twelve.last_modified == t2.replace(tzinfo=UTC)
    assert not one.missing and not twelve.missing
    assert one.replay_paths == []
    assert abs(one.synced_at - timezone.now()) < timedelta(minutes=1)


def test_alternative_patterns_are_stored_and_other_keys_ignored(s3):
    experiments("exp")
    accepted = {
        2: "policies/exp/checkpoint_2.pt",
        3: "policies/exp/epoch-3.pth",
        4: "policies/exp/model4.safetensors",
        5: "policies/exp/step_5.ckpt",
        6: "policies/exp/6.mpt",
        7: "policies/exp/checkpoints/exp:v7.mpt",
        8: "policies/exp/exp:v008.mpt",
    }
    ignored = [
        "policies/exp/README.txt",
        "policies/exp/foo.mpt",
        "policies/exp/v12.txt",
        "policies/exp/checkpoints/",
        "policies/exp/exp:v11.json",
        "policies/exp/a/b/exp:v10.mpt",
        "policies/exp2/exp2:v50.mpt",
    ]
    for key in [*accepted.values(), *ignored]:
        put(s3, key)

    sync_checkpoints()

    stored = rows("exp")
    assert {e: c.model_path for e, c in stored.items()} == {e: uri(k) for e, k in accepted.items()}
    assert all(c.policy_version == f"v{e}" for e, c in stored.items())
    assert Checkpoint.objects.count() == len(accepted)


def test_more_than_1000_objects_under_one_prefix_are_all_stored(s3):
    experiments("big")
    seed(f"policies/big/big:v{i}.mpt" for i in range(1205))

    result = sync_checkpoints()

    assert result.new == 1205
    assert Checkpoint.objects.filter(experiment__name="big").count() == 1205
    assert Checkpoint.objects.filter(epoch=1204, model_path=uri("policies/big/big:v1204.mpt"))


def test_replays_attach_by_epoch_and_unmatched_ones_are_kept(s3):
    experiments("exp", "other")
    put(s3, "policies/exp/exp:v1.mpt")
    put(s3, "policies/exp/exp:v2.mpt")
    put(s3, "policies/other/other:v1.mpt")
    put(s3, "replays/exp/exp:v1.json.z")
    put(s3, "replays/exp/epoch_2/game_0.json.gz")
    put(s3, "replays/exp/epoch_2/game_1.json.gz")
    put(s3, "replays/exp/misc/game.json.z")  # names no epoch
    put(s3, "replays/exp/exp:v99.json.z")  # an epoch with no checkpoint

    sync_checkpoints()

    stored = rows("exp")
    assert stored[1].replay_paths == [uri("replays/exp/exp:v1.json.z")]
    assert stored[2].replay_paths == [
        uri("replays/exp/epoch_2/game_0.json.gz"),
        uri("replays/exp/epoch_2/game_1.json.gz"),
    ]
    assert unmatched_replays("exp") == [
        uri("replays/exp/exp:v99.json.z"),
        uri("replays/exp/misc/game.json.z"),
    ]
    assert unmatched_replay_count(Experiment.objects.get(name="exp")) == 2
    assert unmatched_replays("other") == []

    # a new replay for epoch 1 is picked up; the unmatched list is bounded but counted in full
    put(s3, "replays/exp/v1/game_2.json")
    seed(f"replays/exp/misc/g{i:03}.json" for i in range(30))
    result = sync_checkpoints()
    assert result.updated == 1
    assert uri("replays/exp/v1/game_2.json") in rows("exp")[1].replay_paths
    assert unmatched_replay_count("exp") == 32
    kept = unmatched_replays("exp")
    assert len(kept) == ckpt_sync.UNMATCHED_KEEP
    assert kept == sorted(kept)


def test_a_disappearing_object_is_marked_missing_and_comes_back(s3):
    experiments("exp")
    put(s3, "policies/exp/exp:v1.mpt")
    put(s3, "policies/exp/exp:v2.mpt", b"22")
    sync_checkpoints()
    row_id = rows("exp")[2].id
    seen_at = rows("exp")[2].synced_at

    s3.delete_object(Bucket=BUCKET, Key="policies/exp/exp:v2.mpt")
    result = sync_checkpoints()
    assert (result.missing, result.unchanged, result.new) == (1, 1, 0)
    gone = rows("exp")[2]
    assert gone.id == row_id and gone.missing
    assert gone.synced_at == seen_at  # synced_at is when it was last seen
    assert not rows("exp")[1].missing

    result = sync_checkpoints()  # still gone: not counted again, not deleted
    assert (result.missing, result.still_missing, result.unchanged) == (0, 1, 1)
    assert rows("exp")[2].missing

    put(s3, "policies/exp/exp:v2.mpt", b"2222")
    result = sync_checkpoints()
    assert (result.updated, result.missing) == (1, 0)
    back = rows("exp")[2]
    assert back.id == row_id and not back.missing and back.size == 4


def test_an_epoch_moving_to_a_new_key_updates_its_row(s3):
    experiments("exp")
    put_at(s3, "policies/exp/exp:v3.mpt", datetime(2025, 1, 1))
    sync_checkpoints()
    before = rows("exp")[3]

    # re-uploaded under another name, the old key removed
    s3.delete_object(Bucket=BUCKET, Key="policies/exp/exp:v3.mpt")
    put(s3, "policies/exp/checkpoints/exp:v3.mpt", b"new")
    result = sync_checkpoints()

    assert (result.new, result.updated, result.missing) == (0, 1, 0)
    after = rows("exp")[3]
    assert after.id == before.id
    assert after.model_path == uri("policies/exp/checkpoints/exp:v3.mpt")
    assert after.size == 3


def test_keys_reparsed_to_other_epochs_never_break_the_constraints(s3, make_checkpoint):
    (exp,) = experiments("exp")
    put(s3, "policies/exp/exp:v4.mpt")
    put(s3, "policies/exp/exp:v5.mpt")
    put(s3, "policies/exp/exp:v6.mpt")
    # Rows stored by an older parser: the v4 key at epoch 3, the v5 and v6 keys swapped, and
    # an epoch-4 row whose object is gone.
    a = make_checkpoint(exp, 3, model_path=uri("policies/exp/exp:v4.mpt"))
    b = make_checkpoint(exp, 4, model_path=uri("policies/exp/old-4.mpt"))
    c = make_checkpoint(exp, 5, model_path=uri("policies/exp/exp:v6.mpt"))
    d = make_checkpoint(exp, 6, model_path=uri("policies/exp/exp:v5.mpt"))

    result = sync_checkpoints()

    stored = rows("exp")
    assert {e: r.model_path for e, r in stored.items()} == {
        4: uri("policies/exp/exp:v4.mpt"),
        5: uri("policies/exp/exp:v5.mpt"),
        6: uri("policies/exp/exp:v6.mpt"),
    }
    # the rows of each epoch followed their new keys; the stale duplicate of the v4 key went
    assert (stored[4].id, stored[5].id, stored[6].id) == (b.id, c.id, d.id)
    assert not Checkpoint.objects.filter(id=a.id).exists()
    assert (result.updated, result.merged, result.new) == (3, 1, 0)
    assert sync_checkpoints().unchanged == 3


def test_a_key_held_by_another_experiment_moves_to_its_owner(s3, make_checkpoint):
    old, new = experiments("renamed", "exp")
    put(s3, "policies/exp/exp:v1.mpt")
    put(s3, "policies/exp/exp:v2.mpt")
    # "renamed" used to be called "exp"; its rows still name the exp/ keys
    one = make_checkpoint(old, 1, model_path=uri("policies/exp/exp:v1.mpt"))
    make_checkpoint(new, 2, model_path=uri("policies/exp/elsewhere.mpt"))
    make_checkpoint(old, 2, model_path=uri("policies/exp/exp:v2.mpt"))

    result = sync_checkpoints()

    assert {e: r.model_path for e, r in rows("exp").items()} == {
        1: uri("policies/exp/exp:v1.mpt"),
        2: uri("policies/exp/exp:v2.mpt"),
    }
    assert rows("exp")[1].id == one.id  # re-parented, not duplicated
    assert rows("renamed") == {}
    assert result.merged == 1


def test_an_experiment_without_objects_marks_its_rows_missing(s3, make_checkpoint):
    (exp,) = experiments("exp")
    make_checkpoint(exp, 1)
    result = sync_checkpoints()
    assert result.missing == 1
    assert Checkpoint.objects.get().missing


# --------------------------------------------------------------------------- listing the roots


def stored() -> dict[tuple[str, int], tuple]:
    return {
        (c.experiment.name, c.epoch): (c.model_path, c.size, c.replay_paths, c.missing)
        for c in Checkpoint.objects.select_related("experiment")
    }


def test_many_experiments_are_listed_through_the_two_roots_with_the_same_rows(s3):
    names = [f"r{i}" for i in range(ckpt_sync.ROOTS_MIN)]  # r1 and r10 share a name prefix
    experiments(*names)
    seed(f"policies/{n}/{n}:v{e}.mpt" for n in names for e in (1, 2))
    seed(f"replays/{n}/epoch_2/game.json.z" for n in names[:5])
    seed(["replays/r7/misc/game.json.z", "policies/not-ours/x:v1.mpt", "policies/r3/a/b/r3:v9.mpt"])
    by_prefixes = {n: S3Client.from_settings().list_experiment(n) for n in names}
    client, recorder = recording_client()

    result = sync_checkpoints(client)

    assert recorder.prefixes == ["policies/", "replays/"]
    counts = result.counts()
    assert (counts["listing"], counts["requests"], counts["new"]) == ("roots", 2, 2 * len(names))
    assert "roots" not in counts
    assert stored() == {
        (n, c.epoch): (c.uri, c.size, c.replay_uris, False)
        for n, listing in by_prefixes.items()
        for c in listing.checkpoints
    }
    assert stored()[("r1", 2)][2] == [uri("replays/r1/epoch_2/game.json.z")]
    assert unmatched_replays("r7") == [uri("replays/r7/misc/game.json.z")]

    # an object gone from the root is marked missing, like a prefix listing marks it
    s3.delete_object(Bucket=BUCKET, Key="policies/r10/r10:v2.mpt")
    again = sync_checkpoints(client)
    assert (again.listing, again.missing, again.unchanged) == ("roots", 1, 2 * len(names) - 1)
    assert stored()[("r10", 2)][3] is True
    assert SyncState.objects.get(source="s3").cursor["roots"] == {"requests": 2}


def test_few_experiments_are_listed_by_their_prefixes(s3):
    experiments("a", "b")
    put(s3, "policies/a/a:v1.mpt")
    client, recorder = recording_client()

    result = sync_checkpoints(client)

    assert sorted(recorder.prefixes) == ["policies/a/", "policies/b/", "replays/a/", "replays/b/"]
    assert (result.listing, result.requests, result.new) == ("prefixes", 4, 1)


def test_a_root_that_cannot_be_listed_falls_back_to_the_prefixes_for_a_while(s3, monkeypatch):
    names = [f"e{i:02}" for i in range(ckpt_sync.ROOTS_MIN)]
    experiments(*names)
    seed(f"policies/{n}/{n}:v1.mpt" for n in names)
    denied, recorder = recording_client()
    inject_s3_error(denied, status=403, code="AccessDenied", prefixes={"policies/"})

    first = sync_checkpoints(denied)

    assert first.new == len(names) and first.errors == 0
    counts = first.counts()
    assert (counts["listing"], counts["requests"]) == ("prefixes", 2 * len(names))
    assert counts["roots"].startswith("failed: ") and "access denied" in counts["roots"]
    assert recorder.prefixes.count("policies/") == 1

    recorder.prefixes.clear()
    second = sync_checkpoints(denied)  # remembered: the root is not asked again
    assert "policies/" not in recorder.prefixes
    assert (second.listing, second.roots) == ("prefixes", counts["roots"])

    later = timezone.now() + ckpt_sync.ROOTS_RETRY + timedelta(seconds=1)
    monkeypatch.setattr(ckpt_sync.timezone, "now", lambda: later)
    allowed, recorder = recording_client()
    third = sync_checkpoints(allowed)
    assert (third.listing, third.requests, third.unchanged) == ("roots", 2, len(names))
    assert recorder.prefixes == ["policies/", "replays/"]


def test_a_root_too_large_for_the_prefixes_budget_falls_back(s3, monkeypatch, capsys):
    monkeypatch.setattr(ckpt_sync, "ROOTS_MIN", 2)
    experiments("a", "b")
    put(s3, "policies/a/a:v1.mpt")
    seed(f"policies/another-team/run:v{i}.mpt" for i in range(4500))  # five pages
    client, recorder = recording_client()

    first = sync_checkpoints(client)

    # two experiments: the prefixes take 4 requests, so the root is given up after 4 pages
    assert recorder.prefixes[:4] == ["policies/"] * 4
    assert sorted(recorder.prefixes[4:]) == [
        "policies/a/",
        "policies/b/",
        "replays/a/",
        "replays/b/",
    ]
    assert (first.listing, first.requests, first.roots, first.new) == (
        "prefixes",
        8,
        "over 4 requests",
        1,
    )

    recorder.prefixes.clear()
    second = sync_checkpoints(client)
    assert "policies/" not in recorder.prefixes
    assert (second.requests, second.roots) == (4, "over 4 requests")

    monkeypatch.setattr(ckpt_sync.S3Client, "from_settings", classmethod(lambda cls: client))
    call_command("sync", "s3")
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith("s, 4 requests by prefixes (roots: over 4 requests)")
    )


# --------------------------------------------------------------------------- failures


def test_access_denied_on_one_prefix_others_succeed_and_its_rows_stay(s3, make_checkpoint):
    _, secret, _ = experiments("alpha", "secret", "beta")
    for name in ("alpha", "secret", "beta"):
        put(s3, f"policies/{name}/{name}:v1.mpt")
        put(s3, f"policies/{name}/{name}:v2.mpt")
    kept = make_checkpoint(secret, 7, model_path=uri("policies/secret/secret:v7.mpt"), size=70)
    client = S3Client.from_settings()
    inject_s3_error(client, status=403, code="AccessDenied", prefixes={"policies/secret/"})

    result = sync_checkpoints(client)

    assert sorted(rows("alpha")) == sorted(rows("beta")) == [1, 2]
    assert result.new == 4
    assert result.errors == 1
    assert list(result.failed) == ["secret"]
    assert "access denied" in result.failed["secret"]
    assert "policies/secret/" in result.failed["secret"]
    # untouched: not marked missing, nothing added
    assert list(Checkpoint.objects.filter(experiment=secret)) == [kept]
    kept.refresh_from_db()
    assert not kept.missing and kept.size == 70
    counts = result.counts()
    assert counts["errors"] == 1 and set(counts["failed"]) == {"secret"}


def test_a_partial_failure_is_a_successful_pass_showing_errors(s3, monkeypatch):
    experiments("alpha", "secret")
    put(s3, "policies/alpha/alpha:v1.mpt")
    client = S3Client.from_settings()
    inject_s3_error(client, status=403, code="AccessDenied", prefixes={"replays/secret/"})
    monkeypatch.setattr(ckpt_sync.S3Client, "from_settings", classmethod(lambda cls: client))

    outcome = run_sync("s3")

    assert outcome.ok, outcome.error
    assert "errors 1" in outcome.summary()
    state = SyncState.objects.get(source="s3")
    assert state.counts["errors"] == 1
    assert "access denied" in state.counts["failed"]["secret"]


def test_every_prefix_failing_fails_the_pass(s3, monkeypatch, make_checkpoint):
    alpha, _ = experiments("alpha", "beta")
    make_checkpoint(alpha, 1)
    client = S3Client.from_settings()
    inject_s3_error(client, status=403, code="AccessDenied", prefixes=None)
    monkeypatch.setattr(ckpt_sync.S3Client, "from_settings", classmethod(lambda cls: client))

    with pytest.raises(CheckpointSyncFailed, match="all 2 listed experiments failed"):
        sync_checkpoints()

    outcome = run_sync("s3")
    assert not outcome.ok
    state = SyncState.objects.get(source="s3")
    assert state.last_error == outcome.error
    assert "all 2 listed experiments failed" in state.last_error
    assert "access denied" in state.last_error
    assert not state.ok
    assert not state.cursor.get("full_done")  # the first full pass is still to come
    assert not Checkpoint.objects.get().missing


def test_a_missing_bucket_fails_the_command(s3, settings):
    experiments("alpha")
    settings.SKYDECK_S3_BUCKET = "no-such-bucket"
    with pytest.raises(CommandError, match="sync failed for s3"):
        call_command("sync", "s3")
    assert "bucket does not exist" in SyncState.objects.get(source="s3").last_error


def test_an_invalid_stored_name_fails_alone(s3):
    experiments("good", "bad name")  # bulk_create skips validation
    put(s3, "policies/good/good:v1.mpt")
    result = sync_checkpoints()
    assert result.new == 1
    assert list(result.failed) == ["bad name"]


def test_no_experiments_is_an_empty_successful_pass(s3):
    outcome = run_sync("s3")
    assert outcome.ok
    assert outcome.counts["experiments"] == 0


# --------------------------------------------------------------------------- command and runner


def test_sync_command_prints_a_summary_and_a_second_run_is_unchanged(s3, capsys):
    experiments("alpha", "beta")
    for epoch in range(3):
        put(s3, f"policies/alpha/alpha:v{epoch}.mpt")
    put(s3, "policies/beta/checkpoint_9.pt")

    call_command("sync", "s3")
    out = capsys.readouterr().out
    assert out.startswith("s3: new 4, updated 0, unchanged 0, missing 0, errors 0 in ")
    assert out.rstrip().endswith("s, 4 requests by prefixes")
    state = SyncState.objects.get(source="s3")
    assert state.ok and state.counts["new"] == 4
    assert state.cursor["full_done"] is True

    call_command("sync", "s3", "--full")  # --full is the job syncer's; s3 ignores it
    out = capsys.readouterr().out
    assert out.startswith("s3: new 0, updated 0, unchanged 4, missing 0, errors 0 in ")
    assert Checkpoint.objects.count() == 4


def test_the_scheduled_task_runs_the_same_pass(s3):
    from syncing.tasks import sync_s3

    experiments("alpha")
    put(s3, "policies/alpha/alpha:v1.mpt")
    assert sync_s3().startswith("s3: new 1, updated 0, unchanged 0, missing 0, errors 0")


# --------------------------------------------------------------------------- selection


def test_sweep_slice_wraps_and_resumes():
    names = ["a", "b", "c", "d", "e"]
    assert sweep_slice(names, None, 2) == ["a", "b"]
    assert sweep_slice(names, "b", 2) == ["c", "d"]
    assert sweep_slice(names, "d", 2) == ["e", "a"]
    assert sweep_slice(names, "bb", 2) == ["c", "d"]  # the cursor name was deleted
    assert sweep_slice(names, "c", 10) == ["d", "e", "a", "b", "c"]
    assert sweep_slice([], "c", 2) == []


def test_pass_selection_active_recent_never_synced_and_sweep(
    s3, make_job, make_checkpoint, monkeypatch
):
    monkeypatch.setattr(ckpt_sync, "SWEEP_MIN", 5)
    now = timezone.now()
    cold = experiments(*(f"cold-{i:02}" for i in range(20)))
    for exp in cold:
        make_checkpoint(exp, 1)
    experiments("wanted", desired_state=DesiredState.RUNNING)
    make_checkpoint(Experiment.objects.get(name="wanted"), 1)
    active, recent, old = experiments("active", "recent", "old")
    for exp in (active, recent, old):
        make_checkpoint(exp, 1)
    make_job(name="active", status=JobStatus.PENDING)
    make_job(name="recent", status=JobStatus.SUCCEEDED, ended_at=now - timedelta(hours=5))
    make_job(name="old", status=JobStatus.FAILED, ended_at=now - timedelta(hours=7))
    make_job(name="no-such-experiment", status=JobStatus.RUNNING)
    experiments("fresh")  # no checkpoint rows, never listed

    # the first pass covers everything
    assert plan_pass({}).selection == "all"
    assert len(plan_pass({}).names) == 25
    assert len(plan_pass({"full_done": True}, all_experiments=True).names) == 25

    client, recorder = recording_client()
    cursor = {"full_done": True}
    SyncState.objects.create(source="s3", cursor=cursor)
    result = sync_checkpoints(client)
    hot = {"wanted", "active", "recent", "fresh"}
    # 25 experiments -> slices of max(5, ceil(25 / 10)) = 5 of the 21 others, in name order
    assert recorder.experiments() == hot | {"cold-00", "cold-01", "cold-02", "cold-03", "cold-04"}
    assert (result.selection, result.hot, result.swept, result.experiments) == (
        "active+sweep",
        4,
        5,
        9,
    )
    assert result.counts()["experiments"] == 9

    # "fresh" was listed (empty): it is no longer hot; the sweep moves on and covers everyone
    swept: list[set[str]] = []
    for _ in range(5):
        recorder.prefixes.clear()
        sync_checkpoints(client)
        listed = recorder.experiments()
        assert {"wanted", "active", "recent"} <= listed
        swept.append(listed - {"wanted", "active", "recent"})
    assert swept[0] == {"cold-05", "cold-06", "cold-07", "cold-08", "cold-09"}
    others = {e.name for e in cold} | {"old", "fresh"}
    covered = set().union(*swept) | {f"cold-0{i}" for i in range(5)}
    assert covered == others
    assert "fresh" in SyncState.objects.get(source="s3").cursor["listed_empty"]


@pytest.mark.slow  # scale: many experiments, many passes
def test_every_experiment_is_covered_within_the_sweep_passes(s3, make_checkpoint, monkeypatch):
    monkeypatch.setattr(ckpt_sync, "ROOTS_MIN", 10_000)  # prefixes show what each pass chose
    names = [f"e{i:03}" for i in range(120)]
    for exp in experiments(*names):
        make_checkpoint(exp, 1)
    SyncState.objects.create(source="s3", cursor={"full_done": True})
    client, recorder = recording_client()
    for _ in range(ckpt_sync.SWEEP_PASSES):
        sync_checkpoints(client)
    assert recorder.experiments() == set(names)
    # 120 experiments: the minimum slice (50) per pass, so every name within 3 passes
    assert len(recorder.prefixes) == 2 * 50 * ckpt_sync.SWEEP_PASSES


# --------------------------------------------------------------------------- query count


@pytest.mark.slow  # scale: query counts as experiments grow
@pytest.mark.parametrize("n_experiments", [20, 40])
def test_write_phase_queries_do_not_grow_with_experiments(
    s3, django_assert_max_num_queries, n_experiments
):
    names = [f"exp-{i:02}" for i in range(n_experiments)]
    experiments(*names)
    seed(f"policies/{n}/{n}:v{e}.mpt" for n in names for e in range(20))
    client = S3Client.from_settings()

    with django_assert_max_num_queries(30):
        first = sync_checkpoints(client)
    assert first.new == 20 * n_experiments
    with django_assert_max_num_queries(15):
        second = sync_checkpoints(client, all_experiments=True)
    assert second.unchanged == 20 * n_experiments


# --------------------------------------------------------------------------- backfill_versions


def test_backfill_versions_fixes_epochs_and_versions_and_is_idempotent(db, make_checkpoint, capsys):
    (exp,) = experiments("exp")
    wrong = make_checkpoint(exp, 3, model_path=uri("policies/exp/exp:v4.mpt"), policy_version="v3")
    stale = make_checkpoint(exp, 7, model_path=uri("policies/exp/exp:v7.mpt"), policy_version="")
    fine = make_checkpoint(exp, 9)
    odd = make_checkpoint(exp, 11, model_path=uri("policies/exp/README.txt"), policy_version="x")

    call_command("backfill_versions")
    out, err = capsys.readouterr()
    assert "exp: epoch 3 -> 4, version v3 -> v4" in out
    assert "exp: epoch 7 -> 7, version (none) -> v7" in out
    assert "changed 2 checkpoint(s); 1 unparsable, 0 conflict(s)" in out
    assert "README.txt" in err and "left unchanged" in err
    wrong.refresh_from_db()
    stale.refresh_from_db()
    odd.refresh_from_db()
    assert (wrong.epoch, wrong.policy_version) == (4, "v4")
    assert stale.policy_version == "v7"
    assert (odd.epoch, odd.policy_version) == (11, "x")
    assert Checkpoint.objects.get(pk=fine.pk).epoch == 9

    call_command("backfill_versions")
    out, _ = capsys.readouterr()
    assert "epoch" not in out.replace("changed 0", "")
    assert "changed 0 checkpoint(s)" in out


def test_backfill_versions_dry_run_writes_nothing(db, make_checkpoint, capsys):
    (exp,) = experiments("exp")
    row = make_checkpoint(exp, 3, model_path=uri("policies/exp/exp:v4.mpt"), policy_version="v3")
    call_command("backfill_versions", "--dry-run")
    out = capsys.readouterr().out
    assert "exp: epoch 3 -> 4, version v3 -> v4" in out
    assert "would change 1 checkpoint(s)" in out
    row.refresh_from_db()
    assert (row.epoch, row.policy_version) == (3, "v3")


def test_backfill_versions_reports_conflicts_and_handles_swaps(db, make_checkpoint, capsys):
    (exp,) = experiments("exp")
    # two rows whose keys say each other's epoch: a swap, done without a constraint error
    a = make_checkpoint(exp, 1, model_path=uri("policies/exp/exp:v2.mpt"), policy_version="v1")
    b = make_checkpoint(exp, 2, model_path=uri("policies/exp/exp:v1.mpt"), policy_version="v2")
    # a row whose key says epoch 5, which another row (with an unparsable key) keeps
    c = make_checkpoint(exp, 4, model_path=uri("policies/exp/exp:v5.mpt"), policy_version="v4")
    d = make_checkpoint(exp, 5, model_path=uri("policies/exp/notes"), policy_version="v5")

    call_command("backfill_versions")
    out, err = capsys.readouterr()
    assert "exp: epoch 1 -> 2, version v1 -> v2" in out
    assert "exp: epoch 2 -> 1, version v2 -> v1" in out
    assert "conflict" in err and "exp:v5.mpt parses to epoch 5" in err
    assert "changed 2 checkpoint(s); 1 unparsable, 1 conflict(s)" in out
    got = {r.pk: (r.epoch, r.policy_version) for r in Checkpoint.objects.all()}
    assert got == {a.pk: (2, "v2"), b.pk: (1, "v1"), c.pk: (4, "v4"), d.pk: (5, "v5")}
