"""Pieces the convolutional architectures share: TensorFlow's BatchNorm settings, the image shape they
accept, the first stride on large images, and the padded 3x3 convolution."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from sparseprop.errors import ConfigError

# tf.layers.batch_normalization's defaults, which the authors' code uses: a moving average kept with
# decay 0.99 (PyTorch's momentum is the weight of the new batch: 1 - 0.99) and eps 1e-3.
BN_MOMENTUM = 0.01
BN_EPS = 1e-3
# The authors' code gives the first convolution stride 2 on Tiny-ImageNet (64x64 images), so its nets
# see 32x32 feature maps after it, as on CIFAR-10; sparseprop does so on any image of this side or more.
LARGE_IMAGE_SIDE = 64


def batch_norm(features: int, dims: int = 2) -> nn.Module:
    """BatchNorm over ``features`` channels (``dims`` 2: images, 1: vectors) with TensorFlow's settings."""
    norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    return norm(features, eps=BN_EPS, momentum=BN_MOMENTUM)


def image_shape(arch: str, in_shape: Sequence[int]) -> tuple[int, int, int]:
    """``in_shape`` as (channels, height, width); a ConfigError naming ``arch`` for inputs that are not images."""
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError("arch", arch, f"a convolutional network takes images (channels, height, width); "
                                        f"the dataset's inputs have shape {shape}")
    return shape  # type: ignore[return-value]


def first_stride(shape: tuple[int, int, int]) -> int:
    """The stride of the first convolution: 2 on images of LARGE_IMAGE_SIDE pixels or more, else 1."""
    return 2 if min(shape[1:]) >= LARGE_IMAGE_SIDE else 1


def conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with bias that keeps the side (padding 1; divided by ``stride``, rounded up)."""
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)


def halved(side: int) -> int:
    """The side after a stride-2 step with 'SAME' padding (a padded 3x3 conv, a ceil-mode 2x2 pool): rounded up."""
    return (side + 1) // 2
