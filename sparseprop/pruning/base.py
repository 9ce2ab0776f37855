"""The pruner API: a criterion receives the model, its prunable tensors, the data it may use and the
current masks, and returns new masks with the scores it ranked them by.

A criterion is one module: an ``Options`` schema with its settings and range checks, a ``Pruner``
subclass, and ``@PRUNERS.register(name, schema=...)``; its YAML in ``conf/prune/`` names the schema.
Criteria that score on examples derive their options from ``DataOptions`` and set ``uses_data``: the
runner then hands them the training split of ``prune.dataset`` (the training dataset by default).
Several rounds (iterative pruning) or per-layer budgets live inside ``prune``; the runner only calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from sparseprop.pruning.masks import Masks, kept_count
from sparseprop.pruning.scoring import parse_batches
from sparseprop.registry import Options, Registry


@dataclass
class PruneOptions(Options):
    """Settings every criterion has: how much to remove, and whether biases count as prunable.

    ``keep``, when set, is the number of prunable entries kept (a parameter budget) and ``sparsity`` is not read.
    """

    sparsity: float = 0.9
    include_bias: bool = True
    keep: Optional[int] = None

    def check(self) -> None:
        if not (math.isfinite(self.sparsity) and 0 <= self.sparsity < 1):
            self.refuse("sparsity", "a number in [0, 1)")
        if self.keep is not None and (isinstance(self.keep, bool) or self.keep < 1):
            self.refuse("keep", "null or an integer >= 1 (the number of prunable entries kept)")

    def kept(self, total: int) -> int:
        """How many of ``total`` prunable entries the mask keeps: ``keep``, or round((1 − sparsity) · total).

        A ConfigError when ``keep`` is more than there are.
        """
        if self.keep is None:
            return kept_count(total, self.sparsity)
        if self.keep > total:
            self.refuse("keep", f"null or an integer in [1, {total:,}]: the network has {total:,} prunable parameters"
                                f"{'' if self.include_bias else ' (weights only: include_bias=false)'}")
        return int(self.keep)


@dataclass
class DataOptions(PruneOptions):
    """Settings of a criterion that scores on training examples, summed over batches."""

    batches: Any = "all"
    batch_size: int = 100
    dataset: Optional[str] = None

    def check(self) -> None:
        super().check()
        parse_batches(self.batches)
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            self.refuse("batch_size", "an integer >= 1")

    def scored_examples(self, n_train: int) -> int:
        """How many training examples the scores are summed over."""
        batches = parse_batches(self.batches)
        return n_train if batches is None else min(n_train, batches * self.batch_size)

    def check_split(self, n_train: int, dataset: str) -> None:
        """Refuse batches that do not fit the ``n_train`` examples of the scoring split of ``dataset``."""
        if self.batch_size > n_train:
            self.refuse("batch_size", f"at most {n_train:,}: the training split of dataset={dataset} holds {n_train:,} examples")
        batches = parse_batches(self.batches)
        fit = -(-n_train // self.batch_size)
        if batches is not None and batches > fit:
            self.refuse("batches", f"all or at most {fit:,}: that many batches of {self.batch_size} cover "
                                   f"dataset={dataset}'s training split")


@dataclass
class ScoringData:
    """The examples a data-driven criterion may score on: a training split, on the model's device."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class Pruned:
    """What a criterion returns: masks (None: nothing pruned) and the per-entry scores it ranked by (or None)."""

    masks: Masks | None
    scores: dict[str, torch.Tensor] | None = None


class Pruner:
    """A pruning criterion configured by its options; ``prune`` does the work."""

    uses_data: ClassVar[bool] = False

    def __init__(self, options: PruneOptions) -> None:
        self.options = options

    def keep(self, params: dict[str, nn.Parameter]) -> int:
        """How many prunable entries the mask keeps: ``keep`` if set, else round((1 − sparsity) · m)."""
        return self.options.kept(sum(p.numel() for p in params.values()))

    def scored_examples(self, n_train: int) -> int:
        """How many training examples scoring passes through the network (0 for data-free criteria)."""
        return 0

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        """Masks for ``params`` (the model's prunable tensors, by name), starting from ``masks`` (None: dense)."""
        raise NotImplementedError


class DataPruner(Pruner):
    """A criterion that scores on training examples (its options derive from DataOptions)."""

    uses_data = True
    options: DataOptions

    def scored_examples(self, n_train: int) -> int:
        return self.options.scored_examples(n_train)


PRUNERS: Registry[type[Pruner]] = Registry("prune", group="prune")


def make_pruner(node: Any) -> Pruner:
    """The pruner a composed ``prune`` config node chooses, with its options checked."""
    options = PRUNERS.options(node)
    return PRUNERS.get(options.name, "prune.name")(options)
