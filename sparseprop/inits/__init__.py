"""Weight initialisations of PAPER.md: variance scaling (LeCun, Glorot, He, custom), fixed variance and orthogonal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.registry import Options, Registry

INITS: Registry[Callable[..., None]] = Registry("init", group="init")
FAN_MODES = ("fan_in", "fan_out", "fan_avg")


def _positive(opts: Options, key: str, what: str = "a finite number > 0") -> None:
    value = getattr(opts, key)
    if not (math.isfinite(value) and value > 0):
        opts.refuse(key, what)


@dataclass
class FixedInit(Options):
    """An initialisation whose variances follow from the layer shapes alone: no settings."""


@dataclass
class VsCustomOptions(Options):
    scale: float = 1.0
    mode: str = "fan_in"

    def check(self) -> None:
        _positive(self, "scale")
        if self.mode not in FAN_MODES:
            self.refuse("mode", f"choose one of {', '.join(FAN_MODES)}")


@dataclass
class NormalOptions(Options):
    scale: float = 1.0

    def check(self) -> None:
        _positive(self, "scale", "a finite number > 0 (the variance of every weight)")


@dataclass
class OrthogonalOptions(Options):
    gain: float = 1.0

    def check(self) -> None:
        _positive(self, "gain")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a linear (out, in) or conv (out, in, k, k) weight, receptive field included."""
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _normal_(weight: torch.Tensor, variance: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        weight.normal_(0.0, math.sqrt(variance), generator=generator)


@INITS.register("vs_l", schema=FixedInit)
def vs_l(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """LeCun: N(0, 1/fan_in)."""
    fan_in, _fo = fans(weight)
    _normal_(weight, 1.0 / fan_in, generator)


@INITS.register("vs_g", schema=FixedInit)
def vs_g(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """Glorot: N(0, 2/(fan_in + fan_out))."""
    fan_in, fan_out = fans(weight)
    _normal_(weight, 2.0 / (fan_in + fan_out), generator)


@INITS.register("vs_h", schema=FixedInit)
def vs_h(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """He: N(0, 2/fan_in)."""
    fan_in, _fo = fans(weight)
    _normal_(weight, 2.0 / fan_in, generator)


@INITS.register("vs_custom", schema=VsCustomOptions)
def vs_custom(weight: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0,
              mode: str = "fan_in", **_: object) -> None:
    """N(0, scale/n) with n = fan_in, fan_out or their mean (``mode``)."""
    if mode not in FAN_MODES:
        raise ConfigError("init.mode", mode, f"choose one of {', '.join(FAN_MODES)}")
    if not float(scale) > 0:
        raise ConfigError("init.scale", scale, "a number > 0")
    fan_in, fan_out = fans(weight)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    _normal_(weight, float(scale) / n, generator)


@INITS.register("normal", schema=NormalOptions)
def normal(weight: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0, **_: object) -> None:
    """Fixed variance: N(0, scale) in every layer, whatever its fan (``scale`` is the variance, not the std)."""
    if not (math.isfinite(float(scale)) and float(scale) > 0):
        raise ConfigError("init.scale", scale, "a finite number > 0 (the variance of every weight)")
    _normal_(weight, float(scale), generator)


def orthogonal_matrix(rows: int, cols: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever are fewer), Haar-distributed."""
    big, small = max(rows, cols), min(rows, cols)
    gauss = torch.randn(big, small, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    # Multiplying by the signs of R's diagonal makes the factorisation unique, so Q is uniform
    # over the orthogonal group instead of biased by the QR routine's sign convention.
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    q = q * signs
    return (q if rows >= cols else q.T).to(dtype)


@INITS.register("orthogonal", schema=OrthogonalOptions)
def orthogonal(weight: torch.Tensor, generator: torch.Generator | None = None, gain: float = 1.0, **_: object) -> None:
    """Orthogonal init of a dense layer, times ``gain``."""
    if weight.dim() != 2:
        raise SparsepropError(
            "init=orthogonal supports dense (linear) layers only so far; choose a vs_* init for convolutional layers"
        )
    with torch.no_grad():
        weight.copy_(float(gain) * orthogonal_matrix(*weight.shape, generator=generator, dtype=weight.dtype))


def initialise(model: nn.Module, name: str, generator: torch.Generator | None = None, **options: object) -> None:
    """Initialise every linear and conv weight of ``model`` with ``name`` and set their biases to zero."""
    fn = INITS.get(name, "init")
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            fn(module.weight, generator=generator, **options)
            if module.bias is not None:
                with torch.no_grad():
                    module.bias.zero_()
