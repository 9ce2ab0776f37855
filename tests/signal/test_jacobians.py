"""Jacobian singular values (the MLP's fast paths and the generic torch.func path) against float64 autograd."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.inits import initialise
from sparseprop.models import ACTIVATIONS, MLP, build_activation
from sparseprop.pruning import apply_masks, kept_count, prunable_parameters, random_masks
from sparseprop.signal import (
    io_singular_values,
    isometry_residual,
    layer_singular_values,
    weight_singular_values,
)
from sparseprop.signal import jacobians
from tests.conftest import contract_net, example_inputs


def pruned_mlp(activation: str, sizes: tuple[int, ...] = (12, 9, 11, 5), sparsity: float = 0.5,
               seed: int = 0) -> MLP:
    """A small float64 MLP, VS-L initialised with random non-zero biases, randomly pruned."""
    gen = torch.Generator().manual_seed(seed)
    model = MLP(sizes[0], list(sizes[1:-1]), sizes[-1], build_activation(activation)).double()
    initialise(model, "vs_l", generator=gen)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_(0.0, 0.5, generator=gen)
    params = prunable_parameters(model, include_bias=False)
    apply_masks(params, random_masks(params, kept_count(sum(p.numel() for p in params.values()), sparsity), gen))
    return model


def autograd_io_singular_values(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reference: one full autograd Jacobian per example, then its singular values."""
    out = []
    for example in x:
        jac = torch.autograd.functional.jacobian(lambda e: model(e[None])[0], example)
        out.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1)))
    return torch.stack(out)


def autograd_layer_singular_values(model: MLP, x: torch.Tensor) -> list[torch.Tensor]:
    """Reference: autograd Jacobian of each layer's map x^{l-1} -> x^l on the example's own forward pass."""
    per_layer: list[list[torch.Tensor]] = [[] for _ in model.layers]
    last = len(model.layers) - 1
    for example in x.flatten(1):
        a = example
        for l, layer in enumerate(model.layers):
            def step(v: torch.Tensor, layer: nn.Linear = layer, l: int = l) -> torch.Tensor:
                return layer(v) if l == last else model.activation(layer(v))
            per_layer[l].append(torch.linalg.svdvals(torch.autograd.functional.jacobian(step, a)))
            a = step(a)
    return [torch.stack(values) for values in per_layer]


