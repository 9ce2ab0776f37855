"""Orthogonal inits of conv kernels, tested for their defining properties by brute force, not by their construction."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparseprop import inits, models
from sparseprop.errors import ConfigError, SparsepropError

# Float64 entries of an operator's Gram matrix are sums of a few hundred products of numbers of size <= 1: their
# rounding error is a few hundred ulp (1e-16 each) at most; 1e-12 leaves a wide margin. Float32 kernels carry a
# relative rounding of 6e-8 per entry, so their Gram matrix is within about 1e-6 of the float64 one.
ATOL64, ATOL32 = 1e-12, 1e-5


def circular_operator(weight: torch.Tensor, side: int) -> torch.Tensor:
    """The matrix of the stride-1 convolution by ``weight`` with circular padding on (side, ...) images: its j-th
    column is the flattened output for the j-th basis image, computed by torch's own convolution."""
    weight = weight.double()
    spatial = weight.dim() - 2
    in_size = weight.shape[1] * side ** spatial
    basis = torch.eye(in_size, dtype=torch.float64).reshape(in_size, weight.shape[1], *([side] * spatial))
    pad = tuple(p for k in reversed(weight.shape[2:]) for p in (0, k - 1))
    conv = {1: F.conv1d, 2: F.conv2d}[spatial]
    out = conv(F.pad(basis, pad, mode="circular"), weight)
    assert out.shape[2:] == basis.shape[2:]
    return out.reshape(in_size, -1).T


def gram_error(weight: torch.Tensor, side: int, gain: float = 1.0) -> float:
    """max |MᵀM − gain²·I| of the circular operator M: zero exactly when M preserves every input's norm (times gain)."""
    m = circular_operator(weight, side)
    return (m.T @ m - gain ** 2 * torch.eye(m.shape[1], dtype=torch.float64)).abs().max().item()


def drawn(name: str, shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64, **options) -> torch.Tensor:
    w = torch.empty(shape, dtype=dtype)
    inits.INITS.get(name)(w, generator=torch.Generator().manual_seed(seed), **options)
    return w


ISOMETRIC = ("orthogonal", "delta_orthogonal")
# (out, in, k, k) with in = out, odd, even and 1x1 kernels, and in < out.
SQUARE = [(4, 4, 3, 3), (3, 3, 5, 5), (6, 6, 1, 1), (4, 4, 2, 2), (5, 5, 3, 3)]


@pytest.mark.parametrize("name", ISOMETRIC)
@pytest.mark.parametrize("shape", SQUARE)
@pytest.mark.parametrize("side", [5, 6])
def test_with_circular_padding_the_conv_is_an_orthogonal_operator_when_in_equals_out(name, shape, side):
    m = circular_operator(drawn(name, shape, seed=sum(shape)), side)
    eye = torch.eye(m.shape[0], dtype=torch.float64)
    # Square and MᵀM = MMᵀ = I: every input keeps its norm, and so does every output pulled back.
    assert m.shape[0] == m.shape[1]
    assert (m.T @ m - eye).abs().max().item() < ATOL64
    assert (m @ m.T - eye).abs().max().item() < ATOL64


@pytest.mark.parametrize("name", ISOMETRIC)
@pytest.mark.parametrize("shape", [(6, 3, 3, 3), (8, 1, 5, 5), (5, 2, 2, 2)])
def test_with_fewer_in_than_out_channels_the_conv_preserves_every_norm(name, shape):
    assert gram_error(drawn(name, shape), 6) < ATOL64


@pytest.mark.parametrize("name", ISOMETRIC)
def test_float32_kernels_and_the_gain(name):
    assert gram_error(drawn(name, (8, 8, 3, 3), dtype=torch.float32), 5) < ATOL32
    assert gram_error(drawn(name, (8, 4, 3, 3), gain=1.5), 5, gain=1.5) < ATOL64


def test_the_norm_test_tells_a_non_isometric_kernel():
    # Torch's orthogonal_ on the flattened 3x3 kernel is not an isometric convolution: the same check fails by far.
    assert gram_error(drawn("orthogonal_flat", (4, 4, 3, 3)), 6) > 0.1
    assert gram_error(drawn("vs_l", (4, 4, 3, 3)), 6) > 0.1


def test_block_orthogonal_spreads_over_the_taps_unlike_delta_orthogonal():
    block, delta = drawn("orthogonal", (16, 16, 3, 3)), drawn("delta_orthogonal", (16, 16, 3, 3))
    tap_energy = lambda w: (w ** 2).sum(dim=(0, 1))  # noqa: E731
    # Parseval: the squared kernel summed over taps is the squared Frobenius norm of H, in = 16, for both.
    torch.testing.assert_close(tap_energy(block).sum(), torch.tensor(16.0, dtype=torch.float64))
    torch.testing.assert_close(tap_energy(delta).sum(), torch.tensor(16.0, dtype=torch.float64))
    assert (tap_energy(block) > 0.1).sum() > 1
    assert torch.count_nonzero(tap_energy(delta)) == 1


