"""Criteria that rank entries by a score: one shot or in rounds, with a global or per-tensor budget.

A scored criterion implements ``score``: a score per entry of every prunable tensor of the network
as it stands (pruned entries already zero), and the ranking key derived from it (higher is kept; for
most criteria the score itself). ``ScoredPruner.prune`` does the rest:

- one round (``rounds: 1``): rank, keep κ entries (``budgets.select``);
- ``rounds: R``: R rounds whose kept counts follow ``schedule`` from all entries down to κ
  (exponential by default: κ_r = m (κ/m)^(r/R)); each round zeroes the entries pruned so far,
  rescores the masked network and keeps the κ_r best of the entries still alive. A criterion
  that lets pruned entries return (``resurrect``, FORCE) ranks every entry instead, scoring a pruned
  one at its initial value.

The network is left as it came: its weights are restored after every round, and the runner zeroes
the pruned entries of the final mask.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparseprop.pruning.base import DataOptions, DataPruner, Pruned, Pruner, PruneOptions, ScoringData
from sparseprop.pruning.budgets import BUDGETS, SCHEDULES, select
from sparseprop.pruning.masks import Masks


def _check_rounds(options: PruneOptions) -> None:
    rounds = getattr(options, "rounds")
    if isinstance(rounds, bool) or rounds < 1:
        options.refuse("rounds", "an integer >= 1 (1 = one-shot pruning)")
    if getattr(options, "schedule") not in SCHEDULES:
        options.refuse("schedule", f"choose one of {', '.join(SCHEDULES)}")


def check_budget(options: PruneOptions) -> None:
    """Refuse a ``budget`` that is not one of BUDGETS."""
    if getattr(options, "budget") not in BUDGETS:
        options.refuse("budget", f"choose one of {', '.join(BUDGETS)}")


@dataclass
class RoundsOptions:
    """The settings every scored criterion adds: where the kept entries go, and in how many rounds."""

    budget: str = "global"
    rounds: int = 1
    schedule: str = "exponential"

    def check_rounds(self) -> None:
        check_budget(self)
        _check_rounds(self)


@dataclass
class ScoredOptions(RoundsOptions, PruneOptions):
    """A data-free scored criterion: its budget and its rounds."""

    def check(self) -> None:
        super().check()
        self.check_rounds()


@dataclass
class ScoredDataOptions(RoundsOptions, DataOptions):
    """A scored criterion that scores on training examples: its budget and its rounds."""

    def check(self) -> None:
        super().check()
        self.check_rounds()


@dataclass
class Scores:
    """One round's scores: what is recorded (the criterion's own score) and what is ranked (higher is kept)."""

    score: dict[str, torch.Tensor]
    ranking: dict[str, torch.Tensor] | None = None

    @property
    def rank(self) -> dict[str, torch.Tensor]:
        return self.ranking if self.ranking is not None else self.score


class Float64Twin:
    """A float64 copy of a network, made once and refreshed from the network's current values before each use.

    Rounds of iterative pruning rescore the same network with more entries at zero: copying its values
    into one float64 copy costs a fraction of a deep copy per round.
    """

    def __init__(self, model: nn.Module) -> None:
        self.of = model
        self.twin = copy.deepcopy(model).double()
        self.named = dict(self.twin.named_parameters())

    def refreshed(self, params: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        """(the copy holding the network's current parameters and buffers, its tensors under the names of ``params``)."""
        with torch.no_grad():
            for mine, theirs in ((self.twin.parameters(), self.of.parameters()), (self.twin.buffers(), self.of.buffers())):
                for a, b in zip(mine, theirs):
                    a.copy_(b)
        return self.twin, {k: self.named[k] for k in params}


class ScoredMixin:
    """The round loop shared by data-free and data-driven scored criteria."""

    # Whether a round may keep entries pruned by an earlier one (FORCE); they are then scored at their initial value.
    resurrect: ClassVar[bool] = False
    options: ScoredOptions
    cache: dict[str, Any]

    def __init__(self, options: PruneOptions) -> None:
        super().__init__(options)  # type: ignore[call-arg]
        self.cache = {}

    def score(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              initial: dict[str, torch.Tensor], generator: torch.Generator) -> Scores:
        """The scores of the network as it stands; ``initial`` holds every entry's value before pruning."""
        raise NotImplementedError

    def prune(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              masks: Masks | None, generator: torch.Generator) -> Pruned:
        o = self.options
        keep = self.keep(params)
        total = sum(int(m.sum()) for m in masks.values()) if masks else sum(p.numel() for p in params.values())
        counts = SCHEDULES[o.schedule](total, keep, o.rounds)
        initial = {k: p.detach().clone() for k, p in params.items()}
        current = masks
        scores = None
        self.cache = {}  # what a criterion keeps from one round to the next (a float64 copy): this call's only
        try:
            for count in counts:
                if current is not None:
                    with torch.no_grad():
                        for k, p in params.items():
                            p.copy_(initial[k] * current[k])
                scores = self.score(model, params, data, initial, generator)
                ranking = {k: r.detach().double() for k, r in scores.rank.items()}
                alive = None
                if current is not None and not self.resurrect:
                    alive = current
                    ranking = {k: r.masked_fill(~current[k].to(r.device), float("-inf")) for k, r in ranking.items()}
                current = select(ranking, count, o.budget, alive)
        finally:
            self.cache = {}
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(initial[k])
        return Pruned(current, scores.score if scores is not None else None)


class ScoredPruner(ScoredMixin, Pruner):
    """A data-free scored criterion (magnitude, SynFlow)."""


class ScoredDataPruner(ScoredMixin, DataPruner):
    """A scored criterion that scores on training examples (SNIP, GraSP)."""

    def scored_examples(self, n_train: int) -> int:
        return self.options.scored_examples(n_train) * self.options.rounds
