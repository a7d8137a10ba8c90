"""The team chaos test (issue 12): a shared SkyPilot server, a team clicking around, and faults.

Other users (dave, erin, frank, alice) hold RUNNING and PENDING jobs named like experiments and
submit more "from the CLI" while the team creates experiments over those names, duplicates,
renames (refused where it must be), edits, bulk-edits, deletes and re-creates, adopts, starts and
stops -- with a Stop landing while a pass is launching, a launch answer that never arrives, failed
syncs, a slow server, a worker killed between submit and listing, ``sync --loop`` holding the
SkyPilot lease beside the worker, and a restore of a backup.

Nothing is judged from SkyDeck's own tables: the verdict comes from the double's record of the
requests it received (``StubSkyPilot.events``: launch bodies carry the task YAML with ``name:`` and
``SKYDECK_LAUNCH_ID``, cancel bodies the job ids), read against the people's acts noted in the same
sequence. It must show 0 cancels of jobs nobody asked to stop, 0 unrequested launches, 0 double
launches (never a launch while a job SkyDeck launched or adopted is active under the name), and
that each Stop cancelled exactly the jobs its plan listed. Run with ``-s`` for the summary lines.

The in-process scenario runs on the suite's database (SQLite or PostgreSQL); the one with real
processes (SIGKILL, ``sync --loop``, ``qcluster``, ``restore``) always uses an SQLite file through
``manage.py --db-path``, as tests/test_crash_recovery.py does.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import connections
from rest_framework.test import APIClient
from stub_skypilot import StubSkyPilot
from test_crash_recovery import Deck, kill_group, migrate_template, wait_for

from experiments import services
from experiments.models import DesiredState, Experiment, Job, Launch, LaunchStatus
from syncing import reconciler, tasks
from syncing import services as door

# chaos: races, faults and killed processes (.ci/run runs them: -m slow)
pytestmark = pytest.mark.slow

COMMAND = {"base_command": "uv run", "tool_path": "./tools/run.py"}


# --- the verdict, from the double's own record ---------------------------------------------------


@dataclass
class Verdict:
    requests: int = 0
    launches: list[dict] = field(default_factory=list)
    unrequested: list[dict] = field(default_factory=list)
    double: list[dict] = field(default_factory=list)  # over an active job SkyDeck launched/adopted
    over_foreign: list[dict] = field(default_factory=list)  # over someone's active job
    cancelled: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    stop_mismatch: list[str] = field(default_factory=list)

    @property
    def unasked(self) -> list[dict]:
        return self.cancelled["unasked"]

    def foreign(self, category: str) -> int:
        return sum(1 for job in self.cancelled[category] if not job["owned"])

    def summary(self, label: str) -> str:
        asked, owned = self.cancelled["asked"], self.cancelled["owned"]
        entries = [*asked, *owned, *self.unasked]
        distinct = len({e["job_id"] for e in entries})
        return (
            f"{label}: {self.requests} requests; launches {len(self.launches)} "
            f"({len(self.launches) - len(self.unrequested)} requested, {len(self.unrequested)} "
            f"unrequested, {len(self.double)} double, {len(self.over_foreign)} over others' jobs); "
            f"cancels {len(entries)} of {distinct} jobs in {len({e['seq'] for e in entries})} "
            f"requests ({len(asked)} listed by a person's Stop, {self.foreign('asked')} of them "
            f"others'; {len(owned)} by a pass, owned and stopped; {len(self.unasked)} nobody "
            f"asked for); foreign jobs cancelled by a pass "
            f"{self.foreign('owned') + self.foreign('unasked')}"
        )

    def assert_clean(self) -> None:
        assert self.unrequested == [], self.unrequested
        assert self.double == [], self.double
        assert self.over_foreign == [], self.over_foreign
        assert self.unasked == [], self.unasked
        assert self.stop_mismatch == [], self.stop_mismatch


def judge(stub: StubSkyPilot) -> Verdict:
    """Read the double's requests against the people's acts noted in the same sequence.

    Notes: ``start`` / ``resume`` (names whose launch a person asked for; a resume accepts the
    restored desired states), ``stop-begin`` and ``stop-end`` (a person's Stop and the job ids its
    plan listed), ``adopt`` (names and job ids), ``create`` / ``delete`` / ``restore`` (names start
    or end, or are replaced by a backup's; none asks for anything). A job a launch
    created or a person adopted is SkyDeck's; once one of them SUCCEEDED the name is done until
    the next Start.
    """
    with stub.lock:
        events = list(stub.events)
    verdict = Verdict(requests=stub.requests)
    # which cancel request answers which Stop (a pass may cancel inside a Stop's window too)
    stop_cancels: set[int] = set()
    begun: dict[str, dict] = {}
    for event in events:
        if event["kind"] == "stop-begin":
            begun[event["token"]] = event
        elif event["kind"] == "stop-end":
            start = begun.pop(event["token"])["seq"]
            listed = sorted(event["listed"])
            inside = [e for e in events[start : event["seq"]] if e["kind"] == "cancel"]
            # a pass racing the Stop may send the very same request: one of them is the Stop's
            match = [e for e in inside if sorted(e["job_ids"]) == listed]
            if listed and not match:
                verdict.stop_mismatch.append(
                    f"Stop of {event['names']} listed {listed}, sent {[e['job_ids'] for e in inside]}"
                )
            elif match:
                stop_cancels.add(match[0]["seq"])
    want: dict[str, bool] = defaultdict(bool)
    stopped: dict[str, bool] = defaultdict(bool)
    done: dict[str, bool] = defaultdict(bool)
    ours: set[int] = set()
    for event in events:
        kind = event["kind"]
        names = event.get("names", [])
        if kind in ("start", "resume"):
            for name in names:
                want[name], stopped[name], done[name] = True, False, False
        elif kind == "stop-begin":
            for name in names:
                want[name], stopped[name] = False, True
        elif kind in ("create", "delete", "adopt", "restore"):
            for name in names:
                want[name], stopped[name], done[name] = False, False, False
            ours.update(event.get("jobs", []))
        elif kind == "status":
            if event["status"] == "SUCCEEDED" and event["job_id"] in ours:
                done[event["name"]] = True
        elif kind == "launch":
            name = event["name"]
            verdict.launches.append(event)
            ours.add(event["job_id"])
            if not want[name] or done[name]:
                verdict.unrequested.append(event)
            active = [j for j in event["active"] if j["job_id"] != event["job_id"]]
            if any(j["token"] or j["job_id"] in ours for j in active):
                verdict.double.append(event)
            elif active:
                verdict.over_foreign.append(event)
        elif kind == "cancel":
            for job in event["jobs"]:
                entry = {**job, "owned": job["job_id"] in ours, "seq": event["seq"]}
                if event["seq"] in stop_cancels:
                    verdict.cancelled["asked"].append(entry)
                elif entry["owned"] and stopped[job["name"]]:
                    verdict.cancelled["owned"].append(entry)
                else:
                    verdict.cancelled["unasked"].append(entry)
    return verdict


# --- the team's acts ----------------------------------------------------------------------------


class Team:
    """People acting through the API and the services, each act noted in the double's record."""

    def __init__(self, stub: StubSkyPilot, api: APIClient) -> None:
        self.stub = stub
        self.api = api
        self._stops = 0

    def experiments(self, *names: str) -> list[Experiment]:
        found = {e.name: e for e in Experiment.objects.filter(name__in=names)}
        return [found[name] for name in names]

    def create(self, name: str, **fields) -> dict:
        self.stub.note("create", names=[name])
        response = self.api.post(
            "/api/experiments/", {"name": name, **COMMAND, **fields}, format="json"
        )
        assert response.status_code == 201, response.content
        return response.json()

    def duplicate(self, source: str, name: str) -> None:
        self.stub.note("create", names=[name])
        response = self.api.post(
            f"/api/experiments/{source}/duplicate/", {"name": name}, format="json"
        )
        assert response.status_code == 201, response.content
        assert response.json()["desired_state"] == "STOPPED"

    def patch(self, target: str, **changes) -> dict:
        response = self.api.patch(f"/api/experiments/{target}/", changes, format="json")
        return {"status": response.status_code, **response.json()}

    def delete(self, name: str) -> None:
        self.stub.note("delete", names=[name])
        response = self.api.delete(f"/api/experiments/{name}/")
        assert response.status_code == 204, response.content

    def bulk_update(self, names: list[str], changes: dict) -> dict:
        body = {"action": "update", "experiments": names, "changes": changes}
        response = self.api.post("/api/bulk/", body, format="json")
        return {"status": response.status_code, **response.json()}

    def start(self, *names: str):
        self.stub.note("start", names=list(names))
        return door.start("alice", self.experiments(*names))

    def stop(self, *names: str, job_ids: list[int] | None = None) -> door.StopResult:
        """A person's Stop; its cancel request must name exactly the jobs its plan listed."""
        self._stops += 1
        token = f"stop-{self._stops}"
        begin = self.stub.note("stop-begin", names=list(names), token=token)
        result = door.stop("alice", self.experiments(*names), job_ids=job_ids)
        listed = sorted(j.id for j in result.plan.cancel_jobs)
        end = self.stub.note("stop-end", names=list(names), token=token, listed=listed)
        assert not result.error, result.error
        with self.stub.lock:
            sent = [
                e["job_ids"]
                for e in self.stub.events[begin["seq"] : end["seq"]]
                if e["kind"] == "cancel"
            ]
        assert sent == ([listed] if listed else []), (sent, listed)
        assert sorted(j.id for j in result.cancelled) == listed
        return result

    def adopt(self, name: str) -> list[int]:
        plan = door.adopt("alice", self.experiments(name)[0])
        jobs = [j.id for j in plan.items[0].adopt]
        self.stub.note("adopt", names=[name], jobs=jobs)
        return jobs


def active_ids(name: str) -> list[int]:
    """The jobs a Stop must list: the experiment's active ones, whoever launched them."""
    return sorted(
        Job.objects.active()
        .filter(experiment_id=name)
        .exclude(status="CANCELLING")
        .values_list("id", flat=True)
    )


def requests_since(stub: StubSkyPilot, seq: int, kind: str) -> list[dict]:
    with stub.lock:
        return [e for e in stub.events[seq:] if e["kind"] == kind]


def mark(stub: StubSkyPilot) -> int:
    with stub.lock:
        return len(stub.events)


def run_pass() -> reconciler.ReconcileResult:
    """The scheduled pass; it must have synced and reconciled."""
    summary, result = reconciler.sync_and_reconcile()
    assert result is not None, summary
    assert not result.skipped, result.skipped
    return result


# --- the in-process scenario (the suite's database: SQLite or PostgreSQL) ------------------------


@pytest.fixture
def stub(transactional_db, settings, monkeypatch) -> Iterator[StubSkyPilot]:
    """A loopback SkyPilot server with 120 old jobs (two of alice's still running)."""
    monkeypatch.delenv("SKYPILOT_SERVICE_ACCOUNT_TOKEN", raising=False)
    monkeypatch.setenv("SKYPILOT_API_COOKIE_FILE", "/nonexistent/cookies.txt")
    settings.SKYDECK_RECONCILE = "on"
    settings.SKYDECK_SKYPILOT_TIMEOUT = 1.0  # a held launch answer is lost after one second
    with StubSkyPilot(jobs=120, experiments=12) as server:
        settings.SKYDECK_SKYPILOT_ENDPOINT = server.endpoint
        yield server


@pytest.fixture
def api(transactional_db) -> APIClient:
    client = APIClient()
    client.force_authenticate(User.objects.create_user("alice"))
    return client


def test_team_chaos_in_process(stub: StubSkyPilot, api: APIClient):
    """A day of the team over others' jobs: every act through the API or the services."""
    team = Team(stub, api)
    # --- other people's jobs under names the team is about to use
    d1 = stub.add_job("resnet50", "RUNNING", "dave")
    d2 = stub.add_job("resnet50", "PENDING", "dave")
    e1 = stub.add_job("bert-base", "RUNNING", "erin")
    e2 = stub.add_job("gpt-small", "PENDING", "erin")
    f1 = stub.add_job("vit-b16", "RUNNING", "frank")
    alices = next(j for j in reversed(stub.fake.jobs) if j["job_name"] == "exp-0011")["job_id"]
    assert stub.job(alices)["status"] == "RUNNING"
    run_pass()  # the first, full sync

    # --- create, duplicate, rename, edit, bulk-edit: nothing is launched or cancelled
    names = [
        "resnet50",
        "bert-base",
        "gpt-small",
        "vit-b16",
        "llama-7b",
        "mamba",
        "t5-xl",
        "exp-0011",
    ]
    for name in names:
        team.create(name)
    assert Experiment.objects.get(name="resnet50").current_state == "PENDING"  # dave's newest
    team.duplicate("resnet50", "resnet50.copy")
    team.duplicate("llama-7b", "llama-13b")
    refused = team.patch("resnet50", name="resnet101")  # dave's jobs carry the name
    assert refused["status"] == 400 and "cannot be renamed" in json.dumps(refused)
    with pytest.raises(ValidationError, match="active job"):
        services.update_experiment("alice", team.experiments("vit-b16")[0], name="vit-b32")
    team.stub.note("create", names=["mamba-2"])
    assert team.patch("mamba", name="mamba-2")["status"] == 200  # nothing under it yet
    assert team.patch("bert-base", flags={"lr": 0.001})["status"] == 200
    assert team.patch("t5-xl", nodes=2, gpus=8, accelerator="H100")["status"] == 200
    everyone = sorted(Experiment.objects.values_list("name", flat=True))
    bulk = team.bulk_update(everyone, {"tags": ["chaos"], "flags_patch": {"set": {"seed": 7}}})
    assert bulk["status"] == 200 and bulk["counts"]["ok"] == len(everyone), bulk
    sneaky = team.bulk_update(everyone, {"desired_state": "RUNNING"})  # not an edit: refused
    assert sneaky["status"] == 400 or sneaky["counts"]["ok"] == 0, sneaky
    d3 = stub.add_job("resnet50", "PENDING", "dave")  # dave launches one more from the CLI
    run_pass()
    assert tasks.sync_jobs_and_reconcile()  # the django-q2 task: the very same pass
    assert not Experiment.objects.filter(desired_state=DesiredState.RUNNING).exists()
    assert requests_since(stub, 0, "launch") == requests_since(stub, 0, "cancel") == []

    # --- Start; a Stop lands while the pass is launching
    plan = team.start("llama-7b", "llama-13b", "mamba-2", "t5-xl", "bert-base", "resnet50.copy")
    bert = next(i for i in plan.items if i.experiment.name == "bert-base")
    assert [j.id for j in bert.blocked_by] == [e1] and not bert.launches
    stub.hold_launches(1)
    outcome: dict = {}

    def scheduled_pass() -> None:
        try:
            outcome["result"] = run_pass()
        finally:
            connections.close_all()

    worker = threading.Thread(target=scheduled_pass)
    worker.start()
    stub.wait_held(1)  # llama-13b's launch is at the server, its answer held
    held = requests_since(stub, 0, "launch")[-1]
    assert held["name"] == "llama-13b"
    stopped = team.stop("t5-xl", "llama-13b")  # t5-xl's launch is still to come in this pass
    assert stopped.plan.cancel_jobs == [] and stopped.plan.items[1].pending_launch
    stub.release_launches()
    worker.join(30)
    assert not worker.is_alive()
    done = outcome["result"].done
    assert "launch t5-xl skipped: desired state is now STOPPED" in done, done
    launched = {e["name"] for e in requests_since(stub, 0, "launch")}
    assert launched == {"llama-13b", "llama-7b", "mamba-2", "resnet50.copy"}
    before = mark(stub)
    run_pass()  # llama-13b's job is listed now: SkyDeck's own, desired STOPPED -> cancelled
    assert [e["job_ids"] for e in requests_since(stub, before, "cancel")] == [[held["job_id"]]]
    with pytest.raises(ValidationError, match="cannot be renamed"):
        services.update_experiment("alice", team.experiments("llama-7b")[0], name="llama-8b")

    # --- a launch whose answer never arrives (the in-process twin of the SIGKILL test below)
    team.start("t5-xl")
    stub.hold_launches(1)
    uncertain = run_pass()
    stub.release_launches()
    assert any(line.startswith("launch t5-xl UNCERTAIN") for line in uncertain.done), uncertain.done
    lost = requests_since(stub, 0, "launch")[-1]
    assert Launch.objects.get(token=lost["token"]).status == LaunchStatus.SUBMITTING
    e3 = stub.add_job("t5-xl", "RUNNING", "erin")  # erin runs one of that name from the CLI
    before = mark(stub)
    run_pass()
    run_pass()
    settled = Launch.objects.get(token=lost["token"])
    assert (settled.status, settled.job_id) == (LaunchStatus.LISTED, lost["job_id"])  # not erin's
    assert requests_since(stub, before, "launch") == []

    # --- Adopt: dave's jobs become resnet50's run; its success completes it, nothing relaunches
    stub.set_status(d2, "CANCELLED")  # dave cancels one of his own from the CLI
    run_pass()
    assert team.adopt("resnet50") == [d1, d3]
    before = mark(stub)
    run_pass()
    stub.set_status(d1, "SUCCEEDED")
    time.sleep(0.01)
    stub.set_status(d3, "CANCELLED")  # ... and, just after, the other adopted one
    completed = run_pass()
    assert "done resnet50: job " + str(d1) + " SUCCEEDED" in completed.done, completed.done
    run_pass()
    assert tasks.sync_jobs_and_reconcile()
    assert requests_since(stub, before, "launch") == []
    assert team.experiments("resnet50")[0].desired_state == DesiredState.STOPPED

    # --- failed syncs: nothing acts on old facts; then a slow server still works
    stub.set_status(e1, "SUCCEEDED")  # erin's bert-base ends: SkyDeck may launch it now...
    before = mark(stub)
    stub.set_mode("garbage")
    summary, result = reconciler.sync_and_reconcile()
    assert result is None and "FAILED" in summary
    assert "the last SkyPilot sync failed" in reconciler.reconcile().skipped
    stub.stop()  # down
    summary, result = reconciler.sync_and_reconcile()
    assert result is None and "cannot reach" in summary
    assert requests_since(stub, before, "launch") == []  # ... but not on a failed listing
    stub.start()
    stub.set_mode("slow", 0.2)
    run_pass()
    stub.set_mode("ok")
    assert [e["name"] for e in requests_since(stub, before, "launch")] == ["bert-base"]

    # --- Stop cancels whoever's jobs it listed, and only those a confirmation showed
    preview = door.stop("alice", team.experiments("vit-b16"), dry_run=True)
    shown = [j.id for j in preview.plan.cancel_jobs]
    assert shown == [f1] and not preview.plan.cancel_jobs[0].owned
    f2 = stub.add_job("vit-b16", "PENDING", "frank")  # after the confirmation
    run_pass()
    result = team.stop("vit-b16", job_ids=shown)
    assert [j.id for j in result.cancelled] == [f1]
    assert "appeared after the confirmation" in result.plan.items[0].note
    result = team.stop("exp-0011")  # alice's job, not SkyDeck's: a person's Stop cancels it
    assert [j.id for j in result.cancelled] == [alices]
    team.start("gpt-small")  # erin's pending job blocks it: never launched over, never cancelled
    run_pass()

    # --- delete an experiment whose job runs, re-create one of that name: nothing cancelled
    mamba_job = next(e for e in requests_since(stub, 0, "launch") if e["name"] == "mamba-2")
    before = mark(stub)
    team.delete("mamba-2")
    run_pass()
    team.create("mamba-2")
    run_pass()
    assert stub.job(mamba_job["job_id"])["status"] == "PENDING"
    assert requests_since(stub, before, "cancel") == [], requests_since(stub, before, "cancel")

    # --- the end of the day: a finished run completes, a new Start, then Stop everything
    llama = next(e for e in requests_since(stub, 0, "launch") if e["name"] == "llama-7b")
    stub.set_status(llama["job_id"], "SUCCEEDED")
    run_pass()
    assert team.experiments("llama-7b")[0].desired_state == DesiredState.STOPPED
    team.start("resnet50")  # a new Start after the adopted run completed: one fresh launch
    before = mark(stub)
    run_pass()
    assert [e["name"] for e in requests_since(stub, before, "launch")] == ["resnet50"]
    run_pass()
    bulk = team.bulk_update(sorted(Experiment.objects.values_list("name", flat=True)), {"nodes": 4})
    assert bulk["status"] == 200
    everyone = sorted(Experiment.objects.values_list("name", flat=True))
    expected = sorted(j for name in everyone for j in active_ids(name))
    assert {e3, e2, f2}.issubset(expected) and mamba_job["job_id"] in expected
    result = team.stop(*everyone)
    assert sorted(j.id for j in result.cancelled) == expected
    before = mark(stub)
    for _ in range(2):
        run_pass()
    assert requests_since(stub, before, "launch") == requests_since(stub, before, "cancel") == []

    verdict = judge(stub)
    print("\n" + verdict.summary("chaos (in-process)"))
    verdict.assert_clean()
    assert len(verdict.launches) == 7


# --- real processes on an SQLite file: SIGKILL, sync --loop beside the worker, restore -----------

SEED = """
import json
from experiments import services
from experiments.models import Experiment
from syncing import services as door
for name in ("alpha", "beta", "gamma"):
    services.create_experiment("team", name=name, base_command="uv run", tool_path="./tools/run.py")
plan = door.start("alice", list(Experiment.objects.filter(name__in=["alpha", "beta"])))
print(json.dumps(plan.as_dict()))
"""
STOP = """
import json
from experiments.models import Experiment
from syncing import services as door
result = door.stop("alice", list(Experiment.objects.filter(name__in={names!r})))
print(json.dumps({{"listed": sorted(j.id for j in result.plan.cancel_jobs),
                  "cancelled": sorted(j.id for j in result.cancelled), "error": result.error}}))
"""
ENQUEUE = (
    "from django_q.tasks import async_task; async_task('syncing.tasks.sync_jobs_and_reconcile')"
)
# the scheduler's part, faster than its 30 s cycle: a sync_skypilot task every second
ENQUEUE_LOOP = """
import os, pathlib, time
from django_q.tasks import async_task
stop = pathlib.Path(os.environ["STOP_FILE"])
while not stop.exists():
    async_task("syncing.tasks.sync_jobs_and_reconcile")
    time.sleep(1.0)
"""
RESULTS = """
import json
from django_q.models import Task
print(json.dumps([str(t.result) for t in Task.objects.order_by("started")]))
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file for this module; each test works on a copy."""
    return migrate_template(tmp_path_factory.mktemp("chaos-template"))


@pytest.fixture
def skypilot() -> Iterator[StubSkyPilot]:
    with StubSkyPilot(jobs=120, experiments=12) as server:
        yield server


@pytest.fixture
def deck(tmp_path: Path, template: Path, skypilot: StubSkyPilot) -> Deck:
    deck = Deck(tmp_path, template)
    deck.env.update(
        SKYDECK_SKYPILOT_ENDPOINT=skypilot.endpoint,
        SKYDECK_RECONCILE="on",
        SKYDECK_TASK_TIMEOUT="30",
        SKYDECK_WORKERS="2",
        SKYDECK_SKYPILOT_TIMEOUT="5",
        SKYDECK_SYNC_SKYPILOT_INTERVAL="10",
    )
    return deck


def shell(deck: Deck, code: str) -> dict | list:
    done = deck.run("shell", "-c", code)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def seed(deck: Deck, stub: StubSkyPilot) -> None:
    stub.note("create", names=["alpha", "beta", "gamma"])
    stub.note("start", names=["alpha", "beta"])
    plan = shell(deck, SEED)
    assert plan["action"] == "start" and plan["gpus"] == 0


def stop_in_process(deck: Deck, stub: StubSkyPilot, *names: str) -> list[int]:
    """A person's Stop from another process; returns the job ids its plan listed."""
    token = f"stop-{time.monotonic_ns()}"
    stub.note("stop-begin", names=list(names), token=token)
    result = shell(deck, STOP.format(names=list(names)))
    stub.note("stop-end", names=list(names), token=token, listed=result["listed"])
    assert not result["error"] and result["cancelled"] == result["listed"], result
    return result["listed"]


def launches(deck: Deck) -> dict[str, tuple]:
    rows = deck.query("SELECT experiment_name, status, job_id, token FROM launches ORDER BY id")
    names = [row[0] for row in rows]
    assert len(names) == len(set(names)), rows  # one launch per experiment, never two
    return {row[0]: row[1:] for row in rows}


def test_worker_killed_between_submit_and_listing_then_sync_loop_beside_it(
    deck: Deck, skypilot: StubSkyPilot
):
    """SIGKILL of the worker while the server holds its launch; then the worker beside a busy
    ``sync --loop`` on a slow server settles that launch by its token and launches only once."""
    stub = skypilot
    stub.add_job("gamma", "RUNNING", "dave")
    seed(deck, stub)

    # the worker's pass sends alpha's launch; the server creates the job and holds the answer
    stub.hold_launches(1)
    assert deck.run("shell", "-c", ENQUEUE).returncode == 0
    cluster = deck.start("qcluster")
    try:
        stub.wait_held(1, timeout=60)
    finally:
        kill_group(cluster)  # SIGKILL between "submitted" and "listed"
    stub.release_launches()
    held = requests_since(stub, 0, "launch")[-1]
    assert held["name"] == "alpha" and held["token"]
    assert deck.integrity() == "ok"
    assert launches(deck) == {"alpha": ("SUBMITTING", None, held["token"])}  # recorded first

    # colleagues keep launching from the CLI, one of them under alpha's name
    erin = stub.add_job("alpha", "PENDING", "erin")
    stub.add_job("delta", "RUNNING", "erin")

    # a slow server, ``sync --loop`` holding the SkyPilot lease, and the worker beside it
    stub.set_mode("slow", 0.1)
    stop_file = deck.tmp / "stop-enqueuing"
    deck.env["STOP_FILE"] = str(stop_file)
    loop = deck.start("sync", "skypilot", "--loop", "--interval", "0.2")
    enqueuer = deck.start("shell", "-c", ENQUEUE_LOOP)
    cluster = deck.start("qcluster")
    try:

        def settled() -> bool:
            rows = launches(deck)
            return {k: v[0] for k, v in rows.items()} == {"alpha": "LISTED", "beta": "LISTED"}

        wait_for(settled, 60, "alpha settled by its token and beta launched", step=0.3)
        stub.add_job("gamma", "PENDING", "erin")
        beta = launches(deck)["beta"][1]
        # a person stops beta while the worker and the loop carry on
        assert stop_in_process(deck, stub, "beta") in ([beta], [])
        passes = deck.scalar("SELECT COUNT(*) FROM django_q_task")
        wait_for(
            lambda: deck.scalar("SELECT COUNT(*) FROM django_q_task") >= passes + 2,
            40,
            "two more passes",
            step=0.3,
        )
    finally:
        stop_file.touch()
        for proc in (cluster, loop, enqueuer):
            if proc.poll() is None:
                kill_group(proc)
    stub.set_mode("ok")
    assert deck.integrity() == "ok"
    rows = launches(deck)
    assert rows["alpha"] == ("LISTED", held["job_id"], held["token"])  # its token, not erin's
    assert erin != held["job_id"]
    assert stub.job(rows["beta"][1])["status"] == "CANCELLING"
    results = shell(deck, RESULTS)
    # the scheduled pass reconciled on the loop's listing while the loop held the lease
    beside = [r for r in results if "skypilot: skipped" in r and "reconcile skipped" not in r]
    assert beside, results

    verdict = judge(stub)
    print("\n" + verdict.summary("chaos (SIGKILL + sync --loop)"))
    verdict.assert_clean()
    assert sorted(e["name"] for e in verdict.launches) == ["alpha", "beta"]


def test_restore_of_a_backup_pauses_the_reconciler_until_resumed(
    deck: Deck, skypilot: StubSkyPilot
):
    """A backup from before the launches comes back: nothing acts until a person resumes."""
    stub = skypilot
    stub.add_job("gamma", "RUNNING", "dave")
    seed(deck, stub)
    snapshot = deck.tmp / "before-launch.db"
    done = deck.run("backup", str(snapshot))  # alpha and beta desired RUNNING, nothing launched
    assert done.returncode == 0, done.stdout + done.stderr
    for _ in range(2):
        done = deck.run("reconcile")
        assert done.returncode == 0, done.stdout + done.stderr
    rows = launches(deck)
    assert {k: v[0] for k, v in rows.items()} == {"alpha": "LISTED", "beta": "LISTED"}
    assert stop_in_process(deck, stub, "beta") == [rows["beta"][1]]
    stub.set_status(rows["beta"][1], "CANCELLED")

    stub.note("restore", names=["alpha", "beta", "gamma"])
    done = deck.run("restore", str(snapshot))
    assert done.returncode == 0, done.stdout + done.stderr
    assert deck.scalar("SELECT COUNT(*) FROM launches") == 0  # the backup's state is back
    before = mark(stub)
    done = deck.run("reconcile")
    # restore pauses the reconciler: beta is desired RUNNING again in the backup, yet a pass
    # must not act on that until a person resumes
    assert "reconciler paused" in done.stdout, done.stdout + done.stderr
    assert requests_since(stub, before, "launch") == requests_since(stub, before, "cancel") == []

    stub.note("resume", names=["alpha", "beta"])  # the person accepts the restored states
    done = deck.run("reconcile", "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reconciler resumed" in done.stdout
    # beta launches again (its job ended); alpha's job (launched after the backup, so not
    # SkyDeck's in the restored rows) is active under its name: no second launch over it
    assert [e["name"] for e in requests_since(stub, before, "launch")] == ["beta"]
    assert requests_since(stub, before, "cancel") == []

    verdict = judge(stub)
    print("\n" + verdict.summary("chaos (restore)"))
    verdict.assert_clean()
