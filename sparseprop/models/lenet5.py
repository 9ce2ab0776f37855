"""LeNet-5 as in Caffe (and SNIP): conv5-20, max-pool 2, conv5-50, max-pool 2, FC 500, FC classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.models.base import ARCHS, Network
from sparseprop.models.layers import image_shape
from sparseprop.registry import Options


# Beyond any LeNet-5 a CPU trains: the bound keeps a typo from sizing a giant.
MAX_WIDEN = 100


@dataclass
class LeNet5Options(Options):
    """LeNet-5's one setting: how many times wider than Caffe's every layer is (1: Caffe's LeNet-5)."""

    widen: int = 1

    def check(self) -> None:
        if isinstance(self.widen, bool) or not 1 <= self.widen <= MAX_WIDEN:
            self.refuse("widen", f"an integer in [1, {MAX_WIDEN}] (1 is Caffe's LeNet-5: 20, 50 and 500 units)")


def _side(side: int) -> int:
    """The side after conv5 (no padding), pool 2, conv5, pool 2."""
    return ((side - 4) // 2 - 4) // 2


# The smallest image side the convolutions and pools leave at least one pixel of: 16 -> 12 -> 6 -> 2 -> 1.
MIN_SIDE = 16


class LeNet5(Network):
    """Caffe's LeNet-5: unpadded 5x5 convolutions with biases, 2x2 max-pools, no nonlinearity after the
    convolutions (as in Caffe's and SNIP's definitions), ``activation`` after FC 500 only.

    Its weight layers are conv1, conv2, fc1, fc2; the flattened size follows the input (800 on 28x28).
    ``widen`` multiplies the widths of conv1, conv2 and fc1 (a bulky LeNet-5 to prune, E7).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, activation: nn.Module, widen: int = 1) -> None:
        super().__init__()
        c, h, w = image_shape("lenet5", in_shape)
        if min(h, w) < MIN_SIDE:
            raise ConfigError("arch", "lenet5", f"LeNet-5's unpadded convolutions and pools need images of at least "
                                                f"{MIN_SIDE}x{MIN_SIDE} pixels; the dataset's are {h}x{w}")
        self.in_shape, self.num_outputs = (c, h, w), int(num_classes)
        c1, c2, f1 = 20 * int(widen), 50 * int(widen), 500 * int(widen)
        self.conv1 = nn.Conv2d(c, c1, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(c2 * _side(h) * _side(w), f1)
        self.activation = activation
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.activation(self.fc1(x.flatten(1))))

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv1), ("conv2", self.conv2), ("fc1", self.fc1), ("fc2", self.fc2)]


@ARCHS.register("lenet5", schema=LeNet5Options)
def _lenet5(in_shape: Sequence[int], num_classes: int, activation: nn.Module, widen: int = 1, **_: object) -> nn.Module:
    return LeNet5(in_shape, num_classes, activation, widen)
