"""Magnitude pruning at initialisation: keep the entries of largest |w|."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.pruning.base import PRUNERS, ScoringData
from sparseprop.pruning.scored import ScoredOptions, ScoredPruner, Scores


def magnitude_scores(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """|w| for every entry of every tensor."""
    return {k: p.detach().abs() for k, p in params.items()}


@dataclass
class MagnitudeOptions(ScoredOptions):
    """Magnitude's settings: the budget (global or per tensor); rounds change nothing for |w| but are allowed."""


@PRUNERS.register("magnitude", schema=MagnitudeOptions)
class Magnitude(ScoredPruner):
    """Scores s_j = |w_j|; a data-free baseline whose ranking within a tensor is that of its initial draw."""

    options: MagnitudeOptions

    def score(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              initial: dict[str, torch.Tensor], generator: torch.Generator) -> Scores:
        return Scores(magnitude_scores(params))
