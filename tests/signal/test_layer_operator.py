"""Layerwise Jacobians as operators: which map is the layer, and Lanczos spectra against dense float64 SVDs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.models import build_activation, build_model
from sparseprop.signal import layer_operator as lo
from sparseprop.signal import layer_singular_values
from tests.conftest import contract_net, example_inputs, tiny_mlp


def dense_svdvals(f, inputs: torch.Tensor) -> torch.Tensor:
    """Reference: the explicit float64 autograd Jacobian of ``f`` at every example, then its singular values."""
    out = []
    for xi in inputs:
        jac = torch.autograd.functional.jacobian(f, xi)
        out.append(torch.linalg.svdvals(jac.reshape(-1, xi.numel())))
    return torch.stack(out)


def tiny_conv_bn_layers(model):
    """TinyConvBN's layer maps written out by hand, with the input each is evaluated at."""
    def conv1(v):
        return torch.tanh(model.bn1(model.conv1(v[None])))[0]

    def conv2(v):
        return torch.tanh(model.bn2(model.conv2(v[None])))[0]

    def fc(v):
        return model.fc(v[None])[0]
    return conv1, conv2, fc


def test_the_chains_of_a_conv_bn_net_a_resnet_and_lenet5_are_as_stated():
    model = contract_net("conv_bn", seed=1)
    assert [(m.name, m.ops) for m in lo.layer_maps(model, example_inputs(model, 2))] == [
        ("conv1", ["batch_norm", "tanh"]), ("conv2", ["batch_norm", "tanh"]), ("fc", [])]
    resnet = build_model("resnet", (1, 8, 8), 10, build_activation("relu"), depth=8)
    maps = lo.layer_maps(resnet, torch.randn(2, 1, 8, 8))
    assert [m.name for m in maps][:3] == ["conv1", "stages.0.0.conv1", "stages.0.0.conv2"]
    # Stem and first convolutions: BN then ReLU; second convolutions: BN, the shortcut added, ReLU; fc alone.
    assert [m.ops for m in maps] == [["batch_norm", "relu"]] + [["batch_norm", "relu"], ["batch_norm", "add", "relu"]] * 3 + [[]]
    wrn = build_model("wrn16", (3, 8, 8), 10, build_activation("relu"))
    chains = {m.name: m.ops for m in lo.layer_maps(wrn, torch.randn(2, 3, 8, 8))}
    # Pre-activation: the sum of a block goes on to the next block's BatchNorm and activation only where the
    # next block has a projection shortcut (else the sum is also its identity shortcut) and at the end.
    assert (chains["stages.0.0.shortcut"], chains["stages.0.0.conv1"], chains["stages.0.0.conv2"]) == (
        ["add"], ["batch_norm", "relu"], ["add"])
    assert chains["stages.0.1.conv2"] == chains["stages.2.1.conv2"] == ["add", "batch_norm", "relu"]
    lenet = build_model("lenet5", (1, 16, 16), 10, build_activation("tanh"))
    # Caffe's LeNet-5 has no activation after its convolutions: pooling follows them, outside the layer.
    assert [m.ops for m in lo.layer_maps(lenet, torch.randn(2, 1, 16, 16))] == [[], [], ["tanh"], []]


