"""Load test of the served app on loopback while syncs run every few seconds.

Starts everything itself in a fresh temporary SKYDECK_HOME / SQLite file (WAL):

* the stub SkyPilot API server (tests/stub_skypilot.py) with ``--jobs`` jobs whose statuses move on
  every 2 s, in its own process;
* moto's S3 server with ``--experiments`` x ``--checkpoints`` checkpoints, behind a fault proxy, in
  its own process;
* ``skydeck serve`` (gunicorn + the django-q2 worker, sync intervals at the 10 s minimum, the
  reconciler on) and, beside it, ``manage.py sync --loop --interval 3`` (both sources);

then runs ``--clients`` threads for ``--duration`` seconds, each mixing dashboard loads, deck
refreshes (as skydeck.js sends them: the version, and the rows and layout of each section shown),
``/jobs``, API reads and API writes (PATCH flags, start/stop, create). Every acknowledged write is
remembered and read back through the API afterwards.

Prints requests/s and p50/p95/p99 latency (overall and per kind), the number of 5xx answers and of
"database is locked" (in answers and in every server/sync log), and the write check. Exits
non-zero if there was any 5xx, any lock error or any lost write.

``--fault`` turns a fault on once the first syncs have succeeded and keeps it for the whole run
(``skypilot-slow`` is the real 30 s case against the default 10 s client timeout); the run then
also reports the health pills and checks that no stored job or checkpoint was lost.

``--nodes 2`` (issue 18) runs that many ``skydeck serve`` nodes (``SKYDECK_NODE_ID`` node-a,
node-b, ...) on a PostgreSQL database of the run's own (created on ``--database-url``'s server,
dropped after), without the sync loop: every node runs its worker, and they share the schedules
(django-q2 locks due schedules, every pass takes its lease and advisory lock). Clients start
spread over the nodes and, like a proxy, move to the next node when one refuses them; every write
is read back through another node than its client's. The double's record of launches (each with
the node of its User-Agent) must show no launch of a name while SkyDeck's own job of it was
active, and no launch id sent twice. ``--kill-node``: the double holds the launch of an
experiment started at the beginning; the node that sent it (the victim, either one) then has its
next job listing (its next sync pass) held too, and is SIGKILLed with both in flight. Another
node must sync SkyPilot within one lease period (the per-pass lease TTL), logging that it took
over the victim's leases; with the double's history paused, SkyDeck's jobs table (read from
PostgreSQL) must then equal the double's jobs and no lease row name the victim; the launch must
be listed once; the victim, restarted at half time or 5 s later, must rejoin.
``--rolling-restart`` restarts every node in turn (SIGTERM: it drains) and must cost no 5xx.

    .venv/bin/python bench/load.py [--duration 60] [--clients 20] [--fault none]
    .venv/bin/python bench/load.py --nodes 2 [--kill-node | --rolling-restart]
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from aws_isolation import isolated_environ  # noqa: E402 - tests/ is on the path from here

BUCKET = "skydeck-load"
REGION = "us-east-1"
PASSWORD = "load-bench-password"
LOCKED = "database is locked"
FAULTS = ("none", "skypilot-slow", "skypilot-down", "skypilot-garbage", "s3-throttle")
PILL_RE = re.compile(
    r'<span class="pill health-(?P<tone>\w+)" title="(?P<title>[^"]*)" tabindex="0" '
    r'data-source="(?P<source>\w+)">'
)
#: A built deck section as the page carries it: its key and the layout its rows line up under.
SECTION_RE = re.compile(r'<section [^>]*data-key="([^"]+)" data-built data-layout="(\w+)"')
#: Request kinds and their weights in the mix.
MIX = {
    "dashboard": 12,
    "deck-refresh": 20,
    "jobs-page": 8,
    "api-experiments": 12,
    "api-jobs": 10,
    "api-detail": 12,
    "write-patch": 14,
    "write-start-stop": 7,
    "write-create": 5,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"load: {what} did not come up at {url}")


# --- the S3 side: a process of its own ----------------------------------------------------------


def serve_s3(port: int, experiments: int, checkpoints: int) -> None:
    """moto on loopback, seeded in-process, behind the fault proxy on ``port``.

    Reads ``throttle`` / ``ok`` lines on stdin to switch 503 SlowDown on and off.
    """
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import ThreadedMotoServer
    from stub_skypilot import S3FaultProxy

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, moto_port = server.get_host_and_port()
    boto3.client("s3", endpoint_url=f"http://{host}:{moto_port}", region_name=REGION).create_bucket(
        Bucket=BUCKET
    )
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(experiments):
        name = f"exp-{i:04}"
        for epoch in range(1, checkpoints + 1):
            backend.put_object(BUCKET, f"policies/{name}/{name}:v{epoch}.mpt", b"w")
    proxy = S3FaultProxy(f"http://{host}:{moto_port}", port=port).start()
    print("ready", flush=True)
    for line in sys.stdin:
        proxy.throttle = line.strip() == "throttle"
        print(f"throttle={proxy.throttle}", flush=True)


# --- seeding ------------------------------------------------------------------------------------


def seed(experiments: int) -> str:
    """Experiments (named like the stub's jobs), groups, a superuser and its API token."""
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from experiments import services
    from experiments.models import Experiment

    call_command("migrate", verbosity=0)
    user = User.objects.create_superuser("bench", "bench@example.com", PASSWORD)
    token = Token.objects.create(user=user).key
    Experiment.objects.bulk_create(
        Experiment(
            name=f"exp-{i:04}",
            flags={"trainer.lr": 0.001 * (1 + i % 3), "trainer.batch": 512 * (1 + i % 2)},
            nodes=1 + i % 2,
            gpus=8,
            accelerator="H100",
            base_command="uv run ./tools/train.py",
        )
        for i in range(experiments)
    )
    all_experiments = list(Experiment.objects.order_by("name"))
    per_group = max(1, len(all_experiments) // 10)
    for g in range(10):
        group = services.create_group("bench", f"sweep-{g}", flags=["trainer.lr", "trainer.batch"])
        services.add_to_group("bench", group, all_experiments[g * per_group : (g + 1) * per_group])
    connections.close_all()
    return token


# --- the clients --------------------------------------------------------------------------------


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    codes: Counter = field(default_factory=Counter)
    errors_5xx: list[str] = field(default_factory=list)
    locked: int = 0
    failures: list[str] = field(default_factory=list)  # transport errors, unexpected 4xx
    lock: threading.Lock = field(default_factory=threading.Lock)
    # --nodes: answers and latencies per node, and requests a stopped or killed node refused
    # (a proxy in front would retry them on another node: the client does so itself)
    per_node: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    refused: Counter = field(default_factory=Counter)
    rebalance: bool = False  # a node rejoined: clients go back to their own node

    def record(
        self, kind: str, seconds: float, response: requests.Response | None, note: str
    ) -> None:
        with self.lock:
            if response is None:
                self.failures.append(f"{kind}: {note}")
                return
            self.latencies[kind].append(seconds)
            self.codes[response.status_code] += 1
            if LOCKED in response.text:
                self.locked += 1
            if response.status_code >= 500:
                self.errors_5xx.append(f"{kind} {response.status_code}: {response.text[:200]}")
            elif response.status_code >= 400:
                self.failures.append(f"{kind} {response.status_code}: {response.text[:200]}")


class Client(threading.Thread):
    """One user: a logged-in browser session plus an API token, mixing every kind of request."""

    def __init__(
        self,
        index: int,
        base: str,
        token: str,
        stop_at: float,
        stats: Stats,
        bases: list[str] | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"client-{index}")
        self.index, self.base, self.stop_at, self.stats = index, base, stop_at, stats
        self.bases = bases or [base]  # --nodes: every node; a client starts on its own
        self.home = base
        self.api = {"Authorization": f"Token {token}"}
        self.session = requests.Session()
        self.random = random.Random(index)
        self.version = ""
        self.sections: dict[str, tuple[int, str]] = {}  # what the deck shows: key -> rows, layout
        self.owned: list[str] = []  # experiments only this client writes to
        self.expected: dict[str, dict[str, Any]] = {}  # name -> fields as last acknowledged
        self.created = itertools.count()
        self.writes = 0
        self.uncertain: set[str] = set()  # a write cut off by a killed node, not written since

    def login(self) -> None:
        page = self.session.get(f"{self.base}/accounts/login/", timeout=30)
        token = self.session.cookies.get("csrftoken") or ""
        answer = self.session.post(
            f"{self.base}/accounts/login/",
            data={"username": "bench", "password": PASSWORD, "csrfmiddlewaretoken": token},
            headers={"Referer": page.url},
            timeout=30,
        )
        if answer.status_code != 200 or "sessionid" not in self.session.cookies:
            raise SystemExit(f"load: client {self.index} could not log in ({answer.status_code})")

    def run(self) -> None:
        kinds, weights = list(MIX), list(MIX.values())
        while time.monotonic() < self.stop_at:
            kind = self.random.choices(kinds, weights)[0]
            if kind.startswith("write") and not self.owned:
                kind = "write-create"
            self.one(kind)

    def one(self, kind: str) -> None:
        if self.stats.rebalance and self.base != self.home:
            self.base = self.home
        method, path, body, headers = "GET", "/", None, {}
        name = self.random.choice(self.owned) if self.owned else ""
        if kind == "deck-refresh":  # as skydeck.js sends the poll: the version and what it shows
            shown = ",".join(f"{k}:{rows}:{layout}" for k, (rows, layout) in self.sections.items())
            path = f"/?v={self.version}&shown={shown}" if self.version else "/"
            headers = {"HX-Request": "true", "HX-Target": "deck", "HX-Current-URL": self.base + "/"}
        elif kind == "jobs-page":
            path = "/jobs"
        elif kind == "api-experiments":
            path, headers = f"/api/experiments/?page={self.random.randint(1, 3)}", self.api
        elif kind == "api-jobs":
            path, headers = f"/api/jobs/?name=exp-00{self.random.randint(0, 9)}", self.api
        elif kind == "api-detail":
            target = name or f"exp-{self.random.randrange(100):04}"
            path, headers = f"/api/experiments/{target}/", self.api
        elif kind == "write-patch":
            value = self.writes
            method, path, headers = "PATCH", f"/api/experiments/{name}/", self.api
            body = {"flags_patch": {"set": {"bench.writer": self.index, "bench.value": value}}}
        elif kind == "write-start-stop":
            action = self.random.choice(["start", "stop"])
            method, path, headers = "POST", f"/api/experiments/{name}/{action}/", self.api
        elif kind == "write-create":
            name = f"load-{self.index:02}-{next(self.created):05}"
            method, path, headers = "POST", "/api/experiments/", self.api
            body = {
                "name": name,
                "flags": {"bench.writer": self.index, "bench.value": self.writes},
                "nodes": 1,
                "gpus": 8,
                "accelerator": "H100",
                "base_command": "uv run ./tools/train.py",
            }
        started = time.perf_counter()
        try:
            response = self.session.request(
                method, self.base + path, json=body, headers=headers, timeout=120
            )
        except requests.ConnectionError as exc:
            if len(self.bases) == 1:
                self.stats.record(kind, 0, None, type(exc).__name__)
                return
            # a node that is down or restarting: what a proxy would retry elsewhere
            with self.stats.lock:
                self.stats.refused[self.base] += 1
            if kind.startswith("write") and "refused" not in str(exc).lower():
                self.uncertain.add(name)  # cut off mid-request: it may or may not have landed
            self.base = self.bases[(self.bases.index(self.base) + 1) % len(self.bases)]
            return
        except requests.RequestException as exc:
            self.stats.record(kind, 0, None, type(exc).__name__)
            return
        seconds = time.perf_counter() - started
        self.stats.record(kind, seconds, response, "")
        if len(self.bases) > 1:
            with self.stats.lock:
                self.stats.per_node[self.base].append(seconds)
        if response.status_code >= 300:
            return
        if kind in ("dashboard", "deck-refresh"):
            text = response.text
            match = re.search(r'data-version="([^"]+)"', text)
            if match:
                self.version = match.group(1)
            if kind == "dashboard" or response.headers.get("HX-Reswap") != "none":
                self.sections = {}  # a whole deck: what it shows now is only what came
            for found in SECTION_RE.finditer(text):  # sections (re-)rendered by this answer
                end = text.find("</section>", found.end())
                rows = text.count('class="exp-row', found.end(), end)
                self.sections[found.group(1)] = (rows, found.group(2))
        elif kind.startswith("write"):
            self.remember(kind, name, path, body)

    def remember(self, kind: str, name: str, path: str, body: dict | None) -> None:
        """An acknowledged write: this is what reading it back must show."""
        self.writes += 1
        if kind != "write-start-stop":  # flags or a create: the values are known again
            self.uncertain.discard(name)
        expected = self.expected.setdefault(name, {})
        if kind == "write-create":
            self.owned.append(name)
            expected["flags"] = dict(body["flags"])  # type: ignore[index]
            expected["desired_state"] = "STOPPED"
        elif kind == "write-patch":
            expected.setdefault("flags", {}).update(body["flags_patch"]["set"])  # type: ignore[index]
        else:
            expected["desired_state"] = "RUNNING" if path.endswith("/start/") else "STOPPED"
            expected["toggles"] = expected.get("toggles", 0) + 1


STATE_OPERATIONS = {"start": "RUNNING", "stop": "STOPPED", "complete": "STOPPED", "park": "STOPPED"}


def verify_writes(base: str, token: str, clients: list[Client]) -> tuple[int, int, list[str]]:
    """Read every written experiment back through the API; returns (checked, superseded, problems).

    Flags must read exactly as last written. Desired state must be the last one written, unless
    the operation log shows the reconciler changed it afterwards (a launched job succeeded:
    ``complete``; too many failures: ``park``); the log must also hold every acknowledged
    start/stop at most once (one that changed nothing is not logged).
    """
    headers = {"Authorization": f"Token {token}"}
    problems: list[str] = []
    checked = superseded = 0
    with requests.Session() as session:
        for client in clients:
            for name, expected in client.expected.items():
                if name in client.uncertain:
                    continue  # a write to it was cut off by a killed node (not acknowledged)
                checked += 1
                response = session.get(
                    f"{base}/api/experiments/{name}/", headers=headers, timeout=60
                )
                if response.status_code != 200:
                    problems.append(f"{name}: HTTP {response.status_code}")
                    continue
                data = response.json()
                for key, value in expected.get("flags", {}).items():
                    if data["flags"].get(key) != value:
                        problems.append(
                            f"{name}: flag {key}={data['flags'].get(key)!r}, wrote {value!r}"
                        )
                state = expected.get("desired_state")
                toggles = expected.get("toggles", 0)
                if not toggles:
                    if state and data["desired_state"] != state:
                        problems.append(
                            f"{name}: desired_state {data['desired_state']}, wrote {state}"
                        )
                    continue
                query = "&".join(f"operation={op}" for op in STATE_OPERATIONS)
                log = session.get(
                    f"{base}/api/operations/?experiment={name}&success=true&page_size=1000&{query}",
                    headers=headers,
                    timeout=60,
                ).json()["results"]
                log.sort(key=lambda entry: entry["id"])
                ours = [
                    e for e in log if e["actor"] == "bench" and e["operation"] in ("start", "stop")
                ]
                if len(ours) > toggles:  # a start/stop that changed nothing is not logged
                    problems.append(
                        f"{name}: {toggles} start/stop acknowledged, {len(ours)} logged"
                    )
                implied = STATE_OPERATIONS[log[-1]["operation"]] if log else state
                if data["desired_state"] != implied:
                    problems.append(
                        f"{name}: desired_state {data['desired_state']}, log says {implied}"
                    )
                elif data["desired_state"] != state:
                    superseded += 1  # the reconciler's logged decision came after our write
    return checked, superseded, problems


# --- several nodes (--nodes): one PostgreSQL, a node killed or restarted under load -------------


def create_database(admin_url: str) -> str:
    """A fresh PostgreSQL database for the run (``admin_url``'s server), its URL."""
    import psycopg

    name = f"skydeck_load_{os.getpid()}_{random.randrange(1 << 30):x}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


#: The experiment node-a is launching when --kill-node kills it (made for it: no job has its name).
KILL_LAUNCH = "killed-mid-launch"


def launch_record(stub: str) -> dict[str, int]:
    """What the double was asked: SkyDeck's launches, launches of a name while SkyDeck's own job
    of that name was active (a double launch), and launch ids sent more than once."""
    events = requests.get(f"{stub}/_stub/events", timeout=30).json()["events"]
    launches = [e for e in events if e["kind"] == "launch" and e.get("token")]
    tokens = Counter(e["token"] for e in launches)
    doubles = [e for e in launches if any(a.get("token") for a in e.get("active", []))]
    return {
        "launches": len(launches),
        "doubles": len(doubles),
        "repeated_tokens": sum(n - 1 for n in tokens.values() if n > 1),
        "of_the_killed_launch": sum(1 for e in launches if e["name"] == KILL_LAUNCH),
        "per_node": dict(sorted(Counter(e.get("node") or "?" for e in launches).items())),
        "of_the_killed_launch_per_node": dict(
            Counter(e.get("node") or "?" for e in launches if e["name"] == KILL_LAUNCH)
        ),
    }


def _node_health(base: str, token: str) -> dict[str, Any]:
    try:
        return requests.get(
            f"{base}/api/health", headers={"Authorization": f"Token {token}"}, timeout=10
        ).json()
    except (requests.RequestException, ValueError):
        return {}


def _wait(what, timeout: float, poll: float = 0.5) -> float | None:
    """Seconds until ``what()`` is true, or None after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if what():
            return time.monotonic() - began
        time.sleep(poll)
    return None


#: How long the double holds the killed node's launch and listing at most (its client waits
#: longer: SKYDECK_SKYPILOT_TIMEOUT is raised for --kill-node, so neither request times out).
HOLD_SECONDS = 150
#: The sources whose lease rows a killed node may leave behind (its sync pass, its reconciler).
KILLED_SOURCES = ("skypilot", "reconciler")


def lease_rows(database_url: str) -> dict[str, dict[str, Any]]:
    """``sync_states`` as PostgreSQL has it now (read directly, not through a node)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT source, lease_owner, lease_node, lease_expires_at, last_attempt_at, "
            "last_success_at FROM sync_states"
        ).fetchall()
    keys = ("owner", "node", "expires", "attempt", "success")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def stored_jobs(database_url: str) -> dict[int, str]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return dict(conn.execute("SELECT id, status FROM jobs").fetchall())


def _held(stub: str) -> dict[str, Any]:
    return requests.get(f"{stub}/_stub/held", timeout=10).json()


def kill_and_rejoin(args, started, children, start_node, bases, names, logs, token, stats) -> dict:
    """SIGKILL the node that is launching an experiment while its next sync pass also waits for
    SkyPilot; another node must take the sync over within one lease period, the launch must be
    listed once, no row half-written; the killed node, restarted, must rejoin."""
    out: dict[str, Any] = {"failures": []}
    stub, db = args.stub_url, args.node_database_url
    # mid-launch: the double holds the answer to the next launch of KILL_LAUNCH, which some
    # node's reconciler sends for an experiment started now (on a pass after a sync)
    requests.post(
        f"{stub}/_stub/hold",
        json={"what": "launch", "count": 1, "name": KILL_LAUNCH, "seconds": HOLD_SECONDS},
        timeout=10,
    ).raise_for_status()
    auth = {"Authorization": f"Token {token}"}
    requests.post(
        f"{bases[0]}/api/experiments/",
        json={"name": KILL_LAUNCH, "nodes": 1, "gpus": 8, "accelerator": "H100",
              "base_command": "uv run ./tools/train.py"},
        headers=auth,
        timeout=60,
    ).raise_for_status()  # fmt: skip
    requests.post(
        f"{bases[0]}/api/experiments/{KILL_LAUNCH}/start/", json={}, headers=auth, timeout=60
    ).raise_for_status()
    held = _wait(lambda: _held(stub)["launch"], 180)
    if held is None:
        out["failures"].append(f"no launch of {KILL_LAUNCH} was sent within 180 s")
        return out
    victim = _held(stub)["launch"][0]
    if victim not in names:
        out["failures"].append(f"the launch of {KILL_LAUNCH} came from no known node ({victim})")
        return out
    k = names.index(victim)
    heirs = [n for n in names if n != victim]
    out["victim (sent the launch of killed-mid-launch)"] = victim
    # mid-sync: the victim's next listing (its next sync pass: another of its worker processes
    # runs the next scheduled sync while the first waits in its launch)
    requests.post(
        f"{stub}/_stub/hold",
        json={"what": "queue", "count": 1, "node": victim, "seconds": HOLD_SECONDS},
        timeout=10,
    ).raise_for_status()
    queued = _wait(lambda: _held(stub)["queue"], HOLD_SECONDS - 30)
    rows = lease_rows(db)
    in_flight = {s: rows.get(s, {}).get("node") == victim for s in KILLED_SOURCES}
    owners = {s: rows.get(s, {}).get("owner") or "" for s in KILLED_SOURCES}
    both = held is not None and queued is not None and all(in_flight.values())
    out[f"killed {victim} with its launch of {KILL_LAUNCH} AND a sync pass both in flight"] = (
        f"{both} (launch held: {held is not None}, listing held: {queued is not None}, "
        f"leases it held: {', '.join(s for s, mine in in_flight.items() if mine) or 'none'})"
    )
    if not both:
        out["failures"].append(
            f"{victim} was not killed mid-launch and mid-sync: listing held {queued is not None}, "
            f"lease rows {rows}"
        )
    killed_wall = time.time()
    os.killpg(children[victim].pid, signal.SIGKILL)
    children[victim].wait()
    requests.post(f"{stub}/_stub/release", timeout=10).raise_for_status()

    # the take-over: the heir's sync of the same source succeeded after the kill
    ttl = int(os.environ.get("SKYDECK_TASK_TIMEOUT", "300")) + 60  # syncing/runner.py's lease
    seen_nodes: set[str] = set()

    def synced_by_heir() -> bool:
        row = lease_rows(db).get("skypilot", {})
        if row.get("node"):
            seen_nodes.add(row["node"])
        success = row.get("success")
        return (
            bool(success)
            and success.timestamp() > killed_wall
            and row["owner"] != owners["skypilot"]
        )

    took = _wait(synced_by_heir, ttl + 30, poll=0.1)
    heir_logs = "".join((logs / f"{n}.log").read_text(errors="replace") for n in heirs)
    took_lease = {
        s: bool(owners[s])
        and f"took over the lease of {owners[s]}, whose database session ended" in heir_logs
        for s in KILLED_SOURCES
    }
    out[
        f"SkyPilot sync taken over by {'/'.join(sorted(seen_nodes & set(heirs))) or 'no other node'}"
        f" after (s) [lease period: the per-pass lease TTL of syncing/runner.py, task timeout + "
        f"60 = {ttl} s; SkyPilot sync interval {os.environ['SKYDECK_SYNC_SKYPILOT_INTERVAL']} s, "
        "django-q2's scheduler looks every 30 s]"
    ] = None if took is None else round(took, 1)
    out["heir logged 'took over the lease of <victim>, whose database session ended' for"] = (
        ", ".join(s for s, ok in took_lease.items() if ok) or "none"
    )
    if took is None:
        out["failures"].append(f"no other node synced SkyPilot within {ttl + 30} s of the kill")
    elif took > ttl:
        out["failures"].append(f"the take-over took {took:.1f} s, more than one lease ({ttl} s)")
    if not took_lease["skypilot"]:
        out["failures"].append(f"no other node took over {victim}'s SkyPilot lease (its log)")

    # no row half-written: with the double's history standing still, a sync that started after
    # that leaves SkyDeck's jobs table equal to the double's jobs; the victim names no lease row.
    # Launches and cancels still go on meanwhile (the clients and the reconciler): jobs that one
    # of them added or changed between the two readings of the double are left out of the check.
    requests.post(f"{stub}/_stub/ticks", json={"paused": True}, timeout=10).raise_for_status()
    paused_at = datetime.now().astimezone()
    at_pause = requests.get(f"{stub}/_stub/jobs", timeout=30).json()["statuses"]

    def fresh_sync() -> bool:
        row = lease_rows(db).get("skypilot", {})
        attempt, success = row.get("attempt"), row.get("success")
        return bool(attempt and success) and attempt > paused_at and success >= attempt

    fresh = _wait(fresh_sync, 120, poll=0.2)
    theirs = requests.get(f"{stub}/_stub/jobs", timeout=30).json()
    ours = stored_jobs(db)
    requests.post(f"{stub}/_stub/ticks", json={"paused": False}, timeout=10).raise_for_status()
    now_theirs = {int(i): status for i, status in theirs["statuses"].items()}
    statuses = {i: s for i, s in now_theirs.items() if at_pause.get(str(i)) == s}  # stood still
    moved = len(now_theirs) - len(statuses)
    missing = sorted(set(statuses) - set(ours))
    extra = sorted(set(ours) - set(now_theirs))
    differ = sorted(i for i in set(ours) & set(statuses) if ours[i] != statuses[i])
    rows = lease_rows(db)
    still = [s for s in KILLED_SOURCES if owners[s] and rows.get(s, {}).get("owner") == owners[s]]
    out["no row half-written: SkyDeck's jobs vs the double's (ids, statuses)"] = (
        f"{len(ours)} vs {theirs['total']} ({moved} launched or cancelled during the check, "
        f"left out); missing {len(missing)}, extra {len(extra)}, status differs {len(differ)}; "
        f"lease rows still naming {victim}: {still or 'none'}"
    )
    if fresh is None:
        out["failures"].append("no SkyPilot sync succeeded within 120 s with the history paused")
    elif missing or extra or differ:
        out["failures"].append(
            f"jobs table differs from the double: missing {missing[:5]}, extra {extra[:5]}, "
            f"status {[(i, ours[i], statuses[i]) for i in differ[:5]]}"
        )
    if still:
        out["failures"].append(f"lease rows {still} still name the killed {victim}")

    time.sleep(max(5.0, started + args.duration / 2 - time.monotonic()))
    restarted = time.monotonic()
    start_node(k, migrate=False)
    wait_http(f"{bases[k]}/api/health", 90, f"{victim} restarted")
    other = bases[names.index(heirs[0])]

    def rejoined() -> bool:
        nodes = {n["node"]: n for n in _node_health(other, token).get("nodes", [])}
        return nodes.get(victim, {}).get("state") == "ok"

    back = _wait(rejoined, 60)
    out[f"{victim} restarted and rejoined after (s)"] = (
        None if back is None else round(time.monotonic() - restarted, 1)
    )
    if back is None:
        out["failures"].append(f"{victim} did not rejoin")
    stats.rebalance = True  # as a proxy would: the rejoined node gets its clients back

    def listed() -> bool:  # the launch cut off by the kill: found by a sync, as a job
        answer = requests.get(f"{other}/api/experiments/{KILL_LAUNCH}/", headers=auth, timeout=30)
        return answer.ok and answer.json()["current_state"] != "NO_JOB"

    found = _wait(listed, 120)
    out[f"{KILL_LAUNCH}'s job, launched by {victim} before it died, listed within (s)"] = (
        None if found is None else round(time.time() - killed_wall, 1)
    )
    if found is None:
        out["failures"].append(f"the job {victim} launched for {KILL_LAUNCH} was never listed")
    return out


def rolling_restart(args, started, children, start_node, bases, names, token, stats) -> dict:
    """Each node in turn: SIGTERM (it drains), started again, healthy, then the next one."""
    out: dict[str, Any] = {"failures": []}
    time.sleep(max(0.0, started + args.duration / 4 - time.monotonic()))
    for k, name in enumerate(names):
        proc = children[name]
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            out["failures"].append(f"{name} did not stop within 45 s of SIGTERM")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stopped = time.monotonic() - began
        start_node(k, migrate=False)
        wait_http(f"{bases[k]}/api/health", 90, f"{name} restarted")
        out[f"{name}: stopped (drained) in / serving again after (s)"] = (
            f"{stopped:.1f} / {time.monotonic() - began:.1f}"
        )
    stats.rebalance = True  # every node is back: clients return to their own
    return out


# --- reporting ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_line(label: str, values: list[float], seconds: float) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:17} {len(values):7,} req {len(values) / seconds:7.1f}/s   p50 {percentile(ms, 50):7.1f} ms"
        f"   p95 {percentile(ms, 95):7.1f} ms   p99 {percentile(ms, 99):7.1f} ms   max {max(ms):7.1f} ms"
    )


