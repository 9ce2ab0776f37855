"""ResNets for CIFAR (He et al. 2016, version 1): depth 6n+2, three stages of n basic blocks of widths
16/32/64, option-A shortcuts (parameter-free: pooled, then zero channels appended)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.models.base import ARCHS, Network
from sparseprop.models.layers import batch_norm, conv3, first_stride, image_shape
from sparseprop.models.mlp import MAX_DEPTH
from sparseprop.registry import Options

WIDTHS = (16, 32, 64)
# How an option-A shortcut halves the side: a 2x2 average pool with stride 2 (the authors' code, TensorFlow
# 'SAME' padding: a window past the edge averages the pixels it has) or every other pixel (He et al.).
SHORTCUTS = ("avg_pool", "subsample")


@dataclass
class ResNetFixedOptions(Options):
    """resnet32, resnet56, resnet110: the depth is in the name."""

    shortcut: str = "avg_pool"

    def check(self) -> None:
        if self.shortcut not in SHORTCUTS:
            self.refuse("shortcut", f"choose one of {', '.join(SHORTCUTS)}")


@dataclass
class ResNetOptions(ResNetFixedOptions):
    depth: int = 32

    def check(self) -> None:
        super().check()
        if not (8 <= self.depth <= MAX_DEPTH and (self.depth - 2) % 6 == 0):
            self.refuse("depth", f"6n+2 for an integer n >= 1, at least 8 and at most {MAX_DEPTH:,} "
                                 "(32, 56 and 110 are the paper's)")


class ZeroPadShortcut(nn.Module):
    """Option A: the input with its side halved (if ``stride`` is 2) and ``extra`` zero channels appended."""

    def __init__(self, extra: int, stride: int, how: str = "avg_pool") -> None:
        super().__init__()
        self.extra, self.stride, self.how = extra, stride, how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            if self.how == "avg_pool":
                x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
            else:
                x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """conv3 -> BN -> activation -> conv3 -> BN, plus the shortcut, then the activation (post-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, activation: nn.Module, shortcut: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3(cin, cout, stride), batch_norm(cout)
        self.conv2, self.bn2 = conv3(cout, cout), batch_norm(cout)
        self.activation = activation
        self.shortcut = ZeroPadShortcut(cout - cin, stride, shortcut) if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.activation(h + self.shortcut(x))


class ResNet(Network):
    """ResNet-(6n+2) version 1: conv3-16 -> BN -> activation, three stages of n basic blocks (widths 16, 32,
    64; the first block of stages 2 and 3 has stride 2), global average pool, FC. Every convolution has a
    bias, as in the authors' code; the first has stride 2 on images of 64 pixels or more. The activation is
    ReLU in the paper.

    Its weight layers are conv1, each block's conv1 and conv2 in order, then fc: 6n+2 of them.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, activation: nn.Module, depth: int = 32,
                 shortcut: str = "avg_pool", name: str = "resnet") -> None:
        super().__init__()
        shape = image_shape(name, in_shape)
        self.in_shape, self.num_outputs, self.depth = shape, int(num_classes), int(depth)
        n = (int(depth) - 2) // 6
        self.conv1, self.bn1 = conv3(shape[0], WIDTHS[0], first_stride(shape)), batch_norm(WIDTHS[0])
        self.activation = activation
        stages, cin = [], WIDTHS[0]
        for s, cout in enumerate(WIDTHS):
            blocks = [BasicBlock(cin if b == 0 else cout, cout, 2 if s > 0 and b == 0 else 1, activation, shortcut)
                      for b in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.activation(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = [("conv1", self.conv1)]
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                out += [(f"stages.{s}.{b}.conv1", block.conv1), (f"stages.{s}.{b}.conv2", block.conv2)]
        return out + [("fc", self.fc)]


@ARCHS.register("resnet", schema=ResNetOptions)
def _resnet(in_shape: Sequence[int], num_classes: int, activation: nn.Module, depth: int = 32,
            shortcut: str = "avg_pool", **_: object) -> nn.Module:
    return ResNet(in_shape, num_classes, activation, depth, shortcut)


def _fixed(depth: int):
    def build(in_shape: Sequence[int], num_classes: int, activation: nn.Module, shortcut: str = "avg_pool",
              **_: object) -> nn.Module:
        return ResNet(in_shape, num_classes, activation, depth, shortcut, name=f"resnet{depth}")
    return build


for _depth in (32, 56, 110):
    ARCHS.register(f"resnet{_depth}", schema=ResNetFixedOptions)(_fixed(_depth))