def test_enough_lanczos_steps_give_every_singular_value_of_the_dense_jacobians():
    model = contract_net("conv_bn", seed=3)  # float64
    x = example_inputs(model, 4, seed=3)
    maps = lo.layer_maps(model, x)
    conv1, conv2, fc = tiny_conv_bn_layers(model.eval())
    # Dimensions: conv1 49 -> 75, conv2 75 -> 16, fc 16 -> 5; 64 steps span each smaller space.
    for layer_map, f in zip(maps, (conv1, conv2, fc)):
        est = lo.layer_spectrum(layer_map, iterations=64)
        expected = dense_svdvals(f, layer_map.x.reshape(4, *layer_map.x.shape[1:]))
        assert est.values.shape == expected.shape and est.dim == expected.shape[1]
        # Golub-Kahan in float64 with full reorthogonalisation: rounding of order 1e-16 times the step
        # count, relative to the largest value; 1e-12 leaves ample margin.
        torch.testing.assert_close(est.values, expected, rtol=0, atol=1e-12 * float(expected.max()))
        assert float(est.bounds.max()) <= 1e-12 * float(expected.max())  # the space is exhausted: no residual
        torch.testing.assert_close(est.weights.sum(dim=1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_few_lanczos_steps_bound_the_extreme_singular_values_of_a_resnet_block(activation):
    torch.manual_seed(4)
    model = build_model("resnet", (1, 6, 6), 10, build_activation(activation), depth=8).double().eval()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    maps = lo.layer_maps(model, x)
    block = model.stages[0][0]
    second = maps[2]  # stages.0.0.conv2: 16x6x6 -> 16x6x6
    est = lo.layer_spectrum(second, iterations=24)
    block_inputs = maps[1].x
    for i in range(3):
        shortcut = block.shortcut(block_inputs[i:i + 1])
        expected = dense_svdvals(lambda v: model.activation(block.bn2(block.conv2(v[None])) + shortcut)[0],
                                 second.x[i:i + 1])[0]
        values, bounds = est.values[i], est.bounds[i]
        assert values.shape == (24,) and est.dim == 576
        margin = 1e-12 * float(expected[0])  # float64 rounding
        # Interlacing: the largest Ritz value bounds the largest from below, the smallest the smallest from above.
        assert float(values[0]) <= float(expected[0]) + margin
        assert float(values[-1]) >= float(expected[-1]) - margin
        # Every Ritz value lies within its residual bound of a singular value.
        for v, b in zip(values, bounds):
            assert float((expected - v).abs().min()) <= float(b) + margin
        # The largest converges within 24 steps: its bound is small, so it is close to the truth.
        assert float(values[0]) >= float(expected[0]) - float(bounds[0]) - margin
        assert float(bounds[0]) < 1e-2 * float(expected[0])


def test_the_quadrature_weights_reproduce_the_start_vectors_moments_exactly():
    # Gauss quadrature with k nodes is exact for polynomials of degree < 2k in the eigenvalues of M Mᵀ:
    # sum_i w_i σ_i^(2p) = sᵀ (M Mᵀ)^p s for the start vector s and p < 2k, whatever the convergence.
    gen = torch.Generator().manual_seed(5)
    m = torch.randn(3, 30, 70, generator=gen, dtype=torch.float64)
    start = torch.randn(3, 30, generator=gen, dtype=torch.float64)
    start = start / start.norm(dim=1, keepdim=True)
    est = lo.bidiagonal_singular_values(lambda q: torch.einsum("bij,bj->bi", m, q),
                                        lambda p: torch.einsum("bij,bi->bj", m, p), 30, 70, start, 4, 1e-16)
    gram = m @ m.transpose(1, 2)
    for p in range(1, 8):
        expected = torch.einsum("bi,bij,bj->b", start, torch.linalg.matrix_power(gram, p), start)
        torch.testing.assert_close((est.weights * est.values ** (2 * p)).sum(dim=1), expected, rtol=1e-10, atol=0)


def test_a_zero_operator_and_a_repeated_spectrum_do_not_break_the_iteration():
    start = torch.ones(2, 6, dtype=torch.float64) / math.sqrt(6)
    zero = lo.bidiagonal_singular_values(lambda q: torch.zeros(2, 6, dtype=torch.float64),
                                         lambda p: torch.zeros(2, 9, dtype=torch.float64), 6, 9, start, 10, 1e-16)
    assert torch.equal(zero.values, torch.zeros(2, 6, dtype=torch.float64))
    # M = 2·[I 0]: one distinct singular value six times; the Krylov space is exhausted after one step and
    # the restarts fill the rest, so all six values are found.
    est = lo.bidiagonal_singular_values(lambda q: 2 * q[:, :6], lambda p: torch.cat([2 * p, torch.zeros(2, 3, dtype=p.dtype)], 1),
                                        6, 9, start, 10, 1e-16)
    torch.testing.assert_close(est.values, torch.full((2, 6), 2.0, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(est.weights.sum(dim=1), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)


def test_on_an_mlp_the_operator_path_agrees_with_the_exact_fast_path():
    model = tiny_mlp("tanh", sizes=(12, 10, 8, 5), dtype=torch.float64)
    x = torch.randn(6, 12, dtype=torch.float64)
    exact = layer_singular_values(model, x)
    spectra = lo.layer_spectra(model, x, iterations=16)
    assert [ops for _, ops, _ in spectra] == [["tanh"], ["tanh"], []]
    for (_, _, est), sv in zip(spectra, exact):
        torch.testing.assert_close(est.values, sv, rtol=0, atol=1e-12 * float(sv.max()))


def test_chunks_do_not_change_the_estimate():
    model = contract_net("conv_bn", seed=6)
    x = example_inputs(model, 5, seed=6)
    whole = lo.layer_spectra(model, x, iterations=8)
    chunked = lo.layer_spectra(model, x, iterations=8, chunk_size=2)
    for (_, _, a), (_, _, b) in zip(whole, chunked):
        torch.testing.assert_close(a.values, b.values, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(a.weights, b.weights, rtol=1e-8, atol=1e-10)


def test_estimated_stats_are_those_of_the_weighted_pooled_distribution():
    values = torch.tensor([[3.0, 2.0, 1.0], [4.0, 2.0, 0.5]], dtype=torch.float64)
    weights = torch.tensor([[0.2, 0.3, 0.5], [0.25, 0.25, 0.5]], dtype=torch.float64)
    stats = lo.estimated_stats(lo.Bidiagonal(values, weights, torch.zeros_like(values), dim=7))
    nodes = values.flatten().numpy()
    w = (weights / 2).flatten().numpy()
    mean = float((w * nodes).sum())
    assert stats["count"] == 14 and stats["nonfinite"] == 0
    assert stats["mean"] == pytest.approx(mean)
    assert stats["std"] == pytest.approx(math.sqrt(float((w * (nodes - mean) ** 2).sum())))
    assert (stats["min"], stats["max"], stats["condition"]) == (0.5, 4.0, 8.0)
    assert stats["median_example_condition"] == pytest.approx((3.0 + 8.0) / 2)
    order = np.argsort(nodes)
    cdf = np.cumsum(w[order])
    for key, q in {"q05": 0.05, "q25": 0.25, "q50": 0.5, "q75": 0.75, "q95": 0.95}.items():
        assert stats[key] == nodes[order][np.searchsorted(cdf, q - 1e-12)], key
    # The pooled weights: 0.5 (value 0.5) 0.25 (1.0)... so the median is 1.0 and q25 is 0.5.
    assert (stats["q25"], stats["q50"]) == (0.5, 1.0)


def test_a_non_finite_network_gives_nan_values_counted_as_non_finite():
    model = contract_net("conv_bn", seed=7)
    with torch.no_grad():
        model.conv2.weight[0, 0, 0, 0] = float("nan")
    spectra = lo.layer_spectra(model, example_inputs(model, 3, seed=7), iterations=8)
    stats = lo.estimated_stats(spectra[1][2])
    assert stats["nonfinite"] == 3 * 16 and math.isnan(stats["max"])
    assert lo.estimated_stats(spectra[0][2])["nonfinite"] == 0


def test_a_weight_used_twice_is_refused_by_name():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(torch.tanh(self.hidden(x)))))

    with pytest.raises(SparsepropError, match="hidden of Twice is used 2 times"):
        lo.layer_spectra(Twice(), torch.randn(3, 4))


def test_a_float32_network_is_estimated_like_its_float64_copy_to_1e6_of_the_largest():
    model = contract_net("conv_bn", seed=8)
    x = example_inputs(model, 5, seed=8)
    exact = lo.layer_spectra(model, x, iterations=64)
    single = lo.layer_spectra(model.float(), x.float(), iterations=64)
    for (_, _, a), (_, _, b) in zip(exact, single):
        assert b.values.dtype == torch.float64
        # float32 rounding (1.2e-7) over a few operations per step: about 1e-7 of the largest; 1e-6 leaves margin.
        torch.testing.assert_close(b.values, a.values, rtol=0, atol=1e-6 * float(a.values.max()))


def test_the_default_chunk_bounds_the_batch_whatever_the_number_of_examples(monkeypatch):
    model = contract_net("conv_bn", seed=9)
    seen: list[int] = []
    model.conv1.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].shape[0]))
    # A budget of three examples' Lanczos bases (32 + 4 vectors of the widest layer, conv1: 49 + 75 values)
    # and activations (187 values, three copies): 40 examples go through in chunks of 3.
    monkeypatch.setattr(lo, "CHUNK_BYTES", 3 * (8 * 36 * (49 + 75) + 3 * 8 * 187))
    lo.layer_spectra(model, example_inputs(model, 40, seed=9))
    assert seen[:2] == [1, 1]  # one example recorded, one traced, to size the chunk
    assert seen[2:] == [3] * 13 + [1]


def test_batch_statistics_are_refused_and_the_runs_measuring_mode_is_running_statistics():
    from sparseprop.models.base import set_norm_mode
    from sparseprop.runner.stages import running_statistics

    model = contract_net("conv_bn", seed=10)
    set_norm_mode(model, "batch")
    x = example_inputs(model, 3, seed=10)
    with pytest.raises(SparsepropError, match="running statistics"):
        lo.layer_maps(model, x)
    with running_statistics(model):  # as every stage measures
        assert [m.ops for m in lo.layer_maps(model, x)][0] == ["batch_norm", "tanh"]
