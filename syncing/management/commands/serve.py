"""``manage.py serve``: migrate, then run the web server and the background worker together.

One supervised command is what the README's run command uses: gunicorn serves the site (static
files through whitenoise) and django-q2's cluster runs the scheduled syncers. The supervisor
(syncing/supervisor.py) restarts a child that dies, with backoff, and kills each child's whole
process group when it goes, so nothing SkyDeck started outlives it, even ``kill -9`` of serve.
Ctrl-C, SIGTERM or SIGHUP stops both cleanly.

On PostgreSQL every serve runs its worker (README: "Running several nodes"): django-q2's
scheduler takes due schedules with SELECT ... FOR UPDATE and moves them on in that transaction,
its ORM broker hands a task out by compare-and-swap, and every pass takes its own lease (with an
advisory lock, syncing/leases.py), so several clusters on one database run each schedule once.
On SQLite (select_for_update does nothing there) serve holds the ``scheduler`` lease while it
runs the worker (renewed every 10 s): a second serve on the same database refuses to start,
naming the first (a second ``--no-worker`` serve is fine). The lease of a serve that died on this
machine is taken over at once, one of another machine after a minute without renewal.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections, connection

from skydeck_site.env import envint
from syncing import leases, nodes
from syncing.supervisor import Fatal, Supervisor

logger = logging.getLogger("skydeck.supervisor")

STOP_GRACE_SECONDS = 15
WEB_THREADS = 8
WORKER_COMMAND = [sys.executable, "-m", "skydeck_site.cli", "qcluster"]


class Command(BaseCommand):
    help = "Apply migrations, then run the web server and the background worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("SKYDECK_HOST", "127.0.0.1"))
        port = envint("SKYDECK_PORT", 8000, minimum=1, maximum=65535)  # a bad value: one line
        parser.add_argument("--port", type=int, default=port)
        parser.add_argument("--workers", type=int, default=2, help="web worker processes")
        parser.add_argument("--no-worker", action="store_true", help="do not start the task worker")
        parser.add_argument("--no-migrate", action="store_true", help="skip applying migrations")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port {options['port']} is not a valid TCP port")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        port_in_use(options["host"], options["port"])
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("database is up to date")
        lease = None
        if not options["no_worker"]:
            # serve heartbeats for the node its worker runs on (qcluster.py)
            os.environ[nodes.SERVED_ENV] = "1"
            if connection.vendor != "postgresql":
                lease = leases.SchedulerLease()
                try:
                    lease.take()
                except leases.SchedulerLeaseHeld as exc:
                    raise CommandError(str(exc)) from None
                # the qcluster child runs under this lease
                os.environ[leases.SUPERVISED_ENV] = lease.owner
        try:
            call_command("collectstatic", interactive=False, verbosity=0)
            self._hint_first_user()
            self._supervise(self._commands(options), lease)
        finally:
            if lease is not None:
                with contextlib.suppress(DatabaseError):  # else it expires or is taken over
                    lease.release()

    def _hint_first_user(self) -> None:
        if get_user_model().objects.exists():
            return
        db = settings.DATABASES["default"]
        where = f" --db-path {db['NAME']}" if db["ENGINE"].endswith("sqlite3") else ""
        self.stdout.write(
            self.style.WARNING(
                "No user exists yet. Create the first one (it can log in to the UI and /admin):\n"
                f"    .venv/bin/skydeck{where} createsuperuser"
            )
        )

    def _commands(self, options: dict[str, Any]) -> dict[str, list[str]]:
        bind = f"{options['host']}:{options['port']}"
        # 8 threads per process: up to SKYDECK_LOG_STREAMS_MAX (default 4) may be held by log
        # views following running jobs, and the rest of the app must keep threads to answer.
        web = [
            sys.executable, "-m", "gunicorn", "skydeck_site.wsgi:application",
            "--bind", bind,
            "--workers", str(options["workers"]),
            "--threads", str(WEB_THREADS),
            "--timeout", "120",
            "--graceful-timeout", str(STOP_GRACE_SECONDS - 5),
            "--access-logfile", "-",
        ]  # fmt: skip
        commands = {"web": web}
        if not options["no_worker"]:
            commands["worker"] = WORKER_COMMAND
        self.stdout.write(f"SkyDeck is serving on http://{bind}/ (Ctrl-C stops it)")
        return commands

    def _supervise(
        self, commands: dict[str, list[str]], lease: leases.SchedulerLease | None
    ) -> None:
        roles = sorted(commands)  # "web", and "worker" unless --no-worker

        def heartbeat() -> None:
            close_old_connections()
            try:
                nodes.heartbeat(roles)
            except DatabaseError as exc:  # health shows the node late; the next beat tries again
                logger.warning("could not record this node's heartbeat: %s", exc)
            if lease is None:  # PostgreSQL, or no worker: no scheduler lease to renew
                return
            try:
                renewed = lease.renew()
            except DatabaseError as exc:  # the next beat tries again; the lease outlasts a few
                logger.warning("could not renew the scheduler lease: %s", exc)
                return
            if not renewed:
                raise Fatal(
                    f"the scheduler lease was lost to another process ({lease.holder()}); "
                    "stopping so that only one scheduler runs"
                )

        def say(line: str) -> None:
            self.stderr.write(f"skydeck serve: {line}")

        supervisor = Supervisor(
            commands,
            stop_grace=STOP_GRACE_SECONDS,
            heartbeat=heartbeat,
            heartbeat_every=leases.SCHEDULER_HEARTBEAT,
            out=say,
        )
        with contextlib.suppress(DatabaseError):
            nodes.heartbeat(roles, starting=True)
        try:
            supervisor.run()
        except Fatal as exc:
            raise CommandError(f"{exc}; stopped SkyDeck") from None
        finally:
            with contextlib.suppress(DatabaseError):
                nodes.stopped()
        self.stdout.write("SkyDeck stopped")


def port_in_use(host: str, port: int) -> None:
    """Refuse, before saying "serving", when the address is taken (gunicorn would only retry)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"port {port} on {host} is already in use (another SkyDeck or server?); "
                    f"stop it, or choose another port: skydeck serve --port {port + 1}"
                ) from None
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
