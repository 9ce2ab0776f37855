"""Operator spectra of conv layers against the explicitly built operator matrix, in float64."""

import math

import pytest
import torch
from torch import nn

from sparseprop import inits
from sparseprop.errors import SparsepropError
from sparseprop.signal import operator as op

# The Fourier route and the dense SVD agree to float64 rounding of O(‖w‖·√size) sums: 1e-10 relative
# to the largest singular value leaves several orders of magnitude of margin.
RTOL = 1e-10


def explicit_operator(weight: torch.Tensor, grid, stride) -> torch.Tensor:
    """The matrix of the circular cross-correlation with ``stride``: column j is the output for basis input j.

    Built without Fourier transforms or phases: y[o, i] = Σ_{c,a} w[o, c, a] x[c, (s·i + a) mod n].
    """
    cout, cin, *k = weight.shape
    d = len(k)
    n_in = cin * math.prod(grid)
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, cin, *grid)
    out = 0
    for tap in torch.cartesian_prod(*[torch.arange(ki) for ki in k]).reshape(-1, d).tolist():
        shifted = torch.roll(basis, shifts=[-a for a in tap], dims=list(range(2, 2 + d)))
        out = out + torch.einsum("oc,bc...->bo...", weight[(slice(None), slice(None), *tap)], shifted)
    sub = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)
    return out[sub].reshape(n_in, -1).T


def reference(weight, grid, stride):
    return torch.linalg.svdvals(explicit_operator(weight.detach().double(), grid, stride))


def assert_same_spectrum(got, want):
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=0, atol=RTOL * float(want.max()))


@pytest.mark.parametrize("cin,cout,k,grid,stride", [
    (3, 5, 3, (6, 6), (1, 1)),
    (5, 3, 3, (6, 4), (1, 1)),
    (2, 4, 1, (4, 4), (1, 1)),
    (4, 2, 5, (6, 6), (1, 1)),
    (2, 3, 5, (4, 4), (1, 1)),  # a kernel wider than the grid wraps around it
    (3, 4, 3, (6, 6), (2, 2)),
    (4, 3, 3, (4, 8), (2, 2)),
    (3, 5, 1, (6, 6), (2, 2)),
    (2, 3, 5, (8, 8), (2, 2)),
    (2, 2, 4, (6, 6), (2, 2)),  # even side: phases with fewer taps
    (3, 2, 3, (6, 6), (3, 1)),
    (3, 4, 3, (5, 3), (1, 1)),  # odd sides: no frequency but 0 is its own conjugate
    (2, 3, 3, (4, 4), (2, 2)),  # a 2x2 coarse grid: every frequency is its own conjugate (real K̂)
])
def test_circular_conv_spectrum_is_that_of_the_explicit_operator(cin, cout, k, grid, stride):
    gen = torch.Generator().manual_seed(cin * 100 + cout * 10 + k)
    weight = torch.randn(cout, cin, k, k, generator=gen, dtype=torch.float64)
    weight *= torch.rand(weight.shape, generator=gen, dtype=torch.float64) > 0.4  # a masked kernel
    got = op.circular_conv_singular_values(weight, grid, stride)
    assert_same_spectrum(got, reference(weight, grid, stride))


def test_float32_kernel_is_decomposed_in_float64_and_chunked_without_changing_the_result():
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 3, 3, 3, generator=gen)
    whole = op.circular_conv_singular_values(weight, (6, 6), 2)
    assert whole.dtype == torch.float64
    assert torch.equal(op.circular_conv_singular_values(weight, (6, 6), 2, chunk_entries=1), whole)
    assert_same_spectrum(whole, reference(weight, (6, 6), (2, 2)))


def test_one_dimensional_convolutions_too():
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    for stride in (1, 2):
        assert_same_spectrum(op.circular_conv_singular_values(weight, (8,), stride), reference(weight, (8,), (stride,)))


@pytest.mark.parametrize("cin,cout,stride", [(4, 4, 1), (3, 6, 1), (6, 3, 1), (4, 4, 2), (8, 4, 2)])
def test_a_delta_orthogonal_kernel_is_an_isometry_of_the_feature_map(cin, cout, stride):
    conv = nn.Conv2d(cin, cout, 3, stride=stride)
    inits.INITS.get("delta_orthogonal", "init")(conv.weight, generator=torch.Generator().manual_seed(0))
    sv = op.layer_operator_singular_values(conv, (8, 8))
    assert sv.numel() == min(cout, cin * stride ** 2) * (8 // stride) ** 2
    assert torch.allclose(sv, torch.ones_like(sv), rtol=0, atol=1e-6)  # float32 orthogonal matrix
    # A random kernel is not: the check above can fail.
    torch.nn.init.normal_(conv.weight)
    assert not torch.allclose(op.layer_operator_singular_values(conv, (8, 8)), torch.ones_like(sv), atol=0.1)


def test_each_layer_of_a_network_gets_its_own_input_grid():
    from tests.conftest import TinyConvBN

    net = TinyConvBN(in_shape=(1, 8, 8))
    assert op.input_grids(net, (1, 8, 8)) == [(8, 8), (6, 6), None]
    sv = op.layer_operator_singular_values(net.conv2, (6, 6))
    assert_same_spectrum(sv, reference(net.conv2.weight, (6, 6), (2, 2)))
    fc = op.layer_operator_singular_values(net.fc, None)
    assert torch.equal(fc, torch.linalg.svdvals(net.fc.weight.detach().double()))


def test_what_is_not_handled_is_refused_with_its_reason():
    with pytest.raises(SparsepropError, match="groups=2"):
        op.layer_operator_singular_values(nn.Conv2d(4, 4, 3, groups=2), (6, 6))
    with pytest.raises(SparsepropError, match="dilation"):
        op.layer_operator_singular_values(nn.Conv2d(4, 4, 3, dilation=2), (6, 6))
    with pytest.raises(SparsepropError, match="not a multiple of the stride"):
        op.layer_operator_singular_values(nn.Conv2d(4, 4, 3, stride=2), (5, 5))
