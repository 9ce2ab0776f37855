"""The dataset contract: DATASETS, the declared shapes, the Splits every loader returns, and their normalisation.

The training loop takes its batches through ``Splits.train_batch(idx, generator) -> (x, y)``: the
standardised training images ``x_train[idx]`` with their labels, augmented when the dataset is
configured to be (``augment`` is then a callable ``(x, generator) -> x``, see ``data.augment``).
``idx`` and ``generator`` live on the splits' device; the generator is only drawn from when there
is augmentation, so a dataset without it gives exactly ``(x_train[idx], y_train[idx])``.
Evaluation, scoring and signal measurements read ``x_train``, ``x_val`` and ``x_test`` directly:
whole standardised float32 tensors, never augmented.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sparseprop.config import GENERATOR_SEEDS
from sparseprop.errors import ConfigError
from sparseprop.registry import Options, Registry

DATASETS: Registry[Callable[..., "Splits"]] = Registry("dataset", group="dataset")
# Where the scalar mean and standard deviation of the inputs come from: ``all`` images of the official
# training set with the population std (the authors' statistics: 0.130660 / 0.308108 on MNIST), or
# the training ``split`` left after the validation hold-out with Bessel's correction.
STANDARDISE = ("all", "split")


@dataclass
class DatasetOptions(Options):
    """How any dataset is split and standardised."""

    val_fraction: float = 0.1
    split_seed: int = 0
    standardise: str = "all"

    def check(self) -> None:
        if not 0 < self.val_fraction < 1:
            self.refuse("val_fraction", "a number in (0, 1)")
        # The validation split is drawn with split_seed (digits' test split with split_seed + 1).
        lo, hi = GENERATOR_SEEDS
        if not lo <= self.split_seed <= hi - 1:
            self.refuse("split_seed", f"an integer in [{lo:,}, {hi - 1:,}]")
        if self.standardise not in STANDARDISE:
            self.refuse("standardise", f"choose one of {', '.join(STANDARDISE)}")


@dataclass(frozen=True)
class DatasetShape:
    """What a dataset holds, declared so that configs can be checked before it is loaded."""

    train: int                  # examples the validation split is held out of
    test: int
    in_shape: tuple[int, ...]
    num_classes: int


# Each registered dataset declares its shape here, next to its loader.
SHAPES: dict[str, DatasetShape] = {}
# Datasets whose files must be found (or downloaded) before they load register here how to make
# sure of it: locate(root, download), raising DataError when they cannot be had.
LOCATORS: dict[str, Callable[[str, bool], object]] = {}


def split_sizes(name: str, val_fraction: float) -> tuple[int, int, int] | None:
    """(train, validation, test) sizes of dataset ``name`` for ``val_fraction``; None if it declares no shape."""
    shape = SHAPES.get(name)
    if shape is None:
        return None
    n_val = held_out(shape.train, val_fraction)
    return shape.train - n_val, n_val, shape.test


@dataclass
class Splits:
    """Normalised inputs and integer labels of the three splits, all on one device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None

    def train_batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised training images ``idx`` and their labels, augmented (with ``generator``) when configured."""
        x, y = self.x_train[idx], self.y_train[idx]
        if self.augment is not None:
            if generator is None:
                raise ValueError(f"dataset={self.name} augments its batches: train_batch needs a generator")
            x = self.augment(x, generator)
        return x, y

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Splits":
        """The same splits moved to ``device``."""
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return Splits(**fields)


def default_root() -> str:
    """The data root: ``$SPARSEPROP_DATA`` if set, else ``./data``."""
    return os.environ.get("SPARSEPROP_DATA", "./data")


def cache_dir() -> Path:
    """Where files that cannot be extracted next to read-only originals go."""
    base = os.environ.get("SPARSEPROP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sparseprop")
    return Path(base)


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` examples ``hold_out`` sets aside for a ``fraction``."""
    return int(round(fraction * n))


def hold_out(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Split off ``val_fraction`` of (x, y) as validation with a fixed-seed shuffle: (x_tr, y_tr, x_val, y_val)."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = held_out(n, val_fraction)
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def input_statistics(x: torch.Tensor, bessel: bool = False, chunk: int = 10_000) -> tuple[float, float]:
    """One scalar mean and std over every entry of ``x``, accumulated in float64 (population std unless ``bessel``)."""
    # Chunks of rows in float64: as exact as a float64 copy of the whole set, without its memory.
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start:start + chunk].double().sum().cpu()
    n = x.numel()
    mean = float(total) / n
    squares = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        squares += (x[start:start + chunk].double() - mean).square().sum().cpu()
    return mean, math.sqrt(float(squares) / (n - 1 if bessel else n))


def standardise(mean: float, std: float, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Subtract one scalar mean and divide by one scalar std."""
    return [(t - mean) / std for t in tensors]


def finish_splits(name: str, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
                  num_classes: int, val_fraction: float, split_seed: int, standardise_from: str = "all") -> Splits:
    """Hold out validation from the training images, standardise all three splits and assemble them."""
    if standardise_from not in STANDARDISE:
        raise ConfigError("dataset.standardise", standardise_from, f"one of {', '.join(STANDARDISE)}")
    x_all = x_tr
    x_tr, y_tr, x_val, y_val = hold_out(x_tr, y_tr, val_fraction, split_seed)
    mean, std = input_statistics(x_all) if standardise_from == "all" else input_statistics(x_tr, bessel=True)
    x_tr, x_val, x_te = standardise(mean, std, x_tr, x_val, x_te)
    return Splits(name, x_tr.contiguous(), y_tr.long(), x_val.contiguous(), y_val.long(),
                  x_te.contiguous(), y_te.long(), num_classes)


def check_available(name: str, root: str, download: bool = True) -> None:
    """Make sure ``name``'s files can be had (found, checked, extracted or downloaded) without loading them."""
    DATASETS.get(name, "dataset")
    if name in LOCATORS:
        LOCATORS[name](root, download)


def load(name: str, root: str | None = None, device: torch.device | str = "cpu", **options: object) -> Splits:
    """The splits of dataset ``name`` on ``device``; files are looked for under ``root`` (None: ``default_root()``)."""
    return DATASETS.get(name, "dataset")(root=default_root() if root is None else root, **options).to(device)
