"""Read-only S3 listing of experiment checkpoints and replays for SkyDeck.

Layout (every part is configurable on :class:`S3Client`)::

    s3://{bucket}/{policy_prefix}/{experiment}/{name}:v{N}.mpt        checkpoints
    s3://{bucket}/{policy_prefix}/{experiment}/{sub}/{name}:v{N}.mpt  (one level deeper is ok)
    s3://{bucket}/{replay_prefix}/{experiment}/**/...v{N}....json.z    replays, any depth

Checkpoint key shapes (only the last path segment is looked at; case-insensitive;
``EXT`` is one of ``.mpt .pt .pth .ckpt .safetensors``):

* ``{name}:v{N}`` + optional ``EXT``  -- what training writes, e.g. ``exp:v12.mpt``
* ``checkpoint|epoch|model|step`` + optional ``_``/``-`` + ``{N}`` + optional ``EXT``
  (``checkpoint_12``, ``epoch-12.pt``, ``model12.safetensors`` ...)
* ``{N}`` + required ``EXT`` (``12.mpt``); a bare ``12`` is too generic and is ignored.

Anything else (``README.txt``, ``foo.mpt``, ``v12.txt``, ``v12.mpt``, ``checkpoint_.pt``,
``exp:v3.json``, directory markers ending in ``/``) is ignored, never an error. The
policy version is always normalised to ``v{N}`` with ``N`` the integer epoch (``exp:v007.mpt``
gives epoch 7, ``"v7"``). Epochs must fit in a signed 63-bit integer.

Under the policy prefix only keys directly in ``{experiment}/`` or one sub-folder deeper
(``{experiment}/checkpoints/exp:v3.mpt``) are considered; deeper keys are ignored so that
archived runs nested further down do not leak into the listing.

Replays are keys ending ``.json.z``, ``.json.gz`` or ``.json`` at any depth below
``{replay_prefix}/{experiment}/``. See :func:`parse_replay_epoch` for how their epoch is
found. Replays whose epoch has no checkpoint, or that name no epoch, are reported in
:attr:`ExperimentListing.unmatched_replays`.

Nothing in this module writes or deletes S3 objects.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from experiments.validation import NAME_MAX_LENGTH

__all__ = [
    "MAX_EPOCH",
    "CheckpointObject",
    "ExperimentListing",
    "RootTooLarge",
    "S3AccessDenied",
    "S3Client",
    "S3Error",
    "S3NotFound",
    "S3Throttled",
    "S3Unavailable",
    "is_replay_key",
    "parse_checkpoint_key",
    "parse_replay_epoch",
    "validate_experiment_name",
]

DEFAULT_BUCKET = "softmax-public"
DEFAULT_POLICY_PREFIX = "policies"
DEFAULT_REPLAY_PREFIX = "replays"

#: Largest epoch accepted: it has to fit in a signed 63-bit integer (a BigIntegerField).
MAX_EPOCH = 2**63 - 1
_MAX_EPOCH_DIGITS = len(str(MAX_EPOCH))

#: Upper bound on threads used by :meth:`S3Client.list_experiments` (and the HTTP pool size).
MAX_WORKERS = 16

CHECKPOINT_EXTENSIONS = ("mpt", "pt", "pth", "ckpt", "safetensors")
REPLAY_SUFFIXES = (".json.z", ".json.gz", ".json")

_EXT = r"(?:\.(?:" + "|".join(CHECKPOINT_EXTENSIONS) + r"))"
# Used with fullmatch() (a "$" anchor would also accept a trailing newline).
_CHECKPOINT_PATTERNS = (
    re.compile(r".+:v(?P<n>[0-9]+)" + _EXT + "?", re.IGNORECASE),
    re.compile(r"(?:checkpoint|epoch|model|step)[-_]?(?P<n>[0-9]+)" + _EXT + "?", re.IGNORECASE),
    re.compile(r"(?P<n>[0-9]+)" + _EXT, re.IGNORECASE),
)
# An epoch token inside a replay path segment. It must not be glued to other letters or
# digits ("dev12", "v12b" and "mv3" name nothing); "_", "-", ".", ":" etc. are boundaries.
_REPLAY_EPOCH = re.compile(
    r"(?<![a-z0-9])(?:v|(?:checkpoint|epoch|model|step)[-_]?)(?P<n>[0-9]+)(?![a-z0-9])",
    re.IGNORECASE,
)
# One safe S3 path segment (fullmatch() only): never "." or "..", no slash or whitespace. Wider than
# the name rule (experiments.validation.NAME_RE, SkyPilot's) so names stored under older rules
# (such as "lr---sweep") still sync.
_EXPERIMENT_NAME = re.compile(r"[a-zA-Z0-9](?:[-_.a-zA-Z0-9]*[a-zA-Z0-9])?")
_MAX_EXPERIMENT_NAME = NAME_MAX_LENGTH


# --------------------------------------------------------------------------- errors


class S3Error(Exception):
    """A listing failed. ``str(err)`` is one line: ``s3://bucket/prefix: reason``.

    Attributes: ``bucket``, ``prefix``, ``reason`` and ``code`` (the S3 error code or the
    botocore exception name, when known). The original botocore exception is kept as
    ``__cause__`` for debugging; it is never raised out of this module.
    """

    def __init__(self, bucket: str, prefix: str, reason: str, code: str | None = None):
        self.bucket = bucket
        self.prefix = prefix
        self.reason = " ".join(str(reason).split()) or "unknown error"
        self.code = code
        super().__init__(f"s3://{bucket}/{prefix}: {self.reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep exceptions picklable (task queues pickle results).
        return (type(self), (self.bucket, self.prefix, self.reason, self.code))


class S3AccessDenied(S3Error):
    """403 / AccessDenied, or signing requested without any credentials."""


class S3Throttled(S3Error):
    """SlowDown / Throttling / 503 that persisted through the retries."""


class S3Unavailable(S3Error):
    """The endpoint could not be reached: connection refused/closed or timed out."""


class S3NotFound(S3Error):
    """The bucket does not exist."""


class RootTooLarge(Exception):
    """Listing a root whole would take more requests than it was allowed (not a failure)."""

    def __init__(self, bucket: str, prefix: str, pages: int):
        self.pages = pages
        super().__init__(f"s3://{bucket}/{prefix}: more than {pages} pages")


_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "Forbidden",
        "403",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequests",
        "ServiceUnavailable",
        "503",
        "429",
    }
)


def _map_error(exc: Exception, bucket: str, prefix: str) -> S3Error:
    """Translate a boto3/botocore exception into the matching :class:`S3Error`."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error") or {}
        code = str(error.get("Code") or "")
        message = str(error.get("Message") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        reason = f"{code or 'error'} (HTTP {status})" + (f": {message}" if message else "")
        if code == "NoSuchBucket":
            return S3NotFound(bucket, prefix, f"bucket does not exist ({reason})", code)
        if code in _ACCESS_DENIED_CODES or status == 403:
            return S3AccessDenied(bucket, prefix, f"access denied ({reason})", code)
        if code in _THROTTLED_CODES or status in (429, 503):
            return S3Throttled(bucket, prefix, f"throttled ({reason})", code)
        return S3Error(bucket, prefix, reason, code or None)
    name = type(exc).__name__
    if isinstance(exc, botocore.exceptions.ConnectionError | botocore.exceptions.HTTPClientError):
        return S3Unavailable(bucket, prefix, f"endpoint unavailable ({name}: {exc})", name)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return S3AccessDenied(
            bucket, prefix, "signing requested but no AWS credentials were found", name
        )
    return S3Error(bucket, prefix, f"{name}: {exc}", name)


# --------------------------------------------------------------------------- parsing


def _epoch(digits: str) -> int | None:
    """``int(digits)`` if it is a valid epoch (0 .. 2**63-1), else None."""
    if len(digits) > _MAX_EPOCH_DIGITS:  # also avoids int() on pathological inputs
        return None
    value = int(digits)
    return value if value <= MAX_EPOCH else None


def parse_checkpoint_key(key: str) -> tuple[int, str] | None:
    """Return ``(epoch, policy_version)`` for a checkpoint object key, or None.

    Only the file name (the last ``/`` segment) is examined; the accepted shapes are listed
    in the module docstring. ``policy_version`` is ``f"v{epoch}"``. Names with a negative
    number (``checkpoint_-3``) or an epoch that does not fit in a signed 63-bit integer are
    rejected.

    >>> parse_checkpoint_key("policies/exp/exp:v12.mpt")
    (12, 'v12')
    >>> parse_checkpoint_key("policies/exp/checkpoint-7.pt")
    (7, 'v7')
    >>> parse_checkpoint_key("policies/exp/README.txt") is None
    True
    """
    name = key.rsplit("/", 1)[-1]
    if not name:
        return None
    for pattern in _CHECKPOINT_PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            epoch = _epoch(match.group("n"))
            return None if epoch is None else (epoch, f"v{epoch}")
    return None


def is_replay_key(key: str) -> bool:
    """True if ``key`` names a replay file (``.json.z``, ``.json.gz`` or ``.json``)."""
    name = key.rsplit("/", 1)[-1]
    return name.lower().endswith(REPLAY_SUFFIXES) and name.lower() not in REPLAY_SUFFIXES


def parse_replay_epoch(key: str) -> int | None:
    """Return the epoch a replay key names, or None if it names none.

    A path segment names an epoch with a ``v{N}``, ``epoch{N}``, ``step{N}``,
    ``checkpoint{N}`` or ``model{N}`` token (the word forms take an optional ``_``/``-``),
    not glued to surrounding letters/digits: ``exp:v12``, ``replay_epoch-3.json.z`` and
    ``step12`` do; ``dev12`` and ``v12b`` do not. The *last* segment naming one wins, and
    within a segment its last token wins (so ``myexp_v2:v12.json.z`` is epoch 12). Out of
    range numbers are skipped. The replay file extension is ignored; whether ``key`` is a
    replay at all is :func:`is_replay_key`'s job.

    Every segment of ``key`` is searched, so pass the key *relative to the experiment's
    replay folder* when the experiment name itself could look like an epoch (``lstm_v2``);
    :class:`S3Client` does that.

    >>> parse_replay_epoch("replays/exp/epoch_3/game_1.json.z")
    3
    >>> parse_replay_epoch("replays/exp/misc/game.json.z") is None
    True
    """
    segments = key.split("/")
    last = segments[-1]
    for suffix in REPLAY_SUFFIXES:
        if last.lower().endswith(suffix):
            segments[-1] = last[: -len(suffix)]
            break
    for segment in reversed(segments):
        for match in reversed(list(_REPLAY_EPOCH.finditer(segment))):
            epoch = _epoch(match.group("n"))
            if epoch is not None:
                return epoch
    return None


def validate_experiment_name(name: str) -> str:
    """Return ``name`` if it is safe to put in an S3 prefix, else raise ValueError."""
    if not isinstance(name, str):
        raise ValueError(f"experiment name must be a string, not {type(name).__name__}")
    if len(name) > _MAX_EXPERIMENT_NAME:
        raise ValueError(f"experiment name is longer than {_MAX_EXPERIMENT_NAME} characters")
    if not _EXPERIMENT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid experiment name {name!r}: use letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit"
        )
    return name


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CheckpointObject:
    """One checkpoint object and the replays recorded for its epoch."""

    epoch: int
    policy_version: str
    key: str
    uri: str
    size: int
    last_modified: datetime
    replay_uris: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExperimentListing:
    """Checkpoints of one experiment, sorted by epoch (one per epoch)."""

    experiment_name: str
    checkpoints: list[CheckpointObject] = field(default_factory=list)
    unmatched_replays: list[str] = field(default_factory=list)
    #: ListObjectsV2 requests this listing took (0 when it came from a root listing); not content.
    requests: int = field(default=0, compare=False)


