"""The process supervisor behind ``skydeck serve``: restart what dies, never leave orphans.

Each child (the gunicorn web server, the django-q2 cluster) runs under a small *guard* process
(``python -m syncing.supervisor guard``) that the supervisor starts in a session and process group
of its own. The guard starts the real command in that same group, so everything the command forks
(gunicorn's workers; django-q2's sentinel and, under it, the workers, monitor and pusher, which
are grandchildren of the supervisor) is a member of the guard's group. Then:

* the supervisor is killed (even with SIGKILL): the guard asked the kernel for a parent-death
  signal (``prctl(PR_SET_PDEATHSIG)``; it also checks ``getppid()`` every 0.1 s, which covers the
  moment before the request and non-Linux systems) and kills its whole group with SIGKILL. A
  parent-death signal only reaches direct children, which is why the guard exists: it is the
  direct child, and it takes the grandchildren down with it;
* the command's main process dies (the gunicorn master, django-q2's main process, or its sentinel,
  whose death ends the main process): the guard kills what is left of the group and exits with
  the command's status. The guard is a child subreaper, so orphaned grandchildren are reparented to
  it and reaped, not left as zombies of PID 1;
* the guard itself dies: the supervisor kills the group;
* after any of these the supervisor starts the child again after a backoff (1 s doubling to 30 s,
  back to 1 s once a child stayed up for a minute), logging the exit status. A child that fails
  five times in a row within seconds of starting is fatal: the supervisor stops everything and
  exits non-zero (under systemd ``Restart=always`` starts it again).

django-q2 restarts its own workers, monitor and pusher; gunicorn restarts its own workers.

This module imports only the standard library at the top: the guard runs without Django.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("skydeck.supervisor")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: The signal the kernel sends a guard when its supervisor dies (handled: kill the group).
PARENT_DEATH_SIGNAL = signal.SIGHUP

BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
#: A child that stayed up this long counts as healthy: the next restart waits BACKOFF_INITIAL.
STABLE_AFTER = 60.0
#: This many exits in a row, each within QUICK_EXIT seconds of starting, are fatal.
MAX_QUICK_EXITS = 5
QUICK_EXIT = 10.0
POLL = 0.2


# --- Linux process helpers ------------------------------------------------------------------


def prctl(option: int, value: int) -> bool:
    """``prctl(option, value)``; False where unsupported (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, process group) of ``pid`` from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rpartition(")")[2].split()
        return fields[0], int(fields[1]), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if name.isdigit():
            stat = proc_stat(int(name))
            if stat and stat[2] == pgid and stat[0] not in {"Z", "X"}:
                members.append(int(name))
    return members


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def describe_status(code: int | None) -> str:
    """A Popen return code in words: "exited with code 1", "was killed by SIGKILL"."""
    if code is None:
        return "is running"
    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            pass
    return f"exited with code {code}"


# --- the guard ------------------------------------------------------------------------------


