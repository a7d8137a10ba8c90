"""Kill tests for ``skydeck serve``'s supervisor: real processes, a real SQLite file, kill -9.

``skydeck serve`` runs on a copy of a migrated SQLite file (``--db-path``) against a loopback
SkyPilot double (tests/stub_skypilot.py). Every process it starts carries a marker in its
environment, so the test finds all of them in /proc, orphans included, wherever they were
reparented. Each process of the tree is killed with SIGKILL in turn; after each kill the tree
must come back to its normal shape (one supervisor, two guards, one gunicorn master with its
workers, one django-q2 main process with one sentinel (the one scheduler) and its workers,
monitor and pusher) with ``/api/health`` answering. A second serve on the same database is
refused while the first runs (a second ``--no-worker`` serve is fine); after the supervisor is
killed nothing of it is left within seconds and SkyPilot sees no further request; a new serve then
starts at once (the dead one's lease is taken over), and Ctrl-C (SIGINT) of it leaves nothing.

The scenario is inherently about a SQLite file: it runs the same when the suite itself runs on
PostgreSQL (the children never see DATABASE_URL). Linux only (/proc, prctl).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import child_env
from stub_skypilot import StubSkyPilot

ROOT = Path(__file__).resolve().parent.parent
MARK = "SKYDECK_SUPERVISOR_TEST"
WEB_WORKERS = 2
Q_WORKERS = 2
#: supervisor + 2 guards + gunicorn master and workers + q main, sentinel, workers, monitor, pusher
NORMAL = 1 + 2 + 1 + WEB_WORKERS + 1 + 1 + Q_WORKERS + 2


# --- processes ---------------------------------------------------------------------------------


def marked(tag: str) -> dict[int, tuple[int, str]]:
    """Live processes whose environment carries ``MARK=tag``: pid -> (ppid, command line)."""
    needle = f"{MARK}={tag}".encode()
    found: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rpartition(")")[2].split()
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fields[0] not in {"Z", "X"}:
            found[int(name)] = (int(fields[1]), cmdline)
    return found


def children_of(procs: dict[int, tuple[int, str]], pid: int | None) -> list[int]:
    return sorted(p for p, (ppid, _) in procs.items() if ppid == pid)


def roles(procs: dict[int, tuple[int, str]], supervisor: int) -> dict[str, list[int]]:
    """The tree by role; sentinel children in start order (workers, then monitor, then pusher)."""
    guards = children_of(procs, supervisor)
    web_guard = [g for g in guards if "gunicorn" in procs[g][1]]
    q_guard = [g for g in guards if "qcluster" in procs[g][1]]
    master = children_of(procs, web_guard[0]) if len(web_guard) == 1 else []
    q_main = children_of(procs, q_guard[0]) if len(q_guard) == 1 else []
    sentinel = children_of(procs, q_main[0]) if len(q_main) == 1 else []
    return {
        "supervisor": [supervisor] if supervisor in procs else [],
        "web guard": web_guard,
        "worker guard": q_guard,
        "gunicorn master": master,
        "gunicorn workers": children_of(procs, master[0]) if len(master) == 1 else [],
        "q main": q_main,
        "sentinel": sentinel,
        "sentinel children": children_of(procs, sentinel[0]) if len(sentinel) == 1 else [],
        # wherever they are in the tree (orphans too): every django-q2 process of this serve
        "django-q2": [p for p, (_, cmd) in procs.items() if "qcluster" in cmd and p not in q_guard],
    }


def normal_shape(r: dict[str, list[int]], total: int) -> bool:
    one = ("supervisor", "web guard", "worker guard", "gunicorn master", "q main", "sentinel")
    return (
        all(len(r[k]) == 1 for k in one)
        and len(r["gunicorn workers"]) == WEB_WORKERS
        and len(r["sentinel children"]) == Q_WORKERS + 2
        and len(r["django-q2"]) == 1 + 1 + Q_WORKERS + 2  # so one sentinel: one scheduler
        and total == NORMAL
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# --- one installation --------------------------------------------------------------------------


class Deck:
    def __init__(self, tmp: Path, template: Path, stub: StubSkyPilot) -> None:
        self.tmp, self.stub = tmp, stub
        self.db = tmp / "deck.db"
        shutil.copy(template, self.db)
        self.env = base_env(tmp, SKYDECK_SKYPILOT_ENDPOINT=stub.endpoint)
        self.tags: list[str] = []

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "skydeck_site.cli", "--db-path", str(self.db), *args]

    def serve(self, *args: str) -> Serve:
        tag = uuid.uuid4().hex
        self.tags.append(tag)
        return Serve(self, tag, free_port(), args)

    def shell(self, code: str) -> None:
        done = subprocess.run(
            self.command("shell", "-c", code),
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    def kill_leftovers(self) -> None:
        for tag in self.tags:
            for pid in marked(tag):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Serve:
    def __init__(self, deck: Deck, tag: str, port: int, args: tuple[str, ...]) -> None:
        self.tag, self.port = tag, port
        self.proc = subprocess.Popen(
            deck.command("serve", "--port", str(port), "--workers", str(WEB_WORKERS), *args),
            env={**deck.env, MARK: tag},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout))
        self.reader.daemon = True
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def procs(self) -> dict[int, tuple[int, str]]:
        return marked(self.tag)

    def roles(self) -> tuple[dict[str, list[int]], int]:
        procs = self.procs()
        return roles(procs, self.proc.pid), len(procs)

    def wait_normal(self, timeout: float = 40) -> float:
        def ready() -> bool:
            assert self.proc.poll() is None, self.output
            r, total = self.roles()
            return normal_shape(r, total) and healthy(self.port)

        return wait_for(ready, timeout, f"the normal process tree and /api/health\n{self.output}")

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    defaults = {"SKYDECK_STATIC_ROOT": str(tmp / "static"), "SKYDECK_WORKERS": str(Q_WORKERS)}
    return child_env(tmp, **{**defaults, **extra})


@pytest.fixture(scope="module")
def deck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deck]:
    tmp = tmp_path_factory.mktemp("supervisor")
    template = tmp / "template.db"
    subprocess.run(
        [sys.executable, "-m", "skydeck_site.cli", "--db-path", str(template), "migrate", "-v0"],
        check=True,
        env=base_env(tmp),
        cwd=ROOT,
        timeout=120,
    )
    with sqlite3.connect(template) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with StubSkyPilot(jobs=3000) as stub:
        installation = Deck(tmp, template, stub)
        try:
            yield installation
        finally:
            installation.kill_leftovers()


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Callable[[str], None]:
    """Print a figures line even under ``pytest -q`` (the engineer quotes them)."""

    def say(line: str) -> None:
        with capsys.disabled():
            print(f"\n[supervisor] {line}", end="", flush=True)

    return say


# --- the tests ---------------------------------------------------------------------------------

#: (what, role, which of them, what must restart it, line in the output proving it); the
#: sentinel's children are in start order (workers, monitor, pusher) and a reincarnated one comes
#: last, so the pusher goes first
KILLS = [
    ("gunicorn worker", "gunicorn workers", 0, "gunicorn", "Booting worker"),
    ("django-q2 pusher", "sentinel children", -1, "django-q2", "reincarnated pusher"),
    ("django-q2 monitor", "sentinel children", Q_WORKERS, "django-q2", "reincarnated monitor"),
    ("django-q2 worker", "sentinel children", 0, "django-q2", "reincarnated worker"),
    ("gunicorn master", "gunicorn master", 0, "supervisor", "web process was killed by SIGKILL"),
    ("web guard", "web guard", 0, "supervisor", "the web process was killed by SIGKILL"),
    ("django-q2 sentinel", "sentinel", 0, "supervisor", "the worker process exited with code 0"),
    ("django-q2 main", "q main", 0, "supervisor", "the worker process was killed by SIGKILL"),
    ("worker guard", "worker guard", 0, "supervisor", "worker process was killed by SIGKILL"),
]


@pytest.mark.slow  # real processes, killed
def test_every_process_killed_comes_back_and_killing_serve_leaves_nothing(deck: Deck, report):
    serve = deck.serve()
    took = serve.wait_normal(timeout=60)
    report(f"serve up: {NORMAL} processes, /api/health ok after {took:.1f} s")

    for what, role, index, restarter, proof in KILLS:
        r, before = serve.roles()
        victim = r[role][index]
        seen_before = serve.output.count(proof)
        started = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        fewest = [before]

        def back(victim=victim, proof=proof, seen_before=seen_before, fewest=fewest) -> bool:
            assert serve.proc.poll() is None, serve.output
            now_roles, total = serve.roles()
            fewest[0] = min(fewest[0], total)
            return (
                victim not in serve.procs()
                and normal_shape(now_roles, total)
                and serve.output.count(proof) > seen_before
                and healthy(serve.port)
            )

        wait_for(back, 45, f"the tree back after killing the {role} {victim}\n{serve.output}")
        after_roles, after = serve.roles()
        report(
            f"kill -9 {what} (pid {victim}): "
            f"{before} processes before, {fewest[0]} at fewest, {after} again after "
            f"{time.monotonic() - started:.1f} s (restarted by {restarter}); "
            f"/api/health ok; {len(after_roles['sentinel'])} scheduler"
        )

    # a second serve on the same database, with the worker: refused, naming the first
    second = deck.serve()
    code = second.finish(timeout=60)
    assert code != 0, second.output
    refusal = [line for line in second.lines if "another SkyDeck worker" in line]
    assert len(refusal) == 1, second.output
    assert f"pid {serve.proc.pid}" in refusal[0] and socket.gethostname() in refusal[0]
    assert "since" in refusal[0]
    assert not second.procs()
    report(f"second serve refused (exit {code}): {refusal[0].strip()}")
    # ... a web-only one is fine, and does not disturb the first
    web_only = deck.serve("--no-worker")
    wait_for(lambda: healthy(web_only.port), 40, f"the --no-worker serve\n{web_only.output}")
    assert len(web_only.procs()) == 1 + 1 + 1 + WEB_WORKERS
    web_only.proc.send_signal(signal.SIGTERM)
    assert web_only.finish() == 0, web_only.output
    assert not web_only.procs()
    r, total = serve.roles()
    assert normal_shape(r, total)

    # kill -9 of the supervisor itself while a SkyPilot sync is under way in a worker
    deck.stub.set_mode("slow", 0.3)
    asked = deck.stub.requests
    deck.shell(
        "from django_q.tasks import async_task; async_task('syncing.tasks.sync_jobs_and_reconcile')"
    )
    wait_for(lambda: deck.stub.requests >= asked + 2, 30, "the sync pass to reach SkyPilot")
    before = len(serve.procs())
    os.kill(serve.proc.pid, signal.SIGKILL)
    gone = wait_for(lambda: not serve.procs(), 5, f"every child gone\n{serve.procs()}", step=0.05)
    at_kill = deck.stub.requests
    time.sleep(0.5)  # an answer already on its way may still be counted
    settled = deck.stub.requests
    time.sleep(3)
    deck.stub.set_mode("ok")
    assert deck.stub.requests == settled, "a SkyDeck process went on asking SkyPilot"
    serve.finish()
    report(
        f"kill -9 supervisor (pid {serve.proc.pid}) mid-sync: {before} processes before, "
        f"0 after {gone:.1f} s; SkyPilot requests {at_kill} when the last one went, "
        f"{deck.stub.requests} 3.5 s later ({deck.stub.requests - at_kill} new)"
    )


@pytest.mark.slow  # real processes, killed
def test_a_new_serve_starts_after_the_old_one_died_and_sigint_leaves_nothing(deck: Deck, report):
    # the module's first test killed its serve: its lease is left, held by a dead pid
    with sqlite3.connect(deck.db) as conn:
        row = conn.execute("SELECT lease_owner FROM sync_states WHERE source = 'scheduler'")
        left_by = (row.fetchone() or ("",))[0]
    serve = deck.serve()
    took = serve.wait_normal(timeout=60)
    if left_by:
        report(f"lease left by the killed serve: {left_by}")
    report(f"new serve on the same database: {NORMAL} processes, healthy after {took:.1f} s")
    before = len(serve.procs())
    started = time.monotonic()
    serve.proc.send_signal(signal.SIGINT)
    code = serve.finish(timeout=30)
    left = serve.procs()
    assert code == 0, serve.output
    assert "SkyDeck stopped" in serve.output
    assert not left, left
    with sqlite3.connect(deck.db) as conn:
        owner = conn.execute("SELECT lease_owner FROM sync_states WHERE source = 'scheduler'")
        assert owner.fetchone() == ("",)  # released on the way out
    report(
        f"SIGINT of serve: {before} processes before, {len(left)} after "
        f"{time.monotonic() - started:.1f} s, exit {code}"
    )


@pytest.mark.slow  # real processes, killed
def test_a_standalone_qcluster_holds_the_scheduler_lease_too(deck: Deck, report):
    """``skydeck qcluster`` started by hand: one per database, and serve sees it."""

    def start(*args: str, **env: str) -> tuple[subprocess.Popen, str]:
        tag = uuid.uuid4().hex
        deck.tags.append(tag)
        proc = subprocess.Popen(
            deck.command(*args),
            env={**deck.env, MARK: tag, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return proc, tag

    def lease_owner() -> str:
        with sqlite3.connect(deck.db) as conn:
            row = conn.execute("SELECT lease_owner FROM sync_states WHERE source = 'scheduler'")
            return (row.fetchone() or ("",))[0]

    first, first_tag = start("qcluster")
    wait_for(lambda: f":{first.pid}:" in lease_owner(), 30, "the qcluster to take the lease")
    wait_for(lambda: len(marked(first_tag)) == 1 + 1 + Q_WORKERS + 2, 30, "its cluster to run")

    second, second_tag = start("qcluster")
    out, _ = second.communicate(timeout=60)
    assert second.returncode != 0, out
    assert "another SkyDeck worker already runs on this database" in out
    assert f"pid {first.pid}" in out and "Traceback" not in out
    assert not marked(second_tag)
    report(f"second qcluster refused (exit {second.returncode}): {out.strip().splitlines()[-1]}")

    serve = deck.serve()
    assert serve.finish(timeout=60) != 0, serve.output
    assert f"pid {first.pid}" in serve.output and not serve.procs()

    forged, _ = start("qcluster", SKYDECK_SCHEDULER_LEASE_OWNER="elsewhere:1:deadbeef")
    out, _ = forged.communicate(timeout=60)
    assert forged.returncode != 0 and "names a scheduler lease that is not held" in out, out

    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    wait_for(lambda: not marked(first_tag), 10, "the qcluster's processes to go")
    assert lease_owner() == ""  # released: a serve may start now
    report(
        f"standalone qcluster (pid {first.pid}): a second qcluster and a serve refused, "
        "a forged lease owner refused; SIGTERM left 0 processes and released the lease"
    )


# --- the parts, quickly ------------------------------------------------------------------------


@pytest.mark.slow  # real processes, killed
def test_a_child_that_keeps_failing_is_fatal_and_each_restart_is_logged():
    from syncing.supervisor import Fatal, Supervisor

    lines: list[str] = []
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = Supervisor({"x": failing}, backoff=(0.05, 0.2), out=lines.append)
    # "after 0 s" on an idle machine; a loaded one may take a second to start Python
    with pytest.raises(Fatal, match=r"the x process exited with code 3 after [01] s, 5 times"):
        supervisor.run()
    assert [line.rpartition(" in ")[2] for line in lines if "restarting" in line] == [
        "0.05 s",
        "0.1 s",
        "0.2 s",
        "0.2 s",
    ]
    assert re.fullmatch(
        r"the x process exited with code 3 after [01] s; restarting it in 0\.05 s", lines[0]
    )
    assert sum("restarted the x process" in line for line in lines) == 4


@pytest.mark.slow  # real processes, killed
def test_stop_kills_the_whole_group_even_what_ignores_sigterm(tmp_path: Path):
    from syncing.supervisor import Supervisor, group_members

    stubborn = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "os.fork()\n"  # a grandchild of the supervisor, in the guard's group
        f"open({str(tmp_path / 'ready')!r}, 'a').write('x')\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor({"x": [sys.executable, "-c", stubborn]}, stop_grace=0.5)
    child = supervisor.children["x"]
    supervisor.start(child)
    pgid = child.proc.pid
    wait_for(
        lambda: (tmp_path / "ready").exists() and len((tmp_path / "ready").read_text()) == 2,
        20,
        "the command and its fork",
    )
    assert len(group_members(pgid)) == 3  # guard, command, its fork
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < 5
    wait_for(lambda: not group_members(pgid), 5, "the group gone")


def test_the_scheduler_lease_refuses_a_second_holder_and_frees_a_dead_ones(db):
    from experiments.models import SyncState
    from syncing import leases

    first = leases.SchedulerLease()
    first.take()
    with pytest.raises(leases.SchedulerLeaseHeld) as held:
        leases.SchedulerLease().take()
    message = str(held.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}, since 20" in message
    assert "--no-worker" in message and "\n" not in message
    assert first.renew()
    # ours lapsed and a live process took it: renewing fails (the supervisor then stops)
    live = f"{socket.gethostname()}:{os.getpid()}:0ther000:{leases.machine_id()}"
    SyncState.objects.filter(source="scheduler").update(lease_owner=live)
    assert not first.renew()
    assert first.holder() == f"host {socket.gethostname()}, pid {os.getpid()}"
    # a holder that died on this machine is replaced at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = first.owner.replace(f":{os.getpid()}:", f":{dead.pid}:")
    SyncState.objects.filter(source="scheduler").update(lease_owner=owner)
    second = leases.SchedulerLease()
    second.take()
    assert SyncState.objects.get(source="scheduler").lease_owner == second.owner
    second.release()
    assert SyncState.objects.get(source="scheduler").lease_owner == ""
