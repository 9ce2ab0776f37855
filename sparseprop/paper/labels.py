"""The paper's names for what runs vary: inits, datasets, scoring targets and the pruning methods (LDI, LDI-AI)."""

from __future__ import annotations

from typing import Any

import pandas as pd

INIT_LABELS = {"vs_l": "VS-L", "vs_g": "VS-G", "vs_h": "VS-H", "vs_custom": "VS-custom", "normal": "N(0, γ)",
               "orthogonal": "orthogonal"}
DATASET_LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "digits": "digits"}
TARGET_LABELS = {"labels": "labels", "uniform": "uniform 1/C", "self_hard": "own hard predictions",
                 "self_soft": "own soft predictions (entropy)"}
PRUNE_LABELS = {"snip": "SNIP", "random": "random", "grasp": "GraSP", "synflow": "SynFlow", "magnitude": "magnitude",
                "iterative_snip": "Iterative SNIP"}
# The pruning criteria of E8, in the order they are drawn: ``criterion_label`` names each run's.
CRITERIA = ("SNIP", "GraSP", "SynFlow", "magnitude", "Iterative SNIP", "FORCE", "random (ERK)")
BUDGET_LABELS = {"erk": "ERK", "uniform": "uniform"}
# The methods of E3 and the sparsity sweep, in the order they are drawn.
METHODS = ("VS-L", "VS-L + AI", "LDI", "LDI-AI")
# The paper's five methods of E4 (conf/method/), in the order they are drawn.
E4_METHODS = ("VS-L", "VS-G", "VS-H", "LDI", "LDI-AI")
ARCH_LABELS = {"lenet5": "LeNet-5", "lenet300": "LeNet-300-100", "vgg_c": "VGG-C", "resnet32": "ResNet-32",
               "resnet56": "ResNet-56", "resnet110": "ResNet-110", "wrn16": "WRN-16"}


def init_reading(init: str, scale: Any = None) -> str:
    """An init as its weight distribution, as E1 names its readings: "VS-L: N(0, 1/fan_in)", "N(0, 1)"."""
    if init == "vs_l":
        return "VS-L: N(0, 1/fan_in)"
    if init == "normal":
        gamma = "γ" if scale is None or pd.isna(scale) else f"{float(scale):g}"
        return f"N(0, {gamma})"
    return INIT_LABELS.get(init, init)


def readings(runs: pd.DataFrame) -> pd.Series:
    """Each run's init as its weight distribution (``init_reading``), using ``init.scale`` where recorded."""
    if runs.empty:
        return pd.Series(dtype=object)
    scales = runs["init.scale"] if "init.scale" in runs else pd.Series(None, index=runs.index, dtype=object)
    return pd.Series([init_reading(i, s) for i, s in zip(runs["init"], scales)], index=runs.index, dtype=object)


def method_label(init: str, prune: str = "snip", isometry: str = "none") -> str:
    """The paper's name of a pruning method: LDI = orthogonal init + SNIP, LDI-AI = LDI then approximate isometry."""
    if init == "orthogonal" and prune == "snip":
        return "LDI-AI" if isometry == "ai" else "LDI"
    base = INIT_LABELS.get(init, init) + ("" if prune == "snip" else f" + {prune}")
    return f"{base} + AI" if isometry == "ai" else base


def criterion_label(prune: str, variant: Any = None, budget: Any = None) -> str:
    """A pruning criterion by its published name: iterative SNIP's ``force`` variant is FORCE, and a per-tensor
    budget follows in brackets ("random (ERK)"); the global budget, every criterion's default, adds nothing."""
    if prune == "iterative_snip" and isinstance(variant, str) and variant == "force":
        label = "FORCE"
    else:
        label = PRUNE_LABELS.get(prune, str(prune))
    if isinstance(budget, str) and budget in BUDGET_LABELS:
        label += f" ({BUDGET_LABELS[budget]})"
    return label


def network_label(arch: str, depth: Any = None) -> str:
    """A network by its paper name: "LeNet-5", "ResNet-8" (``arch=resnet`` names its depth), "MLP-7"."""
    if arch in ("resnet", "mlp") and depth is not None and not pd.isna(depth):
        return f"{'ResNet' if arch == 'resnet' else 'MLP'}-{int(float(depth))}"
    return ARCH_LABELS.get(arch, arch)


def with_method(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``method`` column (VS-L, LDI, LDI-AI, ...) and, where the arch is recorded, ``network``."""
    runs = runs.copy()
    if not runs.empty:
        runs["method"] = [method_label(i, p, s) for i, p, s in zip(runs["init"], runs["prune"], runs["isometry"])]
        if "arch" in runs:
            depths = runs["depth"] if "depth" in runs else pd.Series(None, index=runs.index, dtype=object)
            runs["network"] = [network_label(a, d) for a, d in zip(runs["arch"], depths)]
    return runs
