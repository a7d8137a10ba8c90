"""Failure signatures: realistic reasons and logs fall in the buckets a person would put them in."""

from __future__ import annotations

import re

import pytest
from fake_skypilot import job_record

from experiments import triage
from experiments.models import Job
from syncing.runner import run_sync

OOM = (
    "CUDA out of memory. Tried to allocate {size} (GPU {gpu}; 79.15 GiB total capacity; "
    "{used} GiB already allocated) on node {ip}"
)


def test_the_same_error_with_other_numbers_shares_a_bucket():
    one = OOM.format(size="2.50 GiB", gpu=3, used="75.02", ip="10.0.3.7")
    two = OOM.format(size="512.00 MiB", gpu=0, used="78.90", ip="10.0.12.201")
    assert triage.signature("FAILED", one) == triage.signature("FAILED", two)
    assert triage.signature("FAILED", one) == (
        "FAILED: CUDA out of memory. Tried to allocate <size> (GPU <n>; <size> total capacity; "
        "<size> already allocated) on node <ip>"
    )


@pytest.mark.parametrize(
    ("reason", "masked"),
    [
        (
            "FileNotFoundError: [Errno 2] No such file or directory: '/mnt/data/shard-00012.bin'",
            "FileNotFoundError: [Errno <n>] No such file or directory: '<path>'",
        ),
        (
            "ssh: connect to host ip-10-0-3-7.ec2.internal port 22: Connection timed out",
            "ssh: connect to host <host> port <n>: Connection timed out",
        ),
        (
            "Cluster sky-3f2a-alice-head not found (request 6f1c2e3a-1b2c-4d5e-8f90-0123456789ab)",
            "Cluster <host> not found (request <id>)",
        ),
        ("checkout of 3f9a1c2b77e0 failed at 0x7ffd1234", "checkout of <hex> failed at <hex>"),
        (
            "Controller stopped responding at 2026-11-30T12:01:07.123Z (last heartbeat 12:00:01)",
            "Controller stopped responding at <time> (last heartbeat <time>)",
        ),
        ("  two\n lines\tof  text  ", "two lines of text"),
    ],
)
def test_volatile_parts_are_masked(reason, masked):
    assert triage.mask(reason) == masked


def test_words_with_digits_in_them_are_kept():
    """H100, A100-80GB, fp16 and an exception's name say what failed: they stay."""
    text = "no H100 or A100-80GB capacity for fp16 run: ValueError"
    assert triage.mask(text) == text


def test_only_failed_jobs_get_a_signature():
    assert triage.signature("SUCCEEDED", "") == ""
    assert triage.signature("CANCELLED", "Cancelled by alice") == ""
    assert triage.signature("RUNNING", "") == ""
    for status in ("FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE", "FAILED_CONTROLLER"):
        assert triage.signature(status, "").startswith(f"{status}: ")
    assert triage.signature("FAILED", "") == "FAILED: no reason given"


def test_a_status_is_part_of_the_bucket():
    reason = "Failed to provision all possible launchable resources. Relax the task's resource requirements: 8x H100:8"
    assert triage.signature("FAILED_NO_RESOURCE", reason) != triage.signature("FAILED", reason)


@pytest.mark.parametrize(
    "reason",
    [
        "Job failed with return code list: [1]",
        "Job setup failed with return code list: [127, 0]",
        "Process exited with code 137",
        "",
    ],
)
def test_a_generic_reason_asks_the_log(reason):
    assert triage.is_generic(reason)
    log = ["step 568 | loss 0.5682", "RuntimeError: CUDA error: out of memory"]
    assert triage.signature("FAILED", reason, log) == "FAILED: CUDA out of memory"


def test_a_specific_reason_wins_over_the_log():
    reason = "FileNotFoundError: [Errno 2] No such file or directory: '/data/x/y'"
    assert not triage.is_generic(reason)
    assert triage.signature("FAILED", reason, ["NCCL timeout"]).startswith("FAILED: FileNotFound")


NCCL_TIMEOUT = (
    "[rank3]:[E1130 12:01:07.123456 ProcessGroupNCCL.cpp:616] [Rank 3] Watchdog caught collective "
    "operation timeout: WorkNCCL(SeqNum={seq}, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, "
    "Timeout(ms)=600000) ran for {ms} milliseconds before timing out."
)


