"""Network architectures and activations, looked up by their registry names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.registry import Options, Registry

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation", group="activation")
ARCHS: Registry[Callable[..., nn.Module]] = Registry("arch", group="arch")
# Beyond any network this tool can train: the bound keeps a typo from building a million-layer model.
MAX_DEPTH = 10_000


@dataclass
class Activation(Options):
    """An activation without settings."""


@dataclass
class LeakyReluOptions(Options):
    negative_slope: float = 0.01

    def check(self) -> None:
        if not math.isfinite(self.negative_slope):
            self.refuse("negative_slope", "a finite number")


@dataclass
class MLPOptions(Options):
    depth: int = 7
    width: int = 100

    def check(self) -> None:
        if not 1 <= self.depth <= MAX_DEPTH:
            self.refuse("depth", f"an integer in [1, {MAX_DEPTH:,}] (the number of linear layers)")
        if self.width < 1:
            self.refuse("width", "an integer >= 1")


@dataclass
class LeNet300Options(Options):
    """LeNet-300-100 has a fixed shape: no settings."""


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


class MLP(nn.Module):
    """Fully-connected network: ``layers[l]`` is a Linear, ``activation`` follows every layer but the last.

    Signal-propagation code relies on this layout: the input is flattened, layer l computes
    h^l = W^l x^{l-1} + b^l and x^l = activation(h^l) for l < L, and the logits are h^L.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: nn.Module) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)

    def preactivations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pre-activations h^1 … h^L of every layer (h^L are the logits)."""
        x = x.flatten(1)
        out = []
        for i, layer in enumerate(self.layers):
            h = layer(x)
            out.append(h)
            if i < len(self.layers) - 1:
                x = self.activation(h)
        return out


@ARCHS.register("mlp", schema=MLPOptions)
def _mlp(in_shape: Sequence[int], num_classes: int, activation: nn.Module, depth: int = 7, width: int = 100, **_: object) -> nn.Module:
    if int(depth) < 1:
        raise ConfigError("arch.depth", depth, "an integer >= 1 (number of linear layers)")
    if int(width) < 1:
        raise ConfigError("arch.width", width, "an integer >= 1")
    return MLP(_numel(in_shape), [int(width)] * (int(depth) - 1), num_classes, activation)


@ARCHS.register("lenet300", schema=LeNet300Options)
def _lenet300(in_shape: Sequence[int], num_classes: int, activation: nn.Module, **_: object) -> nn.Module:
    return MLP(_numel(in_shape), [300, 100], num_classes, activation)


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def build_activation(name: str, **options: object) -> nn.Module:
    """The activation module called ``name``."""
    return ACTIVATIONS.get(name, "activation")(**options)


def build_model(arch: str, in_shape: Sequence[int], num_classes: int, activation: nn.Module, **options: object) -> nn.Module:
    """The network called ``arch`` for inputs of ``in_shape`` and ``num_classes`` outputs."""
    return ARCHS.get(arch, "arch")(in_shape=in_shape, num_classes=num_classes, activation=activation, **options)
