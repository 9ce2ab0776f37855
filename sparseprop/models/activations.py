"""Element-wise activations, looked up by their registry names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from torch import nn

from sparseprop.registry import Options, Registry

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation", group="activation")


@dataclass
class Activation(Options):
    """An activation without settings."""


@dataclass
class LeakyReluOptions(Options):
    negative_slope: float = 0.01

    def check(self) -> None:
        if not math.isfinite(self.negative_slope):
            self.refuse("negative_slope", "a finite number")


@ACTIVATIONS.register("linear", schema=Activation)
def _linear(**_: object) -> nn.Module:
    return nn.Identity()


@ACTIVATIONS.register("tanh", schema=Activation)
def _tanh(**_: object) -> nn.Module:
    return nn.Tanh()


@ACTIVATIONS.register("relu", schema=Activation)
def _relu(**_: object) -> nn.Module:
    return nn.ReLU()


@ACTIVATIONS.register("leaky_relu", schema=LeakyReluOptions)
def _leaky_relu(negative_slope: float = 0.01, **_: object) -> nn.Module:
    return nn.LeakyReLU(negative_slope)


@ACTIVATIONS.register("hardtanh", schema=Activation)
def _hardtanh(**_: object) -> nn.Module:
    return nn.Hardtanh()


@ACTIVATIONS.register("selu", schema=Activation)
def _selu(**_: object) -> nn.Module:
    return nn.SELU()


def build_activation(name: str, **options: object) -> nn.Module:
    """The activation module called ``name``."""
    return ACTIVATIONS.get(name, "activation")(**options)
