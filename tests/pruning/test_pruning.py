import pytest
import torch
import torch.nn.functional as F

from sparseprop import pruning
from sparseprop.errors import ConfigError, NoSignalError
from tests.conftest import tiny_mlp


def reference_scores(model, params, x, y, batches, target="labels"):
    """|w * dL/dw| summed over batches by a plain per-batch autograd loop in float64 (abs after the sum)."""
    model = model.double()
    total = {k: torch.zeros_like(p, dtype=torch.float64) for k, p in params.items()}
    for b in batches:
        model.zero_grad()
        logits = model(x[b].double())
        if target == "labels":
            loss = F.cross_entropy(logits, y[b])
        elif target == "uniform":
            loss = F.cross_entropy(logits, torch.full_like(logits, 1.0 / logits.shape[1]))
        elif target == "self_hard":
            loss = F.cross_entropy(logits, logits.detach().argmax(1))
        else:  # the entropy of the prediction, differentiated through both factors
            loss = -(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()
        loss.backward()
        for k, p in params.items():
            total[k] += p.detach() * p.grad
    return {k: v.abs() for k, v in total.items()}


@pytest.mark.parametrize("target", pruning.TARGETS)
def test_snip_saliency_equals_autograd_reference(target):
    net = tiny_mlp(dtype=torch.float64)
    params = pruning.prunable_parameters(net)
    x, y = torch.randn(70, 12, dtype=torch.float64), torch.randint(0, 5, (70,))
    batches = pruning.batch_indices(70, 20, None, torch.Generator().manual_seed(0))  # 20,20,20,10: uneven last batch
    ours = pruning.connection_sensitivity(net, params, x, y, batches, target, chunk=30)
    ref = reference_scores(net, params, x, y, batches, target)
    for k in params:
        assert torch.allclose(ours[k].abs(), ref[k], rtol=1e-9, atol=1e-12), k


def test_saliency_sums_to_one_and_abs_after_sum():
    g = {"a": torch.tensor([1.0, -3.0]), "b": torch.tensor([[0.0, 4.0]])}
    s = pruning.saliency(g)
    assert sum(v.sum() for v in s.values()).item() == pytest.approx(1.0)
    assert s["a"].tolist() == pytest.approx([1 / 8, 3 / 8])


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.95, 0.999])
def test_global_topk_keeps_exactly_kappa_and_the_largest(sparsity):
    gen = torch.Generator().manual_seed(0)
    scores = {"w1": torch.rand(30, 20, generator=gen), "b1": torch.zeros(30), "w2": torch.rand(7, 30, generator=gen)}
    m = sum(v.numel() for v in scores.values())
    masks = pruning.global_topk(scores, pruning.kept_count(m, sparsity))
    kept = sum(int(v.sum()) for v in masks.values())
    assert kept == round((1 - sparsity) * m)
    kept_vals = torch.cat([scores[k][masks[k]] for k in scores])
    pruned_vals = torch.cat([scores[k][~masks[k]] for k in scores])
    if len(kept_vals) and len(pruned_vals):
        assert kept_vals.min() >= pruned_vals.max()


def test_global_topk_ties_are_deterministic_and_exact():
    scores = {"a": torch.ones(10), "b": torch.ones(5)}
    masks = pruning.global_topk(scores, 7)
    assert masks["a"].tolist() == [True] * 7 + [False] * 3
    assert not masks["b"].any()


def sorted_topk(scores, keep):
    """The reference: a plain Python sort of every score, highest first, ties by position (NaN last)."""
    flat = torch.cat([s.flatten().double() for s in scores.values()]).tolist()
    order = sorted(range(len(flat)), key=lambda i: (flat[i] != flat[i], -flat[i] if flat[i] == flat[i] else 0.0, i))
    chosen = set(order[:keep])
    out, start = {}, 0
    for k, s in scores.items():
        out[k] = torch.tensor([start + j in chosen for j in range(s.numel())], dtype=torch.bool).view(s.shape)
        start += s.numel()
    return out


@pytest.mark.parametrize("with_nan", [False, True])
def test_global_topk_equals_a_stable_sort_with_many_ties(with_nan):
    gen = torch.Generator().manual_seed(3)
    # Few distinct values, so almost every cut falls inside a run of ties; infinities and both zeros as the criteria produce them.
    values = torch.tensor([0.0, -0.0, 1.0, 2.5, float("inf"), float("-inf")] + ([float("nan")] if with_nan else []))
    scores = {"w": values[torch.randint(len(values), (9, 7), generator=gen)],
              "b": values[torch.randint(len(values), (9,), generator=gen)].float(),
              "v": values[torch.randint(len(values), (3, 2, 4), generator=gen)]}
    m = sum(s.numel() for s in scores.values())
    for keep in range(m + 1):
        got, want = pruning.global_topk(scores, keep), sorted_topk(scores, keep)
        assert all(torch.equal(got[k], want[k]) for k in scores), keep
        assert sum(int(v.sum()) for v in got.values()) == keep