def assert_spectra_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal to rtol 1e-5; singular values that are numerically zero compare to 1e-6 of the largest."""
    assert actual.shape == expected.shape
    atol = 1e-6 * float(expected.abs().max())
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=1e-5, atol=atol)


@pytest.mark.parametrize("sizes", [(12, 9, 11, 5), (12, 5), (3, 8, 6)])
def test_linear_mlp_io_singular_values_are_those_of_the_masked_weight_product(sizes: tuple[int, ...]) -> None:
    model = pruned_mlp("linear", sizes=sizes, sparsity=0.6)
    product = torch.eye(sizes[0], dtype=torch.float64)
    for layer in model.layers:
        product = layer.weight.detach() @ product
    expected = torch.linalg.svdvals(product)
    x = torch.randn(6, sizes[0], dtype=torch.float64)
    sv = io_singular_values(model, x, chunk_size=4)
    assert sv.shape == (6, min(sizes[0], sizes[-1]))
    for row in sv:
        assert_spectra_close(row, expected)


def test_image_shaped_inputs_are_flattened() -> None:
    model = pruned_mlp("tanh", sparsity=0.6)
    x = torch.randn(3, 1, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(io_singular_values(model, x), io_singular_values(model, x.flatten(1)))


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_io_singular_values_match_autograd(activation: str) -> None:
    model = pruned_mlp(activation, seed=1)
    x = torch.randn(7, 12, dtype=torch.float64)
    assert_spectra_close(io_singular_values(model, x, chunk_size=3), autograd_io_singular_values(model, x))


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_layer_singular_values_match_autograd(activation: str) -> None:
    # A layer wider than its input (5 -> 9) checks the other Gram orientation.
    model = pruned_mlp(activation, sizes=(5, 9, 11, 4), seed=2)
    x = torch.randn(5, 5, dtype=torch.float64)
    actual = layer_singular_values(model, x, chunk_size=2)
    expected = autograd_layer_singular_values(model, x)
    assert [tuple(a.shape) for a in actual] == [(5, 5), (5, 9), (5, 4)]
    for a, e in zip(actual, expected):
        assert_spectra_close(a, e)


def test_float32_model_is_measured_like_its_float64_copy() -> None:
    model = pruned_mlp("tanh", seed=3)
    x = torch.randn(4, 12, dtype=torch.float64)
    reference = io_singular_values(model, x)
    sv = io_singular_values(model.float(), x.float())
    assert sv.dtype == torch.float64
    torch.testing.assert_close(sv, reference, rtol=1e-5, atol=1e-7)


def test_chunking_does_not_change_the_result() -> None:
    model = pruned_mlp("selu", seed=4)
    x = torch.randn(9, 12, dtype=torch.float64)
    whole = io_singular_values(model, x)
    torch.testing.assert_close(io_singular_values(model, x, chunk_size=2), whole, rtol=1e-12, atol=1e-14)
    for a, b in zip(layer_singular_values(model, x, chunk_size=4), layer_singular_values(model, x)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_dense_orthogonal_linear_net_has_unit_singular_values() -> None:
    model = MLP(20, [20, 20], 20, build_activation("linear"))
    initialise(model, "orthogonal", generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 20)
    ones = torch.ones(5, 20, dtype=torch.float64)
    torch.testing.assert_close(io_singular_values(model, x), ones, rtol=0, atol=1e-5)
    for sv in layer_singular_values(model, x):
        torch.testing.assert_close(sv, ones, rtol=0, atol=1e-5)
    for sv in weight_singular_values(model):
        torch.testing.assert_close(sv, torch.ones(20, dtype=torch.float64), rtol=0, atol=1e-5)
    assert max(isometry_residual(model)) < 1e-5


def test_generic_model_io_singular_values_match_autograd() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(18, 4)).double()
    x = torch.randn(5, 1, 5, 5, dtype=torch.float64)
    sv = io_singular_values(model, x, chunk_size=2)
    assert sv.shape == (5, 4)
    assert_spectra_close(sv, autograd_io_singular_values(model, x))


def test_layerwise_jacobians_of_a_non_mlp_are_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(SparsepropError, match="MLPs only"):
        layer_singular_values(model, torch.randn(2, 4))


def test_io_singular_values_of_contract_nets_match_float64_autograd_in_running_statistics(net_kind) -> None:
    model = contract_net(net_kind, seed=6).train()  # measured as the contract says: BatchNorm on running statistics
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = example_inputs(model, 7, seed=6)
    sv = io_singular_values(model, x, chunk_size=3)
    assert sv.shape == (7, min(model.num_outputs, x[0].numel()))
    assert model.training  # the mode is given back
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # running statistics not updated
    assert_spectra_close(sv, autograd_io_singular_values(model.eval(), x))


def pruned_conv_bn(seed: int) -> nn.Module:
    """The tiny float64 conv + BatchNorm net with 60% of its conv and fc weights randomly pruned."""
    model = contract_net("conv_bn", seed=seed)
    params = prunable_parameters(model, include_bias=False)
    gen = torch.Generator().manual_seed(seed)
    apply_masks(params, random_masks(params, kept_count(sum(p.numel() for p in params.values()), 0.6), gen))
    return model


def test_generic_io_singular_values_of_a_pruned_conv_bn_net_are_exact_to_rtol_1e6() -> None:
    model = pruned_conv_bn(seed=11)
    x = example_inputs(model, 9, seed=11)
    sv = io_singular_values(model, x)
    expected = autograd_io_singular_values(model.eval(), x)
    assert sv.shape == expected.shape == (9, 5)
    # The Gram route's eigenvalues are exact to about 1e-16 of the largest squared singular value, so a
    # singular value is exact to about sqrt(1e-16) = 1e-8 of its example's largest; 1e-7 leaves margin.
    atol = 1e-7 * expected.amax(dim=1, keepdim=True)
    assert torch.all((sv - expected).abs() <= 1e-6 * expected + atol)


def test_generic_numerically_zero_singular_values_stay_below_the_stated_threshold() -> None:
    model = contract_net("conv_bn", seed=12)
    with torch.no_grad():  # two equal logits: every Jacobian has rank at most 4, its fifth singular value is 0
        model.fc.weight[1] = model.fc.weight[0]
    x = example_inputs(model, 4, seed=12)
    sv = io_singular_values(model, x)
    assert torch.all(sv[:, -1] <= 1e-7 * sv[:, 0])
    torch.testing.assert_close(sv[:, :4], autograd_io_singular_values(model.eval(), x)[:, :4], rtol=1e-6, atol=0)


def test_generic_chunks_give_the_same_values_and_bound_the_batch_whatever_the_number_of_examples() -> None:
    model = contract_net("conv_bn", seed=13)
    seen: list[int] = []
    model.conv1.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[0]))
    x = example_inputs(model, 150, seed=13)
    whole = io_singular_values(model, x, chunk_size=150)
    assert seen == [150]
    seen.clear()
    chunked = io_singular_values(model, x, chunk_size=7)
    assert seen == [7] * 21 + [3]
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)
    # Unchunked by the caller, the chunk follows the per-example activations so that the three copies
    # of a chunk's activations held by its backward passes fit the budget, whatever the number of examples.
    chunk = jacobians.generic_chunk(model, model.in_shape)
    assert 3 * 4 * jacobians.activations_per_example(model, model.in_shape) * chunk <= jacobians.CHUNK_BYTES
    seen.clear()
    io_singular_values(model, x)
    passes = seen[1:]  # after the one-example pass that counts the activations
    assert seen[0] == 1 and max(passes) == chunk < 150 and sum(passes) == 150


def test_the_mlp_fast_path_agrees_with_the_generic_path() -> None:
    model = pruned_mlp("tanh", seed=7)
    x = torch.randn(6, 12, dtype=torch.float64)
    assert_spectra_close(io_singular_values(model, x), jacobians._generic_io_singular_values(model, x, 4))


def test_fast_paths_belong_to_the_exact_mlp_class_and_others_get_the_generic_ones() -> None:
    class WiderMLP(MLP):
        pass

    mlp, conv_bn = contract_net("mlp"), contract_net("conv_bn")
    assert jacobians.fast_paths(mlp) is jacobians.FAST_PATHS[MLP]
    assert jacobians.fast_paths(WiderMLP(4, [3], 2, build_activation("tanh"))) is None
    assert jacobians.fast_paths(conv_bn) is None
    assert jacobians.signal_memory(conv_bn, 49, 100, 10) == 0
    assert jacobians.signal_memory(mlp, 12, 100, 10) > 0
    with pytest.raises(SparsepropError, match="MLPs only"):
        layer_singular_values(conv_bn, example_inputs(conv_bn, 2))
    with pytest.raises(ValueError, match="twice"):
        jacobians.register_fast_paths(MLP, jacobians.FAST_PATHS[MLP])


def test_mlp_signal_memory_is_the_stored_spectra_and_two_chunk_budgets() -> None:
    model = MLP(784, [100] * 6, 10, build_activation("tanh"))
    stored = 8 * (5000 * 10 + 200 * (6 * 100 + 10))
    # One example's float64 working set (784 + 4·610 + 3·100²) is below the 256 MiB chunk budget.
    assert jacobians.signal_memory(model, 784, 5000, 200) == stored + 2 * 256 * 2**20
