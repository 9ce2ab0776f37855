"""Random pruning: a uniformly random global mask that keeps as many entries as any other criterion."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, Pruned, Pruner, PruneOptions, ScoringData
from sparseprop.pruning.masks import Masks, random_masks


@dataclass
class RandomOptions(PruneOptions):
    """Only how much to remove, and whether biases count."""


@PRUNERS.register("random", schema=RandomOptions)
class RandomPruner(Pruner):
    """Every set of kept entries of the right size is equally likely; no scores."""

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        return Pruned(random_masks(params, self.keep(params), generator))
