"""The reproduction's profiles: what each one is for, and the override bundles experiments share under it.

A profile is a name and a description; what it changes in an experiment lives with that experiment
(its module's ``profiles``), so adding an experiment touches no other file. `reproduce --dry-run`
prints every experiment's overrides under the chosen profile together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """A named level of effort: every experiment declares its overrides for each profile."""

    name: str
    description: str


# Shared by the quick profile's experiments that train and measure.
QUICK_TRAIN = ("train.iterations=1000", "train.eval_interval=200")  # 5 evaluations: best-of-last-5 still means something
QUICK_SIGNAL = ("signal.examples=1000", "signal.layer_examples=100")  # JSV on 1,000 / 100 training examples
QUICK_AI = ("isometry.steps=2000",)  # the AI objective has levelled off by about 2,000 steps on MLP-7

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        "quick",
        "every experiment at reduced settings: 1,000 iterations, JSV on 1,000 examples (layerwise 100), AI 2,000 "
        "steps; 2 seeds for E1, E2, E3, 1 seed for E5, E6 and the sweep; MLP-3/7 in E5, MLP-7 in E6; sparsity "
        "10/50/90% in E1 (at VS-L and at N(0, 1), as in the paper profile) and 50/90/99% in the sweep; E4 on "
        "Fashion-MNIST (LeNet-5, ResNet-8) with 400 iterations of 64, 2 seeds; no E4 on CIFAR-10 / Tiny-ImageNet (GPU jobs); "
        "E7 on MNIST (MLP-7-400 to MLP-7-100's count, 1,000 iterations) and Fashion-MNIST (LeNet-5 x2 to LeNet-5's "
        "count, 400 iterations), 2 seeds; E8 on MLP-7 tanh only: every criterion x VS-L/orthogonal at 90/99%, 500 "
        "iterations, JSV after pruning only, 2 seeds, each criterion at its own defaults (100 rounds for SynFlow, "
        "iterative SNIP and FORCE); no E8 on LeNet-5"),
    # The experiment files hold the paper's settings (10,000 iterations, 3 seeds, full signal measurements).
    "paper": Profile("paper", "the paper's settings: 10,000 iterations, 3 seeds, JSV on every training example; E4 "
                     "also on CIFAR-10 (VGG-C, ResNet-32/56/110) and Tiny-ImageNet (WRN-16), 150,000 iterations, on a GPU; "
                     "E7 also on CIFAR-10 (VGG-C pruned to ResNet-32's count), on a GPU; E8 also on LeNet-5 (Fashion-MNIST)"),
}
