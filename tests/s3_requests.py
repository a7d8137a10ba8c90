"""Watching and faking the ListObjectsV2 requests an ``S3Client`` sends (botocore events).

Only the HTTP exchange is recorded or replaced: responses still go through botocore's own
parsing and retry machinery.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from botocore.awsrequest import AWSResponse

from syncing.s3 import S3Client

LIST_EVENT = "before-send.s3.ListObjectsV2"


def listed_prefix(request) -> str:
    return parse_qs(urlsplit(request.url).query).get("prefix", [""])[0]


class ListRecorder:
    """The prefix and the signing of every ListObjectsV2 request actually sent."""

    def __init__(self) -> None:
        self.prefixes: list[str] = []
        self.signed: list[bool] = []

    def __call__(self, request, **_kwargs) -> None:
        self.prefixes.append(listed_prefix(request))
        self.signed.append("Authorization" in request.headers)

    def experiments(self) -> set[str]:
        """The experiments whose policies were listed."""
        return {p.split("/")[1] for p in self.prefixes if p.startswith("policies/")}


def record_list_calls(client: S3Client) -> ListRecorder:
    recorder = ListRecorder()
    client.client.meta.events.register_first(LIST_EVENT, recorder)
    return recorder


class _RawBody:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_kwargs):
        yield self._body


def inject_s3_error(
    client: S3Client, *, status: int, code: str, prefixes: Iterable[str] | None = None
) -> list[str]:
    """ListObjectsV2 calls for ``prefixes`` (None: all) get a real S3 XML error response.

    Returns a list that records each intercepted attempt's prefix.
    """
    wanted = None if prefixes is None else set(prefixes)
    hits: list[str] = []
    body = (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>injected {code}</Message><RequestId>R1</RequestId></Error>"
    ).encode()

    def handler(request, **_kwargs):
        requested = listed_prefix(request)
        if wanted is None or requested in wanted:
            hits.append(requested)
            return AWSResponse(
                request.url, status, {"Content-Type": "application/xml"}, _RawBody(body)
            )
        return None

    client.client.meta.events.register_first(LIST_EVENT, handler)
    return hits
