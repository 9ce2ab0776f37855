"""The criteria that followed SNIP, each against an independent float64 computation, and the budgets and rounds they share."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparseprop import pruning
from sparseprop.errors import ConfigError
from sparseprop.pruning.budgets import allocate, budget_weights, exponential_schedule, linear_schedule, select
from tests.conftest import TinyConvBN, tiny_conv_bn, tiny_mlp

GEN = torch.Generator


def make(name, **settings):
    return pruning.make_pruner({"name": name, **settings})


def prune(net, name, data=None, seed=0, include_bias=True, **settings):
    pruner = make(name, include_bias=include_bias, **settings)
    params = pruning.prunable_parameters(net, include_bias)
    return pruner, params, pruner.prune(net, params, data, None, GEN().manual_seed(seed))


def brute_topk(ranking, keep):
    """The ``keep`` largest entries of all tensors by a plain Python sort (ties: the earlier entry)."""
    flat = [(float(v), i) for i, v in enumerate(torch.cat([r.flatten().double() for r in ranking.values()]).tolist())]
    chosen = {i for _, i in sorted(flat, key=lambda t: (-t[0], t[1]))[:keep]}
    out, start = {}, 0
    for k, r in ranking.items():
        out[k] = torch.tensor([start + j in chosen for j in range(r.numel())]).view(r.shape)
        start += r.numel()
    return out


def assert_same_masks(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].cpu().bool(), b[k].cpu().bool()), k


def data_for(net_in, classes=5, n=60, seed=1):
    g = GEN().manual_seed(seed)
    x = torch.randn(n, *net_in, generator=g, dtype=torch.float64)
    y = torch.arange(n) % classes
    return pruning.ScoringData(x, y)


# ---- magnitude ---------------------------------------------------------------------------------------------


def test_magnitude_scores_are_abs_weights_and_keep_exactly_kappa():
    net = tiny_mlp(dtype=torch.float64)
    pruner, params, res = prune(net, "magnitude", sparsity=0.7)
    kappa = pruner.keep(params)
    assert kappa == round(0.3 * sum(p.numel() for p in params.values()))
    for k, p in params.items():
        assert torch.equal(res.scores[k], p.detach().abs())
    assert sum(int(m.sum()) for m in res.masks.values()) == kappa
    assert_same_masks(res.masks, brute_topk({k: p.detach().abs() for k, p in params.items()}, kappa))


# ---- GraSP -------------------------------------------------------------------------------------------------


def grasp_reference(net, params, x, y, batches, temperature):
    """−θ ⊙ H g with H the full Hessian matrix of Σ_b L_b over the flattened tensors (torch.autograd.functional.hessian)."""
    names = list(params)
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].detach().flatten().double() for k in names])
    net = net.double().eval()

    def loss(vec):
        tensors = {k: t.view(s) for k, t, s in zip(names, vec.split(sizes), shapes)}
        return sum(F.cross_entropy(functional_call(net, tensors, (x[b],)) / temperature, y[b]) for b in batches)

    vec = theta.clone().requires_grad_()
    g = torch.autograd.grad(loss(vec), vec)[0]
    hessian = torch.autograd.functional.hessian(loss, theta)
    s = -theta * (hessian @ g)
    return {k: t.view(sh) for k, t, sh in zip(names, s.split(sizes), shapes)}


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_scores_equal_the_full_hessian_reference(temperature):
    net = tiny_mlp(sizes=(6, 7, 5, 4), dtype=torch.float64)
    params = pruning.prunable_parameters(net)
    data = data_for((6,), classes=4, n=24)
    batches = [torch.arange(0, 12), torch.arange(12, 24)]
    ours = pruning.grasp_scores(net, params, data.x, data.y, batches, temperature)
    ref = grasp_reference(net, params, data.x, data.y, batches, temperature)
    scale = max(float(r.abs().max()) for r in ref.values())
    for k in params:
        assert torch.allclose(ours[k], ref[k], rtol=1e-6, atol=1e-9 * scale), k


def test_grasp_pruner_keeps_the_lowest_scores_in_float64_from_a_float32_net():
    net32 = tiny_mlp(sizes=(6, 7, 5, 4))
    net64 = tiny_mlp(sizes=(6, 7, 5, 4), dtype=torch.float64)
    data = data_for((6,), classes=4, n=40)
    pruner, params, res = prune(net32, "grasp", pruning.ScoringData(data.x.float(), data.y), sparsity=0.6,
                                batches=1, batch_size=8)
    # The same balanced batch drawn again: two examples of each of the 4 classes.
    from sparseprop.pruning.grasp import balanced_batches

    chosen = balanced_batches(data.y, 8, 1, 4, GEN().manual_seed(0))
    assert sorted(data.y[chosen[0]].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    ref = grasp_reference(net64, pruning.prunable_parameters(net64), data.x.float().double(), data.y, chosen, 200.0)
    scale = max(float(r.abs().max()) for r in ref.values())
    for k in params:
        assert res.scores[k].dtype == torch.float64
        assert torch.allclose(res.scores[k], ref[k], rtol=1e-6, atol=1e-9 * scale), k
    kappa = pruner.keep(params)
    assert sum(int(m.sum()) for m in res.masks.values()) == kappa
    assert_same_masks(res.masks, brute_topk({k: -s for k, s in res.scores.items()}, kappa))


def test_grasp_on_a_conv_batchnorm_net_matches_the_hessian_reference():
    net = TinyConvBN().double()
    params = pruning.prunable_parameters(net)
    x = torch.randn(10, 1, 7, 7, generator=GEN().manual_seed(3), dtype=torch.float64)
    y = torch.arange(10) % 5
    batches = [torch.arange(10)]
    ours = pruning.grasp_scores(net, params, x, y, batches, 200.0)
    ref = grasp_reference(net, params, x, y, batches, 200.0)
    scale = max(float(r.abs().max()) for r in ref.values())
    for k in params:
        assert torch.allclose(ours[k], ref[k], rtol=1e-6, atol=1e-9 * scale), k


# ---- SynFlow -----------------------------------------------------------------------------------------------


def synflow_closed_form(weights, biases):
    """|θ ⊙ ∂R/∂θ| for R = 1ᵀ(|W_L|(…(|W_1| 1 + |b_1|)…) + |b_L|), by the forward and backward products in numpy."""
    W = [np.abs(w) for w in weights]
    b = [np.abs(v) for v in biases]
    h = [np.ones(W[0].shape[1])]
    for w, v in zip(W, b):
        h.append(w @ h[-1] + v)
    down = [None] * len(W)  # ∂R/∂(output of layer l)
    a = np.ones(W[-1].shape[0])
    for l in range(len(W) - 1, -1, -1):
        down[l] = a
        a = W[l].T @ a
    return ([W[l] * np.outer(down[l], h[l]) for l in range(len(W))], [b[l] * down[l] for l in range(len(W))])


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_synflow_scores_equal_the_closed_form_path_sums(activation):
    net = tiny_mlp(activation, sizes=(9, 8, 7, 6, 4))
    params = pruning.prunable_parameters(net)
    ws, bs = synflow_closed_form([layer.weight.detach().double().numpy() for layer in net.layers],
                                 [layer.bias.detach().double().numpy() for layer in net.layers])
    ours = pruning.synflow_scores(net, params)
    for i, _ in enumerate(net.layers):
        np.testing.assert_allclose(ours[f"layers.{i}.weight"].numpy(), ws[i], rtol=1e-12)
        np.testing.assert_allclose(ours[f"layers.{i}.bias"].numpy(), bs[i], rtol=1e-12)
        assert ours[f"layers.{i}.weight"].dtype == torch.float64


def test_synflow_rounds_follow_the_exponential_schedule_like_a_plain_loop():
    net = tiny_mlp(sizes=(9, 8, 7, 6, 4))
    weights = [layer.weight.detach().double().numpy() for layer in net.layers]
    biases = [layer.bias.detach().double().numpy() for layer in net.layers]
    pruner, params, res = prune(net, "synflow", sparsity=0.9, rounds=7)
    total = sum(p.numel() for p in params.values())
    kappa = pruner.keep(params)
    # An independent loop: score the masked net in closed form, keep the best of the surviving entries.
    alive = [np.ones_like(w, dtype=bool) for w in weights], [np.ones_like(b, dtype=bool) for b in biases]
    for r in range(1, 8):
        count = kappa if r == 7 else int(round(total * (kappa / total) ** (r / 7)))
        sw, sb = synflow_closed_form([w * m for w, m in zip(weights, alive[0])], [b * m for b, m in zip(biases, alive[1])])
        flat = []
        for l in range(len(weights)):
            flat += [(s if a else -math.inf) for s, a in zip(sw[l].ravel(), alive[0][l].ravel())]
            flat += [(s if a else -math.inf) for s, a in zip(sb[l].ravel(), alive[1][l].ravel())]
        order = sorted(range(len(flat)), key=lambda i: (-flat[i], i))[:count]
        keep = np.zeros(len(flat), dtype=bool)
        keep[order] = True
        start = 0
        for l in range(len(weights)):
            n = weights[l].size
            alive[0][l] = keep[start:start + n].reshape(weights[l].shape)
            alive[1][l] = keep[start + n:start + n + biases[l].size]
            start += n + biases[l].size
    for l in range(len(weights)):
        assert np.array_equal(res.masks[f"layers.{l}.weight"].numpy(), alive[0][l]), l
        assert np.array_equal(res.masks[f"layers.{l}.bias"].numpy(), alive[1][l]), l
    assert sum(int(m.sum()) for m in res.masks.values()) == kappa


class ConvBNTanh(TinyConvBN):
    """TinyConvBN with its tanh as modules, as sparseprop's architectures apply their activations."""

    def __init__(self) -> None:
        super().__init__()
        self.act1, self.act2 = nn.Tanh(), nn.Tanh()

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        return self.fc(self.act2(self.bn2(self.conv2(x))).flatten(1))


