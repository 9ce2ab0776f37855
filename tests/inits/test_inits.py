import math

import pytest
import torch

from sparseprop import inits, models
from sparseprop.errors import ConfigError, SparsepropError


@pytest.mark.parametrize("name,expected", [
    ("vs_l", lambda fi, fo: 1 / fi),
    ("vs_g", lambda fi, fo: 2 / (fi + fo)),
    ("vs_h", lambda fi, fo: 2 / fi),
])
@pytest.mark.parametrize("shape", [(300, 500), (64, 16, 3, 3), (32, 8, 5, 5), (128, 64, 1, 1), (48, 16, 7)])
def test_variance_scaling_variance_uses_the_receptive_field(name, expected, shape):
    w = torch.empty(shape)
    inits.INITS.get(name)(w, generator=torch.Generator().manual_seed(0))
    out_c, in_c, receptive = shape[0], shape[1], math.prod(shape[2:])
    var = expected(in_c * receptive, out_c * receptive)  # PAPER.md: fans include the receptive field k·k
    x, n = w.double().flatten(), w.numel()
    # Sample variance of n normal draws: mean var, std var·sqrt(2/(n-1)) (chi-square); sample mean: std
    # sqrt(var/n). Six standard errors: a correct init fails with probability about 1e-9 per check.
    bound = 6 * var * math.sqrt(2 / (n - 1))
    assert abs(x.var().item() - var) <= bound
    assert abs(x.mean().item()) <= 6 * math.sqrt(var / n)
    if receptive > 1:  # the bound is tight enough to tell fans that leave the receptive field out
        assert abs(x.var().item() - expected(in_c, out_c)) > bound


def test_fans_include_receptive_field():
    assert inits.fans(torch.empty(32, 16, 3, 3)) == (16 * 9, 32 * 9)
    assert inits.fans(torch.empty(8, 4, 5)) == (4 * 5, 8 * 5)
    assert inits.fans(torch.empty(10, 784)) == (784, 10)


@pytest.mark.parametrize("mode,n", [("fan_in", 200), ("fan_out", 50), ("fan_avg", 125)])
def test_vs_custom(mode, n):
    w = torch.empty(50, 200)
    inits.vs_custom(w, generator=torch.Generator().manual_seed(1), scale=3.0, mode=mode)
    assert w.var().item() == pytest.approx(3.0 / n, rel=0.06)


def test_vs_custom_rejects_bad_mode_and_scale():
    with pytest.raises(ConfigError, match="init.mode"):
        inits.vs_custom(torch.empty(3, 3), mode="fan_sum")
    with pytest.raises(ConfigError, match="init.scale"):
        inits.vs_custom(torch.empty(3, 3), scale=0.0)


@pytest.mark.parametrize("shape", [(100, 100), (100, 784), (10, 100), (784, 100)])
def test_orthogonal_has_unit_singular_values(shape):
    w = torch.empty(shape)
    inits.orthogonal(w, generator=torch.Generator().manual_seed(0))
    sv = torch.linalg.svdvals(w.double())
    assert torch.allclose(sv, torch.ones_like(sv), atol=1e-6)
    small = min(shape)
    gram = w.double() @ w.double().T if shape[0] == small else w.double().T @ w.double()
    assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-6)


def test_orthogonal_gain_and_determinism():
    a, b = torch.empty(20, 30), torch.empty(20, 30)
    inits.orthogonal(a, generator=torch.Generator().manual_seed(5), gain=2.0)
    inits.orthogonal(b, generator=torch.Generator().manual_seed(5), gain=2.0)
    assert torch.equal(a, b)
    assert torch.allclose(torch.linalg.svdvals(a), torch.full((20,), 2.0), atol=1e-5)


