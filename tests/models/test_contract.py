"""The model contract: weight layers, prunable tensors, input and output, BatchNorm mode, activation counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseprop import models
from tests.conftest import TinyConvBN, contract_net, example_inputs, tiny_mlp


def scanned_prunable(model: nn.Module, include_bias: bool) -> list[tuple[str, torch.Tensor]]:
    """Reference: the weights (and biases) of linear and conv modules, read off ``named_parameters`` in order."""
    owners = {name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))}
    keep = ("weight", "bias") if include_bias else ("weight",)
    return [(name, p) for name, p in model.named_parameters()
            if name.rpartition(".")[0] in owners and name.rpartition(".")[2] in keep]


@pytest.mark.parametrize("include_bias", [True, False])
def test_mlp_listing_is_every_linear_layer_in_order(include_bias):
    model = tiny_mlp(sizes=(12, 10, 8, 5))
    listed = models.prunable_parameters(model, include_bias)
    expected = scanned_prunable(model, include_bias)
    assert list(listed) == [name for name, _ in expected]
    assert all(listed[name] is p for name, p in expected)
    assert list(listed)[:2] == (["layers.0.weight", "layers.0.bias"] if include_bias else ["layers.0.weight", "layers.1.weight"])
    assert [name for name, _ in models.weight_parameters(model)] == [f"layers.{i}.weight" for i in range(3)]


@pytest.mark.parametrize("include_bias", [True, False])
def test_conv_bn_listing_is_what_it_states_and_never_batchnorm(include_bias):
    model = TinyConvBN()
    listed = models.prunable_parameters(model, include_bias)
    expected = ["conv1.weight", "conv1.bias", "conv2.weight", "fc.weight", "fc.bias"]
    assert list(listed) == (expected if include_bias else [n for n in expected if n.endswith("weight")])
    assert listed["conv2.weight"] is model.conv2.weight
    assert not any(name.startswith("bn") for name in listed)
    assert [name for name, _ in models.weight_parameters(model)] == ["conv1.weight", "conv2.weight", "fc.weight"]


def test_a_plain_module_gets_its_standard_layers():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    assert list(models.prunable_parameters(model, True)) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert [name for name, _ in models.weight_layers(model)] == ["0", "3"]


def test_input_shape_and_outputs_are_what_the_forward_pass_takes_and_gives(net_kind):
    model = contract_net(net_kind)
    out = model(example_inputs(model, 3))
    assert out.shape == (3, model.num_outputs)


@pytest.mark.parametrize("arch, options, layers", [("mlp", {"depth": 3, "width": 16}, 3), ("lenet300", {}, 3)])
def test_registered_archs_state_their_input_and_outputs(arch, options, layers):
    model = models.build_model(arch, (1, 8, 8), 10, models.build_activation("tanh"), **options)
    assert model.in_shape == (1, 8, 8) and model.num_outputs == 10
    assert len(models.weight_layers(model)) == layers
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_measuring_is_evaluation_mode_and_restores_the_mode(net_kind):
    model = contract_net(net_kind)
    for mode in (True, False):
        model.train(mode)
        with models.measuring(model) as m:
            assert m is model and not any(sub.training for sub in model.modules())
        assert all(sub.training == mode for sub in model.modules())
    model.train()
    with pytest.raises(RuntimeError), models.measuring(model):
        raise RuntimeError("boom")
    assert model.training


def test_mlp_counts_its_activations_as_a_traced_forward_pass_does():
    with torch.device("meta"):
        model = models.MLP(64, [16, 16], 10, models.build_activation("tanh"), in_shape=(1, 8, 8))
    assert models.activations_per_example(model, (1, 8, 8)) == 2 * 2 * 16 + 10
    assert models.traced_activations(model, (1, 8, 8)) == 2 * 2 * 16 + 10


def test_a_traced_count_takes_a_batchnorm_net_in_training_mode_and_leaves_it_so():
    # BatchNorm1d refuses a one-example batch in training mode; the count is the same in either mode.
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 3))
    assert model.training
    assert models.traced_activations(model, (6,)) == 4 + 4 + 4 + 3
    assert model.training and all(m.training for m in model.modules())
