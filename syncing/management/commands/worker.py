"""``skydeck worker``: the background worker alone (django-q2's cluster: the scheduled syncs,
the reconciler, the sampler, notifications), for a node that serves no web pages.

The same command as ``skydeck qcluster`` (syncing/management/commands/qcluster.py), under the
name a deployment reads: ``skydeck serve --no-worker`` on web nodes, ``skydeck worker`` beside
them (deploy/skydeck-worker.service). On PostgreSQL it runs alongside every other node's worker
(django-q2 locks due schedules with SELECT ... FOR UPDATE, its broker dequeues by
compare-and-swap and every pass takes its own lease, so each schedule runs once); on SQLite it
holds the scheduler lease and a second one is refused. It heartbeats as its node
(``SKYDECK_NODE_ID``) and stops cleanly on SIGTERM.
"""

from __future__ import annotations

from syncing.management.commands import qcluster


class Command(qcluster.Command):
    help = (
        "Run only the background worker (scheduled syncs, the reconciler): a worker node. "
        "On PostgreSQL it runs alongside other nodes' workers; on SQLite it refuses while "
        "another SkyDeck worker runs on this database."
    )
