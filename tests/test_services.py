"""The services every interface shares: duplicate, desired state, group membership."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from experiments import services
from experiments.models import Experiment, ExperimentGroup, OperationLog


def members(group: ExperimentGroup) -> list[str]:
    return [e.name for e in group.ordered_experiments()]


@pytest.fixture
def group_abc(make_experiment):
    group = services.create_group("tester", "sweep")
    exps = [make_experiment(n) for n in ("a", "b", "c")]
    services.add_to_group("tester", group, exps)
    return group


def test_duplicate_copies_config_with_a_unique_valid_name(make_experiment):
    original = make_experiment(
        "base", flags={"lr": 0.1}, nodes=2, gpus=8, accelerator="H100", git_ref="main",
        desired_state="RUNNING", tags=["t1"],
    )  # fmt: skip
    first = services.duplicate_experiment("alice", original)
    second = services.duplicate_experiment("alice", original)
    third = services.duplicate_experiment("alice", first)
    assert [first.name, second.name, third.name] == ["base.copy", "base.copy2", "base.copy3"]
    assert first.flags == {"lr": 0.1}
    assert (first.nodes, first.gpus, first.accelerator, first.git_ref) == (2, 8, "H100", "main")
    assert first.tags == ["t1"]
    assert first.desired_state == "STOPPED"
    first.flags["lr"] = 0.2
    first.save()
    original.refresh_from_db()
    assert original.flags == {"lr": 0.1}
    log = OperationLog.objects.filter(operation="duplicate", experiment=first).get()
    assert log.actor == "alice"
    assert "base" in log.message


def test_duplicate_of_a_maximal_name_stays_valid(make_experiment):
    original = make_experiment("x" * 128)
    copy = services.duplicate_experiment("t", original)
    assert len(copy.name) <= 128
    assert copy.name.endswith(".copy")
    copy.full_clean()


def test_duplicate_is_placed_right_after_the_original_in_every_group(group_abc, make_experiment):
    other = services.create_group("tester", "other")
    b = Experiment.objects.get(name="b")
    services.add_to_group("tester", other, [make_experiment("z"), b])
    services.duplicate_experiment("tester", b)
    assert members(group_abc) == ["a", "b", "b.copy", "c"]
    assert members(other) == ["z", "b", "b.copy"]


def test_set_desired_state_logs_only_real_changes(make_experiment):
    a, b = make_experiment(), make_experiment(desired_state="RUNNING")
    OperationLog.objects.filter(operation="start").delete()  # the fixture's own start of b
    changed = services.set_desired_state("bob", [a, b], "RUNNING")
    assert changed == 1
    a.refresh_from_db()
    assert a.desired_state == "RUNNING"
    assert list(
        OperationLog.objects.filter(operation="start").values_list("experiment", flat=True)
    ) == [a.pk]
    with pytest.raises(ValidationError):
        services.set_desired_state("bob", [a], "PAUSED")


def test_update_validates_everything_and_logs_the_change(make_experiment):
    exp = make_experiment("keep")
    with pytest.raises(ValidationError):
        services.update_experiment("t", exp, flags={"a": {"b": 1}})
    exp.refresh_from_db()
    assert exp.flags == {}
    with pytest.raises(ValidationError):
        services.update_experiment("t", exp, current_state="RUNNING")
    services.update_experiment("t", exp, name="kept", nodes=4)
    exp.refresh_from_db()
    assert (exp.name, exp.nodes) == ("kept", 4)
    log = OperationLog.objects.filter(operation="update").get()
    assert "renamed from 'keep'" in log.message
    assert "nodes" in log.message


def test_group_membership_is_ordered(group_abc, make_experiment):
    assert members(group_abc) == ["a", "b", "c"]
    services.add_to_group(
        "tester", group_abc, [make_experiment("d"), Experiment.objects.get(name="a")]
    )
    assert members(group_abc) == ["a", "b", "c", "d"]
    services.remove_from_group("tester", group_abc, [Experiment.objects.get(name="b")])
    assert members(group_abc) == ["a", "c", "d"]
    assert list(group_abc.memberships.values_list("order", flat=True)) == [0, 1, 2]


def test_reorder_and_move_member(group_abc):
    ids = {e.name: e.pk for e in Experiment.objects.all()}
    services.reorder_group("tester", group_abc, [ids["c"], ids["a"], ids["b"]])
    assert members(group_abc) == ["c", "a", "b"]
    services.move_member("tester", group_abc, Experiment.objects.get(name="b"), -1)
    assert members(group_abc) == ["c", "b", "a"]
    services.move_member("tester", group_abc, Experiment.objects.get(name="c"), -5)
    assert members(group_abc) == ["c", "b", "a"]
    with pytest.raises(ValidationError):
        services.reorder_group("tester", group_abc, [ids["a"], ids["b"]])
    assert members(group_abc) == ["c", "b", "a"]


def test_an_experiment_may_be_in_several_groups_and_move_between_them(group_abc):
    second = services.create_group("tester", "second")
    third = services.create_group("tester", "third")
    a = Experiment.objects.get(name="a")
    services.add_to_group("tester", second, [a])
    assert set(a.experiment_groups.values_list("name", flat=True)) == {"sweep", "second"}
    services.move_to_group("tester", [a], third)
    assert list(a.experiment_groups.values_list("name", flat=True)) == ["third"]
    assert members(group_abc) == ["b", "c"]
    assert list(group_abc.memberships.values_list("order", flat=True)) == [0, 1]


def test_ungrouped_and_group_delete(group_abc, make_experiment):
    loose = make_experiment("loose")
    assert list(Experiment.objects.ungrouped()) == [loose]
    services.delete_group("tester", group_abc)
    assert Experiment.objects.count() == 4
    assert Experiment.objects.ungrouped().count() == 4


def test_groups_are_created_in_order_and_reorderable(db):
    g1, g2, g3 = (services.create_group("t", n) for n in ("one", "two", "three"))
    assert [g.name for g in ExperimentGroup.objects.all()] == ["one", "two", "three"]
    services.reorder_groups("t", [g3.pk, g1.pk, g2.pk])
    assert [g.name for g in ExperimentGroup.objects.all()] == ["three", "one", "two"]
    with pytest.raises(ValidationError):
        services.reorder_groups("t", [g1.pk])


def test_group_flags_are_validated(db):
    with pytest.raises(ValidationError):
        services.create_group("t", "bad", flags=["ok", "not ok"])
    group = services.create_group("t", "good", flags=["trainer.lr"])
    with pytest.raises(ValidationError):
        services.update_group("t", group, flags=["a", "a"])


def test_delete_keeps_the_name_in_the_log(make_experiment):
    exp = make_experiment("doomed")
    services.delete_experiments("carol", [exp])
    log = OperationLog.objects.get(operation="delete")
    assert (log.experiment, log.experiment_name, log.actor) == (None, "doomed", "carol")


def test_null_json_values_are_validation_errors_not_crashes(make_experiment):
    exp = make_experiment()
    with pytest.raises(ValidationError) as exc:
        services.update_experiment("t", exp, flags=None, tags=None)
    assert {"flags", "tags"} <= set(exc.value.message_dict)
    with pytest.raises(ValidationError):
        services.create_group("t", "g", flags=None)
