"""Optimisers and learning-rate schedules of training, looked up by their registry names."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("train.optimizer")
SCHEDULES: Registry[Callable[..., float]] = Registry("train.schedule")


@OPTIMIZERS.register("sgd")
def _sgd(params: list[nn.Parameter], lr: float, weight_decay: float, **_: Any) -> torch.optim.Optimizer:
    # foreach=True: one fused update for all tensors. torch picks it by default only on CUDA; on
    # the CPU the per-tensor loop costs about a tenth of an MLP-7 step for the same arithmetic.
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=True)


@OPTIMIZERS.register("momentum")
def _momentum(params: list[nn.Parameter], lr: float, weight_decay: float, momentum: float = 0.9,
              nesterov: bool = False, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov, foreach=True)


@SCHEDULES.register("constant")
def constant_lr(step: int, lr: float, **_: Any) -> float:
    """The base learning rate at every step."""
    return lr


@SCHEDULES.register("piecewise")
def piecewise_lr(step: int, lr: float, boundaries: list[int], values: list[float], **_: Any) -> float:
    """``values[i]`` once ``step`` has passed ``i`` boundaries (step counts from 1); ``lr`` is ignored."""
    i = sum(1 for b in boundaries if step > b)
    return float(values[i])


@SCHEDULES.register("cosine")
def cosine_lr(step: int, lr: float, iterations: int, **_: Any) -> float:
    """Cosine decay from ``lr`` at step 0 to 0 at the last step."""
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, iterations) / iterations))


def warmed_up(lr: float, step: int, warmup: int) -> float:
    """``lr`` scaled by step/warmup during the first ``warmup`` steps (linear warm-up; 0 = none), unchanged after."""
    return lr * step / warmup if step < warmup else lr


def check_schedule(cfg: Any) -> None:
    """Raise ConfigError if a piecewise schedule's boundaries and values do not fit together."""
    if cfg.schedule != "piecewise":
        return
    b, v = list(cfg.boundaries), list(cfg["values"])
    if not b or any(not isinstance(x, int) or x < 1 for x in b) or b != sorted(set(b)):
        raise ConfigError("train.boundaries", b, "a non-empty increasing list of positive steps for schedule=piecewise")
    if len(v) != len(b) + 1 or any(not (isinstance(x, (int, float)) and x > 0) for x in v):
        raise ConfigError("train.values", v, f"{len(b) + 1} positive learning rates (one more than boundaries)")
    # Step s uses values[i] once s > boundaries[i - 1], and steps run 1..iterations: a boundary at or past the
    # last step never takes effect (iterations=0 trains nothing, so no schedule applies).
    if cfg.iterations and b[-1] >= cfg.iterations:
        raise ConfigError("train.boundaries", b, f"steps below train.iterations={cfg.iterations} for schedule=piecewise "
                                                 "(a boundary at or after the last step never applies)")


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """The configured optimiser over all parameters; the L2 term l2·Σ(c⊙w)² becomes weight decay 2·l2."""
    return OPTIMIZERS.get(cfg.optimizer, "train.optimizer")(
        list(model.parameters()), lr=cfg.lr, weight_decay=2.0 * cfg.l2, momentum=cfg.momentum, nesterov=cfg.nesterov)


@torch.no_grad()
def l2_term(optimizer: torch.optim.Optimizer) -> float:
    """The L2 term l2·Σ(c⊙w)² of the current weights: weight decay 2·l2 is its gradient, so l2 = decay / 2."""
    # Pruned entries are exactly zero, so the plain sum of squares is the masked one. The per-tensor sums
    # are read back from the device together (one synchronisation, not one per tensor) and added in order.
    return sum(0.5 * group["weight_decay"] * sum(_squares(group["params"])) for group in optimizer.param_groups)


def _squares(params: list[torch.Tensor]) -> list[float]:
    """Σ p² of each tensor in float64, as Python floats."""
    return torch.stack([p.detach().double().square().sum() for p in params]).tolist() if params else []
