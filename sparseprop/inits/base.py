"""The INITS registry, fans of a weight, the inits' shape checks, and ``initialise``: one init applied to every weight
layer of a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sparseprop.models.base import weight_layers
from sparseprop.registry import Options, Registry

INITS: Registry[Callable[..., None]] = Registry("init", group="init")
FAN_MODES = ("fan_in", "fan_out", "fan_avg")

# What an init refuses to draw, judged from a weight's shape alone, by init name: f(shape, layer name) raises a
# ConfigError. Shapes alone, so that the run's checks can refuse a network laid out on the meta device, and
# ``initialise`` refuses it before drawing any layer.
SHAPE_CHECKS: dict[str, Callable[[tuple[int, ...], str | None], None]] = {}


def positive(opts: Options, key: str, what: str = "a finite number > 0") -> None:
    """Refuse setting ``key`` of ``opts`` unless it is a finite number > 0."""
    value = getattr(opts, key)
    if not (math.isfinite(value) and value > 0):
        opts.refuse(key, what)


@dataclass
class FixedInit(Options):
    """An initialisation whose variances follow from the layer shapes alone: no settings."""


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or conv (out, in, k, k) weight, receptive field included."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def normal_(weight: torch.Tensor, variance: float, generator: torch.Generator | None) -> None:
    """Fill ``weight`` in place with N(0, ``variance``) draws from ``generator``."""
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(variance), generator=generator)


def shape_check(name: str) -> Callable[[Callable[[tuple[int, ...], str | None], None]], Callable]:
    """Decorator that makes ``check(shape, layer)`` the shape check of init ``name``."""

    def add(check_fn: Callable[[tuple[int, ...], str | None], None]) -> Callable:
        SHAPE_CHECKS[name] = check_fn
        return check_fn

    return add


def check(model: nn.Module, name: str) -> None:
    """Raise the ConfigError of the first weight layer of ``model`` that init ``name`` cannot draw (shapes only:
    a model on the meta device will do)."""
    INITS.get(name, "init")
    check_fn = SHAPE_CHECKS.get(name)
    if check_fn is not None:
        for layer, module in weight_layers(model):
            check_fn(tuple(module.weight.shape), layer)


def initialise(model: nn.Module, name: str, generator: torch.Generator | None = None, **options: object) -> None:
    """Initialise the weight of every weight layer of ``model`` (in the contract's order) with ``name``; zero their biases.

    Every layer's shape is checked before the first is drawn, so a refused model is left as it was.
    """
    check(model, name)
    fn = INITS.get(name, "init")
    for _, module in weight_layers(model):
        fn(module.weight, generator=generator, **options)
        if module.bias is not None:
            with torch.no_grad():
                module.bias.zero_()