def test_random_masks_exact_and_seeded():
    params = {"w": torch.empty(40, 30), "b": torch.empty(40)}
    a = pruning.random_masks(params, 123, torch.Generator().manual_seed(4))
    b = pruning.random_masks(params, 123, torch.Generator().manual_seed(4))
    c = pruning.random_masks(params, 123, torch.Generator().manual_seed(5))
    assert sum(int(v.sum()) for v in a.values()) == 123
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def snip(net, params, x, y, **settings):
    """SNIP's masks and saliencies through the pruner API, with options as given (not range-checked)."""
    pruner = pruning.PRUNERS.get("snip")(pruning.snip.SnipOptions(name="snip", **settings))
    result = pruner.prune(net, params, pruning.ScoringData(x, y), None, torch.Generator().manual_seed(0))
    return result.masks, result.scores


def test_snip_prune_end_to_end_spp_prunes_zero_biases():
    net = tiny_mlp()
    for layer in net.layers:
        torch.nn.init.zeros_(layer.bias)
    params = pruning.prunable_parameters(net, include_bias=True)
    x, y = torch.randn(200, 12), torch.randint(0, 5, (200,))
    masks, sal = snip(net, params, x, y, sparsity=0.6, batches="all", batch_size=100)
    m = sum(p.numel() for p in params.values())
    assert sum(int(v.sum()) for v in masks.values()) == round(0.4 * m)
    for k in params:
        if k.endswith("bias"):
            assert sal[k].abs().sum() == 0 and not masks[k].any()


def test_prunable_parameters_excludes_batchnorm_and_optional_bias():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert list(pruning.prunable_parameters(net)) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert list(pruning.prunable_parameters(net, include_bias=False)) == ["0.weight", "3.weight"]


@pytest.mark.parametrize("bad", ["abc", "0", "-2", "1.5", "", True])
def test_bad_batches_rejected(bad):
    with pytest.raises(ConfigError, match="prune.batches"):
        pruning.parse_batches(bad)


def test_batches_parse_and_limit():
    assert pruning.parse_batches("all") is None and pruning.parse_batches(3) == 3
    with pytest.raises(ConfigError, match="at most 2 batches"):
        pruning.batch_indices(200, 100, 3, torch.Generator())


@pytest.mark.parametrize("n,size", [(70, 20), (300, 100), (101, 10)])
def test_a_count_of_batches_is_the_first_batches_of_the_whole_shuffled_split(n, size):
    whole = pruning.batch_indices(n, size, None, torch.Generator().manual_seed(5))
    for count in range(1, len(whole) + 1):
        first = pruning.batch_indices(n, size, count, torch.Generator().manual_seed(5))
        assert len(first) == count and all(torch.equal(a, b) for a, b in zip(first, whole))
    with pytest.raises(ConfigError, match=f"at most {len(whole)} batches"):
        pruning.batch_indices(n, size, len(whole) + 1, torch.Generator())


def test_snip_protocol_uses_one_batch():
    net = tiny_mlp(dtype=torch.float64)
    params = pruning.prunable_parameters(net)
    x, y = torch.randn(300, 12, dtype=torch.float64), torch.randint(0, 5, (300,))
    gen = torch.Generator().manual_seed(2)
    batches = pruning.batch_indices(300, 100, 1, gen)
    assert len(batches) == 1 and len(batches[0]) == 100
    ours = pruning.connection_sensitivity(net, params, x, y, batches)
    ref = reference_scores(net, params, x, y, batches)
    assert all(torch.allclose(ours[k].abs(), ref[k]) for k in params)


def signal_to_rounding(scores, scale):
    """Total saliency over the float32 rounding level of the scale scores."""
    total = sum(float(v.double().abs().sum()) for v in scores.values())
    return total / (torch.finfo(torch.float32).eps * sum(float(v.double().abs().sum()) for v in scale.values()))


