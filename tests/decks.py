"""Test decks: a group of ``count`` experiments made in bulk (the deck-at-scale tests)."""

from __future__ import annotations

from experiments.models import Experiment, ExperimentGroup, ExperimentGroupMember


def group_of(
    name: str, count: int, *, order: int = 0, collapsed: bool = False
) -> tuple[ExperimentGroup, list[Experiment]]:
    """A group ``name`` holding ``<name>-0000`` ... in order, each with its own ``lr`` flag."""
    group = ExperimentGroup.objects.create(name=name, order=order, collapsed=collapsed)
    experiments = Experiment.objects.bulk_create(
        Experiment(name=f"{name}-{i:04d}", flags={"lr": i}) for i in range(count)
    )
    ExperimentGroupMember.objects.bulk_create(
        ExperimentGroupMember(group=group, experiment=e, order=i) for i, e in enumerate(experiments)
    )
    return group, experiments