def test_initialise_zeroes_biases_and_is_seeded():
    from tests.conftest import tiny_mlp

    a = tiny_mlp(seed=3)
    inits.initialise(a, "vs_g", generator=torch.Generator().manual_seed(3))
    b = tiny_mlp(seed=9)
    inits.initialise(b, "vs_g", generator=torch.Generator().manual_seed(3))
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.weight, lb.weight)
        assert torch.count_nonzero(la.bias) == 0


@pytest.mark.parametrize("gamma", [1.0, 0.25, 3.0])
@pytest.mark.parametrize("shape", [(100, 784), (100, 100), (10, 100), (7, 5), (16, 8, 3, 3)])
def test_normal_is_sqrt_gamma_times_the_generators_standard_normals(gamma, shape):
    w = torch.empty(shape)
    inits.normal(w, generator=torch.Generator().manual_seed(4), scale=gamma)
    z = torch.empty(shape).normal_(generator=torch.Generator().manual_seed(4))
    # The same draws scaled by the std sqrt(gamma), whatever the shape and fan: only float32 rounding of
    # the product differs (a few ulp), far below the 1e-6 relative tolerance.
    torch.testing.assert_close(w.double(), math.sqrt(gamma) * z.double(), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.04])
def test_normal_has_variance_gamma_in_every_layer_whatever_its_fan(gamma):
    from sparseprop import models

    net = models.MLP(784, [100] * 5, 10, models.build_activation("tanh"))
    inits.initialise(net, "normal", generator=torch.Generator().manual_seed(2), scale=gamma)
    for layer in net.layers:
        w = layer.weight.detach().double().flatten()
        n = w.numel()
        # Sample variance of n normal draws: mean gamma, std gamma*sqrt(2/(n-1)) (chi-square); sample mean:
        # std sqrt(gamma/n). Six standard errors: a correct init fails with probability about 1e-9.
        assert abs(w.var().item() - gamma) <= 6 * gamma * math.sqrt(2 / (n - 1))
        assert abs(w.mean().item()) <= 6 * math.sqrt(gamma / n)
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_normal_rejects_a_variance_that_is_not_finite_and_positive(bad):
    with pytest.raises(ConfigError, match="init.scale"):
        inits.normal(torch.empty(3, 3), scale=bad)


@pytest.mark.parametrize("bad", ["0", "-1", "inf", "nan"])
def test_command_line_refuses_a_bad_normal_variance_before_running(bad):
    from sparseprop.cli import main as cli

    with pytest.raises(SparsepropError) as info:
        cli.check(["dataset=digits", "init=normal", f"init.scale={bad}"])
    assert "init.scale" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, variance", [("vs_l", lambda fi, fo: 1 / fi), ("vs_g", lambda fi, fo: 2 / (fi + fo)),
                                            ("vs_h", lambda fi, fo: 2 / fi)])
def test_initialise_draws_every_weight_layer_of_the_contract_in_order(net_kind, name, variance):
    from tests.conftest import TinyConvBN, tiny_mlp

    model = tiny_mlp() if net_kind == "mlp" else TinyConvBN()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)  # so that anything initialise skips or misses shows
    inits.initialise(model, name, generator=torch.Generator().manual_seed(11))
    # Reference: the same generator's standard normals, one weight layer after the other in the contract's
    # order, each scaled by the std its fans give; only float32 rounding of the product differs.
    gen = torch.Generator().manual_seed(11)
    for _, module in models.weight_layers(model):
        w = module.weight
        fan_in, fan_out = w.shape[1] * w[0, 0].numel(), w.shape[0] * w[0, 0].numel()
        z = torch.empty(w.shape).normal_(generator=gen)
        torch.testing.assert_close(w.detach().double(), math.sqrt(variance(fan_in, fan_out)) * z.double(),
                                   rtol=1e-6, atol=1e-12)
        assert module.bias is None or torch.count_nonzero(module.bias) == 0
    for key, value in model.named_parameters():  # BatchNorm's parameters: untouched by initialise
        if key.startswith("bn"):
            assert torch.all(value == 0.5), key
