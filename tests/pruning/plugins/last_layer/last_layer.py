"""A toy pruning criterion written as a plugin: keep the largest |w| of the last weight layer, prune nothing else.

It lives outside the package on purpose: one module and one YAML (conf/prune/last_layer.yaml) are all
a new criterion needs; ``SPARSEPROP_PLUGINS=<this folder>`` makes sparseprop load both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparseprop.pruning import PRUNERS, Pruned, Pruner, PruneOptions, global_topk, kept_count


@dataclass
class LastLayerOptions(PruneOptions):
    keep_at_least: int = 1  # never keep fewer entries of the last layer than this

    def check(self) -> None:
        super().check()
        if self.keep_at_least < 1:
            self.refuse("keep_at_least", "an integer >= 1")


@PRUNERS.register("last_layer", schema=LastLayerOptions)
class LastLayer(Pruner):
    """``sparsity`` is the fraction of the last weight layer removed, by smallest |w|; every other tensor is kept."""

    def prune(self, model, params, data, masks, generator) -> Pruned:
        last = [name for name in params if name.endswith("weight")][-1]
        w = params[last].detach()
        keep = max(self.options.keep_at_least, kept_count(w.numel(), self.options.sparsity))
        scores = {name: torch.zeros_like(p) for name, p in params.items()}
        scores[last] = w.abs()
        new = {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}
        new[last] = global_topk({last: w.abs()}, keep)[last]
        return Pruned(new, scores)
