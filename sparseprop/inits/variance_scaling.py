"""Variance-scaling inits of PAPER.md (LeCun, Glorot, He, custom) and the fixed-variance one."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sparseprop.errors import ConfigError
from sparseprop.inits.base import FAN_MODES, INITS, FixedInit, fans, normal_, positive
from sparseprop.registry import Options


@dataclass
class VsCustomOptions(Options):
    scale: float = 1.0
    mode: str = "fan_in"

    def check(self) -> None:
        positive(self, "scale")
        if self.mode not in FAN_MODES:
            self.refuse("mode", f"choose one of {', '.join(FAN_MODES)}")


@dataclass
class NormalOptions(Options):
    scale: float = 1.0

    def check(self) -> None:
        positive(self, "scale", "a finite number > 0 (the variance of every weight)")


@INITS.register("vs_l", schema=FixedInit)
def vs_l(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """LeCun: N(0, 1/fan_in)."""
    fan_in, _fo = fans(weight)
    normal_(weight, 1.0 / fan_in, generator)


@INITS.register("vs_g", schema=FixedInit)
def vs_g(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """Glorot: N(0, 2/(fan_in + fan_out))."""
    fan_in, fan_out = fans(weight)
    normal_(weight, 2.0 / (fan_in + fan_out), generator)


@INITS.register("vs_h", schema=FixedInit)
def vs_h(weight: torch.Tensor, generator: torch.Generator | None = None, **_: object) -> None:
    """He: N(0, 2/fan_in)."""
    fan_in, _fo = fans(weight)
    normal_(weight, 2.0 / fan_in, generator)


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
    normal_(weight, float(scale) / n, generator)


@INITS.register("normal", schema=NormalOptions)
def normal(weight: torch.Tensor, generator: torch.Generator | None = None, scale: float = 1.0, **_: object) -> None:
    """Fixed variance: N(0, scale) in every layer, whatever its fan (``scale`` is the variance, not the std)."""
    if not (math.isfinite(float(scale)) and float(scale) > 0):
        raise ConfigError("init.scale", scale, "a finite number > 0 (the variance of every weight)")
    normal_(weight, float(scale), generator)
