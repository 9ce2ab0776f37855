"""Data-driven scores: SNIP's connection sensitivity under its scoring losses, the batches it sums over, and the check that scores carry signal."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.models.base import activations_per_example, measuring, norm_mode
from sparseprop.errors import ConfigError, NoSignalError

TARGETS = ("labels", "uniform", "self_hard", "self_soft")


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

# With running statistics the scoring batches are put through the network in chunks of at most
# SCORING_CHUNK examples, fewer where a chunk's float32 activations and their gradients would exceed SCORING_BYTES.
SCORING_CHUNK = 10_000
SCORING_BYTES = 512 * 2**20
# On a CPU, convolutions over a pass whose activations overflow the caches run slower per example: LeNet-5's
# forward and backward over 1,000 examples took 0.61 s in one pass and 0.45 s in passes of 250 (1 thread).
# Networks with convolutions therefore score in passes of at most CPU_CONV_BYTES of activations there.
CPU_CONV_BYTES = 48 * 2**20


def scoring_chunk(per_example: int, conv_on_cpu: bool = False) -> int:
    """Examples per scoring pass of a network with ``per_example`` activations per example."""
    budget = CPU_CONV_BYTES if conv_on_cpu else SCORING_BYTES
    return max(1, min(SCORING_CHUNK, budget // (8 * max(1, per_example))))


def _conv_on_cpu(model: nn.Module, x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def _objective(logits: torch.Tensor, y: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example scoring loss (cross-entropy against labels or a label-free target) and its gradient's term sizes."""
    if target not in OBJECTIVES:
        raise ConfigError("prune.target", target, f"choose one of {', '.join(TARGETS)}")
    return OBJECTIVES[target](logits, y)


def batch_indices(n: int, batch_size: int, batches: int | None, generator: torch.Generator) -> list[torch.Tensor]:
    """Index tensors of scoring batches: all of a shuffled split (``batches=None``) or its first ``batches``."""
    perm = torch.randperm(n, generator=generator)
    if batches is None:
        return list(perm.split(batch_size))
    fit = -(-n // batch_size)
    if batches > fit:
        raise ConfigError("prune.batches", batches, f"at most {fit} batches of {batch_size} fit in the training split")
    # Only the batches used are split off: a round of iterative SNIP takes one batch of a split of 54,000.
    return list(perm[:batches * batch_size].split(batch_size))


def connection_sensitivity(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                           batches: list[torch.Tensor], target: str = "labels", chunk: int | None = None) -> dict[str, torch.Tensor]:
    """g_j = w_j · Σ_b ∂L_b/∂w_j summed over ``batches`` (L_b the batch-mean loss), in evaluation mode."""
    return sensitivity_and_scale(model, params, x, y, batches, target, chunk)[0]


def sensitivity_and_scale(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                          batches: list[torch.Tensor], target: str = "labels",
                          chunk: int | None = None,
                          at: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(connection sensitivity g_j as above, the same with the logit gradient replaced by the size of its terms).

    ``at`` (None: the parameters' own values) are the values the gradients are multiplied by: FORCE
    scores a pruned entry (zero in the network) by its initial value times the gradient there.

    BatchNorm is treated as the model's ``NORM_MODE`` says (``models.base.measuring``). With running
    statistics every example is independent, so the sum of batch means is computed in large chunks
    by weighting each example with 1/|its batch|: the same number, far fewer passes. With batch
    statistics an example's output depends on the batch it is in, so each scoring batch is its own
    pass. ``chunk`` (None: ``scoring_chunk``) is the examples per pass with running statistics. The
    second result is the scale against which ``check_signal`` judges rounding.
    """
    if chunk is None:
        chunk = scoring_chunk(activations_per_example(model, tuple(x.shape[1:])), _conv_on_cpu(model, x))
    with measuring(model):
        per_batch = norm_mode(model) == "batch"
        return _sensitivity_and_scale(model, params, x, y, batches, target, chunk, per_batch, at)[:2]


def checked_sensitivity(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                        batches: list[torch.Tensor], target: str = "labels",
                        at: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The connection sensitivity of ``sensitivity_and_scale``, after ``check_signal`` on its first pass.

    Whether a loss carries signal above rounding is a property of each example's logit gradient, so
    the check needs the term sizes of one pass, not of all: the first scoring batch (or the first
    chunk of it) is put through on its own, and the second backward the check costs runs on it alone.
    """
    chunk = scoring_chunk(activations_per_example(model, tuple(x.shape[1:])), _conv_on_cpu(model, x))
    with measuring(model):
        per_batch = norm_mode(model) == "batch"
        scores, scale, first = _sensitivity_and_scale(model, params, x, y, batches, target, chunk, per_batch, at,
                                                      scale_passes=1)
    check_signal(first, scale, target)
    return scores


def _sensitivity_and_scale(model: nn.Module, params: dict[str, nn.Parameter], x: torch.Tensor, y: torch.Tensor,
                           batches: list[torch.Tensor], target: str, chunk: int,
                           per_batch: bool, at: dict[str, torch.Tensor] | None = None, scale_passes: int | None = None
                           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(scores, the scale of the first ``scale_passes`` passes (None: all), the scores of those passes alone)."""
    idx = torch.cat(batches)
    weights = torch.cat([torch.full((len(b),), 1.0 / len(b), dtype=torch.float64) for b in batches]).to(x.device, x.dtype)
    idx = idx.to(x.device)
    grads = {k: torch.zeros_like(p) for k, p in params.items()}
    scale = {k: torch.zeros_like(p) for k, p in params.items()}
    names, tensors = list(params), list(params.values())
    # The forward passes: slices of the concatenated batches, ``chunk`` examples each, or one per batch.
    if per_batch:
        pass_sizes = [len(b) for b in batches]
    elif scale_passes is not None:  # the check's pass is the first batch (or chunk); the rest in chunks
        head = min(chunk, len(batches[0]))
        pass_sizes = [head] + [chunk] * (-(-(len(idx) - head) // chunk))
    else:
        pass_sizes = [chunk] * (-(-len(idx) // chunk))
    start = 0
    scaled = len(pass_sizes) if scale_passes is None else min(scale_passes, len(pass_sizes))
    for i, size in enumerate(pass_sizes):
        sel, w = idx[start:start + size], weights[start:start + size]
        start += size
        logits = model(x[sel])
        per_example, sizes = _objective(logits, y[sel], target)
        for k, g in zip(names, torch.autograd.grad((per_example * w).sum(), tensors, retain_graph=i < scaled)):
            grads[k] += g
        if i < scaled:
            # Back-propagating the term sizes (≥ 0) as if they were the logit gradient gives the scores
            # the same network would get from a loss whose gradient kept the full size of its terms.
            for k, g in zip(names, torch.autograd.grad((logits * (sizes * w[:, None])).sum(), tensors)):
                scale[k] += g
            if i == scaled - 1:
                first = {k: g.clone() for k, g in grads.items()}
    values = {k: (at[k] if at is not None else params[k]).detach() for k in names}
    return ({k: values[k] * grads[k] for k in names}, {k: values[k] * scale[k] for k in names},
            {k: values[k] * first[k] for k in names})


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


def parse_batches(batches: object) -> int | None:
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