@pytest.mark.parametrize(
    ("lines", "cause"),
    [
        (
            ["step 12 | loss 3.2", NCCL_TIMEOUT.format(seq=1234, ms=600041), "terminate called"],
            "NCCL timeout",
        ),
        (["step 99", NCCL_TIMEOUT.format(seq=7, ms=600512)], "NCCL timeout"),
        (
            [
                "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/"
                "c10d/ProcessGroupNCCL.cpp:1970, unhandled system error (run with NCCL_DEBUG=INFO)"
            ],
            "NCCL error",
        ),
        (
            [
                "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 "
                "has a total capacity of 79.10 GiB of which 3.06 MiB is free."
            ],
            "CUDA out of memory",
        ),
        (["sky.exceptions.ManagedJobPreemptedError: the spot instance was preempted"], "Preempted"),
        (["OSError: [Errno 28] No space left on device: '/tmp/ckpt-000120.pt'"], "Disk full"),
        (["[ 1234.567] Out of memory: Killed process 4242 (python)"], "Host out of memory"),
        (
            [
                "Traceback (most recent call last):",
                "ModuleNotFoundError: No module named 'flash_attn'",
            ],
            "ModuleNotFoundError: No module named 'flash_attn'",
        ),
        (
            [
                "Traceback (most recent call last):",
                '  File "/app/tools/train.py", line 12, in <module>',
                "    main()",
                "KeyError: 'trainer.lr'",
                "ERROR: Job 3 failed with return code list: [1]",
            ],
            "KeyError: 'trainer.lr'",
        ),
        (["loading shard 17 of 64", "epoch 3 done in 1203.4 s"], "epoch <n> done in <n> s"),
        ([], "Job failed with return code list: [<n>]"),
    ],
)
def test_the_log_names_the_cause(lines, cause):
    generic = "Job failed with return code list: [1]"
    assert triage.signature("FAILED", generic, lines) == f"FAILED: {cause}"


def test_a_signature_fits_its_column():
    reason = "x" * 5000 + " 12345"
    sig = triage.signature("FAILED_NO_RESOURCE", reason)
    assert (
        len(sig)
        <= triage.SIGNATURE_MAX_LENGTH
        == Job._meta.get_field("failure_signature").max_length
    )


def test_the_syncer_signs_failed_jobs_and_re_signs_a_changed_reason(server):
    oom = OOM.format(size="2.50 GiB", gpu=3, used="75.02", ip="10.0.3.7")
    other = OOM.format(size="1.00 GiB", gpu=1, used="70.00", ip="10.0.9.9")
    server.jobs = [
        job_record(1, "a", "FAILED", failure_reason=oom),
        job_record(2, "b", "FAILED", failure_reason=other),
        job_record(3, "c", "RUNNING"),
    ]
    assert run_sync("skypilot").ok
    signs = dict(Job.objects.values_list("id", "failure_signature"))
    assert signs[1] == signs[2] == triage.signature("FAILED", oom) and signs[3] == ""
    server.jobs[2] = job_record(
        3, "c", "FAILED_SETUP", failure_reason="\x1b[31mpip install failed\x1b[0m"
    )
    assert run_sync("skypilot", full=True).ok
    assert Job.objects.get(pk=3).failure_signature == "FAILED_SETUP: pip install failed"


def test_the_api_shows_the_signature(server, api):
    server.jobs = [job_record(1, "a", "FAILED", failure_reason="Disk quota exceeded on /data/u7")]
    assert run_sync("skypilot").ok
    body = api.get("/api/jobs/1/").json()
    assert body["failure_signature"] == "FAILED: Disk quota exceeded on <path>"


