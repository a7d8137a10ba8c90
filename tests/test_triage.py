"""Failure signatures: realistic reasons and logs fall in the buckets a person would put them in."""

from __future__ import annotations

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
