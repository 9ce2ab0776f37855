"""SNIP: connection sensitivity |w · ∂L/∂w| summed over scoring batches, one global top-k (PAPER.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, DataOptions, DataPruner, Pruned, ScoringData
from sparseprop.pruning.masks import Masks, global_topk, saliency
from sparseprop.pruning.scoring import TARGETS, batch_indices, check_signal, parse_batches, sensitivity_and_scale


@dataclass
class SnipOptions(DataOptions):
    target: str = "labels"

    def check(self) -> None:
        super().check()
        if self.target not in TARGETS:
            self.refuse("target", f"choose one of {', '.join(TARGETS)}")


@PRUNERS.register("snip", schema=SnipOptions)
class Snip(DataPruner):
    """Keeps the entries of largest normalised connection sensitivity s_j = |g_j| / Σ_k |g_k|."""

    options: SnipOptions

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        o = self.options
        chosen = batch_indices(data.x.shape[0], o.batch_size, parse_batches(o.batches), generator)
        scores, scale = sensitivity_and_scale(model, params, data.x, data.y, chosen, o.target)
        check_signal(scores, scale, o.target)
        sal = saliency(scores)
        return Pruned(global_topk(sal, self.keep(params)), sal)