def test_synflow_on_conv_batchnorm_matches_a_functional_linear_network():
    net = ConvBNTanh()
    net.load_state_dict(tiny_conv_bn(seed=2).state_dict())  # BatchNorm statistics and affine far from their defaults
    params = pruning.prunable_parameters(net)
    ours = pruning.synflow_scores(net, params)
    # The same network written out with |·| of every tensor, no activation, BatchNorm on |running stats|.
    p = {k: v.detach().double().abs().requires_grad_() for k, v in net.named_parameters()}
    bufs = {k: v.detach().double().abs() for k, v in net.named_buffers() if v.is_floating_point()}

    def bn(z, name, eps):
        return F.batch_norm(z, bufs[f"{name}.running_mean"], bufs[f"{name}.running_var"], p[f"{name}.weight"],
                            p[f"{name}.bias"], False, 0.0, eps)

    x = torch.ones(1, *net.in_shape, dtype=torch.float64)
    z = bn(F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=net.conv1.padding), "bn1", net.bn1.eps)
    z = bn(F.conv2d(z, p["conv2.weight"], None, stride=2, padding=net.conv2.padding), "bn2", net.bn2.eps)
    r = F.linear(z.flatten(1), p["fc.weight"], p["fc.bias"]).sum()
    grads = torch.autograd.grad(r, [p[k] for k in params])
    for (k, g) in zip(params, grads):
        assert torch.allclose(ours[k], (p[k] * g).detach(), rtol=1e-10), k


