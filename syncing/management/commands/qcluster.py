"""``manage.py qcluster`` under the scheduler lease: one django-q2 cluster per database.

django-q2's cluster runs the scheduler, so two clusters on one database fire every schedule
twice (two syncs at once, two reconciler passes). ``serve`` holds the ``scheduler`` lease for
the cluster it starts and passes its owner name in ``SKYDECK_SCHEDULER_LEASE_OWNER``; a
``qcluster`` started any other way (by hand, by a systemd unit of its own) takes the lease
itself, renews it every 10 s, refuses to start while another live worker holds it, and stops
its cluster if the lease is ever lost. This command overrides django-q2's own (the ``syncing``
app comes before ``django_q`` in INSTALLED_APPS).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DatabaseError, close_old_connections
from django_q.cluster import Cluster
from django_q.management.commands import qcluster

from syncing import leases, nodes

logger = logging.getLogger("skydeck.worker")

QCLUSTER_HINT = "stop it first (one worker per database runs the schedules)"
POLL_SECONDS = 0.5


class Command(qcluster.Command):
    help = (
        "Start the background worker (django-q2 cluster: scheduled syncs and the reconciler). "
        "Refuses while another SkyDeck worker runs on this database."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        settings.SECRET_KEY  # noqa: B018 - as django-q2's command: signing needs it
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        supervised = os.environ.get(leases.SUPERVISED_ENV, "")
        lease: leases.SchedulerLease | None = None
        if supervised:
            if not leases.held_by(supervised):
                raise CommandError(
                    f"{leases.SUPERVISED_ENV} names a scheduler lease that is not held "
                    f"({leases.describe_owner(supervised)}); start the worker with `skydeck serve` "
                    "or plain `skydeck qcluster`"
                )
        else:
            lease = leases.SchedulerLease()
            try:
                lease.take(hint=QCLUSTER_HINT)
            except leases.SchedulerLeaseHeld as exc:
                raise CommandError(str(exc)) from None
        if lease is not None:
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
            self._run(cluster, lease)
        finally:
            if lease is not None:
                try:
                    nodes.stopped()
                    lease.release()
                except DatabaseError:  # it expires by itself
                    logger.warning("could not release the scheduler lease")

    def _run(self, cluster: Cluster, lease: leases.SchedulerLease | None) -> None:
        """Wait for the cluster to stop (SIGTERM/SIGINT reach its own handler); renew the lease."""
        next_beat = time.monotonic() + leases.SCHEDULER_HEARTBEAT
        while cluster.sentinel is not None and cluster.sentinel.is_alive():
            time.sleep(POLL_SECONDS)
            if lease is None or time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + leases.SCHEDULER_HEARTBEAT
            close_old_connections()
            try:  # a worker on its own is a node of its own (under serve, serve beats)
                nodes.heartbeat(["worker"])
            except DatabaseError as exc:
                logger.warning("could not record this node's heartbeat: %s", exc)
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
