"""Nodes (issue 18's start): each SkyDeck process group says who it is (``SKYDECK_NODE_ID``),
what it runs and which version; the operation log, launches and leases record the node; health
lists every node and a node that is gone turns its own pill amber, not the deck red."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from experiments import dashboard, services
from experiments.models import Launch, Node, OperationLog, SyncState
from syncing import health, leases, nodes

pytestmark = pytest.mark.django_db


def test_a_heartbeat_registers_then_refreshes_the_node(settings):
    settings.SKYDECK_NODE_ID = "node-a"
    nodes.heartbeat(["worker", "web"], starting=True)
    node = Node.objects.get()
    assert (node.node_id, node.roles, node.stopped_at) == ("node-a", ["web", "worker"], None)
    assert node.version == nodes.version() and node.pid
    first_seen, started = node.last_seen, node.started_at
    nodes.heartbeat(["web", "worker"])
    node.refresh_from_db()
    assert node.last_seen > first_seen and node.started_at == started
    nodes.stopped()
    node.refresh_from_db()
    assert node.stopped_at is not None


def test_report_tells_running_gone_and_stopped_nodes(settings):
    settings.SKYDECK_NODE_GONE_SECONDS = 60
    now = timezone.now()
    for name, seen, stopped in [
        ("a", now - timedelta(seconds=5), None),
        ("b", now - timedelta(seconds=300), None),
        ("c", now - timedelta(seconds=300), now - timedelta(seconds=299)),
    ]:
        Node.objects.create(
            node_id=name,
            roles=["web", "worker"],
            started_at=seen,
            last_seen=seen,
            stopped_at=stopped,
        )
    states = {n["node"]: n["state"] for n in nodes.report(now)}
    assert states == {"a": "ok", "b": "gone", "c": "stopped"}
    report = health.health_report()
    assert [n["node"] for n in report["nodes"]] == ["a", "b", "c"]
    assert any(
        w.startswith("node b (web, worker) has not been seen for") for w in report["warnings"]
    )
    assert not any("node c" in w or "node a" in w for w in report["warnings"])
    # a gone node: its own pill amber ("late"); the stopped one has none; nothing turns red
    pills = {p.source: p for p in dashboard.node_pills(report["nodes"])}
    assert set(pills) == {"node:a", "node:b"}
    assert (pills["node:b"].tone, pills["node:b"].text) == ("late", "gone")
    assert pills["node:a"].tone == "ok"
    assert report["status"] == "ok"


def test_one_node_gets_no_node_pill():
    now = timezone.now()
    Node.objects.create(node_id="solo", roles=["web"], started_at=now, last_seen=now)
    assert dashboard.node_pills(nodes.report(now)) == []


def test_the_log_launches_and_leases_say_which_node(settings, make_experiment, make_job):
    from experiments import control

    settings.SKYDECK_NODE_ID = "node-b"
    experiment = make_experiment("which-node")
    assert OperationLog.objects.filter(experiment=experiment).get().node == "node-b"
    make_job(77, "which-node", user_name="dave")
    control.adopt("alice", experiment)
    assert Launch.objects.get(job_id=77).node == "node-b"
    assert leases.acquire("skypilot", "owner-1", 30)
    assert SyncState.objects.get(source="skypilot").lease_node == "node-b"
    leases.release("skypilot", "owner-1")
    assert SyncState.objects.get(source="skypilot").lease_node is None
    services.record("x", "update", message="m")
    assert OperationLog.objects.first().node == "node-b"


@pytest.mark.parametrize("bad", ["-lead", "has space", "x" * 65, "semi;colon"])
def test_a_bad_node_id_is_refused_in_one_line(monkeypatch, bad):
    from skydeck_site import settings as site_settings

    monkeypatch.setenv("SKYDECK_NODE_ID", bad)
    with pytest.raises(ImproperlyConfigured, match="SKYDECK_NODE_ID"):
        site_settings._node_id()


def test_the_node_id_defaults_to_the_host_name(monkeypatch):
    import socket

    from skydeck_site import settings as site_settings

    monkeypatch.delenv("SKYDECK_NODE_ID", raising=False)
    assert site_settings._node_id() == socket.gethostname()
