"""VGG-C with BatchNorm, the authors' ``vgg``: 13 convolutions (three of them 1x1) and 3 fully-connected layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sparseprop.models.base import ARCHS, Network
from sparseprop.models.layers import batch_norm, first_stride, halved, image_shape
from sparseprop.registry import Options

# (out channels, kernel side) of each convolution; "M" is a 2x2 max-pool with stride 2.
VGG_C = [(64, 3), (64, 3), "M", (128, 3), (128, 3), "M", (256, 3), (256, 3), (256, 1), "M",
         (512, 3), (512, 3), (512, 1), "M", (512, 3), (512, 3), (512, 1), "M"]
FC_WIDTH = 512


@dataclass
class VGGOptions(Options):
    """VGG-C has a fixed shape: no settings."""


class VGG(Network):
    """VGG-C with BatchNorm: every convolution is conv (with bias, 'same' padding) -> BN -> activation;
    2x2 max-pools round up (TensorFlow's 'SAME' pooling, so 28x28 inputs end at 1x1 as 32x32 ones do);
    then FC 512 -> BN -> activation, twice, and FC -> classes. The first convolution has stride 2 on
    images of 64 pixels or more (Tiny-ImageNet). The activation is ReLU in the paper.

    Its weight layers are ``features``' convolutions in order, then fc1, fc2, fc3.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, activation: nn.Module) -> None:
        super().__init__()
        shape = image_shape("vgg_c", in_shape)
        self.in_shape, self.num_outputs = shape, int(num_classes)
        self.activation = activation
        stride = first_stride(shape)
        h, w = shape[1], shape[2]
        if stride == 2:
            h, w = halved(h), halved(w)
        layers: list[nn.Module] = []
        cin = shape[0]
        for item in VGG_C:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                h, w = halved(h), halved(w)
                continue
            cout, k = item
            layers += [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), batch_norm(cout), activation]
            cin, stride = cout, 1
        self.features = nn.Sequential(*layers)
        self.fc1, self.bn1 = nn.Linear(cin * h * w, FC_WIDTH), batch_norm(FC_WIDTH, dims=1)
        self.fc2, self.bn2 = nn.Linear(FC_WIDTH, FC_WIDTH), batch_norm(FC_WIDTH, dims=1)
        self.fc3 = nn.Linear(FC_WIDTH, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        x = self.activation(self.bn1(self.fc1(x)))
        x = self.activation(self.bn2(self.fc2(x)))
        return self.fc3(x)

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        convs = [(f"features.{i}", m) for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        return convs + [("fc1", self.fc1), ("fc2", self.fc2), ("fc3", self.fc3)]


@ARCHS.register("vgg_c", schema=VGGOptions)
def _vgg_c(in_shape: Sequence[int], num_classes: int, activation: nn.Module, **_: object) -> nn.Module:
    return VGG(in_shape, num_classes, activation)
