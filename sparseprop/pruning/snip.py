"""SNIP: connection sensitivity |w · ∂L/∂w| summed over scoring batches, one global top-k (PAPER.md);
and its iterative forms (de Jorge et al. 2021): Iterative SNIP, and FORCE, which lets pruned entries return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, ScoringData
from sparseprop.pruning.masks import saliency
from sparseprop.pruning.scored import ScoredDataOptions, ScoredDataPruner, Scores
from sparseprop.pruning.scoring import TARGETS, batch_indices, checked_sensitivity, parse_batches

VARIANTS = ("iterative", "force")


@dataclass
class SnipOptions(ScoredDataOptions):
    target: str = "labels"

    def check(self) -> None:
        super().check()
        if self.target not in TARGETS:
            self.refuse("target", f"choose one of {', '.join(TARGETS)}")


@PRUNERS.register("snip", schema=SnipOptions)
class Snip(ScoredDataPruner):
    """Keeps the entries of largest normalised connection sensitivity s_j = |g_j| / Σ_k |g_k|.

    With ``rounds`` > 1 every round rescores the network with the entries pruned so far at zero and
    fresh scoring batches (Iterative SNIP).
    """

    options: SnipOptions

    def score(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              initial: dict[str, torch.Tensor], generator: torch.Generator) -> Scores:
        o = self.options
        chosen = batch_indices(data.x.shape[0], o.batch_size, parse_batches(o.batches), generator)
        at = initial if self.resurrect else None
        return Scores(saliency(checked_sensitivity(model, params, data.x, data.y, chosen, o.target, at=at)))


@dataclass
class IterativeSnipOptions(SnipOptions):
    """Iterative SNIP's defaults: 100 rounds on the exponential schedule, one scoring batch of 100 per round."""

    rounds: int = 100
    batches: Any = 1
    variant: str = "iterative"

    def check(self) -> None:
        super().check()
        if self.variant not in VARIANTS:
            self.refuse("variant", f"choose one of {', '.join(VARIANTS)} (force: pruned entries may return)")


@PRUNERS.register("iterative_snip", schema=IterativeSnipOptions)
class IterativeSnip(Snip):
    """SNIP in rounds (de Jorge et al. 2021). ``variant=iterative``: a pruned entry stays pruned and
    only the entries still alive are ranked. ``variant=force`` (FORCE): every entry is ranked in every
    round by |θ₀ · ∂L/∂w| at the masked network, θ₀ its initial value, so a pruned entry may return."""

    options: IterativeSnipOptions

    @property
    def resurrect(self) -> bool:  # type: ignore[override]
        return self.options.variant == "force"
