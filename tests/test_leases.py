"""Leases: a lease of a process that died on this machine is taken over at once; one held by a
live process, or by a process on another machine, is never taken before it expires."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import SyncSource, SyncState
from syncing import health, leases


def owner_for(pid: int, *, host: str | None = None, machine: str | None = None) -> str:
    machine = leases.machine_id() if machine is None else machine
    return f"{host or socket.gethostname()}:{pid}:abcd1234:{machine}"


@pytest.fixture
def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def live_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_machine_id_is_known_here():
    assert leases.machine_id()  # Linux: boot id + PID namespace
    assert leases.new_owner().endswith(":" + leases.machine_id())


def test_owner_is_dead_only_for_exited_processes_of_this_machine(dead_pid, live_pid):
    assert leases.owner_is_dead(owner_for(dead_pid))
    assert not leases.owner_is_dead(owner_for(live_pid))
    assert not leases.owner_is_dead(owner_for(os.getpid()))
    # elsewhere, or in the old name format: the process table here says nothing about it
    assert not leases.owner_is_dead(owner_for(dead_pid, host="other-host"))
    assert not leases.owner_is_dead(owner_for(dead_pid, machine="0000ffff"))
    assert not leases.owner_is_dead(f"{socket.gethostname()}:{dead_pid}:abcd1234")


def hold(owner: str, minutes: float = 5) -> None:
    SyncState.objects.update_or_create(
        source=SyncSource.SKYPILOT,
        defaults={
            "lease_owner": owner,
            "lease_expires_at": timezone.now() + timedelta(minutes=minutes),
        },
    )


def test_an_unexpired_lease_of_a_dead_local_process_is_taken_over(db, dead_pid):
    hold(owner_for(dead_pid))
    with leases.lease(SyncSource.SKYPILOT, ttl=60) as owner:
        assert SyncState.objects.get().lease_owner == owner
    assert SyncState.objects.get().lease_owner == ""


@pytest.mark.parametrize("where", ["live", "other-host", "other-machine"])
def test_a_live_or_remote_holder_keeps_its_lease_until_it_expires(db, dead_pid, live_pid, where):
    holder = {
        "live": owner_for(live_pid),
        "other-host": owner_for(dead_pid, host="other-host"),
        "other-machine": owner_for(dead_pid, machine="0000ffff"),
    }[where]
    hold(holder)
    with pytest.raises(leases.LeaseHeld), leases.lease(SyncSource.SKYPILOT, ttl=60):
        pass
    assert SyncState.objects.get().lease_owner == holder
    hold(holder, minutes=-1)  # expired: anyone may take it
    with leases.lease(SyncSource.SKYPILOT, ttl=60) as owner:
        assert SyncState.objects.get().lease_owner == owner


def test_health_tells_a_killed_attempt_from_one_under_way(db, dead_pid, live_pid, settings):
    now = timezone.now()
    SyncState.objects.create(
        source=SyncSource.SKYPILOT,
        last_attempt_at=now,
        last_success_at=now - timedelta(minutes=1),
        lease_owner=owner_for(live_pid),
        lease_expires_at=now + timedelta(minutes=5),
    )
    entry = health.health_report()["sync"]["skypilot"]
    assert (entry["ok"], entry["last_error"]) == (True, "")  # under way: the previous outcome
    assert running() is True
    SyncState.objects.update(lease_owner=owner_for(dead_pid))
    entry = health.health_report()["sync"]["skypilot"]
    assert (entry["ok"], entry["last_error"]) == (False, health.INTERRUPTED)
    assert running() is False


def running() -> bool:
    (skypilot,) = [s for s in health.sync_status()["sources"] if s["source"] == "skypilot"]
    return skypilot["running"]
