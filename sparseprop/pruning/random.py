"""Random pruning: uniformly random masks keeping as many entries as any other criterion, placed
globally or with a per-tensor budget (uniform, or Erdős–Rényi-kernel)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, Pruned, Pruner, PruneOptions, ScoringData
from sparseprop.pruning.budgets import select
from sparseprop.pruning.masks import Masks
from sparseprop.pruning.scored import check_budget


@dataclass
class RandomOptions(PruneOptions):
    """How much to remove, whether biases count, and where the kept entries go."""

    budget: str = "global"

    def check(self) -> None:
        super().check()
        check_budget(self)


@PRUNERS.register("random", schema=RandomOptions)
class RandomPruner(Pruner):
    """Within its budget every set of kept entries of the right size is equally likely; no scores.

    ``global``: one uniformly random set of κ entries over all tensors; ``uniform`` and ``erk``: tensor
    l keeps a uniformly random set of its budget's κ_l entries.
    """

    options: RandomOptions

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        sizes = [p.numel() for p in params.values()]
        draws = torch.rand(sum(sizes), generator=generator, dtype=torch.float64)
        ranking = {k: d.view_as(p) for (k, p), d in zip(params.items(), draws.split(sizes))}
        return Pruned({k: m.to(params[k].device) for k, m in select(ranking, self.keep(params), self.options.budget).items()})