@pytest.mark.parametrize("shape", [(6, 4, 3, 3), (4, 6, 3, 3), (5, 5, 4, 4), (7, 3, 5), (3, 7, 1, 1)])
def test_delta_orthogonal_is_an_orthogonal_centre_tap_and_zeros(shape):
    w = drawn("delta_orthogonal", shape)
    centre = tuple((k - 1) // 2 for k in shape[2:])
    tap = w[(slice(None), slice(None)) + centre]
    small = min(shape[:2])
    gram = tap @ tap.T if shape[0] == small else tap.T @ tap
    assert (gram - torch.eye(small, dtype=torch.float64)).abs().max().item() < ATOL64
    rest = w.clone()
    rest[(slice(None), slice(None)) + centre] = 0
    assert torch.count_nonzero(rest) == 0


def test_delta_orthogonal_on_a_1d_conv_preserves_every_norm():
    assert gram_error(drawn("delta_orthogonal", (6, 4, 3)), 7) < ATOL64


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (64, 3, 2, 2), (6, 6, 1, 1), (4, 2, 5)])
def test_orthogonal_flat_has_orthonormal_rows_or_columns_of_the_flattened_kernel(shape):
    w = drawn("orthogonal_flat", shape, gain=2.0)
    rows = torch.stack([w[o].flatten() for o in range(shape[0])]) / 2.0  # row o: output channel o's whole kernel
    small = min(rows.shape)
    gram = rows @ rows.T if rows.shape[0] == small else rows.T @ rows
    assert (gram - torch.eye(small, dtype=torch.float64)).abs().max().item() < ATOL64


@pytest.mark.parametrize("shape", [(20, 30), (30, 20), (10, 10)])
def test_dense_layers_get_exactly_what_orthogonal_gives_them(shape):
    plain = drawn("orthogonal", shape, seed=7, dtype=torch.float32)
    for name in ("delta_orthogonal", "orthogonal_flat"):
        assert torch.equal(drawn(name, shape, seed=7, dtype=torch.float32), plain)


@pytest.mark.parametrize("name", ("orthogonal", "delta_orthogonal", "orthogonal_flat"))
def test_conv_inits_are_determined_by_the_generator(name):
    a, b, c = drawn(name, (6, 4, 3, 3), seed=3), drawn(name, (6, 4, 3, 3), seed=3), drawn(name, (6, 4, 3, 3), seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_initialise_a_conv_net_is_seeded():
    from tests.conftest import TinyConvBN

    a, b = TinyConvBN(), TinyConvBN()
    inits.initialise(a, "orthogonal", generator=torch.Generator().manual_seed(5))
    inits.initialise(b, "orthogonal", generator=torch.Generator().manual_seed(5))
    for (_, la), (_, lb) in zip(models.weight_layers(a), models.weight_layers(b)):
        assert torch.equal(la.weight, lb.weight)
        assert la.bias is None or torch.count_nonzero(la.bias) == 0
    assert gram_error(a.conv2.weight, 5) < ATOL32  # conv2: 3 -> 4 channels, isometric


class Shrinking(nn.Module):
    """conv 3 -> 8 then conv 8 -> 4: the second has more in- than out-channels."""

    def __init__(self) -> None:
        super().__init__()
        self.widen, self.narrow = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 3)


def test_orthogonal_refuses_more_in_than_out_channels_from_shapes_alone():
    with torch.device("meta"):
        net = Shrinking()
    with pytest.raises(ConfigError) as info:
        inits.check(net, "orthogonal")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("init='orthogonal' is not valid")
    assert "layer narrow" in msg and "8 in-channels > 4 out-channels" in msg and "delta_orthogonal" in msg
    for name in ("delta_orthogonal", "orthogonal_flat", "vs_l"):
        inits.check(net, name)  # the other inits draw any shape
    with pytest.raises(ConfigError, match="init"):
        inits.check(net, "no_such_init")


def test_initialise_refuses_before_drawing_any_layer():
    net = Shrinking()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    with pytest.raises(ConfigError, match="layer narrow"):
        inits.initialise(net, "orthogonal", generator=torch.Generator().manual_seed(0))
    assert all(torch.all(p == 0.5) for p in net.parameters())  # the first layer, which it could draw, included


@pytest.mark.parametrize("shape, what", [((8, 4, 3, 5), "square"), ((8, 4, 3), "square 2-D conv"),
                                         ((4, 8, 3, 3), "8 in-channels > 4 out-channels")])
def test_orthogonal_called_on_a_weight_it_cannot_draw(shape, what):
    with pytest.raises(SparsepropError, match=what):
        inits.orthogonal(torch.empty(shape))


@pytest.mark.parametrize("name", ("delta_orthogonal", "orthogonal_flat"))
def test_command_line_takes_the_new_inits_and_refuses_a_bad_gain(name):
    from sparseprop.cli import main as cli

    cli.check(["dataset=digits", f"init={name}", "init.gain=2"])
    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", f"init={name}", "init.gain=0"])
    assert "init.gain" in str(info.value) and "\n" not in str(info.value)
