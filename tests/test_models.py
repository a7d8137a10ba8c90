"""Validation rules and the links between experiments, jobs and checkpoints."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from names import BAD_NAMES, GOOD_NAMES, PADDED_NAMES

from experiments import services
from experiments.models import NO_JOB, Checkpoint, Experiment, Job, JobStatus


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_accepted(db, name):
    Experiment(name=name).full_clean()


@pytest.mark.parametrize("name", BAD_NAMES + PADDED_NAMES)
def test_bad_names_are_rejected(db, name):
    with pytest.raises(ValidationError) as exc:
        Experiment(name=name).full_clean()
    assert "name" in exc.value.message_dict


def test_bad_name_is_not_saved_by_the_service(db):
    with pytest.raises(ValidationError):
        services.create_experiment("tester", name="foo (copy)")
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    "flags",
    [
        {"trainer.lr": 0.001, "trainer.batch_size": 512, "wandb.enabled": True, "run.tag": "x y"},
        {},
        {"a-b.c_d": -1},
    ],
)
def test_scalar_flags_are_accepted(db, flags):
    Experiment(name="ok", flags=flags).full_clean()


@pytest.mark.parametrize(
    "flags",
    [
        {"trainer": {"lr": 0.1}},  # nested object
        {"layers": [1, 2]},  # list
        {"x": None},
        {"x": float("nan")},
        {"bad key": 1},
        {"": 1},
        {"a..b": 1},
        {"x": "line\nbreak"},
        ["not", "a", "dict"],
    ],
)
def test_non_scalar_or_badly_named_flags_are_rejected(db, flags):
    with pytest.raises(ValidationError) as exc:
        Experiment(name="ok", flags=flags).full_clean()
    assert "flags" in exc.value.message_dict


def test_nested_flag_message_says_why(db):
    with pytest.raises(ValidationError) as exc:
        Experiment(name="ok", flags={"trainer": {"lr": 0.1}}).full_clean()
    assert "nested" in " ".join(exc.value.message_dict["flags"])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"nodes": 0}, "nodes"),
        ({"gpus": -1}, "gpus"),
        ({"accelerator": "H100; rm"}, "accelerator"),
        ({"accelerator": "H100", "gpus": 0}, "gpus"),
        ({"git_ref": "main branch"}, "git_ref"),
        ({"git_ref": "a..b"}, "git_ref"),
        ({"tags": ["ok", "not ok"]}, "tags"),
        ({"desired_state": "PAUSED"}, "desired_state"),
        ({"base_command": "uv run\nrm -rf /"}, "base_command"),
    ],
)
def test_other_field_rules(db, fields, field):
    with pytest.raises(ValidationError) as exc:
        Experiment(name="ok", **fields).full_clean()
    assert field in exc.value.message_dict


def test_defaults(db):
    exp = services.create_experiment("tester", name="fresh")
    assert exp.desired_state == "STOPPED"
    assert exp.current_state == NO_JOB
    assert (exp.nodes, exp.gpus, exp.flags) == (1, 0, {})


def test_names_are_unique(make_experiment):
    make_experiment("dup")
    with pytest.raises(ValidationError) as exc:
        services.create_experiment("tester", name="dup")
    assert "name" in exc.value.message_dict
    with pytest.raises(IntegrityError), transaction.atomic():
        Experiment.objects.create(name="dup")


def test_jobs_link_to_experiments_by_name(make_experiment, make_job):
    exp = make_experiment("alpha")
    job = make_job(1, name="alpha")
    make_job(2, name="beta")
    assert list(exp.jobs.all()) == [job]
    assert Job.objects.get(pk=1).experiment == exp
    # the column holds the name, as people query it from sqlite3
    assert Job.objects.filter(experiment_id="alpha").count() == 1


def test_orphaned_jobs_attach_when_the_experiment_appears(make_experiment, make_job):
    make_job(1, name="later")
    make_job(2, name=None)
    make_job(3, name="present")
    make_experiment("present")
    assert sorted(Job.objects.orphaned().values_list("id", flat=True)) == [1, 2]
    make_experiment("later")
    assert list(Job.objects.orphaned().values_list("id", flat=True)) == [2]
    assert sorted(Job.objects.attached().values_list("id", flat=True)) == [1, 3]


def test_deleting_an_experiment_keeps_its_jobs_as_orphans(make_experiment, make_job):
    exp = make_experiment("gone")
    make_job(7, name="gone")
    services.delete_experiments("tester", [exp])
    assert Job.objects.filter(pk=7).exists()
    assert list(Job.objects.orphaned().values_list("id", flat=True)) == [7]


def test_checkpoints_link_by_experiment_id_and_a_rename_is_refused(
    make_experiment, make_checkpoint
):
    exp = make_experiment("old-name")
    make_checkpoint(exp, 5)
    # the name is the S3 folder its checkpoints live in: a rename would orphan them
    with pytest.raises(ValidationError, match="1 checkpoint"):
        services.update_experiment("tester", exp, name="new-name")
    ckpt = Checkpoint.objects.get()
    assert ckpt.experiment_id == exp.pk
    assert ckpt.experiment.name == "old-name"


def test_checkpoint_epoch_is_unique_per_experiment(make_experiment, make_checkpoint):
    exp = make_experiment()
    make_checkpoint(exp, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_checkpoint(exp, 1, model_path="s3://b/other")


def test_with_latest_annotates_latest_job_and_epoch(
    make_experiment, make_job, make_checkpoint, django_assert_num_queries
):
    now = timezone.now()
    a = make_experiment("a")
    make_experiment("b")
    make_job(1, name="a", status=JobStatus.FAILED, submitted_at=now - timedelta(hours=2))
    make_job(2, name="a", status=JobStatus.RUNNING, submitted_at=now - timedelta(hours=1))
    make_checkpoint(a, 3)
    make_checkpoint(a, 9)
    make_checkpoint(a, 12, missing=True)
    with django_assert_num_queries(1):
        rows = {e.name: e for e in Experiment.objects.with_latest()}
    assert rows["a"].latest_job_id == 2
    assert rows["a"].latest_job_status == JobStatus.RUNNING
    assert rows["a"].latest_epoch == 9
    assert rows["a"].has_active_job is True
    assert rows["b"].latest_job_id is None
    assert rows["b"].latest_epoch is None
    assert rows["b"].has_active_job is False


def test_active_jobs_and_status_lists_cover_every_skypilot_status(make_job):
    assert len(JobStatus.values) == 14
    assert set(JobStatus.active()) | set(JobStatus.terminal()) == set(JobStatus.values)
    make_job(1, status=JobStatus.RECOVERING)
    make_job(2, status=JobStatus.FAILED_PRECHECKS)
    make_job(3, status=JobStatus.CANCELLING)
    assert sorted(Job.objects.active().values_list("id", flat=True)) == [1, 3]


def test_latest_checkpoint_per_experiment(make_experiment, make_checkpoint):
    a, b = make_experiment(), make_experiment()
    for epoch in (1, 2, 3):
        make_checkpoint(a, epoch)
    make_checkpoint(b, 7)
    latest = {(c.experiment_id, c.epoch) for c in Checkpoint.objects.latest_per_experiment()}
    assert latest == {(a.pk, 3), (b.pk, 7)}


def test_search_matches_name_state_and_flags(make_experiment):
    make_experiment("lr-sweep", flags={"trainer.lr": 0.5})
    make_experiment("other", desired_state="RUNNING")
    assert [e.name for e in Experiment.objects.search("sweep")] == ["lr-sweep"]
    assert [e.name for e in Experiment.objects.search("trainer.lr")] == ["lr-sweep"]
    assert [e.name for e in Experiment.objects.search("running")] == ["other"]
