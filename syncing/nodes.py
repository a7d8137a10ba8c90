"""This node's row in ``nodes``: written by its supervisor every heartbeat, read by health.

Several SkyDeck nodes can share one PostgreSQL (README: "Running several nodes"). Each says who
it is (``SKYDECK_NODE_ID``), what it runs (web, worker) and which version, so "which node did
this" is answerable from the operation log, the launches and the leases, and a node that stopped
heartbeating shows as gone rather than as a dead deck.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from experiments.models import Node
from syncing import skypilot

#: Set by ``serve`` for the worker it starts: serve heartbeats for the node (its roles are
#: web and worker), so the worker must not write its own row (roles: worker only).
SERVED_ENV = "SKYDECK_WORKER_UNDER_SERVE"


def version() -> str:
    """The installed SkyDeck's version ("" when not installed): the one the SkyPilot client
    also sends in its User-Agent."""
    return skypilot.skydeck_version()


def node_id() -> str:
    return settings.SKYDECK_NODE_ID


def heartbeat(roles: list[str], *, starting: bool = False) -> None:
    """Say this node is alive (one UPSERT-like UPDATE, an INSERT the first time)."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "roles": sorted(roles),
        "version": version(),
        "host": socket.gethostname()[:255],
        "pid": os.getpid(),
        "last_seen": now,
        "stopped_at": None,
    }
    if starting:
        fields["started_at"] = now
    updated = Node.objects.filter(node_id=node_id()).update(**fields)
    if not updated:
        Node.objects.get_or_create(
            node_id=node_id(), defaults={**fields, "started_at": fields.get("started_at", now)}
        )


def stopped() -> None:
    """A clean stop: the node is not gone, it was stopped (health stays quiet about it)."""
    Node.objects.filter(node_id=node_id()).update(stopped_at=timezone.now())


def report(now=None) -> list[dict[str, Any]]:
    """Every node: roles, version, last seen, and ``state`` ok / stopped / gone."""
    now = now or timezone.now()
    gone_after = timedelta(seconds=settings.SKYDECK_NODE_GONE_SECONDS)
    out = []
    for node in Node.objects.all():
        if node.stopped_at is not None and node.stopped_at >= node.last_seen:
            state = "stopped"
        elif now - node.last_seen > gone_after:
            state = "gone"
        else:
            state = "ok"
        out.append(
            {
                "node": node.node_id,
                "roles": node.roles,
                "version": node.version,
                "host": node.host,
                "started_at": node.started_at.isoformat(),
                "last_seen": node.last_seen.isoformat(),
                "seconds_since_seen": round((now - node.last_seen).total_seconds(), 1),
                "state": state,
                "this": node.node_id == node_id(),
            }
        )
    return out
