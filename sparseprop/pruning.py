"""Pruning at initialisation: connection sensitivity (SNIP), random masks and an exact global top-k."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.registry import Registry

Masks = dict[str, torch.Tensor]
PRUNERS: Registry[Callable[..., Masks | None]] = Registry("prune")
TARGETS = ("labels", "uniform", "self_hard", "self_soft")


def prunable_parameters(model: nn.Module, include_bias: bool = True) -> dict[str, nn.Parameter]:
    """Weights (and optionally biases) of every linear and conv layer, by parameter name; never BatchNorm."""
    out: dict[str, nn.Parameter] = {}
    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            prefix = f"{mod_name}." if mod_name else ""
            out[prefix + "weight"] = module.weight
            if include_bias and module.bias is not None:
                out[prefix + "bias"] = module.bias
    return out


def kept_count(total: int, sparsity: float) -> int:
    """κ = round((1 − sparsity) · m): how many of ``total`` entries a mask keeps."""
    return int(round((1.0 - sparsity) * total))


def _objective(logits: torch.Tensor, y: torch.Tensor, target: str) -> torch.Tensor:
    """Per-example loss used for scoring: cross-entropy against labels or a label-free target."""
    logp = F.log_softmax(logits, dim=1)
    if target == "labels":
        return -logp.gather(1, y[:, None]).squeeze(1)
    if target == "uniform":
        return -logp.mean(dim=1)
    if target == "self_hard":
        return -logp.gather(1, logits.detach().argmax(dim=1, keepdim=True)).squeeze(1)
    if target == "self_soft":
        return -(F.softmax(logits.detach(), dim=1) * logp).sum(dim=1)
    raise ConfigError("prune.target", target, f"choose one of {', '.join(TARGETS)}")


def batch_indices(n: int, batch_size: int, batches: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """Index tensors of scoring batches: all of a shuffled split (``batches=None``) or its first ``batches``."""
    perm = torch.randperm(n, generator=generator)
    chunks = list(perm.split(batch_size))
    if batches is not None:
        if batches > len(chunks):
            raise ConfigError("prune.batches", batches, f"at most {len(chunks)} batches of {batch_size} fit in the training split")
        chunks = chunks[:batches]
    return chunks


def connection_sensitivity(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                           batches: list[torch.Tensor], target: str = "labels", chunk: int = 10_000) -> dict[str, torch.Tensor]:
    """g_j = w_j · Σ_b ∂L_b/∂w_j summed over ``batches`` (L_b the batch-mean loss), in evaluation mode.

    Because the model is in eval mode every example is independent, so the sum of batch means is
    computed in large chunks by weighting each example with 1/|its batch|: the same number, far
    fewer passes.
    """
    was_training = model.training
    model.eval()
    idx = torch.cat(batches)
    weights = torch.cat([torch.full((len(b),), 1.0 / len(b), dtype=torch.float64) for b in batches]).to(x.device, x.dtype)
    idx = idx.to(x.device)
    grads = {k: torch.zeros_like(p) for k, p in params.items()}
    names, tensors = list(params), list(params.values())
    for start in range(0, len(idx), chunk):
        sel = idx[start:start + chunk]
        loss = (_objective(model(x[sel]), y[sel], target) * weights[start:start + chunk]).sum()
        for k, g in zip(names, torch.autograd.grad(loss, tensors)):
            grads[k] += g
    model.train(was_training)
    return {k: (params[k].detach() * grads[k]) for k in names}


def saliency(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """s_j = |g_j| / Σ_k |g_k| over all prunable entries."""
    total = sum(s.abs().sum() for s in scores.values())
    total = total if float(total) > 0 else torch.tensor(1.0)
    return {k: s.abs() / total for k, s in scores.items()}


def global_topk(scores: dict[str, torch.Tensor], keep: int) -> Masks:
    """Boolean masks keeping exactly the ``keep`` highest scores over all tensors; ties go to the earlier entry."""
    flat = torch.cat([s.detach().flatten().double().cpu() for s in scores.values()])
    if not 0 <= keep <= flat.numel():
        raise ValueError(f"keep={keep} outside [0, {flat.numel()}]")
    order = torch.sort(-flat, stable=True).indices
    keep_flat = torch.zeros(flat.numel(), dtype=torch.bool)
    keep_flat[order[:keep]] = True
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


def _parse_batches(batches: object) -> int | None:
    """``all`` -> None (every batch of the split), a positive integer -> that many batches."""
    if isinstance(batches, str) and batches.strip().lower() == "all":
        return None
    if isinstance(batches, bool):
        raise ConfigError("prune.batches", batches, "'all' or a positive integer")
    try:
        n = int(str(batches))
    except (TypeError, ValueError):
        raise ConfigError("prune.batches", batches, "'all' or a positive integer") from None
    if n < 1 or str(n) != str(batches).strip():
        raise ConfigError("prune.batches", batches, "'all' or a positive integer")
    return n


@PRUNERS.register("none")
def _prune_none(**_: object) -> tuple[None, None]:
    return None, None


@PRUNERS.register("random")
def _prune_random(params: dict[str, nn.Parameter], sparsity: float, generator: torch.Generator,
                  **_: object) -> tuple[Masks, None]:
    keep = kept_count(sum(p.numel() for p in params.values()), sparsity)
    return random_masks(params, keep, generator), None


@PRUNERS.register("snip")
def _prune_snip(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                sparsity: float, generator: torch.Generator, batches: object = "all", batch_size: int = 100,
                target: str = "labels", **_: object) -> tuple[Masks, dict[str, torch.Tensor]]:
    chosen = batch_indices(x.shape[0], batch_size, _parse_batches(batches), generator)
    sal = saliency(connection_sensitivity(model, params, x, y, chosen, target))
    keep = kept_count(sum(p.numel() for p in params.values()), sparsity)
    return global_topk(sal, keep), sal


def prune(name: str, **kwargs: object) -> tuple[Masks | None, dict[str, torch.Tensor] | None]:
    """Run pruner ``name``: (masks or None when nothing is pruned, saliency or None)."""
    return PRUNERS.get(name, "prune")(**kwargs)
