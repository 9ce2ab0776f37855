"""Approximate isometry against autograd, and its guarantees: fixed mask, untouched biases."""

from __future__ import annotations

import math

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


def explicit_operator(kernel: torch.Tensor, grid: tuple[int, int], stride: tuple[int, int] = (1, 1),
                      dilation: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """The circular-padding convolution operator of ``kernel`` as a dense (c_out·h'·w', c_in·H·W) matrix, entry by
    entry from its definition: output (o, y, x) adds K[o, i, a, b] · input (i, (s·y + d·a) mod H, (s·x + d·b) mod W)."""
    c_out, c_in, kh, kw = kernel.shape
    (rows, cols), (sh, sw), (dh, dw) = grid, stride, dilation
    out_rows, out_cols = rows // sh, cols // sw
    # A 0/1 placement tensor keeps the matrix a differentiable function of the kernel.
    place = torch.zeros(out_rows, out_cols, rows, cols, kh, kw, dtype=kernel.dtype)
    for y in range(out_rows):
        for x in range(out_cols):
            for a in range(kh):
                for b in range(kw):
                    place[y, x, (sh * y + dh * a) % rows, (sw * x + dw * b) % cols, a, b] += 1.0
    return torch.einsum("oiab,yxrcab->oyxirc", kernel, place).reshape(c_out * out_rows * out_cols, c_in * rows * cols)


OPERATOR_CASES = [  # (c_out, c_in, k, grid, stride, dilation)
    (3, 2, 3, (5, 6), (1, 1), (1, 1)),
    (4, 2, 3, (6, 4), (2, 2), (1, 1)),
    (5, 3, 3, (2, 2), (1, 1), (1, 1)),  # a 3x3 kernel on a 2x2 grid wraps around (VGG's last stage on CIFAR)
    (6, 2, 1, (4, 6), (2, 2), (1, 1)),  # ResNet's and WRN's strided 1x1 shortcuts
    (2, 3, 3, (7, 5), (1, 1), (2, 1)),
    (3, 1, 5, (4, 4), (2, 1), (1, 1)),
]


@pytest.mark.parametrize("c_out,c_in,k,grid,stride,dilation", OPERATOR_CASES)
def test_operator_objective_and_spectrum_equal_the_explicit_operator(c_out, c_in, k, grid, stride, dilation) -> None:
    from sparseprop.isometry import ConvGeometry, operator_grams, operator_objective

    kernel = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=torch.Generator().manual_seed(c_out + k))
    geometry = ConvGeometry(grid, stride, dilation)
    a = explicit_operator(kernel, grid, stride, dilation)
    positions = (grid[0] // stride[0]) * (grid[1] // stride[1])
    residual = torch.linalg.matrix_norm(a @ a.T - torch.eye(a.shape[0], dtype=a.dtype))
    torch.testing.assert_close(operator_objective(kernel, geometry), residual / positions**0.5, rtol=1e-10, atol=0)
    # The blocks' eigenvalues are those of A Aᵀ: the squared singular values of the operator.
    blocks = torch.linalg.eigvalsh(operator_grams(kernel, geometry)).flatten().sort().values
    torch.testing.assert_close(blocks, torch.linalg.eigvalsh(a @ a.T).sort().values, rtol=1e-10, atol=1e-10)


def test_a_one_by_one_kernel_scores_its_kernel_level_objective_on_any_grid() -> None:
    from sparseprop.isometry import ConvGeometry, operator_objective

    kernel = torch.randn(5, 7, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = kernel[:, :, 0, 0]
    expected = torch.linalg.matrix_norm(m @ m.T - torch.eye(5, dtype=torch.float64))
    for geometry in (ConvGeometry((1, 1), (1, 1), (1, 1)), ConvGeometry((6, 4), (1, 1), (1, 1)),
                     ConvGeometry((6, 4), (2, 2), (1, 1))):
        torch.testing.assert_close(operator_objective(kernel, geometry), expected, rtol=1e-12, atol=0)


def test_the_operator_level_step_is_one_masked_sgd_step_on_the_explicit_operators_objective() -> None:
    from tests.conftest import tiny_conv_bn

    model = tiny_conv_bn(seed=3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    names = ["conv1.weight", "conv2.weight", "fc.weight"]
    weights = [model.conv1.weight, model.conv2.weight, model.fc.weight]
    masks = {n: torch.rand(w.shape, generator=gen) < 0.7 for n, w in zip(names, weights)}
    with torch.no_grad():
        for n, w in zip(names, weights):
            w.mul_(masks[n])
    start = [w.detach().clone().requires_grad_(True) for w in weights]
    # conv1 sees the 7x7 input; conv2 (stride 2) its 5x5 output, rounded up to the 6x6 grid stride 2 needs.
    a1, a2 = explicit_operator(start[0], (7, 7)), explicit_operator(start[1], (6, 6), (2, 2))
    fc = start[2]
    terms = [torch.linalg.matrix_norm(a1 @ a1.T - torch.eye(a1.shape[0], dtype=a1.dtype)) / 7,
             torch.linalg.matrix_norm(a2 @ a2.T - torch.eye(a2.shape[0], dtype=a2.dtype)) / 3,
             torch.linalg.matrix_norm(fc @ fc.T - torch.eye(fc.shape[0], dtype=fc.dtype))]
    grads = torch.autograd.grad(sum(terms), start)
    others = {k: v.clone() for k, v in model.state_dict().items() if k not in names}

    result = approximate_isometry(model, masks, steps=1, lr=0.05, level="operator")

    assert result["level"] == "operator" and result["layers"] == names
    torch.testing.assert_close(torch.tensor(result["objective_before"], dtype=torch.float64),
                               torch.stack(terms).detach(), rtol=1e-10, atol=0)
    for n, w, w0, g in zip(names, weights, start, grads):
        torch.testing.assert_close(w.detach(), w0.detach() - 0.05 * g * masks[n], rtol=1e-10, atol=1e-12)
        assert torch.all(w[~masks[n]] == 0)
    assert all(torch.equal(v, others[k]) for k, v in model.state_dict().items() if k not in names)


def test_operator_level_ai_makes_the_circular_operators_nearly_orthogonal() -> None:
    from sparseprop.isometry import ConvGeometry, operator_objective
    from tests.conftest import tiny_conv_bn

    model = tiny_conv_bn(seed=4)
    result = approximate_isometry(model, None, steps=500, lr=0.01, level="operator")
    assert result["curve"][0][1] == pytest.approx(result["total_before"])
    geometries = {"conv1.weight": ConvGeometry((7, 7), (1, 1), (1, 1)), "conv2.weight": ConvGeometry((6, 6), (2, 2), (1, 1))}
    after = dict(zip(result["layers"], result["objective_after"]))
    before = dict(zip(result["layers"], result["objective_before"]))
    exact = {}
    for name, geometry in geometries.items():
        w = dict(model.named_parameters())[name].detach().double()
        exact[name] = float(operator_objective(w, geometry))
        assert after[name] == pytest.approx(exact[name], rel=1e-5)
    # conv1 maps 1 channel to 3 at stride 1: every frequency block K̂ K̂ᴴ (3 x 3) has rank 1, so its residual
    # has two eigenvalues -1 and the objective can never go below sqrt(2), the floor AI must approach and not cross.
    assert math.sqrt(2) - 1e-12 <= exact["conv1.weight"] < math.sqrt(2) * 1.01 < before["conv1.weight"]
    # conv2 (3 -> 4 channels, stride 2 folds 4 input frequencies: 12 inputs) and fc can be made orthogonal: the
    # fixed step settles in a band of order lr (see the kernel-level test), reached within about 300 of the
    # 500 steps from above 1 (about 0.02 to 0.04 then, on three seeds), so a tenfold reduction holds with margin.
    for name in ("conv2.weight", "fc.weight"):
        assert before[name] > 1.0 and after[name] < 0.1 * before[name]


def test_a_run_records_the_level_and_each_layers_objective(tmp_path) -> None:
    import pandas as pd
    from hydra import compose, initialize_config_dir

    from sparseprop import config, records
    from sparseprop.runner.run import Run

    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=digits", "arch=resnet", "arch.depth=8", "progress=false", "train.iterations=0", "signal.stages=[]",
            "prune.batches=1", "isometry=ai", "isometry.steps=30", "isometry.level=operator", "threads=1"])
    Run(cfg, tmp_path).execute()
    summary = records.read_json(tmp_path / records.SUMMARY)
    table = pd.read_csv(tmp_path / records.ISOMETRY)
    layers = pd.read_csv(tmp_path / records.LAYERS)
    assert summary["isometry_level"] == "operator" and set(table.level) == {"operator"}
    total = table[table.layer == "total"]
    assert total.step.tolist() == [0, 30]
    assert total.objective.tolist() == pytest.approx([summary["ai_objective_before"], summary["ai_objective_after"]])
    per_layer = table[table.layer != "total"]
    weights = layers[layers.kind == "weight"]
    for step, column in ((0, "ai_objective_before"), (30, "ai_objective_after")):
        rows = per_layer[per_layer.step == step].set_index("layer").objective
        assert rows.index.tolist() == weights.name.tolist()
        assert rows.tolist() == pytest.approx(weights[column].tolist())
        assert rows.sum() == pytest.approx(summary[column])
    assert summary["ai_objective_after"] < summary["ai_objective_before"]
    # The run's figure draws the summed objective only, labelled with the operator's objective.
    from sparseprop.runner import plots

    fig = plots.isometry_curve(table)
    line = fig.axes[0].lines[0]
    assert line.get_ydata().tolist() == pytest.approx(total.objective.tolist()) and "AA^T" in fig.axes[0].get_ylabel()
    plots.plt.close(fig)


@pytest.mark.parametrize("width,threads_inside", [(20, 1), (1024, 2)])
def test_small_steps_run_on_one_thread_and_large_ones_on_the_configured_threads(monkeypatch, width, threads_inside) -> None:
    from sparseprop import isometry

    seen = []
    original = isometry.isometry_gradient

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(isometry, "isometry_gradient", spy)
    model = nn.Sequential(nn.Linear(width // 2, width))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # M is (width, width/2): one step is 2·width²·width/2 = width³ multiply-adds, 8e3 or 1.1e9.
        assert (isometry.step_macs([(1, width, width // 2)], []) >= isometry.THREADED_MACS) == (threads_inside == 2)
        approximate_isometry(model, None, steps=1)
        assert seen == [threads_inside] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_an_operator_level_isometry_and_a_dead_channel_get_finite_gradients() -> None:
    from sparseprop.isometry import ConvGeometry, _operator_step, operator_objective

    geometry = ConvGeometry((4, 4), (1, 1), (1, 1))
    # A centre tap of the identity: the circular operator is the identity, an exact isometry.
    identity = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
    identity[range(3), range(3), 1, 1] = 1.0
    assert float(operator_objective(identity, geometry)) < 1e-100
    kernel = identity.clone()
    _operator_step(kernel, torch.ones_like(kernel), geometry, lr=0.1)
    assert torch.equal(kernel, identity)
    # A channel pruned to zero: its row and column of every block are exactly zero.
    dead = torch.randn(3, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(dead)
    mask[0] = 0.0
    dead *= mask
    _operator_step(dead, mask, geometry, lr=0.1)
    assert torch.isfinite(dead).all() and torch.all(dead[0] == 0)
