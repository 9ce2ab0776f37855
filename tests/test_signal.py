"""Jacobian singular values, weight isometry and spectrum statistics against plain references."""

from __future__ import annotations

import warnings

import numpy as np
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
    spectrum_stats,
    weight_singular_values,
)


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


def test_weight_spectra_and_isometry_residual_match_numpy() -> None:
    torch.manual_seed(6)
    # Linear(7, 3) is wide: M Mᵀ − I is 3 × 3 while Mᵀ M − I would be 7 × 7, so the numbers pin
    # down the orientation.
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 7), nn.Linear(7, 3))
    weights = [model[0].weight, model[2].weight, model[3].weight]
    svs, residuals = weight_singular_values(model), isometry_residual(model)
    assert len(svs) == len(residuals) == 3
    for w, sv, res in zip(weights, svs, residuals):
        m = w.detach().double().numpy().reshape(w.shape[0], -1)
        np.testing.assert_allclose(sv.numpy(), np.linalg.svd(m, compute_uv=False), rtol=1e-10)
        np.testing.assert_allclose(res, np.linalg.norm(m @ m.T - np.eye(m.shape[0])), rtol=1e-10)


def numpy_stats(values: np.ndarray) -> dict[str, float]:
    """Reference statistics with NumPy, over the finite entries; rows keep their own finite entries."""
    finite = values[np.isfinite(values)]
    rows = np.where(np.isfinite(values), values, np.nan)
    rows = rows[~np.all(np.isnan(rows), axis=1)]
    with np.errstate(divide="ignore"):
        conditions = np.nanmax(rows, axis=1) / np.nanmin(rows, axis=1)
    out = {"count": finite.size, "nonfinite": values.size - finite.size, "mean": finite.mean(),
           "std": finite.std(ddof=0), "min": finite.min(), "max": finite.max(),
           "condition": finite.max() / finite.min() if finite.min() > 0 else np.inf,
           "median_example_condition": np.median(conditions)}
    for key, q in {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}.items():
        out[key] = np.quantile(finite, q)
    return out


def test_spectrum_stats_match_numpy() -> None:
    values = np.random.default_rng(0).gamma(2.0, size=(41, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = spectrum_stats(torch.from_numpy(values))
    expected = numpy_stats(values)
    assert set(stats) == set(expected)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key


def test_spectrum_stats_counts_and_skips_nonfinite_values_with_a_warning() -> None:
    values = np.random.default_rng(1).gamma(2.0, size=(12, 4))
    values[2, 1], values[5, 0], values[7, 3] = np.nan, np.inf, -np.inf
    # A zero makes that example's (and the pooled) condition number infinite.
    values[3, 2] = 0.0
    with pytest.warns(RuntimeWarning, match="3 of 48"):
        stats = spectrum_stats(torch.from_numpy(values))
    assert stats["nonfinite"] == 3 and stats["count"] == 45
    assert stats["condition"] == np.inf
    for key, value in numpy_stats(values).items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key


def test_spectrum_stats_of_a_single_spectrum_treats_it_as_one_example() -> None:
    stats = spectrum_stats(torch.tensor([4.0, 2.0, 1.0]))
    assert stats["median_example_condition"] == 4.0
    assert stats["std"] == pytest.approx(np.std([4.0, 2.0, 1.0]))


def test_spectrum_stats_of_no_examples_is_nan_not_an_error() -> None:
    stats = spectrum_stats(torch.empty(0, 10))
    assert stats["count"] == 0 and np.isnan(stats["mean"]) and np.isnan(stats["median_example_condition"])