# ---- iterative SNIP and FORCE ------------------------------------------------------------------------------


def snip_reference(net, values, x, y, idx):
    """|θ · ∂L/∂w| at the network whose tensors are ``values``, θ given separately (float64 autograd)."""
    tensors = {k: v.clone().requires_grad_() for k, v in values.items()}
    loss = F.cross_entropy(functional_call(net.double(), tensors, (x[idx],)), y[idx])
    return dict(zip(tensors, torch.autograd.grad(loss, list(tensors.values()))))


@pytest.mark.parametrize("variant", ["iterative", "force"])
def test_iterative_snip_and_force_rounds_equal_a_plain_loop(variant):
    net = tiny_mlp(sizes=(6, 7, 5, 4), dtype=torch.float64)
    data = data_for((6,), classes=4, n=40)
    pruner, params, res = prune(net, "iterative_snip", data, sparsity=0.8, rounds=3, batches=1, batch_size=10,
                                variant=variant)
    theta = {k: p.detach().clone() for k, p in params.items()}
    total = sum(p.numel() for p in params.values())
    kappa = pruner.keep(params)
    gen = GEN().manual_seed(0)
    mask = {k: torch.ones_like(t, dtype=torch.bool) for k, t in theta.items()}
    for r in range(1, 4):
        count = kappa if r == 3 else int(round(total * (kappa / total) ** (r / 3)))
        idx = torch.randperm(40, generator=gen)[:10]  # one fresh batch per round, as batch_indices draws it
        grads = snip_reference(net, {k: theta[k] * mask[k] for k in theta}, data.x, data.y, idx)
        at = theta if variant == "force" else {k: theta[k] * mask[k] for k in theta}
        scores = {k: (at[k] * grads[k]).abs() for k in theta}
        if variant == "iterative":
            scores = {k: s.masked_fill(~mask[k], -math.inf) for k, s in scores.items()}
        mask = brute_topk(scores, count)
    assert_same_masks(res.masks, mask)
    assert all(torch.equal(p.detach(), theta[k]) for k, p in params.items())  # the network comes back untouched


