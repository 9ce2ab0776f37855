"""The fully-connected networks: MLP-L of any depth and width, and LeNet-300-100."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.models.base import ARCHS, Network, numel
from sparseprop.registry import Options

# Beyond any network this tool can train: the bound keeps a typo from building a million-layer model.
MAX_DEPTH = 10_000


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


class MLP(Network):
    """Fully-connected network: ``layers[l]`` is a Linear, ``activation`` follows every layer but the last.

    Signal-propagation code relies on this layout: the input is flattened, layer l computes
    h^l = W^l x^{l-1} + b^l and x^l = activation(h^l) for l < L, and the logits are h^L.
    Its weight layers are ``layers`` in order; it has no BatchNorm.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: nn.Module,
                 in_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activation = activation
        self.in_shape = tuple(int(s) for s in in_shape) if in_shape is not None else (int(in_features),)
        if numel(self.in_shape) != in_features:
            raise ValueError(f"in_shape {self.in_shape} does not hold {in_features} features")
        self.num_outputs = int(out_features)

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

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        return [(f"layers.{i}", layer) for i, layer in enumerate(self.layers)]

    def activations_per_example(self) -> int:
        # Each layer's pre-activation, and the activation of each hidden layer (the last gives logits).
        return sum(layer.out_features for layer in self.layers) + sum(l.out_features for l in self.layers[:-1])


@ARCHS.register("mlp", schema=MLPOptions)
def _mlp(in_shape: Sequence[int], num_classes: int, activation: nn.Module, depth: int = 7, width: int = 100, **_: object) -> nn.Module:
    if int(depth) < 1:
        raise ConfigError("arch.depth", depth, "an integer >= 1 (number of linear layers)")
    if int(width) < 1:
        raise ConfigError("arch.width", width, "an integer >= 1")
    return MLP(numel(in_shape), [int(width)] * (int(depth) - 1), num_classes, activation, in_shape=in_shape)


@ARCHS.register("lenet300", schema=LeNet300Options)
def _lenet300(in_shape: Sequence[int], num_classes: int, activation: nn.Module, **_: object) -> nn.Module:
    return MLP(numel(in_shape), [300, 100], num_classes, activation, in_shape=in_shape)
