"""E7 (claim C7): architecture sculpting; not run by this pipeline (no sweep)."""

from __future__ import annotations

from sparseprop.paper.experiment import Experiment, register


EXPERIMENT = register(Experiment(
    id="e7_sculpting",
    title="E7: architecture sculpting: a bulky network pruned to the parameter count of a hand-designed dense one",
    order=7,
    sweep=False,
    not_tested={"C7": "architecture sculpting (E7) is out of this pipeline's scope"},
))
