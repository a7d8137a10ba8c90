"""The one place that POSTs to webhook URLs (``syncing.notifications`` decides what and when).

A webhook URL is a secret (Slack's carries its token in the path), so nothing here puts it in a
message, an exception or a log line: :func:`mask_url` shows the scheme and host only, and a
receiver's answer is cleaned of the URL's path and query before anyone sees it. Redirects are
not followed (a redirect would send the payload somewhere nobody configured).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from experiments.models import WebhookFormat

#: How much of a receiver's answer is kept (the operation log and ``Notification.answer``).
ANSWER_CHARS = 200
#: Slack refuses a section text longer than this.
SLACK_SECTION_MAX = 3000
USER_AGENT = "SkyDeck-notifications"


class _QuietWhilePosting(logging.Filter):
    """urllib3 logs each request's path at DEBUG: not while this thread posts to a webhook."""

    posting = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.posting, "active", False)


_quiet = _QuietWhilePosting()
logging.getLogger("urllib3.connectionpool").addFilter(_quiet)


class WebhookError(Exception):
    """The POST got no HTTP answer (refused, unreachable, timed out); the text never holds the
    URL."""


@dataclass(frozen=True)
class Answer:
    """A receiver's HTTP answer: its status and the first ``ANSWER_CHARS`` of its body."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        """``HTTP 200 ok`` or ``HTTP 500: <the answer>`` (one line)."""
        body = " ".join(self.body.split())
        if 300 <= self.status < 400:
            body = f"redirects are not followed{': ' + body if body else ''}"
        return f"HTTP {self.status}{': ' + body if body else ''}"


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/…``: enough to recognise a destination, never its secret."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    if not parts.scheme or not host:
        return "(an invalid URL)"
    return f"{parts.scheme}://{host}{port}/…"


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL, its path or its query (a receiver may echo them back)."""
    parts = urlsplit(url)
    for secret in sorted({url, parts.path, parts.query}, key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return text


def slack_escape(text: str) -> str:
    """Slack's three control characters, as its message formatting asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(
    fmt: str,
    *,
    event: str,
    title: str,
    text: str,
    experiment: str,
    count: int,
    data: dict[str, Any],
    sent_at: datetime,
) -> dict[str, Any]:
    """The JSON body for a destination of format ``fmt`` (slack or json)."""
    if fmt == WebhookFormat.SLACK:
        body = slack_escape(text)
        section = f"*{slack_escape(title)}*" + (f"\n{body}" if body else "")
        if len(section) > SLACK_SECTION_MAX:
            section = section[: SLACK_SECTION_MAX - 1] + "…"
        return {
            "text": slack_escape(f"{title}\n{text}" if text else title),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}],
        }
    if fmt == WebhookFormat.JSON:
        return {
            "event": event,
            "title": title,
            "text": text,
            "experiment": experiment,
            "count": count,
            "data": data,
            "sent_at": sent_at.isoformat(),
        }
    raise ValueError(f"unknown webhook format {fmt!r}: choose from {', '.join(WebhookFormat)}")


def post(url: str, body: dict[str, Any], *, timeout: float | None = None) -> Answer:
    """POST ``body`` as JSON; the answer whatever its status, or WebhookError without one."""
    timeout = settings.SKYDECK_NOTIFY_TIMEOUT if timeout is None else timeout
    where = mask_url(url)
    _quiet.posting.active = True
    try:
        return _post(url, body, timeout, where)
    finally:
        _quiet.posting.active = False


def _post(url: str, body: dict[str, Any], timeout: float, where: str) -> Answer:
    try:
        response = requests.post(
            url,
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        raise WebhookError(f"timed out after {timeout:g} s") from None
    except requests.ConnectionError:
        raise WebhookError(f"could not connect to {where}") from None
    except (requests.RequestException, ValueError) as exc:  # a malformed URL, bad TLS, ...
        raise WebhookError(f"request to {where} failed ({type(exc).__name__})") from None
    try:
        chunk = next(response.iter_content(ANSWER_CHARS * 4), b"")
    except requests.RequestException:
        chunk = b""  # the status is what counts; a body cut short is no answer to keep
    finally:
        response.close()
    text = chunk.decode("utf-8", errors="replace") if isinstance(chunk, bytes) else str(chunk)
    return Answer(response.status_code, _scrub(text, url)[:ANSWER_CHARS])