def detached_soft(logits, y):
    """The old self_soft: cross-entropy against the net's own detached softmax (logit gradient p - p = 0)."""
    p = F.softmax(logits.detach(), 1)
    return -(p * F.log_softmax(logits, 1)).sum(1), 2 * p


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_self_soft_in_float32_matches_a_float64_reference_far_above_rounding(activation):
    net = tiny_mlp(activation, sizes=(12, 16, 16, 5))
    params = pruning.prunable_parameters(net)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 12, generator=gen), torch.randint(0, 5, (300,), generator=gen)
    batches = pruning.batch_indices(300, 100, None, torch.Generator().manual_seed(0))
    ours, scale = pruning.sensitivity_and_scale(net, params, x, y, batches, "self_soft")
    ref = reference_scores(net, pruning.prunable_parameters(net), x.double(), y, batches, "self_soft")
    # Saliencies sum to one; float32 scoring of terms of size ~1 is accurate to ~1e-6 of that sum,
    # so 1e-4 is a hundredfold margin that no CPU's rounding can reach.
    s32, s64 = pruning.saliency(ours), pruning.saliency(ref)
    assert sum(float((s32[k].double() - s64[k]).abs().sum()) for k in params) < 1e-4
    # The entropy's gradient is of the size of its terms, not of their rounding.
    assert signal_to_rounding(ours, scale) > 1e4


@pytest.mark.parametrize("target", pruning.TARGETS)
def test_legitimate_targets_pass_the_signal_check(target):
    net = tiny_mlp(sizes=(12, 16, 16, 5))
    params = pruning.prunable_parameters(net)
    x, y = torch.randn(200, 12, generator=torch.Generator().manual_seed(1)), torch.randint(0, 5, (200,))
    batches = pruning.batch_indices(200, 100, None, torch.Generator().manual_seed(0))
    scores, scale = pruning.sensitivity_and_scale(net, params, x, y, batches, target)
    assert signal_to_rounding(scores, scale) > 1e4
    pruning.check_signal(scores, scale, target)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_loss_whose_gradient_cancels_exactly_is_refused(monkeypatch, dtype):
    monkeypatch.setitem(pruning.OBJECTIVES, "detached_soft", detached_soft)
    net = tiny_mlp(sizes=(12, 16, 16, 5), dtype=dtype)
    params = pruning.prunable_parameters(net)
    x, y = torch.randn(200, 12, dtype=dtype), torch.randint(0, 5, (200,))
    batches = pruning.batch_indices(200, 100, None, torch.Generator().manual_seed(0))
    scores, scale = pruning.sensitivity_and_scale(net, params, x, y, batches, "detached_soft")
    # Its exact gradient is zero, so what is left is rounding: at most a few eps of the scale.
    total = sum(float(v.double().abs().sum()) for v in scores.values())
    assert total <= 10 * torch.finfo(dtype).eps * sum(float(v.double().abs().sum()) for v in scale.values())
    with pytest.raises(NoSignalError, match="prune.target=detached_soft: the criterion carries no signal") as info:
        snip(net, params, x, y, sparsity=0.9, target="detached_soft")
    assert "\n" not in str(info.value)


def test_unknown_target_is_a_config_error():
    net = tiny_mlp()
    with pytest.raises(ConfigError, match="prune.target"):
        pruning.connection_sensitivity(net, pruning.prunable_parameters(net), torch.randn(4, 12),
                                       torch.zeros(4, dtype=torch.long), [torch.arange(4)], "soft")


def test_checked_sensitivity_scores_every_batch_and_checks_the_first_pass(monkeypatch):
    net = tiny_mlp(sizes=(12, 16, 16, 5), dtype=torch.float64)  # float64: the pass layout is checked, not float32 rounding
    params = pruning.prunable_parameters(net)
    x = torch.randn(300, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.randint(0, 5, (300,))
    batches = pruning.batch_indices(300, 100, None, torch.Generator().manual_seed(0))
    monkeypatch.setattr(pruning.scoring, "SCORING_CHUNK", 120)  # passes of 100 (the first batch), 120, 80
    ours = pruning.scoring.checked_sensitivity(net, params, x, y, batches, "labels")
    twin = tiny_mlp(sizes=(12, 16, 16, 5))
    ref = reference_scores(twin, pruning.prunable_parameters(twin), x, y, batches)
    for k in params:
        assert torch.allclose(ours[k].abs(), ref[k], rtol=1e-9, atol=1e-12), k
    monkeypatch.setitem(pruning.OBJECTIVES, "detached_soft", detached_soft)
    with pytest.raises(NoSignalError):
        pruning.scoring.checked_sensitivity(net, params, x, y, batches, "detached_soft")
