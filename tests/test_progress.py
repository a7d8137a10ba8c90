"""Progress from training logs (experiments/progress.py): what a log's last lines say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from experiments import progress
from experiments.models import ExperimentGroup
from experiments.progress import Sample, parse

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_typical_training_line_gives_step_and_every_metric():
    sample = parse(["step 568 | loss 0.5682 | grad_norm 0.73 | tok/s 412083"])
    assert sample == Sample(step=568, metrics={"loss": 0.5682, "grad_norm": 0.73, "tok/s": 412083})
    assert isinstance(sample.metrics["tok/s"], int)  # whole numbers stay exact


@pytest.mark.parametrize(
    ("line", "step", "total", "epoch"),
    [
        ("[12/50]", 12, 50, None),
        (" 24%|██▍       | 12/50 [00:10<00:30,  1.20it/s]", 12, 50, None),
        ("step 1200/5000", 1200, 5000, None),
        ("Step: 7 of 100", 7, 100, None),
        ("global_step=40", 40, None, None),
        ("iter 9", 9, None, None),
        ("Epoch 3/10", None, None, 3),
        ("epoch=4 step 12/50", 12, 50, 4),
    ],
)
def test_progress_forms(line, step, total, epoch):
    sample = parse([line])
    assert (sample.step, sample.total, sample.epoch) == (step, total, epoch)


def test_the_newest_lines_win_and_metrics_merge_per_key():
    lines = [
        "Epoch 3/10",
        "step 100/5000 | loss 0.9 | lr 1e-3",
        "eval: accuracy=0.81",
        "step 200/5000 | loss 0.7",
        "",
    ]
    sample = parse(lines)
    assert (sample.step, sample.total, sample.epoch) == (200, 5000, 3)
    # loss from the newest line with it, lr and accuracy from older ones
    assert sample.metrics == {"loss": 0.7, "accuracy": 0.81, "lr": 0.001}


def test_key_value_forms_with_equals_and_colons():
    sample = parse(["loss=0.5 lr: 3e-4 perplexity : 12.5"])
    assert sample.metrics == {"loss": 0.5, "lr": 0.0003, "perplexity": 12.5}
    assert sample.step is None


def test_space_separated_pairs_count_only_on_progress_lines():
    # a traceback's "allocate 2.50" is no metric; on a step line "loss 0.4" is
    assert parse(["Tried to allocate 2.50 GiB (GPU 0; 79.10 GiB total capacity)"]) is None
    assert parse(["[3/9] loss 0.4"]).metrics == {"loss": 0.4}


def test_garbage_nan_and_inf_are_refused():
    assert parse(["", "   ", "hello world", "Traceback (most recent call last):"]) is None
    assert parse(["loss=nan grad_norm=inf acc: 1e999"]) is None
    # the older, finite value stands when the newest line says nan
    assert parse(["step 4 loss=0.5", "step 5 loss=nan"]).metrics == {"loss": 0.5}
    assert parse(["step 5 loss=0.5"]).as_json() == {
        "step": 5,
        "total": None,
        "epoch": None,
        "metrics": {"loss": 0.5},
    }


def test_steps_beyond_a_64_bit_column_are_ignored():
    assert parse([f"step {2**70}"]) is None


def test_metric_names_are_sanitized_and_limited():
    long_key = "k" * 100
    many = " ".join(f"m{i}={i}" for i in range(40))
    sample = parse([f"{long_key}=1", many])
    assert len(sample.metrics) == progress.MAX_METRICS
    assert all(len(key) <= progress.MAX_KEY_LENGTH for key in sample.metrics)
    # the newest line's keys come first; the long key of the older line did not fit
    assert "m0" in sample.metrics and long_key[:64] not in sample.metrics
    assert parse([f"{long_key}=1"]).metrics == {long_key[:64]: 1}


def test_group_patterns_are_tried_before_the_built_in_ones():
    patterns = progress.compile_patterns(
        [
            r"(?P<key>reward) is (?P<value>[-\d.]+)",
            r"loss (?P<key>\w+) (?P<value>[\d.]+)",
            r"(?P<key>step)#(?P<value>\d+)",
        ]
    )
    sample = parse(["agent step#77 reward is -1.5 loss policy 0.25 loss=9"], patterns)
    assert sample.step == 77
    assert sample.metrics == {"reward": -1.5, "policy": 0.25, "loss": 9}
    # without them the built-in "key value" form reads the words next to the numbers
    assert parse(["agent step#77 reward is -1.5 loss policy 0.25 loss=9"]).metrics == {
        "is": -1.5,
        "policy": 0.25,
        "loss": 9,
    }


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ("loss", "must be a list"),
        (["(?P<key>\\w+)"], "no named group (?P<value>...)"),
        (["(unclosed"], "not a regular expression"),
        ([""], "non-empty string"),
        ([r"(?P<key>\w+)=(?P<value>\d+)"] * 21, "At most 20 metric patterns"),
    ],
)
def test_a_groups_patterns_are_validated(db, patterns, message):
    group = ExperimentGroup(name="g", metric_patterns=patterns)
    with pytest.raises(ValidationError) as caught:
        group.full_clean()
    assert message in " ".join(caught.value.message_dict["metric_patterns"])


def test_good_patterns_and_none_pass(db):
    ExperimentGroup(name="g", metric_patterns=[r"(?P<key>\w+)=(?P<value>\d+)"]).full_clean()
    ExperimentGroup(name="h", metric_patterns=None).full_clean()


def test_advanced_means_a_new_step_or_epoch():
    assert progress.advanced(None, Sample(step=1))
    assert not progress.advanced({"step": 1, "epoch": None}, Sample(step=1))
    assert progress.advanced({"step": 1, "epoch": None}, Sample(step=2))
    assert progress.advanced({"step": 9, "epoch": 2}, Sample(step=9, epoch=3))
    assert progress.advanced({"step": 900}, Sample(step=10))  # restarted after a recovery
    assert not progress.advanced({"step": 1}, Sample(metrics={"loss": 1.0}))


def test_stall_reasons():
    hours = lambda n: NOW - timedelta(hours=n)  # noqa: E731
    reason = progress.stall_reason
    assert (
        reason(NOW, threshold_minutes=60, advanced_at=NOW - timedelta(minutes=72),
               newest_checkpoint_at=None, started_at=hours(5))
        == "no log progress for 1 h 12 min"
    )  # fmt: skip
    assert (
        reason(NOW, threshold_minutes=60, advanced_at=None, newest_checkpoint_at=hours(2),
               started_at=hours(5))
        == "no new checkpoint for 2 h"
    )  # fmt: skip
    # a job that started after the last checkpoint gets the threshold to write one
    assert (
        reason(NOW, threshold_minutes=60, advanced_at=None, newest_checkpoint_at=hours(2),
               started_at=NOW - timedelta(minutes=30))
        is None
    )  # fmt: skip
    # off
    assert (
        reason(NOW, threshold_minutes=0, advanced_at=hours(9), newest_checkpoint_at=hours(9),
               started_at=hours(10))
        is None
    )  # fmt: skip
    assert (
        reason(NOW, threshold_minutes=0, advanced_at=None, newest_checkpoint_at=None,
               started_at=None, recovery_count=4, max_recoveries=3)
        == "recovered 4 times (more than 3)"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (600, "10 min"), (3900, "1 h 5 min"), (7200, "2 h"), (3 * 86400, "3 d")],
)
def test_duration_text(seconds, text):
    assert progress.duration_text(seconds) == text
