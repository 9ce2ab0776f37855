"""Masks: the prunable tensors, exact global top-k selection, and keeping pruned entries at zero."""

from __future__ import annotations

import torch
from torch import nn

from sparseprop import models

Masks = dict[str, torch.Tensor]


def prunable_parameters(model: nn.Module, include_bias: bool = True) -> dict[str, nn.Parameter]:
    """The tensors a mask covers, as the model's contract states them: weights, biases if ``include_bias``; never BatchNorm."""
    return models.prunable_parameters(model, include_bias)


def kept_count(total: int, sparsity: float) -> int:
    """κ = round((1 − sparsity) · m): how many of ``total`` entries a mask keeps."""
    return int(round((1.0 - sparsity) * total))


def saliency(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """s_j = |g_j| / Σ_k |g_k| over all prunable entries."""
    total = sum(s.abs().sum() for s in scores.values())
    total = total if float(total) > 0 else torch.tensor(1.0)
    return {k: s.abs() / total for k, s in scores.items()}


def global_topk(scores: dict[str, torch.Tensor], keep: int) -> Masks:
    """Boolean masks keeping exactly the ``keep`` highest scores over all tensors; ties go to the earlier entry.

    The result is that of a stable descending sort of all scores (NaN last), cut after ``keep``:
    every score above the ``keep``-th largest, then the earliest entries equal to it. It is found in
    linear time, ``kthvalue`` for the cut and a count of the entries above it, not by sorting.
    """
    flat = torch.cat([s.detach().flatten().double().cpu() for s in scores.values()])
    n = flat.numel()
    if not 0 <= keep <= n:
        raise ValueError(f"keep={keep} outside [0, {n}]")
    neg = flat.neg_()  # ascending order of neg is the descending order of the scores
    # Entries scored −inf (pruned in an earlier round of iterative pruning) come last but for NaN:
    # the cut is looked for among the others alone, a small share of them in late rounds.
    live = neg < float("inf")  # neither −inf nor NaN
    n_live = int(live.sum())
    if keep == 0:
        cut = neg.new_tensor(float("-inf"))
    elif keep > n_live:
        cut = neg.new_tensor(float("inf"))
    else:
        cut = (neg if n_live == n else neg[live]).kthvalue(keep).values
    keep_flat = neg < cut
    equal = neg == cut
    need = keep - int(keep_flat.sum())
    n_equal = int(equal.sum())
    if need >= n_equal:
        keep_flat |= equal
        if need > n_equal:  # every score but NaN is kept, and the earliest NaN make up the count
            keep_flat[torch.nonzero(torch.isnan(neg)).flatten()[:need - n_equal]] = True
    else:
        keep_flat[torch.nonzero(equal).flatten()[:need]] = True
    masks, start = {}, 0
    for k, s in scores.items():
        masks[k] = keep_flat[start:start + s.numel()].view_as(s).to(s.device)
        start += s.numel()
    return masks


def random_masks(params: dict[str, torch.Tensor], keep: int, generator: torch.Generator) -> Masks:
    """A uniformly random global mask keeping exactly ``keep`` entries."""
    sizes = [p.numel() for p in params.values()]
    scores = torch.rand(sum(sizes), generator=generator, dtype=torch.float64)
    split = dict(zip(params, scores.split(sizes)))
    return global_topk({k: split[k].view_as(p) for k, p in params.items()}, keep)


@torch.no_grad()
def apply_masks(params: dict[str, torch.Tensor], masks: Masks) -> None:
    """Zero every pruned entry in place."""
    for k, m in masks.items():
        params[k].mul_(m)


def mask_gradients(params: dict[str, nn.Parameter], masks: Masks) -> None:
    """Zero the gradients of pruned entries, so no optimiser state can ever move them."""
    for k, m in masks.items():
        g = params[k].grad
        if g is not None:
            g.mul_(m)
