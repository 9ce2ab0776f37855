"""Where a mask's κ kept entries go: one global top-κ, or a budget per prunable tensor.

``global`` ranks every entry of every tensor together. The per-tensor budgets first give tensor l a
count κ_l (Σ κ_l = κ exactly) and then keep the κ_l best entries inside it:

- ``uniform``: every tensor keeps the same fraction, κ_l ∝ n_l (n_l its entries);
- ``erk`` (Erdős–Rényi-kernel, Evci et al. 2020): the density of tensor l is proportional to
  Σ_i d_i / Π_i d_i over its dimensions d (in + out + kernel height + kernel width over their product
  for a conv kernel), so κ_l ∝ Σ_i d_i. A bias (one dimension) has ratio 1 and is kept whole unless κ is tiny.

A tensor never receives more than it can hold (its entries, or the entries still alive when a
round of iterative pruning may not bring pruned ones back): the real allocation is ε·a_l capped at
c_l, with ε chosen so that the capped allocations sum to κ (water filling), and the integer counts
are its floors plus one for the largest remainders, so they sum to κ exactly.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

from sparseprop.pruning.masks import Masks, global_topk

BUDGETS = ("global", "uniform", "erk")


def budget_weights(shapes: Mapping[str, torch.Size], budget: str) -> dict[str, float]:
    """a_l: the weight of each tensor in the allocation, κ_l ∝ a_l before capping."""
    if budget == "uniform":
        return {k: float(math.prod(s)) for k, s in shapes.items()}
    if budget == "erk":
        return {k: float(sum(s)) for k, s in shapes.items()}
    raise ValueError(f"budget {budget!r} has no per-tensor weights: choose uniform or erk")


def allocate(weights: Mapping[str, float], capacity: Mapping[str, int], keep: int) -> dict[str, int]:
    """Integer counts κ_l ≤ capacity_l with Σ κ_l = keep, proportional to ``weights`` where no cap binds."""
    if keep > sum(capacity.values()):
        raise ValueError(f"keep={keep} exceeds the {sum(capacity.values())} entries available")
    capped: set[str] = set()
    while True:
        free = [k for k in weights if k not in capped and capacity[k] > 0]
        room = keep - sum(capacity[k] for k in capped)
        total = sum(weights[k] for k in free)
        eps = room / total if total > 0 else 0.0
        over = {k for k in free if eps * weights[k] >= capacity[k]}
        if not over:
            break
        capped |= over
    real = {k: float(capacity[k]) if k in capped else (eps * weights[k] if k in free else 0.0) for k in weights}
    counts = {k: min(capacity[k], int(math.floor(v))) for k, v in real.items()}
    short = keep - sum(counts.values())
    # The largest remainders get one more, earlier tensors first among equals.
    order = sorted((k for k in weights if counts[k] < capacity[k]), key=lambda k: -(real[k] - counts[k]))
    for k in order[:short]:
        counts[k] += 1
    if sum(counts.values()) != keep:  # only reachable if rounding left a gap larger than the tensors' room
        raise AssertionError(f"allocation of {keep} entries came to {sum(counts.values())}")
    return counts


def select(ranking: Mapping[str, torch.Tensor], keep: int, budget: str = "global",
           alive: Masks | None = None) -> Masks:
    """Keep the ``keep`` highest-ranked entries: globally, or per tensor with ``budget``'s counts.

    ``alive`` (None: every entry) limits each tensor's count to its alive entries; entries that are
    not alive should already rank −inf, so they are chosen only if a global count demands it.
    Ties go to the earlier entry, so the result is deterministic.
    """
    if budget == "global":
        return global_topk(dict(ranking), keep)
    shapes = {k: r.shape for k, r in ranking.items()}
    capacity = {k: int(alive[k].sum()) if alive is not None else r.numel() for k, r in ranking.items()}
    counts = allocate(budget_weights(shapes, budget), capacity, keep)
    return {k: global_topk({k: r}, counts[k])[k] for k, r in ranking.items()}


def exponential_schedule(total: int, keep: int, rounds: int) -> list[int]:
    """Kept counts after each of ``rounds`` rounds: total · (keep/total)^(r/rounds), ending exactly at ``keep``."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: at least 1")
    ratio = keep / total if total else 1.0
    counts = [int(round(total * ratio ** (r / rounds))) for r in range(1, rounds)] + [keep]
    return [max(keep, c) for c in counts]


def linear_schedule(total: int, keep: int, rounds: int) -> list[int]:
    """Kept counts after each round, removing the same number of entries in every round."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: at least 1")
    return [int(round(total - (total - keep) * r / rounds)) for r in range(1, rounds)] + [keep]


SCHEDULES = {"exponential": exponential_schedule, "linear": linear_schedule}