def _aware_utc(value: Any) -> datetime:
    if not isinstance(value, datetime):
        return datetime.fromtimestamp(0, tz=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _has_credentials(session: boto3.session.Session) -> bool:
    credentials = session.get_credentials()
    return credentials is not None and bool(credentials.get_frozen_credentials().access_key)


def _clean_prefix(prefix: str) -> str:
    return prefix.strip("/")


# --------------------------------------------------------------------------- client


class S3Client:
    """Read-only lister for experiment checkpoints and replays in one bucket.

    ``signed=None`` signs requests when boto3's standard credential chain finds credentials
    and otherwise talks to the (public) bucket anonymously. ``endpoint_url`` points at any
    S3-compatible store (MinIO, moto, R2...); path-style addressing is used then. The boto3
    client is created lazily on first use, once, and shared between threads.
    """

    def __init__(
        self,
        *,
        bucket: str = DEFAULT_BUCKET,
        policy_prefix: str = DEFAULT_POLICY_PREFIX,
        replay_prefix: str = DEFAULT_REPLAY_PREFIX,
        endpoint_url: str | None = None,
        region: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 20,
        max_attempts: int = 3,
        signed: bool | None = None,
    ) -> None:
        if not bucket or "/" in bucket or any(ch.isspace() for ch in bucket):
            raise ValueError(f"invalid bucket name {bucket!r}")
        if connect_timeout <= 0 or read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.bucket = bucket
        self.policy_prefix = _clean_prefix(policy_prefix)
        self.replay_prefix = _clean_prefix(replay_prefix)
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.signed = signed
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_settings(cls, **overrides: Any) -> S3Client:
        """Build a client from Django settings (``SKYDECK_S3_*``); ``overrides`` win."""
        from django.conf import settings

        kwargs: dict[str, Any] = {
            "bucket": getattr(settings, "SKYDECK_S3_BUCKET", DEFAULT_BUCKET),
            "policy_prefix": getattr(settings, "SKYDECK_S3_POLICY_PREFIX", DEFAULT_POLICY_PREFIX),
            "replay_prefix": getattr(settings, "SKYDECK_S3_REPLAY_PREFIX", DEFAULT_REPLAY_PREFIX),
            "endpoint_url": getattr(settings, "SKYDECK_S3_ENDPOINT_URL", None),
            "region": getattr(settings, "SKYDECK_S3_REGION", None),
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    def __repr__(self) -> str:
        endpoint = f", endpoint_url={self.endpoint_url!r}" if self.endpoint_url else ""
        return f"S3Client(bucket={self.bucket!r}{endpoint})"

    # -- prefixes -----------------------------------------------------------------------

    def _prefix(self, root: str, name: str) -> str:
        return f"{root}/{name}/" if root else f"{name}/"

    def policy_prefix_for(self, name: str) -> str:
        """``{policy_prefix}/{name}/`` after validating ``name``."""
        return self._prefix(self.policy_prefix, validate_experiment_name(name))

    def replay_prefix_for(self, name: str) -> str:
        """``{replay_prefix}/{name}/`` after validating ``name``."""
        return self._prefix(self.replay_prefix, validate_experiment_name(name))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- boto3 client -------------------------------------------------------------------

    def _build_client(self) -> Any:
        session = boto3.session.Session()
        signed = self.signed if self.signed is not None else _has_credentials(session)
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            # total_max_attempts counts the first try too ("max_attempts" would not).
            "retries": {"mode": "standard", "total_max_attempts": self.max_attempts},
            "max_pool_connections": MAX_WORKERS,
            "user_agent_extra": "skydeck",
        }
        if not signed:
            options["signature_version"] = UNSIGNED
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(**options),
        )

    def _get_client(self, prefix: str = "") -> Any:
        """The shared boto3 client, built on first use. Raises :class:`S3Error`."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    try:
                        self._client = self._build_client()
                    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
                        raise S3Error(
                            self.bucket,
                            prefix,
                            f"cannot create S3 client ({type(exc).__name__}: {exc})",
                            type(exc).__name__,
                        ) from exc
        return self._client

    @property
    def client(self) -> Any:
        """The underlying boto3 S3 client (built on first access)."""
        return self._get_client()

    # -- listing ------------------------------------------------------------------------

    def _iter_pages(self, prefix: str) -> Iterator[dict[str, Any]]:
        """The ListObjectsV2 pages under ``prefix``; any botocore failure as :class:`S3Error`."""
        paginator = self._get_client(prefix).get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _map_error(exc, self.bucket, prefix) from exc

    def _list(self, prefix: str) -> tuple[list[dict[str, Any]], int]:
        """Every object under ``prefix`` and the number of requests it took."""
        objects: list[dict[str, Any]] = []
        pages = 0
        for page in self._iter_pages(prefix):
            pages += 1
            objects.extend(page.get("Contents") or ())
        return objects, pages

    def list_experiment(self, name: str) -> ExperimentListing:
        """List one experiment's checkpoints and replays (two prefixes).

        Raises ValueError for an invalid name (before any request) and :class:`S3Error`
        (or a subclass) when either prefix cannot be listed.
        """
        policy_prefix = self.policy_prefix_for(name)
        replay_prefix = self.replay_prefix_for(name)
        policies, policy_pages = self._list(policy_prefix)
        replays, replay_pages = self._list(replay_prefix)
        return self._listing(name, policies, replays, requests=policy_pages + replay_pages)

    def _listing(
        self,
        name: str,
        policy_objects: list[dict[str, Any]],
        replay_objects: list[dict[str, Any]],
        *,
        requests: int,
    ) -> ExperimentListing:
        """One experiment's listing from the objects under its two prefixes."""
        policy_prefix = self._prefix(self.policy_prefix, name)
        replay_prefix = self._prefix(self.replay_prefix, name)
        best: dict[int, tuple[dict[str, Any], str]] = {}
        for obj in policy_objects:
            key = obj.get("Key") or ""
            if not key.startswith(policy_prefix):
                continue
            relative = key[len(policy_prefix) :]
            if relative.count("/") > 1:  # at most one sub-folder below the experiment
                continue
            parsed = parse_checkpoint_key(relative)
            if parsed is None:
                continue
            epoch, version = parsed
            current = best.get(epoch)
            # Newest wins; equal timestamps fall back to the larger key (deterministic).
            if current is None or (_aware_utc(obj.get("LastModified")), key) > (
                _aware_utc(current[0].get("LastModified")),
                current[0]["Key"],
            ):
                best[epoch] = (obj, version)

        replays: dict[int, list[str]] = {}
        unmatched: list[str] = []
        for obj in replay_objects:
            key = obj.get("Key") or ""
            if not key.startswith(replay_prefix) or not is_replay_key(key):
                continue
            epoch = parse_replay_epoch(key[len(replay_prefix) :])
            if epoch is not None and epoch in best:
                replays.setdefault(epoch, []).append(self.uri(key))
            else:
                unmatched.append(self.uri(key))

        checkpoints = [
            CheckpointObject(
                epoch=epoch,
                policy_version=version,
                key=obj["Key"],
                uri=self.uri(obj["Key"]),
                size=int(obj.get("Size") or 0),
                last_modified=_aware_utc(obj.get("LastModified")),
                replay_uris=sorted(replays.get(epoch, [])),
            )
            for epoch, (obj, version) in sorted(best.items())
        ]
        return ExperimentListing(
            experiment_name=name,
            checkpoints=checkpoints,
            unmatched_replays=sorted(unmatched),
            requests=requests,
        )

    def _list_root(
        self, root: str, wanted: set[str], budget: int
    ) -> tuple[dict[str, list[dict[str, Any]]], int]:
        """The objects of every folder of ``wanted`` under ``root``, and the requests it took.

        Raises :class:`RootTooLarge` as soon as more than ``budget`` requests would be needed.
        """
        prefix = f"{root}/" if root else ""
        found: dict[str, list[dict[str, Any]]] = {}
        pages = 0
        for page in self._iter_pages(prefix):
            pages += 1
            for obj in page.get("Contents") or ():
                folder, slash, _ = (obj.get("Key") or "")[len(prefix) :].partition("/")
                if slash and folder in wanted:
                    found.setdefault(folder, []).append(obj)
            if pages >= budget and page.get("IsTruncated"):
                raise RootTooLarge(self.bucket, prefix, pages)
        return found, pages

    def list_roots(
        self, names: list[str], *, budget: int
    ) -> tuple[dict[str, ExperimentListing], int]:
        """List ``names`` by listing the policy and replay roots whole (not two prefixes each).

        Worth it when the roots hold few objects for many experiments: a root of ``K`` keys
        costs ``ceil(K / 1000)`` requests, the prefixes at least ``2 * len(names)``. Returns
        ``({name: listing}, requests)``; an experiment without a folder gets an empty listing.
        Raises ValueError for an invalid name (before any request), :class:`RootTooLarge`
        once more than ``budget`` requests would be needed, and :class:`S3Error` when a root
        cannot be listed (a bucket may allow listing single prefixes and not the root).
        """
        unique = list(dict.fromkeys(names))
        for name in unique:
            validate_experiment_name(name)
        wanted = set(unique)
        policies, used = self._list_root(self.policy_prefix, wanted, budget)
        if self.replay_prefix == self.policy_prefix:
            replays = policies
        elif used >= budget:  # the replay root needs one request at least
            raise RootTooLarge(self.bucket, f"{self.replay_prefix}/", used)
        else:
            replays, more = self._list_root(self.replay_prefix, wanted, budget - used)
            used += more
        listings = {
            name: self._listing(name, policies.get(name, []), replays.get(name, []), requests=0)
            for name in unique
        }
        return listings, used

    def list_experiments(
        self, names: list[str], *, max_workers: int = 8
    ) -> dict[str, ExperimentListing | S3Error]:
        """List several experiments concurrently.

        Returns ``{name: listing or S3Error}`` in the order of ``names`` (duplicates
        collapsed); one failing experiment never stops the others. All names are validated
        first: any invalid name raises ValueError before a single request is made. At most
        ``min(max_workers, MAX_WORKERS)`` threads are used.
        """
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        unique = list(dict.fromkeys(names))
        for name in unique:
            validate_experiment_name(name)
        if not unique:
            return {}
        try:
            self._get_client()  # build once, before the threads share it
        except S3Error as exc:
            return dict.fromkeys(unique, exc)

        def run(name: str) -> ExperimentListing | S3Error:
            try:
                return self.list_experiment(name)
            except S3Error as exc:
                return exc

        workers = min(max_workers, MAX_WORKERS, len(unique))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="skydeck-s3") as pool:
            results = list(pool.map(run, unique))
        return dict(zip(unique, results, strict=True))
