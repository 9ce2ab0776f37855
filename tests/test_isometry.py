"""Approximate isometry against autograd, and its guarantees: fixed mask, untouched biases."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.inits import initialise
from sparseprop.isometry import ISOMETRY, approximate_isometry, isometry_gradient
from sparseprop.models import MLP, build_activation
from sparseprop.pruning import apply_masks, kept_count, prunable_parameters, random_masks
from sparseprop.signal import isometry_residual


def pruned_tanh_mlp(sparsity: float = 0.7, seed: int = 0) -> tuple[MLP, dict[str, torch.Tensor]]:
    """A small VS-L tanh MLP with non-zero biases, randomly pruned (biases included), and its masks."""
    gen = torch.Generator().manual_seed(seed)
    model = MLP(30, [20, 20, 20], 10, build_activation("tanh"))
    initialise(model, "vs_l", generator=gen)
    with torch.no_grad():
        for layer in model.layers:
            layer.bias.normal_(0.0, 0.5, generator=gen)
    params = prunable_parameters(model, include_bias=True)
    masks = random_masks(params, kept_count(sum(p.numel() for p in params.values()), sparsity), gen)
    apply_masks(params, masks)
    return model, masks


def autograd_objective(matrices: torch.Tensor) -> torch.Tensor:
    """Σ ‖M Mᵀ − I‖_F over a stack of matrices, written plainly for autograd."""
    eye = torch.eye(matrices.shape[-2], dtype=matrices.dtype)
    return sum(torch.linalg.matrix_norm(m @ m.T - eye) for m in matrices.reshape(-1, *matrices.shape[-2:]))


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (3, 5, 8)])
def test_closed_form_gradient_equals_autograd(shape: tuple[int, ...]) -> None:
    matrices = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    norms, grad = isometry_gradient(matrices)
    leaf = matrices.clone().requires_grad_(True)
    objective = autograd_objective(leaf)
    (expected,) = torch.autograd.grad(objective, leaf)
    torch.testing.assert_close(norms.sum(), objective.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_an_exact_isometry_gets_a_zero_gradient_not_nan() -> None:
    norms, grad = isometry_gradient(torch.eye(4, 6))
    assert float(norms) == 0.0
    assert torch.equal(grad, torch.zeros(4, 6))


def test_one_step_is_one_masked_sgd_step_on_the_autograd_objective() -> None:
    model, masks = pruned_tanh_mlp(seed=1)
    start = {i: layer.weight.detach().double().clone() for i, layer in enumerate(model.layers)}
    approximate_isometry(model, masks, steps=1, lr=0.1)
    for i, layer in enumerate(model.layers):
        mask = masks[f"layers.{i}.weight"].double()
        w = (start[i] * mask).requires_grad_(True)
        (grad,) = torch.autograd.grad(autograd_objective(w[None]), w)
        expected = w.detach() - 0.1 * grad * mask
        torch.testing.assert_close(layer.weight.detach().double(), expected, rtol=1e-5, atol=1e-6)


def test_ai_lowers_the_objective_and_keeps_mask_and_biases() -> None:
    model, masks = pruned_tanh_mlp(sparsity=0.7, seed=2)
    masks_before = {k: m.clone() for k, m in masks.items()}
    biases = [layer.bias.detach().clone() for layer in model.layers]
    weights = [layer.weight.detach().clone() for layer in model.layers]
    residual_before = isometry_residual(model)
    threads = torch.get_num_threads()

    result = approximate_isometry(model, masks, steps=400, lr=0.1, record_every=50)

    assert torch.get_num_threads() == threads
    assert result["layers"] == [f"layers.{i}.weight" for i in range(4)]
    assert result["objective_before"] == pytest.approx(residual_before, rel=1e-5)
    assert result["objective_after"] == pytest.approx(isometry_residual(model), rel=1e-5)
    # Holds by construction, not by one CPU's rounding: once settled, each of the 4 layers stays within
    # 4η + 16η² + 4η²(1 + 4η) ≈ 0.62 at η = 0.1 (see the band derived below), 2.5 in all, against
    # 0.25 × 13.0 = 3.25 here; the descent from about 3 per layer takes a few dozen of the 400 steps.
    assert result["total_after"] < 0.25 * result["total_before"]
    assert [s for s, _ in result["curve"]] == list(range(0, 401, 50))
    assert result["curve"][0][1] == pytest.approx(result["total_before"])
    assert result["curve"][-1][1] == pytest.approx(result["total_after"])
    assert masks.keys() == masks_before.keys()
    assert all(torch.equal(masks[k], masks_before[k]) for k in masks)
    for i, layer in enumerate(model.layers):
        mask = masks[f"layers.{i}.weight"]
        assert torch.all(layer.weight[~mask] == 0)
        # The kept weights did move, so the zeros above are not merely an untouched model.
        assert not torch.equal(layer.weight[mask], weights[i][mask])
        assert torch.equal(layer.bias, biases[i])


def test_dense_and_convolutional_weights_are_made_nearly_orthogonal() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.Flatten(), nn.Linear(8 * 4, 6))
    before = sum(isometry_residual(model))
    lr = 0.01
    result = approximate_isometry(model, None, steps=1000, lr=lr)
    assert model[0].weight.shape == (8, 2, 3, 3)
    assert result["total_before"] == pytest.approx(before, rel=1e-5)
    # A fixed step on a norm (not its square) does not converge to zero: it settles in a band whose
    # width follows from the update. With A = M Mᵀ − I, a = ‖A‖_F and the step M ← M − 2η A M / a,
    #   A' = A − (4η/a)(A + A²) + (4η²/a²) A (I + A) A,
    # so a' ≤ |a − 4η| + 4η a + 4η²(1 + a). Once a ≤ 4η this gives a' ≤ 4η + 16η² + 4η²(1 + 4η), and
    # above 4η (but below about 1) a shrinks every step: each layer stays at or below 4η + 21η²
    # (the extra η² covers float32 rounding, orders of magnitude smaller). The descent from about 1.9
    # to that band takes about 100 steps at this η; 1,000 steps leave a wide margin, so the bound
    # holds wherever the band's oscillation happens to be on the last step, whatever the CPU's rounding.
    for residual in isometry_residual(model):
        assert residual <= 4 * lr + 21 * lr**2
    assert before > 3.0  # the bound is a real reduction: from about 1.8 per layer to 0.042


def test_registry_names_and_options() -> None:
    assert ISOMETRY.names() == ["ai", "none"]
    model, masks = pruned_tanh_mlp(seed=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert ISOMETRY.get("none")(model, masks, steps=5) is None
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    result = ISOMETRY.get("ai")(model, masks, steps=7, lr=0.05)
    assert result["curve"][-1][0] == 7
    assert result["total_after"] < result["total_before"]


@pytest.mark.parametrize("options", [{"steps": -1}, {"lr": 0.0}, {"record_every": 0}])
def test_bad_options_are_config_errors(options: dict[str, float]) -> None:
    model, masks = pruned_tanh_mlp(seed=5)
    with pytest.raises(ConfigError):
        approximate_isometry(model, masks, **options)


def test_ai_on_contract_nets_moves_only_the_stated_weights_within_their_masks(net_kind) -> None:
    from sparseprop import models
    from tests.conftest import contract_net

    model = contract_net(net_kind, seed=10)
    gen = torch.Generator().manual_seed(10)
    params = models.prunable_parameters(model, include_bias=True)
    masks = random_masks(params, kept_count(sum(p.numel() for p in params.values()), 0.5), gen)
    apply_masks(params, masks)
    names = [name for name, _ in models.weight_parameters(model)]
    others = {k: v.clone() for k, v in model.state_dict().items() if k not in names}
    result = approximate_isometry(model, masks, steps=50, lr=0.01)
    assert result["layers"] == names
    assert result["total_after"] < result["total_before"]
    # Biases, BatchNorm parameters and running statistics: untouched.
    assert all(torch.equal(v, others[k]) for k, v in model.state_dict().items() if k not in names)
    weights = dict(models.weight_parameters(model))
    for i, name in enumerate(names):
        w = weights[name].detach()
        assert torch.all(w[~masks[name]] == 0)
        # The reported objective is ‖M Mᵀ − I‖_F of the final masked weights, recomputed here in float64.
        m = w.double().reshape(w.shape[0], -1)
        expected = float(torch.linalg.matrix_norm(m @ m.T - torch.eye(m.shape[0], dtype=torch.float64)))
        assert result["objective_after"][i] == pytest.approx(expected, rel=1e-10)


def authors_objective(kernel: torch.Tensor) -> torch.Tensor:
    """The authors' AI term of one conv kernel, from their layout: the (k, k, c_in, c_out) kernel reshaped to
    (k·k·c_in, c_out), ‖WᵀW − I‖_F with I of size c_out (Frobenius norm, not squared)."""
    w = kernel.permute(2, 3, 1, 0).reshape(-1, kernel.shape[0])
    return torch.linalg.matrix_norm(w.T @ w - torch.eye(w.shape[1], dtype=w.dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_conv_kernels_follow_the_authors_definition_objective_and_one_sgd_step(dtype: torch.dtype) -> None:
    """On conv kernels (c_out < and > k·k·c_in), the objective is the authors' summed over layers, and one step is
    one plain SGD step on it with pruned entries fixed, against float64 autograd on the authors' reshaping."""
    gen = torch.Generator().manual_seed(11)
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 64, 1), nn.Flatten(), nn.Linear(64 * 4, 7))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4, generator=gen)
    model = model.to(dtype)
    weights = [model[0].weight, model[2].weight, model[4].weight]
    names = ["0.weight", "2.weight", "4.weight"]
    masks = {n: torch.rand(w.shape, generator=gen) < 0.6 for n, w in zip(names, weights)}
    with torch.no_grad():
        for n, w in zip(names, weights):
            w.mul_(masks[n])
    start = [w.detach().double().clone().requires_grad_(True) for w in weights]
    # The dense layer in the authors' (in, out) layout is the transpose of torch's; a 1×1 "kernel" view gives it.
    objective = sum(authors_objective(w if w.dim() == 4 else w[:, :, None, None]) for w in start)
    grads = torch.autograd.grad(objective, start)
    biases = [m.bias.detach().clone() for m in (model[0], model[2], model[4])]

    result = approximate_isometry(model, masks, steps=1, lr=0.1)

    # float32 weights: the objective and the step are each a few sums of about 100 products of O(1) terms.
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(torch.tensor(result["total_before"], dtype=torch.float64), objective.detach(), **tol)
    for n, w, w0, g, b, m in zip(names, weights, start, grads, biases, (model[0], model[2], model[4])):
        expected = w0.detach() - 0.1 * g * masks[n]
        torch.testing.assert_close(w.detach().double(), expected, **tol)
        assert torch.all(w[~masks[n]] == 0)
        assert torch.equal(m.bias, b)
