"""Issue 16's acceptance on a realistic team history: a SkyPilot double on real loopback HTTP
with 3,000 jobs of 40 experiments, four users, four accelerators (one without a price) and
several failure kinds; one sync, one sampler pass. The deck's GPU-hours per experiment and
group, a running job's progress and sparkline, Usage and Failures with constant queries, and
the CSV against the API, each checked against figures computed here from the records."""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from stub_skypilot import StubSkyPilot

from experiments import dashboard, services
from experiments.models import Experiment, Job
from syncing import sampler
from syncing.runner import run_sync

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

USERS = ("alice", "bob", "carol", "dave")
#: (resources, nodes x GPUs, cloud)
SHAPES = (("2x[H100:8]", 16, "AWS"), ("1x[A100:8]", 8, "GCP"), ("1x[L4:1]", 1, "AWS"),
          ("4x[MI300X:8]", 32, "AWS"))  # fmt: skip


def reason(i: int) -> tuple[str, str | None]:
    """A status and failure reason, as SkyPilot words them, for job ``i``."""
    if i % 10 == 3:
        return "FAILED", (
            f"CUDA out of memory. Tried to allocate {i % 5 + 1}.50 GiB on node "
            f"10.0.{i % 8}.{i % 200}"
        )
    if i % 10 == 7:
        return "FAILED_SETUP", f"ModuleNotFoundError: No module named 'flash_attn' (pid {i})"
    if i % 25 == 11:
        return "FAILED_NO_RESOURCE", (
            f"Failed to acquire resources in all zones in us-east-{i % 2 + 1} for {{'H100:8'}}."
        )
    return "SUCCEEDED", None


@pytest.fixture
def history(settings, no_local_skypilot):
    now = time.time()
    with StubSkyPilot(jobs=3000, experiments=40) as stub:
        for record in stub.fake.jobs:
            i = record["job_id"]
            resources, _, cloud = SHAPES[i % 4]
            record.update(user_name=USERS[i % 4], resources=resources, cloud=cloud)
            record["job_duration"] = 1800.0 + (i % 7) * 600
            if record["status"] == "RUNNING":
                record.update(start_at=now - 3600, end_at=None)
                continue
            status, why = reason(i)
            end = now - (3000 - i) * 240.0  # 3,000 jobs over the last 8 days
            record.update(status=status, failure_reason=why, end_at=end,
                          start_at=end - record["job_duration"])  # fmt: skip
        settings.SKYDECK_SKYPILOT_ENDPOINT = stub.endpoint
        for n in range(40):
            services.create_experiment("t", name=f"exp-{n:04}")
        vision = services.create_group("t", "vision")
        services.add_to_group("t", vision, list(Experiment.objects.filter(name__lt="exp-0020")))
        outcome = run_sync("skypilot")
        assert outcome.ok, outcome.error
        assert Job.objects.count() == 3000
        yield stub


def test_a_team_history_on_the_deck_usage_and_failures(history, web, api, settings):
    jobs = history.fake.jobs
    seconds: dict[str, float] = defaultdict(float)
    for r in jobs:
        seconds[r["job_name"]] += SHAPES[r["job_id"] % 4][1] * r["job_duration"]

    # the deck: each experiment's GPU-hours and the group's total, as the records add up
    for name in ("exp-0003", "exp-0031"):
        assert Experiment.objects.get(name=name).gpu_seconds == pytest.approx(seconds[name])
    deck = web.get("/").content.decode()
    row = re.search(r'<tr id="[^"]*"[^>]*>(?:(?!</tr>).)*exp-0003(?:(?!</tr>).)*</tr>', deck, re.S)
    assert dashboard.gpu_hours_text(seconds["exp-0003"]) in row.group(0)
    group_total = sum(v for k, v in seconds.items() if k < "exp-0020")
    assert f"{dashboard.gpu_hours_text(group_total)} GPU-h</span>" in deck

    # a running job whose log prints steps: progress and a sparkline after two samples
    running = Job.objects.filter(status="RUNNING").order_by("-id").first()
    Experiment.objects.filter(name=running.experiment_id).update(desired_state="RUNNING")
    settings.SKYDECK_SAMPLE_INTERVAL = 0
    settings.SKYDECK_SAMPLE_MAX_JOBS = 100
    for step, loss in ((120, "0.9100"), (240, "0.8100")):
        history.fake.log_text = f"step {step}/1000 | loss {loss} | tok/s 412083\n"
        result = sampler.sample_pass()
        assert not result.errors, result.errors
    running.refresh_from_db()
    assert running.progress == {"step": 240, "total": 1000, "epoch": None,
                                "metrics": {"loss": 0.81, "tok/s": 412083}}  # fmt: skip
    deck = web.get("/").content.decode()
    assert "240 / 1,000 · 24 %" in deck and 'class="spark"' in deck

    # Usage: ended jobs of the last 30 days (to yesterday), by user, = the records' sums
    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=30), today - timedelta(days=1)
    start = datetime.combine(since, datetime.min.time(), tzinfo=UTC).timestamp()
    end = datetime.combine(today, datetime.min.time(), tzinfo=UTC).timestamp()
    by_user: dict[str, float] = defaultdict(float)
    for r in jobs:
        if r["end_at"] is not None and start <= r["end_at"] < end:
            by_user[r["user_name"]] += SHAPES[r["job_id"] % 4][1] * r["job_duration"] / 3600
    query = {"by": "user", "since": since.isoformat(), "until": until.isoformat()}
    data = api.get("/api/usage/", query).json()
    assert {row["key"]: row["gpu_hours"] for row in data["rows"]} == pytest.approx(by_user)
    assert data["unpriced_accelerators"] == ["MI300X"]
    exported = web.get("/usage", {**query, "format": "csv"}).content.decode()
    table = list(csv.reader(io.StringIO(exported)))
    fields = table[0][1:]
    assert table[1:-1] == [[r["key"], *(str(r[f]) for f in fields)] for r in data["rows"]]

    # Failures: the buckets count what the records say, masked
    failures = web.get("/failures", {"days": 30}).content.decode()
    kinds = Counter(reason(r["job_id"])[0] for r in jobs if r["status"].startswith("FAILED"))
    assert kinds["FAILED"] > 100 and kinds["FAILED_SETUP"] > 100
    oom = "FAILED: CUDA out of memory. Tried to allocate &lt;size&gt; on node &lt;ip&gt;"
    assert oom in failures
    buckets = api.get("/api/failures/", {"days": 30}).json()
    counts = {b["signature"]: b["jobs"] for b in buckets["buckets"]}
    assert (
        counts["FAILED: CUDA out of memory. Tried to allocate <size> on node <ip>"]
        == (kinds["FAILED"])
    )
    assert (
        counts["FAILED_SETUP: ModuleNotFoundError: No module named 'flash_attn' (pid <n>)"]
        == (kinds["FAILED_SETUP"])
    )

    # constant queries: a window of one day and one of 30 cost the same
    for path in ("/usage", "/failures"):
        sizes = []
        for days in (1, 30):
            params = {"days": days} if path == "/failures" else {
                "since": (today - timedelta(days=days - 1)).isoformat()}  # fmt: skip
            with CaptureQueriesContext(connection) as queries:
                assert web.get(path, params).status_code == 200
            sizes.append(len(queries))
        assert sizes[0] == sizes[1], (path, sizes)
