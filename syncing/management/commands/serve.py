"""``manage.py serve``: migrate, then run the web server and the background worker together.

One supervised command is what the README's run command uses: gunicorn serves the site (static
files through whitenoise) and django-q2's cluster runs the scheduled syncers. If either child dies
the other is stopped and the command exits non-zero; Ctrl-C or SIGTERM stops both cleanly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

STOP_GRACE_SECONDS = 15
WEB_THREADS = 8


class Command(BaseCommand):
    help = "Apply migrations, then run the web server and the background worker."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("SKYDECK_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("SKYDECK_PORT", "8000")))
        parser.add_argument("--workers", type=int, default=2, help="web worker processes")
        parser.add_argument("--no-worker", action="store_true", help="do not start the task worker")
        parser.add_argument("--no-migrate", action="store_true", help="skip applying migrations")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 < options["port"] < 65536:
            raise CommandError(f"--port {options['port']} is not a valid TCP port")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("database is up to date")
        call_command("collectstatic", interactive=False, verbosity=0)
        self._hint_first_user()
        children = self._start(options)
        self._supervise(children)

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

    def _start(self, options: dict[str, Any]) -> dict[str, subprocess.Popen]:
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
        children = {"web": subprocess.Popen(web)}
        if not options["no_worker"]:
            worker = [sys.executable, "-m", "skydeck_site.cli", "qcluster"]
            children["worker"] = subprocess.Popen(worker)
        self.stdout.write(f"SkyDeck is serving on http://{bind}/ (Ctrl-C stops it)")
        return children

    def _supervise(self, children: dict[str, subprocess.Popen]) -> None:
        stopping = {"signal": None}

        def on_signal(signum: int, _frame: Any) -> None:
            stopping["signal"] = signum

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        failed: str | None = None
        try:
            while stopping["signal"] is None:
                for name, proc in children.items():
                    if proc.poll() is not None:
                        failed = f"the {name} process exited with code {proc.returncode}"
                        break
                if failed:
                    break
                time.sleep(0.5)
        finally:
            self._stop(children)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if failed:
            raise CommandError(f"{failed}; stopped SkyDeck")
        self.stdout.write("SkyDeck stopped")

    def _stop(self, children: dict[str, subprocess.Popen]) -> None:
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
