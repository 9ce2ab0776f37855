"""The convolutional architectures: parameter counts against PAPER.md and a formula, shapes, the contract's listing, BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseprop import models

RELU = models.build_activation("relu")
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
# resnet56 and resnet110 are resnet32 with more blocks of the same kinds: their counts and listings are tested below.
CONV_ARCHS = ["lenet5", "vgg_c", "resnet32", "wrn16"]


def meta(arch: str, in_shape=(3, 32, 32), classes: int = 10, **options) -> nn.Module:
    """The network laid out on the meta device: shapes without memory, so the big ones cost nothing."""
    with torch.device("meta"):
        return models.build_model(arch, in_shape, classes, RELU, **options)


def prunable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in models.prunable_parameters(model, True).values())


# Per-layer sizes written out: a convolution or fully-connected layer with its bias, and a BatchNorm's scale and shift.
def conv(cin: int, cout: int, k: int) -> int:
    return cin * cout * k * k + cout


def fc(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def resnet_formula(depth: int, cin: int = 3, classes: int = 10) -> tuple[int, int]:
    """(weights and biases, BatchNorm parameters) of ResNet-depth v1 with option-A shortcuts."""
    n = (depth - 2) // 6
    weights, bn = conv(cin, 16, 3), 2 * 16
    previous = 16
    for width in (16, 32, 64):
        weights += conv(previous, width, 3) + conv(width, width, 3) + (n - 1) * 2 * conv(width, width, 3)
        bn += n * 2 * 2 * width
        previous = width
    return weights + fc(64, classes), bn


def wrn_formula(k: int, cin: int = 3, classes: int = 200) -> tuple[int, int]:
    """(weights and biases, BatchNorm parameters) of WRN-16-k: two pre-activation blocks per stage, 1x1 projections."""
    weights, bn, previous = conv(cin, 16, 3), 0, 16
    for width in (16 * k, 32 * k, 64 * k):
        weights += conv(previous, width, 1) + conv(previous, width, 3) + 3 * conv(width, width, 3)
        bn += 2 * (previous + width) + 2 * (width + width)
        previous = width
    return weights + fc(previous, classes), bn + 2 * previous


VGG_C_CONVS = [(3, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3), (256, 256, 1),
               (256, 512, 3), (512, 512, 3), (512, 512, 1), (512, 512, 3), (512, 512, 3), (512, 512, 1)]
VGG_C_FORMULA = (sum(conv(*c) for c in VGG_C_CONVS) + fc(512, 512) + fc(512, 512) + fc(512, 10),
                 2 * sum(c[1] for c in VGG_C_CONVS) + 2 * 512 * 2)


# PAPER.md's figures count the authors' variables: the weights and biases of the conv and FC layers (BatchNorm is
# not among them; with it ResNet-32 would have 465,290 parameters, which rounds to 0.47M). Each figure is rounded to
# its last digit, so the exact count lies within half a unit of that digit. Exact counts: LeNet-5 431,080 (SNIP's
# 431K), VGG-C 10,526,538, ResNet-32 463,018, ResNet-56 850,986, ResNet-110 1,723,914, WRN-16-6 on Tiny-ImageNet
# 6,243,240.
@pytest.mark.parametrize("arch, in_shape, classes, options, stated, half_unit, formula", [
    ("lenet5", (1, 28, 28), 10, {}, 431e3, 0.5e3, (conv(1, 20, 5) + conv(20, 50, 5) + fc(800, 500) + fc(500, 10), 0)),
    ("vgg_c", (3, 32, 32), 10, {}, 10.5e6, 0.05e6, VGG_C_FORMULA),
    ("resnet32", (3, 32, 32), 10, {}, 0.46e6, 0.005e6, resnet_formula(32)),
    ("resnet56", (3, 32, 32), 10, {}, 0.85e6, 0.005e6, resnet_formula(56)),
    ("resnet110", (3, 32, 32), 10, {}, 1.72e6, 0.005e6, resnet_formula(110)),
    ("resnet", (3, 32, 32), 10, {"depth": 56}, 0.85e6, 0.005e6, resnet_formula(56)),
    ("wrn16", (3, 64, 64), 200, {}, 6.24e6, 0.005e6, wrn_formula(6)),
])
def test_parameter_counts_are_the_papers_and_the_formulas(arch, in_shape, classes, options, stated, half_unit, formula):
    model = meta(arch, in_shape, classes, **options)
    weights, bn = formula
    assert prunable_count(model) == weights
    assert sum(p.numel() for p in model.parameters()) == weights + bn  # option-A shortcuts add no parameter
    assert abs(weights - stated) <= half_unit


@pytest.mark.parametrize("arch", CONV_ARCHS)
@pytest.mark.parametrize("in_shape", SHAPES)
def test_every_conv_arch_takes_the_three_image_shapes(arch, in_shape):
    model = meta(arch, in_shape, classes=7)
    assert model.in_shape == in_shape and model.num_outputs == 7
    assert model(torch.empty(5, *in_shape, device="meta")).shape == (5, 7)


@pytest.mark.parametrize("arch, options", [("lenet5", {}), ("vgg_c", {}), ("resnet", {"depth": 8}), ("wrn16", {"k": 1})])
def test_a_real_forward_pass_gives_finite_logits_in_both_modes(arch, options):
    torch.manual_seed(0)
    model = models.build_model(arch, (1, 28, 28), 10, RELU, **options)
    x = torch.randn(4, 1, 28, 28)
    for mode in (True, False):
        out = model.train(mode)(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all()


def forward_order(model: nn.Module, in_shape) -> list[str]:
    """Names of the conv and linear modules in the order a forward pass calls them (recorded by hooks, on meta)."""
    called, names = [], {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, i, o: called.append(names[mod]))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model(torch.empty(2, *in_shape, device="meta"))
    for h in hooks:
        h.remove()
    return called


@pytest.mark.parametrize("arch, options, layers", [("lenet5", {}, 4), ("vgg_c", {}, 16), ("resnet", {"depth": 20}, 20),
                                                   ("resnet110", {}, 110), ("wrn16", {}, 17)])
@pytest.mark.parametrize("include_bias", [True, False])
def test_the_listing_is_every_conv_and_linear_layer_in_forward_order_and_never_batchnorm(arch, options, layers, include_bias):
    model = meta(arch, **options)
    listed = models.weight_layers(model)
    assert len(listed) == layers
    assert [name for name, _ in listed] == forward_order(model, (3, 32, 32))
    assert all(dict(model.named_modules())[name] is module for name, module in listed)
    prunable = models.prunable_parameters(model, include_bias)
    expected = [f"{name}.{p}" for name, _ in listed for p in (("weight", "bias") if include_bias else ("weight",))]
    assert list(prunable) == expected  # every layer has a bias, as in the authors' code
    norm = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    assert bool(norm) == (arch != "lenet5") and not norm & {id(p) for p in prunable.values()}


@pytest.mark.parametrize("arch", ["vgg_c", "resnet32", "wrn16"])
def test_batchnorm_has_tensorflows_settings(arch):
    norms = [m for m in meta(arch).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.01 and m.eps == 1e-3 and m.affine and m.track_running_stats for m in norms)


@pytest.mark.parametrize("arch, first", [("vgg_c", "features.0"), ("resnet32", "conv1"), ("wrn16", "conv1")])
def test_the_first_convolution_has_stride_two_on_64_pixel_images_only(arch, first):
    for in_shape, stride in [((1, 28, 28), 1), ((3, 32, 32), 1), ((3, 64, 64), 2)]:
        assert dict(meta(arch, in_shape).named_modules())[first].stride == (stride, stride)


@pytest.mark.parametrize("in_shape, features", [((1, 28, 28), 50 * 4 * 4), ((3, 32, 32), 50 * 5 * 5), ((3, 64, 64), 50 * 13 * 13),
                                                ((1, 16, 20), 50 * 1 * 2)])
def test_lenet5_flattens_what_its_unpadded_convolutions_leave(in_shape, features):
    assert meta("lenet5", in_shape).fc1.in_features == features


@pytest.mark.parametrize("k, widths", [(6, (96, 192, 384)), (2, (32, 64, 128))])
def test_wrn_widths_are_16k_32k_64k(k, widths):
    model = meta("wrn16", k=k)
    assert tuple(stage[0].conv1.out_channels for stage in model.stages) == widths
    assert model.stages[0][0].conv1.in_channels == 16 and model.fc.in_features == widths[-1]
