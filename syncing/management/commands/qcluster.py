"""``manage.py qcluster``: django-q2's cluster, one per node on PostgreSQL, one per SQLite file.

On PostgreSQL a worker starts alongside the others (README: "Running several nodes"): django-q2's
scheduler selects due schedules with SELECT ... FOR UPDATE and moves ``next_run`` on in the same
transaction, so a schedule fires once however many clusters look at it; its ORM broker hands a
task out by compare-and-swap on its ``lock``; and every pass takes its own lease (an advisory
lock and the ``sync_states`` row, syncing/leases.py). Several clusters on one database therefore
run each schedule once, and a node that dies is replaced by the others at once.

On SQLite select_for_update does nothing, so two clusters would fire every schedule twice: one
cluster per database, under the ``scheduler`` lease. ``serve`` holds that lease for the cluster it
starts and passes its owner name in ``SKYDECK_SCHEDULER_LEASE_OWNER``; a ``qcluster`` started any
other way (by hand, by a systemd unit of its own) takes the lease itself, renews it every 10 s,
refuses to start while another live worker holds it, and stops its cluster if the lease is ever
lost. This command overrides django-q2's own (the ``syncing`` app comes before ``django_q`` in
INSTALLED_APPS).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, close_old_connections, connection
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from syncing import leases, nodes

logger = logging.getLogger("skydeck.worker")

QCLUSTER_HINT = "stop it first (on SQLite one worker per database runs the schedules)"
POLL_SECONDS = 0.5


class Command(qcluster.Command):
    help = (
        "Start the background worker (django-q2 cluster: scheduled syncs and the reconciler). "
        "On PostgreSQL it runs alongside the workers of other nodes; on SQLite it refuses while "
        "another SkyDeck worker runs on this database."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018 - as django-q2's command: signing needs it
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        lease = self._scheduler_lease() if connection.vendor != "postgresql" else None
        own_node = not os.environ.get(nodes.SERVED_ENV)  # under serve, serve beats for the node
        if own_node:
            try:
                nodes.heartbeat(["worker"], starting=True)
            except DatabaseError as exc:
                logger.warning("could not record this node's heartbeat: %s", exc)
        try:
            cluster = Cluster()
            cluster.start()
            if options.get("run_once", False):
                cluster.stop()
                return
            self._run(cluster, lease, own_node)
        finally:
            try:
                if own_node:
                    nodes.stopped()
                if lease is not None:
                    lease.release()
            except DatabaseError:  # the lease expires by itself, the node shows as gone
                logger.warning("could not record this worker's stop or release its lease")

    def _scheduler_lease(self) -> leases.SchedulerLease | None:
        """SQLite: the lease this cluster runs under (None when ``serve`` holds it for us)."""
        supervised = os.environ.get(leases.SUPERVISED_ENV, "")
        if supervised:
            if not leases.held_by(supervised):
                raise CommandError(
                    f"{leases.SUPERVISED_ENV} names a scheduler lease that is not held "
                    f"({leases.describe_owner(supervised)}); start the worker with `skydeck serve` "
                    "or plain `skydeck qcluster`"
                )
            return None
        lease = leases.SchedulerLease()
        try:
            lease.take(hint=QCLUSTER_HINT)
        except leases.SchedulerLeaseHeld as exc:
            raise CommandError(str(exc)) from None
        return lease

    def _run(self, cluster: Cluster, lease: leases.SchedulerLease | None, own_node: bool) -> None:
        """Wait for the cluster to stop (SIGTERM/SIGINT reach its own handler); heartbeat as a
        node of its own when not under serve, and renew the scheduler lease (SQLite)."""
        next_beat = time.monotonic() + leases.SCHEDULER_HEARTBEAT
        while cluster.sentinel is not None and cluster.sentinel.is_alive():
            time.sleep(POLL_SECONDS)
            if (lease is None and not own_node) or time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + leases.SCHEDULER_HEARTBEAT
            close_old_connections()
            if own_node:
                try:
                    nodes.heartbeat(["worker"])
                except DatabaseError as exc:
                    logger.warning("could not record this node's heartbeat: %s", exc)
            if lease is None:
                continue
            try:
                renewed = lease.renew()
            except DatabaseError as exc:  # the lease outlasts a few missed beats
                logger.warning("could not renew the scheduler lease: %s", exc)
                continue
            if not renewed:
                logger.error(
                    "the scheduler lease was lost to another process (%s); stopping this worker "
                    "so that only one scheduler runs",
                    lease.holder(),
                )
                cluster.stop()
                raise CommandError("the scheduler lease was lost to another worker; stopped")
