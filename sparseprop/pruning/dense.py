"""No pruning: the dense network, every entry kept."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, Pruned, Pruner, PruneOptions, ScoringData
from sparseprop.pruning.masks import Masks


@dataclass
class DenseOptions(PruneOptions):
    sparsity: float = 0.0

    def check(self) -> None:
        if self.sparsity != 0:
            self.refuse("sparsity", "prune=none removes nothing, so only 0; choose a criterion such as prune=snip "
                                    "or prune=random to remove weights")
        if self.keep is not None:
            self.refuse("keep", "null: prune=none keeps every entry; choose a criterion such as prune=snip to keep a count")


@PRUNERS.register("none", schema=DenseOptions)
class NoPruning(Pruner):
    """Returns no masks, so nothing is zeroed and every gradient flows."""

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        return Pruned(masks)
