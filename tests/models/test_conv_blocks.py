"""The convolutional architectures' building blocks: option-A shortcuts, pre-activation projections, where the
activation goes, and the inputs an architecture refuses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseprop import models
from sparseprop.errors import ConfigError
from sparseprop.models.resnet import BasicBlock, ZeroPadShortcut
from sparseprop.models.wrn import PreActBlock
from tests.conftest import run_cli


def average_2x2_reference(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling with stride 2 and TensorFlow's 'SAME' padding, by a loop: a window that runs past the
    edge averages the pixels it holds."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, (h + 1) // 2, (w + 1) // 2, dtype=x.dtype)
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(dim=(2, 3))
    return out


@pytest.mark.parametrize("side", [8, 7])
@pytest.mark.parametrize("how", ["avg_pool", "subsample"])
def test_option_a_halves_the_side_and_appends_zero_channels(side, how):
    x = torch.randn(3, 4, side, side, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shortcut = ZeroPadShortcut(extra=4, stride=2, how=how)
    out = shortcut(x)
    assert not list(shortcut.parameters())
    half = average_2x2_reference(x) if how == "avg_pool" else x[:, :, ::2, ::2]
    assert out.shape == (3, 8, (side + 1) // 2, (side + 1) // 2)
    torch.testing.assert_close(out[:, :4], half, rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, 4:], torch.zeros_like(out[:, 4:]))


def test_a_downsampling_block_adds_its_option_a_shortcut_before_the_activation():
    # With its second convolution zero and BatchNorm at its initial running statistics (evaluation mode), the
    # residual branch is zero: the block gives relu(shortcut(x)).
    block = BasicBlock(16, 32, stride=2, activation=nn.ReLU(), shortcut="avg_pool").double().eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.cat([average_2x2_reference(x), torch.zeros(2, 16, 4, 4, dtype=torch.float64)], dim=1).relu()
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)
    assert not [n for n, _ in block.named_parameters() if n.startswith("shortcut")]


@pytest.mark.parametrize("cin, cout, stride, projected", [(16, 96, 1, True), (96, 192, 2, True), (96, 96, 1, False)])
def test_wrn_shortcut_is_a_1x1_projection_of_the_batchnormed_activated_input(cin, cout, stride, projected):
    # The residual branch made zero leaves the shortcut: conv1x1(relu(BN(x))) where the shape changes, else x.
    # BatchNorm at its initial running statistics divides by sqrt(1 + eps).
    block = PreActBlock(cin, cout, stride, nn.ReLU()).double().eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = torch.randn(2, cin, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    if projected:
        pre = (x / math.sqrt(1 + models.BN_EPS)).relu()
        expected = nn.functional.conv2d(pre, block.shortcut.weight, block.shortcut.bias, stride=stride)
    else:
        assert block.shortcut is None
        expected = x
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


class Counting(nn.Module):
    """An identity activation that counts its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


# Where the paper has ReLU: LeNet-5 after FC 500 only (Caffe); VGG-C after its 13 convs and 2 hidden FCs; ResNet
# after the first conv and twice per block; WRN-16 twice per block (pre-activation) and once before pooling.
@pytest.mark.parametrize("arch, options, calls", [("lenet5", {}, 1), ("vgg_c", {}, 15), ("resnet", {"depth": 20}, 1 + 2 * 9),
                                                  ("wrn16", {"k": 1}, 2 * 6 + 1)])
def test_the_chosen_activation_is_applied_wherever_the_paper_has_relu(arch, options, calls):
    act = Counting()
    with torch.device("meta"):
        model = models.build_model(arch, (1, 28, 28), 10, act, **options)
    model(torch.empty(2, 1, 28, 28, device="meta"))
    assert act.calls == calls
    assert not any(isinstance(m, (nn.ReLU, nn.Tanh)) for m in model.modules())


@pytest.mark.parametrize("activation", ["tanh", "linear"])
def test_a_non_relu_activation_changes_the_network(activation):
    torch.manual_seed(0)
    relu = models.build_model("resnet", (1, 16, 16), 10, models.build_activation("relu"), depth=8).eval()
    other = models.build_model("resnet", (1, 16, 16), 10, models.build_activation(activation), depth=8).eval()
    other.load_state_dict(relu.state_dict())
    x = torch.randn(3, 1, 16, 16)
    assert not torch.allclose(relu(x), other(x))


@pytest.mark.parametrize("arch, in_shape, words", [("lenet5", (1, 8, 8), "at least 16x16 pixels; the dataset's are 8x8"),
                                                   ("lenet5", (3, 15, 64), "the dataset's are 15x64"),
                                                   ("vgg_c", (64,), "takes images"), ("resnet32", (1, 784), "takes images"),
                                                   ("wrn16", (2, 0, 5), "takes images")])
def test_inputs_an_architecture_cannot_take_are_one_line_errors(arch, in_shape, words):
    with pytest.raises(ConfigError) as info, torch.device("meta"):
        models.build_model(arch, in_shape, 10, nn.ReLU())
    message = str(info.value)
    assert message.startswith(f"arch='{arch}' is not valid") and words in message and "\n" not in message


def test_the_smallest_image_lenet5_takes_builds():
    with torch.device("meta"):
        assert models.build_model("lenet5", (1, 16, 16), 10, nn.ReLU()).fc1.in_features == 50


@pytest.mark.parametrize("arch, node, key", [
    ("resnet", {"depth": 33}, "arch.depth"), ("resnet", {"depth": 2}, "arch.depth"), ("resnet", {"depth": 60_002}, "arch.depth"),
    ("resnet", {"shortcut": "projection"}, "arch.shortcut"), ("resnet110", {"shortcut": "B"}, "arch.shortcut"),
    ("wrn16", {"k": 0}, "arch.k"),
])
def test_settings_out_of_range_are_refused(arch, node, key):
    with pytest.raises(ConfigError, match=key):
        models.ARCHS.options({"name": arch, **node})


def test_the_run_refuses_an_architecture_for_the_datasets_shape_before_loading_anything(tmp_path):
    proc = run_cli("train", "dataset=digits", "arch=lenet5", "threads=1", f"hydra.run.dir={tmp_path / 'run'}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["sparseprop: error: arch='lenet5' is not valid: LeNet-5's unpadded convolutions and pools need "
                     "images of at least 16x16 pixels; the dataset's are 8x8"]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
