"""Wide ResNet WRN-16-k (Zagoruyko and Komodakis 2016) as the authors' ``wrn-16``: pre-activation blocks,
two per stage, widths 16k/32k/64k, 1x1 projection shortcuts where the shape changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sparseprop.models.base import ARCHS, Network
from sparseprop.models.layers import batch_norm, conv3, first_stride, image_shape
from sparseprop.registry import Options

BLOCKS_PER_STAGE = 2  # WRN-16: 6 * 2 + 4 = 16 convolutions
BASE_WIDTHS = (16, 32, 64)
# Far beyond any wide ResNet trained in practice (k = 10 or 12); the bound keeps a typo from sizing a giant.
MAX_K = 1_000


@dataclass
class WRNOptions(Options):
    k: int = 6  # the widening factor: the authors' wrn-16 is WRN-16-6

    def check(self) -> None:
        if not 1 <= self.k <= MAX_K:
            self.refuse("k", f"an integer in [1, {MAX_K:,}] (the widening factor; the paper's is 6)")


class PreActBlock(nn.Module):
    """BN -> activation -> conv3 -> BN -> activation -> conv3, plus the shortcut: the input itself, or a 1x1
    convolution of the BN-activated input where the width or the side changes (pre-activation)."""

    def __init__(self, cin: int, cout: int, stride: int, activation: nn.Module) -> None:
        super().__init__()
        self.bn1, self.conv1 = batch_norm(cin), conv3(cin, cout, stride)
        self.bn2, self.conv2 = batch_norm(cout), conv3(cout, cout)
        self.activation = activation
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride) if (cin != cout or stride != 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.activation(self.bn1(x))
        skip = self.shortcut(o) if self.shortcut is not None else x
        h = self.conv2(self.activation(self.bn2(self.conv1(o))))
        return h + skip


class WideResNet(Network):
    """WRN-16-k: conv3-16, three stages of two pre-activation blocks (widths 16k, 32k, 64k; the first block
    of stages 2 and 3 has stride 2), BN -> activation, global average pool, FC. Every convolution has a
    bias, as in the authors' code; the first has stride 2 on images of 64 pixels or more (Tiny-ImageNet).
    The activation is ReLU in the paper.

    Its weight layers are conv1, then per block its shortcut (if any, computed first as in the authors'
    code), conv1 and conv2, then fc: 17 of them.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, activation: nn.Module, k: int = 6) -> None:
        super().__init__()
        shape = image_shape("wrn16", in_shape)
        self.in_shape, self.num_outputs, self.k = shape, int(num_classes), int(k)
        self.conv1 = conv3(shape[0], BASE_WIDTHS[0], first_stride(shape))
        self.activation = activation
        stages, cin = [], BASE_WIDTHS[0]
        for s, base in enumerate(BASE_WIDTHS):
            cout = base * self.k
            blocks = [PreActBlock(cin if b == 0 else cout, cout, 2 if s > 0 and b == 0 else 1, activation)
                      for b in range(BLOCKS_PER_STAGE)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bn = batch_norm(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.bn(self.stages(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = [("conv1", self.conv1)]
        for s, stage in enumerate(self.stages):
            for b, block in enumerate(stage):
                if block.shortcut is not None:
                    out.append((f"stages.{s}.{b}.shortcut", block.shortcut))
                out += [(f"stages.{s}.{b}.conv1", block.conv1), (f"stages.{s}.{b}.conv2", block.conv2)]
        return out + [("fc", self.fc)]


@ARCHS.register("wrn16", schema=WRNOptions)
def _wrn16(in_shape: Sequence[int], num_classes: int, activation: nn.Module, k: int = 6, **_: object) -> nn.Module:
    return WideResNet(in_shape, num_classes, activation, k)