def health_pills(base: str, session: requests.Session) -> dict[str, tuple[str, str]]:
    page = session.get(f"{base}/", timeout=60)
    page.raise_for_status()
    return {
        m["source"]: (m["tone"], html.unescape(m["title"])) for m in PILL_RE.finditer(page.text)
    }


def counts(base: str, token: str) -> dict[str, int]:
    headers = {"Authorization": f"Token {token}"}
    out = {}
    for kind in ("jobs", "checkpoints", "experiments"):
        answer = requests.get(f"{base}/api/{kind}/?page_size=1", headers=headers, timeout=60)
        answer.raise_for_status()
        out[kind] = answer.json()["count"]
    return out


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of load (CI: 20)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=3000, help="jobs the stub SkyPilot holds")
    parser.add_argument("--experiments", type=int, default=300)
    parser.add_argument("--checkpoints", type=int, default=10, help="per experiment")
    parser.add_argument("--fault", choices=FAULTS, default="none")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="SkyDeck nodes (serve, web and worker) on one PostgreSQL; clients spread over them",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "SKYDECK_CI_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"
        ),
        help="--nodes > 1: a PostgreSQL to create the run's own database on (dropped after)",
    )
    parser.add_argument(
        "--kill-node",
        action="store_true",
        help="--nodes > 1: SIGKILL the node launching an experiment mid-launch and mid-sync, "
        "then restart it",
    )
    parser.add_argument(
        "--rolling-restart",
        action="store_true",
        help="--nodes > 1: restart every node in turn (SIGTERM, start, healthy) during the run",
    )
    parser.add_argument("--serve-s3", type=int, help=argparse.SUPPRESS)  # internal: the S3 process
    args = parser.parse_args()
    if args.serve_s3:
        serve_s3(args.serve_s3, args.experiments, args.checkpoints)
        return 0

    if args.nodes < 1 or ((args.kill_node or args.rolling_restart) and args.nodes < 2):
        parser.error("--kill-node and --rolling-restart need --nodes 2 or more")
    tmp = Path(tempfile.mkdtemp(prefix="skydeck-load-"))
    logs = tmp / "logs"
    logs.mkdir()
    skypilot_port, s3_port = free_port(), free_port()
    ports = [free_port() for _ in range(args.nodes)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    base = bases[0]
    database_url = create_database(args.database_url) if args.nodes > 1 else ""
    args.stub_url = f"http://127.0.0.1:{skypilot_port}"
    args.node_database_url = database_url
    env = isolated_environ(
        {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, tmp, REGION
    )
    env.update(
        HOME=str(tmp),
        SKYDECK_HOME=str(tmp / "home"),
        SKYDECK_DB_PATH=str(tmp / "load.db"),
        SKYDECK_STATIC_ROOT=str(tmp / "static"),
        SKYDECK_SKYPILOT_ENDPOINT=f"http://127.0.0.1:{skypilot_port}",
        SKYPILOT_API_COOKIE_FILE=str(tmp / "no-cookies.txt"),
        SKYDECK_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3_port}",
        SKYDECK_S3_BUCKET=BUCKET,
        SKYDECK_S3_REGION=REGION,
        SKYDECK_SYNC_SKYPILOT_INTERVAL="10",
        SKYDECK_SYNC_S3_INTERVAL="10",
        SKYDECK_RECONCILE="on",
        DJANGO_SETTINGS_MODULE="skydeck_site.settings",
    )
    env.pop("SKYPILOT_SERVICE_ACCOUNT_TOKEN", None)
    if database_url:
        env.pop("SKYDECK_DB_PATH")
        env["DATABASE_URL"] = database_url
        env["SKYDECK_NODE_GONE_SECONDS"] = "15"
        if args.kill_node:  # the held launch and listing must outlast the double's hold
            env["SKYDECK_SKYPILOT_TIMEOUT"] = str(HOLD_SECONDS + 30)
    os.environ.clear()
    os.environ.update(env)
    children: dict[str, subprocess.Popen] = {}

    def start(
        name: str, argv: list[str], extra: dict[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "a")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**env, **(extra or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a node is killed whole
            **kwargs,
        )
        children[name] = proc
        return proc

    node_names = (
        ["serve"] if args.nodes == 1 else [f"node-{chr(97 + k)}" for k in range(args.nodes)]
    )

    def start_node(k: int, migrate: bool) -> None:
        argv = [sys.executable, "-m", "skydeck_site.cli", "serve", "--port", str(ports[k])]
        extra = {"SKYDECK_NODE_ID": node_names[k]} if args.nodes > 1 else None
        start(node_names[k], argv + ([] if migrate else ["--no-migrate"]), extra)

    try:
        print(f"load: setting up in {tmp}", flush=True)
        start(
            "skypilot",
            [sys.executable, str(ROOT / "tests" / "stub_skypilot.py"), "--jobs", str(args.jobs),
             "--experiments", str(args.experiments), "--port", str(skypilot_port), "--tick", "2"],
        )  # fmt: skip
        s3 = start(
            "s3",
            [sys.executable, __file__, "--serve-s3", str(s3_port), "--experiments",
             str(args.experiments), "--checkpoints", str(args.checkpoints)],
            stdin=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        token = seed(args.experiments)
        wait_http(f"http://127.0.0.1:{skypilot_port}/api/health", 60, "the stub SkyPilot server")
        wait_http(f"http://127.0.0.1:{s3_port}/", 120, "the S3 server")
        for k in range(args.nodes):  # the database was migrated by seed(); all run workers
            start_node(k, migrate=k == 0)
            wait_http(f"{bases[k]}/api/health", 90, f"skydeck serve ({node_names[k]})")
        if args.nodes == 1:  # with several nodes, only their workers sync (the take-over proof)
            start(
                "sync-loop",
                [sys.executable, str(ROOT / "manage.py"), "sync", "--loop", "--interval", "3"],
            )
        # the first passes of both sources, so the deck has jobs and checkpoints to show
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            sync = requests.get(
                f"{base}/api/health", headers={"Authorization": f"Token {token}"}, timeout=30
            ).json()["sync"]  # the details need a login or token
            if all(sync[s]["ok"] for s in ("skypilot", "s3")):
                break
            time.sleep(1)
        else:
            raise SystemExit(f"load: the first syncs did not succeed: {json.dumps(sync)}")
        before = counts(base, token)
        print(
            f"load: {before['jobs']:,} jobs, {before['checkpoints']:,} checkpoints, "
            f"{before['experiments']:,} experiments synced; fault: {args.fault}",
            flush=True,
        )
        control = f"http://127.0.0.1:{skypilot_port}/_stub/mode"
        if args.fault == "skypilot-slow":
            requests.post(
                control, json={"mode": "slow", "seconds": 30}, timeout=5
            ).raise_for_status()
        elif args.fault == "skypilot-garbage":
            requests.post(control, json={"mode": "garbage"}, timeout=5).raise_for_status()
        elif args.fault == "skypilot-down":
            children.pop("skypilot").kill()
        elif args.fault == "s3-throttle":
            s3.stdin.write("throttle\n")
            s3.stdin.flush()

        stats = Stats()
        clients = [
            Client(i, bases[i % args.nodes], token, 0.0, stats, bases) for i in range(args.clients)
        ]
        names = [f"exp-{i:04}" for i in range(args.experiments)]
        for i, name in enumerate(names[: args.clients * 10]):
            clients[i % args.clients].owned.append(name)
        for client in clients:
            client.login()
        print(f"load: {args.clients} clients for {args.duration:g} s", flush=True)
        started = time.monotonic()
        for client in clients:
            client.stop_at = started + args.duration
            client.start()
        chaos: dict[str, Any] = {}
        if args.kill_node:
            chaos = kill_and_rejoin(
                args, started, children, start_node, bases, node_names, logs, token, stats
            )
        elif args.rolling_restart:
            chaos = rolling_restart(
                args, started, children, start_node, bases, node_names, token, stats
            )
        for client in clients:
            client.join()
        elapsed = time.monotonic() - started

        # every write read back through another node than the one its client started on
        checked, superseded, problems = 0, 0, []
        for k in range(args.nodes):
            mine = [c for c in clients if c.index % args.nodes == k]
            found = verify_writes(bases[(k + 1) % args.nodes], token, mine)
            checked, superseded = checked + found[0], superseded + found[1]
            problems += found[2]
        launches = launch_record(f"http://127.0.0.1:{skypilot_port}") if args.nodes > 1 else {}
        with requests.Session() as ui:
            ui.cookies.update(clients[0].session.cookies)
            pills = health_pills(base, ui)
        after = counts(base, token)
    finally:
        for name in ("sync-loop", *node_names, "skypilot", "s3"):
            proc = children.get(name)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in children.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if database_url:
            drop_database(args.database_url, database_url)

    log_text = {p.stem: p.read_text(errors="replace") for p in logs.glob("*.log")}
    locked_in_logs = {name: text.count(LOCKED) for name, text in log_text.items()}
    sync_lines = log_text.get("sync-loop", "")
    passes = {s: len(re.findall(rf"^{s}\b", sync_lines, re.MULTILINE)) for s in ("skypilot", "s3")}
    failed_passes = len(re.findall(r"FAILED after", sync_lines))
    every = [v for values in stats.latencies.values() for v in values]
    total = len(every)

    print()
    print(f"SkyDeck load: {args.clients} clients, {elapsed:.1f} s, fault: {args.fault}")
    print(
        f"  data: {before['jobs']:,} jobs (stub: {args.jobs:,} + new), {before['checkpoints']:,} "
        f"checkpoints, {args.experiments} experiments in 10 groups"
    )
    if args.nodes == 1:
        print(
            f"  syncs during the run (sync --loop --interval 3, plus the worker every 10-30 s): "
            f"skypilot {passes['skypilot']}, s3 {passes['s3']} passes logged, {failed_passes} failed"
        )
    else:
        print(
            f"  {args.nodes} nodes on one PostgreSQL, each running a worker; the syncs are theirs "
            "(every 10-30 s)"
        )
    print(
        f"  requests: {total:,} = {total / elapsed:.1f} requests/s; status codes {dict(sorted(stats.codes.items()))}"
    )
    print(latency_line("all", every, elapsed))
    for kind in MIX:
        if stats.latencies.get(kind):
            print(latency_line(kind, stats.latencies[kind], elapsed))
    print(f"  5xx answers: {len(stats.errors_5xx)}")
    print(
        f"  'database is locked': {stats.locked} in answers, {sum(locked_in_logs.values())} in logs {locked_in_logs}"
    )
    print(f"  transport errors / unexpected 4xx: {len(stats.failures)}")
    print(
        f"  writes acknowledged: {sum(c.writes for c in clients):,}; experiments read back: "
        f"{checked}; lost or wrong: {len(problems)}; desired state changed later by the "
        f"reconciler (logged): {superseded}"
    )
    print(f"  stored before -> after: {before} -> {after}")
    if args.nodes > 1:
        for k, node_base in enumerate(bases):
            values = stats.per_node.get(node_base, [])
            print(latency_line(node_names[k], values, elapsed))
            print(f"    refused while it was down or restarting: {stats.refused[node_base]}")
        print(
            f"  launches by SkyDeck (the double's record): {launches['launches']}; twice for a "
            f"name while SkyDeck's own job of it was active: {launches['doubles']}; one launch "
            f"id sent twice: {launches['repeated_tokens']}; of {KILL_LAUNCH} (the one cut off "
            f"by the kill): {launches['of_the_killed_launch']}"
        )
        print(
            f"  launches per node (User-Agent): {launches['per_node']}; of {KILL_LAUNCH}: "
            f"{launches['of_the_killed_launch_per_node']}"
        )
        for key, value in chaos.items():
            print(f"  {key}: {value}")
    for source, (tone, title) in sorted(pills.items()):
        print(f"  health pill {source}: {tone}: {title}")

    failures = []
    if stats.errors_5xx:
        failures.append(f"{len(stats.errors_5xx)} 5xx, e.g. {stats.errors_5xx[0]}")
    if stats.locked or any(locked_in_logs.values()):
        failures.append("'database is locked' seen")
    if problems:
        failures.append(f"{len(problems)} writes not readable as written, e.g. {problems[0]}")
    if stats.failures:
        failures.append(f"{len(stats.failures)} failed requests, e.g. {stats.failures[0]}")
    if after["jobs"] < before["jobs"] or after["checkpoints"] < before["checkpoints"]:
        failures.append("stored jobs or checkpoints were lost")
    faulted = {"skypilot-slow": "skypilot", "skypilot-down": "skypilot",
               "skypilot-garbage": "skypilot", "s3-throttle": "s3"}.get(args.fault)  # fmt: skip
    if faulted and pills.get(faulted, ("", ""))[0] != "bad":
        failures.append(f"the {faulted} health pill is not red during the fault")
    if args.nodes > 1:
        if launches["doubles"] or launches["repeated_tokens"]:
            failures.append(f"launched twice: {launches}")
        if args.kill_node and launches["of_the_killed_launch"] != 1:
            failures.append(
                f"{KILL_LAUNCH}, being launched when its node was killed, was launched "
                f"{launches['of_the_killed_launch']} times (once is right)"
            )
        failures += chaos.get("failures", [])
    if args.fault == "none" and any(tone == "bad" for tone, _ in pills.values()):
        failures.append("a health pill is red without a fault")
    if args.keep or failures:
        print(f"  logs kept in {logs}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    for failure in failures:
        print(f"FAIL: {failure}")
    for problem in problems[:10]:
        print(f"  write problem: {problem}")
    print("OK" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
