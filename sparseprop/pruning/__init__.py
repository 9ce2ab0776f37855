"""Pruning at initialisation: connection sensitivity (SNIP), random masks and an exact global top-k."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.errors import ConfigError, NoSignalError
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


def _cross_entropy(logp: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−Σ_c t_c log p_c per example, and the size of the terms of its logit gradient p − t: p + |t|."""
    return -(target * logp).sum(dim=1), logp.exp() + target.abs()


def _labels(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _cross_entropy(F.log_softmax(logits, dim=1), F.one_hot(y, logits.shape[1]).to(logits.dtype))


def _uniform(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _cross_entropy(F.log_softmax(logits, dim=1), torch.full_like(logits, 1.0 / logits.shape[1]))


def _self_hard(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    predicted = F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).to(logits.dtype)
    return _cross_entropy(F.log_softmax(logits, dim=1), predicted)


def _self_soft(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # The cross-entropy of the prediction p against itself, differentiated through both factors:
    # the entropy H(p) = −Σ_c p_c log p_c. With the target detached instead, the gradient with
    # respect to the logits would be p − p = 0, and the scores would be rounding noise. Its
    # gradient −p_j (log p_j + H) is the difference of terms of size p_j |log p_j| and p_j H.
    logp = F.log_softmax(logits, dim=1)
    p = logp.exp()
    entropy = -(p * logp).sum(dim=1)
    return entropy, (p * (logp.abs() + entropy[:, None])).detach()


# Per-example scoring losses: each returns (loss per example, the size of the terms whose difference
# is its gradient with respect to the logits, detached), the latter for the rounding check below.
OBJECTIVES: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    "labels": _labels, "uniform": _uniform, "self_hard": _self_hard, "self_soft": _self_soft}

# The scores must exceed the rounding scale (below) by this factor: a total within a hundred units
# of rounding of the terms it is made of has at most its first two digits of signal. On MNIST
# MLP-7s at every init and activation the four targets exceed the scale by 6e4 or more (3e5 on the
# orthogonal MLP-3/5/7s of E5); a loss whose gradient cancels exactly stays below 1 (see the tests).
SIGNAL_FACTOR = 100.0


def _objective(logits: torch.Tensor, y: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example scoring loss (cross-entropy against labels or a label-free target) and its gradient's term sizes."""
    if target not in OBJECTIVES:
        raise ConfigError("prune.target", target, f"choose one of {', '.join(TARGETS)}")
    return OBJECTIVES[target](logits, y)


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
    """g_j = w_j · Σ_b ∂L_b/∂w_j summed over ``batches`` (L_b the batch-mean loss), in evaluation mode."""
    return sensitivity_and_scale(model, params, x, y, batches, target, chunk)[0]


def sensitivity_and_scale(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                          batches: list[torch.Tensor], target: str = "labels",
                          chunk: int = 10_000) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(connection sensitivity g_j as above, the same with the logit gradient replaced by the size of its terms).

    Because the model is in eval mode every example is independent, so the sum of batch means is
    computed in large chunks by weighting each example with 1/|its batch|: the same number, far
    fewer passes. The second result is the scale against which ``check_signal`` judges rounding.
    """
    was_training = model.training
    model.eval()
    idx = torch.cat(batches)
    weights = torch.cat([torch.full((len(b),), 1.0 / len(b), dtype=torch.float64) for b in batches]).to(x.device, x.dtype)
    idx = idx.to(x.device)
    grads = {k: torch.zeros_like(p) for k, p in params.items()}
    scale = {k: torch.zeros_like(p) for k, p in params.items()}
    names, tensors = list(params), list(params.values())
    for start in range(0, len(idx), chunk):
        sel = idx[start:start + chunk]
        w = weights[start:start + chunk]
        logits = model(x[sel])
        per_example, sizes = _objective(logits, y[sel], target)
        for k, g in zip(names, torch.autograd.grad((per_example * w).sum(), tensors, retain_graph=True)):
            grads[k] += g
        # Back-propagating the term sizes (≥ 0) as if they were the logit gradient gives the scores
        # the same network would get from a loss whose gradient kept the full size of its terms.
        for k, g in zip(names, torch.autograd.grad((logits * (sizes * w[:, None])).sum(), tensors)):
            scale[k] += g
    model.train(was_training)
    return ({k: (params[k].detach() * grads[k]) for k in names},
            {k: (params[k].detach() * scale[k]) for k in names})


def check_signal(scores: dict[str, torch.Tensor], scale: dict[str, torch.Tensor], target: str) -> None:
    """Raise NoSignalError when Σ|g_j| is within ``SIGNAL_FACTOR`` rounding units of the scale's Σ|g_j|.

    The logit gradient of every scoring loss is a difference of terms (p − t, or the entropy's
    p log p + p H). Rounding makes each computed difference wrong by a few units of eps relative to
    the size of its terms, and everything after the logits is linear in that gradient, so a loss
    whose true gradient is no larger than eps times its terms (the cross-entropy against the
    net's own detached prediction, p − p = 0) yields scores of the size eps · (the scores of the
    term sizes). Such scores decide the mask by rounding. Biases at zero legitimately score exactly
    0, so only the total is checked.
    """
    dtype = next(iter(scores.values())).dtype
    total = float(sum(s.double().abs().sum() for s in scores.values()))
    level = torch.finfo(dtype).eps * float(sum(s.double().abs().sum() for s in scale.values()))
    if not total > SIGNAL_FACTOR * level:
        raise NoSignalError(
            f"prune.target={target}: the criterion carries no signal for this net (total saliency {total:.3g} is "
            f"within {SIGNAL_FACTOR:.0f}x its {str(dtype).removeprefix('torch.')} rounding level {level:.3g}); "
            "choose another prune.target")


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
    scores, scale = sensitivity_and_scale(model, params, x, y, chosen, target)
    check_signal(scores, scale, target)
    sal = saliency(scores)
    keep = kept_count(sum(p.numel() for p in params.values()), sparsity)
    return global_topk(sal, keep), sal


def prune(name: str, **kwargs: object) -> tuple[Masks | None, dict[str, torch.Tensor] | None]:
    """Run pruner ``name``: (masks or None when nothing is pruned, saliency or None)."""
    return PRUNERS.get(name, "prune")(**kwargs)