@pytest.mark.slow
def test_the_migration_signs_the_failed_jobs_already_stored(transactional_db):
    """Jobs stored before signatures existed get one when SkyDeck is upgraded (failed only)."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor
    from django.utils import timezone

    executor = MigrationExecutor(connection)
    before = [("experiments", "0010_job_task_fetched")]
    executor.migrate(before)
    OldJob = executor.loader.project_state(before).apps.get_model("experiments", "Job")
    now = timezone.now()
    reason = "CUDA out of memory. Tried to allocate 2.50 GiB on node 10.0.3.7"
    OldJob.objects.create(
        id=1, status="FAILED", failure_reason=reason, first_seen=now, last_seen=now
    )
    OldJob.objects.create(id=2, status="SUCCEEDED", first_seen=now, last_seen=now)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    signs = dict(Job.objects.values_list("id", "failure_signature"))
    assert signs == {1: triage.signature("FAILED", reason), 2: ""}


# --- the Failures page ---------------------------------------------------------------------------


def _failed(make_job, job_id, name, reason, *, status="FAILED", user="alice", days_ago=1):
    from datetime import timedelta

    from django.utils import timezone

    return make_job(
        job_id,
        name,
        status=status,
        failure_reason=reason,
        failure_signature=triage.signature(status, reason),
        user_name=user,
        submitted_at=timezone.now() - timedelta(days=days_ago),
    )


def test_the_failures_page_buckets_the_window_most_jobs_first(web, make_job, make_experiment):
    make_experiment("a")
    for i, (name, user) in enumerate([("a", "alice"), ("b", "bob"), ("a", "alice")]):
        ip = f"10.0.{i}.7"
        _failed(
            make_job,
            10 + i,
            name,
            OOM.format(size=f"{i + 1}.00 GiB", gpu=i, used="70", ip=ip),
            user=user,
        )
    _failed(make_job, 20, "c", "No space left on device: '/data/ckpt/x.pt'")
    _failed(make_job, 30, "old", "ancient failure", days_ago=40)
    make_job(40, "ok", status="SUCCEEDED")
    body = web.get("/failures").content.decode()
    oom = "FAILED: CUDA out of memory. Tried to allocate &lt;size&gt;"
    assert body.index(oom) < body.index("FAILED: No space left on device")
    assert "ancient" not in body and "4 failed jobs" in body and "in 2 buckets" in body
    row = body[body.index(oom) :].split("</tr>")[0]
    cells = re.findall(r'<td class="num"[^>]*>(.*?)</td>', row, re.S)
    assert cells[1:] == ["2", "2"]  # 2 experiments (a, b), 2 users
    assert ">3</a>" in row and "failure_signature=FAILED%3A+CUDA" in row  # 3 jobs, linked
    assert "job 12 of" in row  # the newest job is the example, linked to its experiment
    wide = web.get("/failures?days=90").content.decode()
    assert "ancient failure" in wide and "5 failed jobs" in wide


def test_the_failures_link_lists_exactly_the_bucket_s_jobs(web, api, make_job):
    one = _failed(make_job, 10, "a", "NCCL timeout after 600000 ms")
    _failed(make_job, 11, "b", "NCCL timeout after 1800000 ms")
    _failed(make_job, 12, "c", "other")
    page = web.get("/jobs", {"failure_signature": one.failure_signature}).content.decode()
    assert 'href="/jobs/10/logs"' in page and 'href="/jobs/11/logs"' in page
    assert 'href="/jobs/12/logs"' not in page
    listed = api.get("/api/jobs/", {"failure_signature": one.failure_signature}).json()
    assert sorted(j["id"] for j in listed["results"]) == [10, 11]


def test_reason_text_is_never_rendered_unescaped(web, make_job):
    _failed(make_job, 10, "a", '<script>alert("x")</script> & <b>bold</b>')
    body = web.get("/failures").content.decode()
    assert "<script>alert" not in body and "<b>bold" not in body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold" in body


@pytest.mark.parametrize("days", ["3", "x", "-1", "7.0"])
def test_a_window_the_page_does_not_offer_is_a_400_that_says_so(web, days):
    response = web.get("/failures", {"days": days})
    assert response.status_code == 400
    assert "days: Select a valid choice" in response.content.decode()


def test_the_failures_page_costs_the_same_queries_for_many_buckets(
    web, make_job, django_assert_max_num_queries
):
    for i in range(3):
        _failed(make_job, 10 + i, f"e{i}", f"error kind {'abc'[i]}")
    web.get("/failures")
    for i in range(40):  # 40 more buckets: reasons that differ in words, not numbers
        word = "abcdefghijklmnopqrstuvwxyz"[i % 26] * (i // 26 + 1)
        _failed(make_job, 100 + i, f"f{i}", f"another kind of error: {word}")
    with django_assert_max_num_queries(8):
        body = web.get("/failures").content.decode()
    assert body.count("<tr>") > 30


def test_the_failures_page_needs_a_login(client):
    response = client.get("/failures")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- acting on a bucket, its API and the deck's link ---------------------------------------------


def _hidden(body: str, name: str) -> list[str]:
    return re.findall(rf'<input type="hidden" name="{name}" value="([^"]*)"', body)


def test_stop_all_confirms_the_bucket_s_experiments_and_stops_only_them(
    web, make_job, make_experiment
):
    from experiments.models import Experiment, OperationLog

    a = make_experiment("a", desired_state="RUNNING")
    b = make_experiment("b", desired_state="RUNNING")
    make_experiment("other", desired_state="RUNNING")
    _failed(make_job, 10, "a", "NCCL timeout after 600000 ms")
    _failed(make_job, 11, "b", "NCCL timeout after 1800000 ms")
    _failed(make_job, 12, "other", "something else entirely")
    _failed(make_job, 13, "ghost", "NCCL timeout after 5 ms")  # no experiment: not acted on
    page = web.get("/failures").content.decode()
    row = page[page.index("NCCL timeout") :].split("</tr>")[0]
    link = re.search(r'href="(/failures/confirm\?[^"]*action=stop[^"]*)"', row).group(1)
    confirm = web.get(link.replace("&amp;", "&"))
    body = confirm.content.decode()
    assert confirm.status_code == 200 and "Stop 2 experiments?" in body
    assert sorted(int(i) for i in _hidden(body, "ids")) == sorted([a.pk, b.pk])
    form = {"action": "stop", "confirmed": "1", "ids": _hidden(body, "ids")}
    form["next"] = _hidden(body, "next")[0]
    assert form["next"].startswith("/failures")
    done = web.post("/experiments/bulk", form)
    assert done.status_code == 302 and done["Location"].startswith("/failures")
    states = dict(Experiment.objects.values_list("name", "desired_state"))
    assert states == {"a": "STOPPED", "b": "STOPPED", "other": "RUNNING"}
    logged = OperationLog.objects.filter(operation="stop").values_list("experiment_name", flat=True)
    assert sorted(logged) == ["a", "b"]


def test_retry_all_shows_the_spend_before_it_starts(web, make_job, make_experiment):
    make_experiment("a", nodes=2, gpus=8, accelerator="H100")
    make_experiment("b", nodes=1, gpus=4, accelerator="H100")
    sig = _failed(make_job, 10, "a", "oom").failure_signature
    _failed(make_job, 11, "b", "oom")
    body = web.get(
        "/failures/confirm", {"signature": sig, "days": 7, "action": "start"}
    ).content.decode()
    assert "Start 2 experiments?" in body and "20 GPUs" in body


@pytest.mark.parametrize(
    "query, says",
    [
        ({"days": 7, "action": "stop"}, "signature: This field is required."),
        ({"signature": "x", "days": 7, "action": "delete"}, "action: Select a valid choice"),
        ({"signature": "x", "days": 3, "action": "stop"}, "days: Select a valid choice"),
        ({"signature": "x", "days": 7, "action": "stop"}, "No experiment has a failed job"),
    ],
)
def test_a_bucket_action_that_cannot_be_confirmed_says_why(web, query, says):
    response = web.get("/failures/confirm", query)
    assert response.status_code == 400 and says in response.content.decode()


def test_a_bucket_of_orphaned_jobs_offers_no_action(web, make_job):
    _failed(make_job, 10, "ghost", "oom")
    row = web.get("/failures").content.decode().split("<tbody>")[1]
    assert "orphaned jobs" in row and "/failures/confirm" not in row


def test_one_bucket_is_shown_by_its_signature(web, make_job):
    sig = _failed(make_job, 10, "a", "oom").failure_signature
    _failed(make_job, 11, "b", "disk full")
    body = web.get("/failures", {"signature": sig, "days": 90}).content.decode()
    assert "one bucket" in body and "oom" in body and "disk full" not in body


def test_the_api_answers_the_buckets_and_what_to_act_on(api, make_job, make_experiment):
    make_experiment("a")
    make_experiment("b")
    for i, name in enumerate(["a", "b", "a", "ghost"]):
        _failed(make_job, 10 + i, name, f"NCCL timeout after {i}00 ms", user=f"u{i % 2}")
    _failed(make_job, 20, "b", "disk full")
    answer = api.get("/api/failures/")
    assert answer.status_code == 200
    data = answer.json()
    assert data["days"] == 7 and [b["jobs"] for b in data["buckets"]] == [4, 1]
    nccl = data["buckets"][0]
    assert nccl["signature"] == triage.signature("FAILED", "NCCL timeout after 5 ms")
    assert nccl["experiments"] == ["a", "b"] and nccl["experiment_count"] == 3
    assert nccl["users"] == 2 and nccl["example"]["job_id"] == 13
    assert nccl["example"]["experiment"] == "ghost"
    one = api.get("/api/failures/", {"signature": nccl["signature"], "days": 90}).json()
    assert [b["signature"] for b in one["buckets"]] == [nccl["signature"]]


@pytest.mark.parametrize(
    "query, field",
    [({"days": "3"}, "days"), ({"signature": "x" * 301}, "signature"), ({"since": "1"}, "since")],
)
def test_the_failures_api_names_a_bad_parameter(api, query, field):
    answer = api.get("/api/failures/", query)
    assert answer.status_code == 400 and field in answer.json()


def test_a_failed_badge_in_the_deck_links_to_its_bucket(web, make_job, make_experiment):
    from urllib.parse import quote_plus

    from experiments.models import Experiment

    make_experiment("a")
    make_experiment("b")
    sig = _failed(make_job, 10, "a", "CUDA out of memory").failure_signature
    make_job(11, "b", status="SUCCEEDED")
    Experiment.objects.refresh_current_state()
    body = web.get("/").content.decode()
    assert f'href="/failures?signature={quote_plus(sig)}&amp;days=90"' in body
    assert body.count('class="badge-link"') == 1  # b succeeded: its badge links nowhere
