"""Tests for syncing.s3 (no Django, no database; S3 is moto)."""

from __future__ import annotations

import pickle
import socket
import sys
import types
from datetime import UTC, datetime

import boto3
import botocore.retries.standard
import pytest
from aws_isolation import isolate_aws
from botocore import UNSIGNED
from moto import mock_aws
from s3_requests import inject_s3_error, record_list_calls

from syncing.s3 import (
    MAX_EPOCH,
    CheckpointObject,
    ExperimentListing,
    RootTooLarge,
    S3AccessDenied,
    S3Client,
    S3Error,
    S3NotFound,
    S3Throttled,
    S3Unavailable,
    is_replay_key,
    parse_checkpoint_key,
    parse_replay_epoch,
)

BUCKET = "softmax-public"
REGION = "us-east-1"

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Isolate from the developer's AWS setup; fake credentials and region."""
    isolate_aws(monkeypatch, tmp_path, REGION)


def _remove_credentials(monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def s3():
    """A moto-mocked S3 with the bucket created; yields a raw boto3 client for seeding."""
    with mock_aws():
        raw = boto3.client("s3", region_name=REGION)
        raw.create_bucket(Bucket=BUCKET)
        yield raw


def put(raw, key: str, body: bytes = b"x", at: datetime | None = None, monkeypatch=None):
    if at is not None:
        monkeypatch.setattr("moto.s3.models.utcnow", lambda: at)
    raw.put_object(Bucket=BUCKET, Key=key, Body=body)


def seed(keys, body: bytes = b"x") -> None:
    """Write objects straight into moto's backend (fast; seeding is not under test)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(BUCKET, key, body)


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(
        botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("key", "epoch"),
    [
        ("exp:v12.mpt", 12),
        ("policies/exp/exp:v12.mpt", 12),
        ("policies/exp/checkpoints/exp:v3.mpt", 3),
        ("policies/exp/other.name:v0.mpt", 0),
        ("policies/exp/a:b:v5.mpt", 5),
        ("policies/exp/exp:v007.mpt", 7),
        ("policies/exp/exp:v4", 4),
        ("checkpoint_12", 12),
        ("checkpoint-12", 12),
        ("checkpoint12", 12),
        ("checkpoint_12.pt", 12),
        ("Checkpoint_12.PT", 12),
        ("epoch_12.pth", 12),
        ("epoch-12", 12),
        ("model_12.safetensors", 12),
        ("model12.mpt", 12),
        ("step_12.ckpt", 12),
        ("step-12", 12),
        ("12.mpt", 12),
        ("12.pt", 12),
        (f"exp:v{MAX_EPOCH}.mpt", MAX_EPOCH),
    ],
)
def test_parse_checkpoint_key_accepts(key, epoch):
    assert parse_checkpoint_key(key) == (epoch, f"v{epoch}")


@pytest.mark.parametrize(
    "key",
    [
        "",
        "policies/exp/",
        "policies/exp/checkpoints/",
        "README.txt",
        "foo.mpt",
        "v12.txt",
        "v12.mpt",
        "checkpoint_.pt",
        "checkpoint.pt",
        "12",
        "12.txt",
        "exp:v3.json",
        "exp:v3.mpt.tmp",
        "exp:v.mpt",
        ":v3.mpt",
        "checkpoint_12.txt",
        "checkpoint_12_final.pt",
        "mycheckpoint_12.pt",
        "checkpoint_-3.pt",
        "checkpoint--3.pt",
        "-3.mpt",
        "exp:v-3.mpt",
        "checkpoint_\u0661\u0662.pt",  # non-ASCII digits
        f"exp:v{MAX_EPOCH + 1}.mpt",
        "checkpoint_" + "9" * 5000 + ".pt",
        "policies/exp/checkpoint_3.pt/README.txt",  # only the last segment counts
    ],
)
def test_parse_checkpoint_key_rejects(key):
    assert parse_checkpoint_key(key) is None


@pytest.mark.parametrize(
    ("key", "epoch"),
    [
        ("exp:v12.json.z", 12),
        ("v12.json", 12),
        ("epoch_3/game.json.gz", 3),
        ("run/Epoch-3/game.json.gz", 3),
        ("step12/game.json.z", 12),
        ("checkpoint_4/a/b/c.json", 4),
        ("model-5/game.json.z", 5),
        ("v1/epoch_2/step_3/game.json.z", 3),  # the last naming segment wins
        ("epoch_2/game_v9.json.z", 9),
        ("myexp_v2:v12.json.z", 12),  # last token in the segment wins
        (f"epoch_{MAX_EPOCH + 1}/v3/game.json.z", 3),  # out of range ones are skipped
        ("replay_v7_game.json.z", 7),
    ],
)
def test_parse_replay_epoch(key, epoch):
    assert parse_replay_epoch(key) == epoch


@pytest.mark.parametrize(
    "key",
    [
        "game.json.z",
        "misc/2024-01-01/game_1.json.z",
        "dev12/game.json.z",
        "v12b/game.json",
        "epoch_-3/game.json",
        "epoch_/game.json",
        f"epoch_{MAX_EPOCH + 1}/game.json",
    ],
)
def test_parse_replay_epoch_none(key):
    assert parse_replay_epoch(key) is None


def test_is_replay_key():
    assert is_replay_key("replays/exp/a.json.z")
    assert is_replay_key("replays/exp/a.JSON.GZ")
    assert is_replay_key("replays/exp/a.json")
    assert not is_replay_key("replays/exp/a.txt")
    assert not is_replay_key("replays/exp/a.json.bak")
    assert not is_replay_key("replays/exp/")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-exp",
        "exp-",
        "exp.",
        "..",
        ".",
        "../etc",
        "exp/sub",
        "exp name",
        "exp*",
        "exp\n",
        "é",
        "a" * 129,
    ],
)
def test_invalid_experiment_names_rejected_before_any_request(name):
    client = S3Client(bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(ValueError):
        client.list_experiment(name)
    with pytest.raises(ValueError):
        client.list_experiments(["good", name])
    assert client._client is None  # never even built, so no request could be made


def test_valid_names_accepted():
    client = S3Client(bucket=BUCKET)
    assert client.policy_prefix_for("a") == "policies/a/"
    assert client.policy_prefix_for("My_exp-1.2") == "policies/My_exp-1.2/"
    assert client.replay_prefix_for("a" * 128) == "replays/" + "a" * 128 + "/"
    # SkyPilot's rule allows a leading digit and "..", never a "." or ".." segment
    assert client.policy_prefix_for("1exp") == "policies/1exp/"
    assert client.policy_prefix_for("a..b") == "policies/a..b/"


# --------------------------------------------------------------------------- listing (moto)


def seed_shapes(s3) -> dict[int, str]:
    """Checkpoints, replays and keys to ignore of "exp" and its neighbours; its checkpoint keys."""
    checkpoint_keys = {
        1: "policies/exp/exp:v1.mpt",
        2: "policies/exp/checkpoint_2.pt",
        3: "policies/exp/checkpoint-3",
        4: "policies/exp/checkpoint4.pth",
        5: "policies/exp/epoch_5.safetensors",
        6: "policies/exp/model_6.pt",
        7: "policies/exp/step_7.ckpt",
        8: "policies/exp/8.mpt",
        9: "policies/exp/checkpoints/exp:v9.mpt",  # one level deeper: accepted
    }
    for key in checkpoint_keys.values():
        put(s3, key, b"12345")
    ignored = [
        "policies/exp/README.txt",
        "policies/exp/foo.mpt",
        "policies/exp/v12.txt",
        "policies/exp/checkpoint_.pt",
        "policies/exp/checkpoints/",
        "policies/exp/exp:v11.json",
        "policies/exp/a/b/exp:v10.mpt",  # two levels deeper: ignored
        "policies/exp2/exp2:v50.mpt",  # another experiment sharing the name prefix
        "policies/exp-old/exp:v60.mpt",
        "replays/exp/notes.txt",
        "replays/exp2/exp:v1.json.z",
    ]
    for key in ignored:
        put(s3, key)
    replays = [
        "replays/exp/exp:v1.json.z",
        "replays/exp/epoch_2/game_0.json.gz",
        "replays/exp/epoch_2/game_1.json.gz",
        "replays/exp/2024-01-01/run/step-3/episode.json",
        "replays/exp/v4/model_9/x.json.z",  # last naming segment is model_9 -> epoch 9
        "replays/exp/misc/game.json.z",  # names no epoch
        "replays/exp/exp:v99.json.z",  # names an epoch without checkpoint
    ]
    for key in replays:
        put(s3, key)
    return checkpoint_keys


def test_list_experiment_shapes_depth_and_replays(s3):
    checkpoint_keys = seed_shapes(s3)

    listing = S3Client(bucket=BUCKET).list_experiment("exp")

    assert isinstance(listing, ExperimentListing)
    assert listing.experiment_name == "exp"
    assert [c.epoch for c in listing.checkpoints] == list(range(1, 10))
    by_epoch = {c.epoch: c for c in listing.checkpoints}
    for epoch, key in checkpoint_keys.items():
        ckpt = by_epoch[epoch]
        assert isinstance(ckpt, CheckpointObject)
        assert ckpt.key == key
        assert ckpt.uri == f"s3://{BUCKET}/{key}"
        assert ckpt.policy_version == f"v{epoch}"
        assert ckpt.size == 5
        assert ckpt.last_modified.tzinfo is not None
        assert ckpt.last_modified.utcoffset().total_seconds() == 0
    assert by_epoch[1].replay_uris == [f"s3://{BUCKET}/replays/exp/exp:v1.json.z"]
    assert by_epoch[2].replay_uris == [
        f"s3://{BUCKET}/replays/exp/epoch_2/game_0.json.gz",
        f"s3://{BUCKET}/replays/exp/epoch_2/game_1.json.gz",
    ]
    assert by_epoch[3].replay_uris == [
        f"s3://{BUCKET}/replays/exp/2024-01-01/run/step-3/episode.json"
    ]
    assert by_epoch[4].replay_uris == []
    assert by_epoch[9].replay_uris == [f"s3://{BUCKET}/replays/exp/v4/model_9/x.json.z"]
    assert listing.unmatched_replays == [
        f"s3://{BUCKET}/replays/exp/exp:v99.json.z",
        f"s3://{BUCKET}/replays/exp/misc/game.json.z",
    ]


def test_listing_the_roots_gives_each_experiment_the_listing_of_its_prefixes(s3):
    seed_shapes(s3)
    put(s3, "policies/loose:v1.mpt")  # directly in the root: no experiment's
    put(s3, "replays/exp-old/x/v60.json")
    client = S3Client(bucket=BUCKET)
    names = ["exp", "exp2", "exp-old", "absent"]
    one_by_one = {name: client.list_experiment(name) for name in names}
    calls = record_list_calls(client)

    listings, requests = client.list_roots([*names, "exp"], budget=8)

    assert listings == one_by_one
    assert listings["absent"] == ExperimentListing("absent", [], [])
    assert [c.epoch for c in listings["exp"].checkpoints] == list(range(1, 10))
    assert calls.prefixes == ["policies/", "replays/"]
    assert requests == 2


def test_one_root_for_checkpoints_and_replays_is_listed_once(s3):
    for key in ("exp/exp:v1.mpt", "exp/v1/game.json.z", "other/other:v2.mpt"):
        put(s3, key)
    client = S3Client(bucket=BUCKET, policy_prefix="", replay_prefix="")
    expected = {name: client.list_experiment(name) for name in ("exp", "other")}
    calls = record_list_calls(client)

    listings, requests = client.list_roots(["exp", "other"], budget=4)

    assert listings == expected
    assert listings["exp"].checkpoints[0].replay_uris == [f"s3://{BUCKET}/exp/v1/game.json.z"]
    assert (calls.prefixes, requests) == ([""], 1)


def test_a_root_larger_than_the_budget_is_given_up_at_the_budget(s3):
    seed(f"policies/someone-else/run:v{i}.mpt" for i in range(2100))  # three pages
    client = S3Client(bucket=BUCKET)
    calls = record_list_calls(client)

    with pytest.raises(RootTooLarge) as raised:
        client.list_roots(["mine"], budget=2)
    assert raised.value.pages == 2
    assert calls.prefixes == ["policies/", "policies/"]

    calls.prefixes.clear()
    with pytest.raises(RootTooLarge):  # the policies fill the budget: no request for replays
        client.list_roots(["mine"], budget=3)
    assert calls.prefixes == ["policies/"] * 3

    listings, requests = client.list_roots(["mine"], budget=4)
    assert (listings, requests) == ({"mine": ExperimentListing("mine", [], [])}, 4)


def test_listing_the_roots_validates_every_name_before_any_request(s3):
    client = S3Client(bucket=BUCKET)
    calls = record_list_calls(client)
    with pytest.raises(ValueError):
        client.list_roots(["fine", "../escape"], budget=4)
    assert calls.prefixes == []


def test_a_root_that_cannot_be_listed_is_an_s3_error(s3):
    client = S3Client(bucket=BUCKET)
    inject_s3_error(client, status=403, code="AccessDenied", prefixes={"replays/"})
    with pytest.raises(S3AccessDenied, match="replays/"):
        client.list_roots(["exp"], budget=4)


def test_experiment_name_never_counts_as_replay_epoch(s3):
    put(s3, "policies/lstm_v2/lstm_v2:v2.mpt")
    put(s3, "replays/lstm_v2/misc/game.json.z")
    put(s3, "replays/lstm_v2/lstm_v2:v2.json.z")

    listing = S3Client(bucket=BUCKET).list_experiment("lstm_v2")

    assert listing.checkpoints[0].replay_uris == [
        f"s3://{BUCKET}/replays/lstm_v2/lstm_v2:v2.json.z"
    ]
    assert listing.unmatched_replays == [f"s3://{BUCKET}/replays/lstm_v2/misc/game.json.z"]


def test_custom_prefixes(s3):
    put(s3, "ckpts/exp/exp:v5.mpt")
    put(s3, "policies/exp/exp:v6.mpt")
    put(s3, "games/exp/v5/g.json")

    listing = S3Client(
        bucket=BUCKET, policy_prefix="/ckpts/", replay_prefix="games"
    ).list_experiment("exp")

    assert [c.key for c in listing.checkpoints] == ["ckpts/exp/exp:v5.mpt"]
    assert listing.checkpoints[0].replay_uris == [f"s3://{BUCKET}/games/exp/v5/g.json"]


def test_more_than_1000_objects_are_all_found(s3):
    seed(f"policies/big/checkpoint_{i}.pt" for i in range(1050))
    put(s3, "replays/big/epoch_1049/g.json.z")
    client = S3Client(bucket=BUCKET)
    calls = record_list_calls(client)

    listing = client.list_experiment("big")

    assert [c.epoch for c in listing.checkpoints] == list(range(1050))
    assert listing.checkpoints[1049].replay_uris == [
        f"s3://{BUCKET}/replays/big/epoch_1049/g.json.z"
    ]
    # The policy prefix needed two pages: the paginator really followed the continuation.
    assert calls.prefixes == ["policies/big/", "policies/big/", "replays/big/"]


def test_same_epoch_keeps_most_recent_and_is_deterministic(s3, monkeypatch):
    t0 = datetime(2024, 1, 1, 12, 0, 0)
    t1 = datetime(2024, 1, 1, 12, 0, 5)
    # Newer object wins even though it sorts first by key.
    put(s3, "policies/exp/checkpoint_3.pt", b"new!", at=t1, monkeypatch=monkeypatch)
    put(s3, "policies/exp/exp:v3.mpt", b"old", at=t0, monkeypatch=monkeypatch)
    # Identical timestamps: the lexicographically greatest key wins.
    put(s3, "policies/exp/epoch_4.pt", at=t0, monkeypatch=monkeypatch)
    put(s3, "policies/exp/exp:v4.mpt", at=t0, monkeypatch=monkeypatch)
    put(s3, "policies/exp/checkpoints/exp:v4.mpt", at=t0, monkeypatch=monkeypatch)
    put(s3, "replays/exp/v3/g.json")

    listing = S3Client(bucket=BUCKET).list_experiment("exp")

    assert [(c.epoch, c.key) for c in listing.checkpoints] == [
        (3, "policies/exp/checkpoint_3.pt"),
        (4, "policies/exp/exp:v4.mpt"),
    ]
    assert listing.checkpoints[0].size == 4
    assert listing.checkpoints[0].last_modified == t1.replace(tzinfo=UTC)
    assert listing.checkpoints[0].replay_uris == [f"s3://{BUCKET}/replays/exp/v3/g.json"]


def test_empty_experiment(s3):
    listing = S3Client(bucket=BUCKET).list_experiment("nothing")
    assert listing == ExperimentListing("nothing", [], [])


# --------------------------------------------------------------------------- errors


def test_access_denied_on_one_prefix_others_succeed(s3):
    # moto does not evaluate bucket policies / s3:prefix conditions, so the per-prefix 403
    # is injected at the HTTP layer as a real S3 XML error response.
    for name in ("alpha", "secret", "beta"):
        put(s3, f"policies/{name}/{name}:v1.mpt")
    client = S3Client(bucket=BUCKET)
    hits = inject_s3_error(client, status=403, code="AccessDenied", prefixes=["replays/secret/"])

    results = client.list_experiments(["alpha", "secret", "beta"], max_workers=3)

    assert list(results) == ["alpha", "secret", "beta"]
    assert [c.key for c in results["alpha"].checkpoints] == ["policies/alpha/alpha:v1.mpt"]
    assert [c.key for c in results["beta"].checkpoints] == ["policies/beta/beta:v1.mpt"]
    err = results["secret"]
    assert isinstance(err, S3AccessDenied)
    assert err.code == "AccessDenied"
    assert err.prefix == "replays/secret/"
    assert str(err).startswith(f"s3://{BUCKET}/replays/secret/: access denied")
    assert "\n" not in str(err)
    assert hits == ["replays/secret/"]  # 403 is not retried

    with pytest.raises(S3AccessDenied):
        client.list_experiment("secret")


def test_access_denied_enforced_by_moto_iam(s3, monkeypatch):
    """A genuine 403 produced by moto's IAM enforcement for a user with no permissions."""
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.setattr(moto_settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    monkeypatch.setattr(ActionAuthenticatorMixin, "request_count", 0)

    with pytest.raises(S3AccessDenied) as info:
        S3Client(bucket=BUCKET).list_experiment("exp")
    assert info.value.code == "AccessDenied"


def test_throttling_is_retried_then_mapped(s3, no_backoff):
    put(s3, "policies/ok/ok:v1.mpt")
    client = S3Client(bucket=BUCKET, max_attempts=2)
    hits = inject_s3_error(client, status=503, code="SlowDown", prefixes=["policies/hot/"])

    with pytest.raises(S3Throttled) as info:
        client.list_experiment("hot")
    assert info.value.code == "SlowDown"
    assert hits == ["policies/hot/", "policies/hot/"]  # standard retry mode, max_attempts=2

    results = client.list_experiments(["hot", "ok"])
    assert isinstance(results["hot"], S3Throttled)
    assert [c.epoch for c in results["ok"].checkpoints] == [1]


def test_other_client_errors_are_s3error(s3):
    client = S3Client(bucket=BUCKET)
    inject_s3_error(client, status=400, code="InvalidArgument")
    with pytest.raises(S3Error) as info:
        client.list_experiment("exp")
    assert type(info.value) is S3Error
    assert info.value.code == "InvalidArgument"


def test_no_such_bucket(s3):
    with pytest.raises(S3NotFound) as info:
        S3Client(bucket="no-such-bucket").list_experiment("exp")
    assert info.value.bucket == "no-such-bucket"
    assert str(info.value).startswith("s3://no-such-bucket/policies/exp/: bucket does not")


def test_connection_refused_is_unavailable():
    client = S3Client(
        bucket=BUCKET, endpoint_url=f"http://127.0.0.1:{_closed_port()}", max_attempts=1
    )
    with pytest.raises(S3Unavailable) as info:
        client.list_experiment("exp")
    assert info.value.code == "EndpointConnectionError"
    assert isinstance(client.list_experiments(["exp"])["exp"], S3Unavailable)


def test_read_timeout_is_unavailable():
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        client = S3Client(
            bucket=BUCKET,
            endpoint_url=f"http://127.0.0.1:{port}",
            read_timeout=0.2,
            max_attempts=1,
        )
        with pytest.raises(S3Unavailable) as info:
            client.list_experiment("exp")
    assert info.value.code == "ReadTimeoutError"


def test_bad_endpoint_is_s3error_not_botocore():
    client = S3Client(bucket=BUCKET, endpoint_url="not a url")
    with pytest.raises(S3Error):
        client.list_experiment("exp")
    assert isinstance(client.list_experiments(["a", "b"])["b"], S3Error)


def test_errors_pickle_round_trip():
    err = S3Throttled(BUCKET, "policies/x/", "throttled\n(SlowDown)", "SlowDown")
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 - our own bytes
    assert type(copy) is S3Throttled
    assert str(copy) == str(err) == f"s3://{BUCKET}/policies/x/: throttled (SlowDown)"
    assert copy.code == "SlowDown"


# --------------------------------------------------------------------------- signing


def test_unsigned_when_no_credentials(s3, monkeypatch):
    put(s3, "policies/exp/exp:v1.mpt")
    _remove_credentials(monkeypatch)
    client = S3Client(bucket=BUCKET)
    assert client.client.meta.config.signature_version is UNSIGNED
    calls = record_list_calls(client)

    listing = client.list_experiment("exp")

    assert [c.epoch for c in listing.checkpoints] == [1]
    assert calls.signed == [False, False]  # requests really went out without a signature


def test_signed_when_credentials_present(s3):
    put(s3, "policies/exp/exp:v1.mpt")
    client = S3Client(bucket=BUCKET)
    assert client.client.meta.config.signature_version is not UNSIGNED
    calls = record_list_calls(client)
    assert [c.epoch for c in client.list_experiment("exp").checkpoints] == [1]
    assert calls.signed == [True, True]


def test_explicit_signed_flag(s3, monkeypatch):
    assert S3Client(bucket=BUCKET, signed=False).client.meta.config.signature_version is UNSIGNED
    _remove_credentials(monkeypatch)
    with pytest.raises(S3AccessDenied) as info:
        S3Client(bucket=BUCKET, signed=True).list_experiment("exp")
    assert "no AWS credentials" in str(info.value)


def test_client_config_is_lazy_and_wired():
    client = S3Client(
        bucket=BUCKET,
        endpoint_url="http://minio.local:9000",
        region="eu-west-1",
        connect_timeout=2,
        read_timeout=7,
        max_attempts=4,
    )
    assert client._client is None
    config = client.client.meta.config
    assert client.client is client.client  # built once
    assert config.connect_timeout == 2
    assert config.read_timeout == 7
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert config.s3 == {"addressing_style": "path"}
    assert client.client.meta.endpoint_url == "http://minio.local:9000"
    assert client.client.meta.region_name == "eu-west-1"


def test_from_settings(monkeypatch):
    fake_conf = types.ModuleType("django.conf")
    fake_conf.settings = types.SimpleNamespace(
        SKYDECK_S3_BUCKET="my-bucket",
        SKYDECK_S3_REPLAY_PREFIX="games",
        SKYDECK_S3_ENDPOINT_URL="http://127.0.0.1:9000",
    )
    monkeypatch.setitem(sys.modules, "django.conf", fake_conf)

    client = S3Client.from_settings(max_attempts=5)

    assert client.bucket == "my-bucket"
    assert client.policy_prefix == "policies"
    assert client.replay_prefix == "games"
    assert client.endpoint_url == "http://127.0.0.1:9000"
    assert client.region is None
    assert client.max_attempts == 5


# --------------------------------------------------------------------------- end to end


@pytest.fixture
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.slow  # serves S3 on loopback
def test_end_to_end_against_moto_server(moto_server):
    raw = boto3.client("s3", endpoint_url=moto_server, region_name=REGION)
    raw.create_bucket(Bucket=BUCKET)
    for key in (
        "policies/exp/exp:v1.mpt",
        "policies/exp/exp:v2.mpt",
        "policies/exp/README.txt",
        "policies/other/checkpoint_7.pt",
        "replays/exp/v2/game.json.z",
        "replays/exp/misc.json",
    ):
        raw.put_object(Bucket=BUCKET, Key=key, Body=b"data")

    client = S3Client(bucket=BUCKET, endpoint_url=moto_server)
    listing = client.list_experiment("exp")
    assert [(c.epoch, c.policy_version, c.size) for c in listing.checkpoints] == [
        (1, "v1", 4),
        (2, "v2", 4),
    ]
    assert listing.checkpoints[1].replay_uris == [f"s3://{BUCKET}/replays/exp/v2/game.json.z"]
    assert listing.unmatched_replays == [f"s3://{BUCKET}/replays/exp/misc.json"]

    results = client.list_experiments(["exp", "other", "empty"])
    assert [c.epoch for c in results["other"].checkpoints] == [7]
    assert results["empty"].checkpoints == []

    missing = S3Client(bucket="missing-bucket", endpoint_url=moto_server)
    assert isinstance(missing.list_experiments(["exp"])["exp"], S3NotFound)
