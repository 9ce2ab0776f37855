"""E4 (claim C8): modern networks on CIFAR-10 and Tiny-ImageNet; not run by this pipeline (no sweep)."""

from __future__ import annotations

from sparseprop.paper.experiment import Experiment, register


EXPERIMENT = register(Experiment(
    id="e4_modern",
    title="E4: LDI and LDI-AI on modern convolutional networks, CIFAR-10 and Tiny-ImageNet",
    order=4,
    sweep=False,
    not_tested={"C8": "modern networks on CIFAR-10 / Tiny-ImageNet (E4) do not fit on a CPU"},
))