def test_iterative_pruning_from_a_mask_never_brings_back_a_pruned_entry():
    net = tiny_mlp(sizes=(12, 10, 8, 5), dtype=torch.float64)
    data = data_for((12,), classes=5, n=100)
    pruner = make("iterative_snip", sparsity=0.9, rounds=2, batches=1, batch_size=20, schedule="linear")
    params = pruning.prunable_parameters(net)
    first = pruner.prune(net, params, data, None, GEN().manual_seed(0)).masks
    pruner.options.sparsity = 0.97  # a second call starting from ``first`` only ever removes entries
    second = pruner.prune(net, params, data, first, GEN().manual_seed(5)).masks
    assert all(not (second[k] & ~first[k]).any() for k in first)
    assert sum(int(m.sum()) for m in second.values()) == pruner.keep(params)


# ---- budgets and schedules ---------------------------------------------------------------------------------


def test_allocation_sums_exactly_and_follows_the_erk_ratio_where_no_cap_binds():
    shapes = {"a.weight": torch.Size([300, 784]), "b.weight": torch.Size([100, 300]), "c.weight": torch.Size([10, 100]),
              "c.bias": torch.Size([10])}
    cap = {k: math.prod(s) for k, s in shapes.items()}
    for keep in (1, 50, 2_000, 30_000, 200_000, sum(cap.values())):
        counts = allocate(budget_weights(shapes, "erk"), cap, keep)
        assert sum(counts.values()) == keep and all(0 <= counts[k] <= cap[k] for k in cap)
        free = [k for k in cap if counts[k] < cap[k]]
        # Uncapped tensors: κ_l ∝ Σ dims, within the one entry of rounding.
        if len(free) >= 2:
            eps = [counts[k] / sum(shapes[k]) for k in free]
            for k in free:
                assert abs(counts[k] - max(eps) * sum(shapes[k])) <= 1 + (max(eps) - min(eps)) * sum(shapes[k])
    counts = allocate(budget_weights(shapes, "erk"), cap, 2_000)
    assert counts["c.bias"] == 10  # a bias's ratio 10/10 = 1 is far above the weights': kept whole
    dens = {k: counts[k] / cap[k] for k in ("a.weight", "b.weight")}
    ratio = (sum(shapes["a.weight"]) / cap["a.weight"]) / (sum(shapes["b.weight"]) / cap["b.weight"])
    assert dens["a.weight"] / dens["b.weight"] == pytest.approx(ratio, rel=0.02)