def guard(parent: int, command: list[str]) -> int:
    """Run ``command`` in this process group; kill the whole group when ``parent`` dies.

    Returns the command's exit code (128 + N when it was killed by signal N).
    """
    me = os.getpid()

    def kill_everything(*_: object) -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the guard included: nothing survives

    signal.signal(PARENT_DEATH_SIGNAL, kill_everything)
    prctl(PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    if os.getppid() != parent:
        kill_everything()  # the supervisor died before the parent-death signal was set

    stopping: dict[str, int | None] = {"child": None, "asked": None}

    def forward(signum: int, _frame: object) -> None:
        stopping["asked"] = signum
        if stopping["child"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopping["child"], signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    child = os.fork()
    if child == 0:  # the command: dies with the guard even before the supervisor notices
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(PARENT_DEATH_SIGNAL, signal.SIG_DFL)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != me:
                os._exit(1)
            os.execvp(command[0], command)  # noqa: S606 - the supervisor's own command
        finally:
            os._exit(127)
    stopping["child"] = child
    if stopping["asked"]:
        forward(signal.SIGTERM, None)
    status: int | None = None
    while status is None:
        status = _reap(child)
        if status is None:
            if os.getppid() != parent:
                kill_everything()
            time.sleep(0.1)
    # the command is gone: nothing it forked may go on working (orphaned sentinel, workers...)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        others = [pid for pid in group_members(os.getpgrp()) if pid != me]
        if not others:
            break
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
        _reap(child)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _reap(child: int) -> int | None:
    """Reap every exited child (orphans are ours, as subreaper); the status of ``child``."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status


# --- the supervisor -------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    command: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    delay: float = BACKOFF_INITIAL
    quick_exits: int = 0
    restarts: int = 0


class Fatal(Exception):
    """The supervisor gives up: everything is stopped, the command exits non-zero."""


class Supervisor:
    """Start the children under guards, restart them when they die, stop them all on a signal."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        stop_grace: float = 15.0,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float = 10.0,
        out: Callable[[str], None] | None = None,
        backoff: tuple[float, float] = (BACKOFF_INITIAL, BACKOFF_MAX),
    ) -> None:
        self.backoff_initial, self.backoff_max = backoff
        self.children = {
            name: Child(name, cmd, delay=self.backoff_initial) for name, cmd in commands.items()
        }
        self.stop_grace = stop_grace
        self.heartbeat = heartbeat
        self.heartbeat_every = heartbeat_every
        self.out = out or (lambda line: logger.warning("%s", line))
        self.signal: int | None = None

    def guard_command(self, child: Child) -> list[str]:
        return [
            sys.executable, "-m", "syncing.supervisor", "guard",
            "--parent", str(os.getpid()), "--", *child.command,
        ]  # fmt: skip

    def start(self, child: Child) -> None:
        # started from the main thread only: the guards' parent-death signal follows the thread
        child.proc = subprocess.Popen(self.guard_command(child), start_new_session=True)
        child.started_at = time.monotonic()
        child.restart_at = None

    def run(self) -> None:
        """Until SIGINT/SIGTERM/SIGHUP; raises Fatal when a child keeps failing."""

        def on_signal(signum: int, _frame: object) -> None:
            self.signal = signum

        stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in stop_signals}
        try:
            for child in self.children.values():
                self.start(child)
            next_beat = time.monotonic() + self.heartbeat_every
            while self.signal is None:
                now = time.monotonic()
                for child in list(self.children.values()):
                    self._check(child, now)
                if self.heartbeat and now >= next_beat:
                    next_beat = now + self.heartbeat_every
                    self.heartbeat()
                time.sleep(POLL)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _check(self, child: Child, now: float) -> None:
        if child.proc is None:
            if child.restart_at is not None and now >= child.restart_at and self.signal is None:
                child.restarts += 1
                self.start(child)
                self.out(f"restarted the {child.name} process (restart {child.restarts})")
            return
        if not _exited(child.proc.pid):
            return
        kill_group(child.proc.pid)  # before reaping: the group id cannot have been reused
        code = child.proc.wait()
        child.proc = None
        uptime = now - child.started_at
        if uptime >= STABLE_AFTER:
            child.delay, child.quick_exits = self.backoff_initial, 0
        elif uptime < QUICK_EXIT:
            child.quick_exits += 1
        else:
            child.quick_exits = 0
        what = f"the {child.name} process {describe_status(code)} after {uptime:.0f} s"
        if child.quick_exits >= MAX_QUICK_EXITS:
            raise Fatal(f"{what}, {child.quick_exits} times in a row soon after starting")
        child.restart_at = now + child.delay
        self.out(f"{what}; restarting it in {child.delay:g} s")
        child.delay = min(child.delay * 2, self.backoff_max)

    def stop(self) -> None:
        """SIGTERM to every guard (it passes it on), then SIGKILL to every group after the grace."""
        running = [c.proc for c in self.children.values() if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for proc in running:
            while not _exited(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            kill_group(proc.pid)
            proc.wait()
        for child in self.children.values():
            child.proc = None


def _exited(pid: int) -> bool:
    """True when child ``pid`` has exited, without reaping it (its group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def main(argv: list[str]) -> int:
    if len(argv) < 5 or argv[0] != "guard" or argv[1] != "--parent" or argv[3] != "--":
        sys.stderr.write("usage: python -m syncing.supervisor guard --parent PID -- COMMAND...\n")
        return 2
    return guard(int(argv[2]), argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