def test_uniform_budget_prunes_every_tensor_to_the_same_sparsity():
    net = tiny_mlp(sizes=(40, 30, 20, 10))
    pruner, params, res = prune(net, "random", sparsity=0.8, include_bias=False, budget="uniform")
    for k, p in params.items():
        assert abs(int(res.masks[k].sum()) - 0.2 * p.numel()) < 1, k
    assert sum(int(m.sum()) for m in res.masks.values()) == pruner.keep(params)


@pytest.mark.parametrize("name,extra", [("magnitude", {}), ("synflow", {"rounds": 3}), ("random", {})])
def test_per_tensor_budgets_keep_each_tensors_count_of_its_best_entries(name, extra):
    net = tiny_mlp(sizes=(40, 30, 20, 10))
    for budget in ("uniform", "erk"):
        pruner, params, res = prune(net, name, sparsity=0.85, budget=budget, **extra)
        counts = allocate(budget_weights({k: p.shape for k, p in params.items()}, budget),
                          {k: p.numel() for k, p in params.items()}, pruner.keep(params))
        for k in params:
            assert int(res.masks[k].sum()) == counts[k], (budget, k)
            if res.scores is not None and extra.get("rounds", 1) == 1:
                assert torch.equal(res.masks[k], brute_topk({k: res.scores[k]}, counts[k])[k])


def test_schedules_end_at_kappa_and_never_grow():
    for total, keep, rounds in [(1000, 5, 100), (57_000, 285, 100), (10, 9, 3), (100, 100, 4)]:
        for schedule in (exponential_schedule, linear_schedule):
            counts = schedule(total, keep, rounds)
            assert len(counts) == rounds and counts[-1] == keep
            assert all(a >= b for a, b in zip([total] + counts, counts)) and min(counts) >= keep


def test_select_per_tensor_never_takes_a_dead_entry():
    ranking = {"a": torch.tensor([3.0, -math.inf, 1.0, -math.inf]), "b": torch.tensor([2.0, 5.0, -math.inf])}
    alive = {k: torch.isfinite(r) for k, r in ranking.items()}
    for budget in ("uniform", "erk"):
        masks = select(ranking, 4, budget, alive)
        assert all(not (m & ~alive[k]).any() for k, m in masks.items())
        assert sum(int(m.sum()) for m in masks.values()) == 4


# ---- options -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node,key", [
    ({"name": "magnitude", "budget": "layer"}, "prune.budget"),
    ({"name": "random", "budget": "ERK"}, "prune.budget"),
    ({"name": "synflow", "rounds": 0}, "prune.rounds"),
    ({"name": "snip", "schedule": "cubic"}, "prune.schedule"),
    ({"name": "grasp", "temperature": 0.0}, "prune.temperature"),
    ({"name": "iterative_snip", "variant": "prospr"}, "prune.variant"),
])
def test_bad_settings_are_refused_naming_the_key(node, key):
    with pytest.raises(ConfigError) as err:
        make(**node)
    assert err.value.key == key


def test_grasp_refuses_a_batch_that_cannot_hold_every_class_equally():
    pruner = make("grasp", batch_size=95)
    with pytest.raises(ConfigError, match="prune.batch_size=95"):
        pruner.options.check_split(1000, "digits")
