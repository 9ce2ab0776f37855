import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sparseprop import pruning, train
from sparseprop.config import TrainConf
from sparseprop.data import Splits
from sparseprop.errors import ConfigError
from tests.conftest import tiny_mlp


def toy_splits(n=300, d=12, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (x[:, :classes].argmax(1))
    return Splits("toy", x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:], classes)


def train_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(TrainConf), kw)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_pruned_entries_stay_exactly_zero(optimizer):
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    masks = pruning.random_masks(params, 150, torch.Generator().manual_seed(0))
    pruning.apply_masks(params, masks)
    cfg = train_cfg(optimizer=optimizer, lr=0.5, l2=0.01, iterations=60, eval_interval=20, log_interval=10, batch_size=16)
    opt = train.make_optimizer(net, cfg)
    state = train.fit(net, params, masks, toy_splits(), cfg, train.TrainState(), opt,
                      train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    assert state.status == "completed" and state.step == 60
    for k, m in masks.items():
        assert torch.count_nonzero(params[k].detach()[~m]) == 0
        assert torch.count_nonzero(params[k].detach()[m]) > 0.9 * m.sum()  # kept weights did train
        if optimizer == "momentum":
            assert torch.count_nonzero(opt.state[params[k]]["momentum_buffer"][~m]) == 0


def test_one_step_matches_l2_objective_autograd():
    """One SGD step equals w - lr * d/dw [CE + l2 * sum((c*w)^2)] computed by autograd in float64."""
    net = tiny_mlp(dtype=torch.float64)
    ref = tiny_mlp(dtype=torch.float64)
    params = pruning.prunable_parameters(net)
    masks = pruning.random_masks(params, 100, torch.Generator().manual_seed(1))
    pruning.apply_masks(params, masks)
    ref.load_state_dict(net.state_dict())
    splits = toy_splits()
    splits = Splits(**{k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in vars(splits).items()})
    cfg = train_cfg(lr=0.3, l2=0.05, iterations=1, batch_size=32)
    sampler = train.BatchSampler(200, 32, 0, torch.device("cpu"))
    idx = train.BatchSampler(200, 32, 0, torch.device("cpu")).next()
    train.fit(net, params, masks, splits, cfg, train.TrainState(), train.make_optimizer(net, cfg), sampler, progress=False)
    rparams = pruning.prunable_parameters(ref)
    w = {k: p for k, p in rparams.items()}
    loss = F.cross_entropy(ref(splits.x_train[idx]), splits.y_train[idx])
    loss = loss + 0.05 * sum(((masks[k] * w[k]) ** 2).sum() for k in w)
    grads = torch.autograd.grad(loss, list(w.values()))
    for (k, p), g in zip(w.items(), grads):
        expected = (p.detach() - 0.3 * g) * masks[k]
        assert torch.allclose(params[k].detach(), expected, atol=1e-12), k


def test_schedules():
    assert train.piecewise_lr(1, 0.1, [10, 20], [0.1, 0.01, 0.001]) == 0.1
    assert train.piecewise_lr(10, 0.1, [10, 20], [0.1, 0.01, 0.001]) == 0.1
    assert train.piecewise_lr(11, 0.1, [10, 20], [0.1, 0.01, 0.001]) == 0.01
    assert train.piecewise_lr(21, 0.1, [10, 20], [0.1, 0.01, 0.001]) == 0.001
    assert train.cosine_lr(0, 0.2, 100) == pytest.approx(0.2)
    assert train.cosine_lr(50, 0.2, 100) == pytest.approx(0.1)
    assert train.cosine_lr(100, 0.2, 100) == pytest.approx(0.0, abs=1e-12)


def test_piecewise_schedule_is_applied_in_training():
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    cfg = train_cfg(schedule="piecewise", boundaries=[10], values=[0.2, 0.02], iterations=20, log_interval=10)
    state = train.fit(net, params, None, toy_splits(), cfg, train.TrainState(), train.make_optimizer(net, cfg),
                      train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    lrs = [m["value"] for m in state.metrics if m["name"] == "lr"]
    assert lrs == [0.2, 0.02]


@pytest.mark.parametrize("schedule,extra,expected", [
    ("constant", {}, [0.1, 0.2, 0.2, 0.2]),
    ("piecewise", {"boundaries": [12], "values": [0.2, 0.02]}, [0.1, 0.2, 0.02, 0.02]),
])
def test_linear_warmup_scales_the_schedule_over_its_first_steps(schedule, extra, expected):
    assert [train.warmed_up(0.2, s, 10) for s in (1, 5, 9, 10, 11)] == pytest.approx([0.02, 0.1, 0.18, 0.2, 0.2])
    assert train.warmed_up(0.2, 1, 0) == 0.2  # no warm-up
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    cfg = train_cfg(schedule=schedule, lr=0.2, warmup=10, iterations=20, log_interval=5, **extra)
    state = train.fit(net, params, None, toy_splits(), cfg, train.TrainState(), train.make_optimizer(net, cfg),
                      train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    assert [m["value"] for m in state.metrics if m["name"] == "lr"] == pytest.approx(expected)


@pytest.mark.parametrize("b,v", [([], [0.1]), ([10, 5], [1, 1, 1]), ([10], [0.1]), ([10], [0.1, -1]),
                                 ([10, 10_000], [1, 1, 1])])  # the last boundary is the last step: it never applies
def test_bad_piecewise_rejected(b, v):
    with pytest.raises(ConfigError):
        train.check_schedule(train_cfg(schedule="piecewise", boundaries=b, values=v))


def test_piecewise_boundaries_are_checked_against_the_training_length():
    train.check_schedule(train_cfg(schedule="piecewise", boundaries=[9_999], values=[1, 0.1]))
    train.check_schedule(train_cfg(schedule="piecewise", boundaries=[50], values=[1, 0.1], iterations=0))  # prune only


def test_evaluate_matches_manual():
    net = tiny_mlp()
    s = toy_splits()
    res = train.evaluate(net, s.x_test, s.y_test, chunk=7)
    with torch.no_grad():
        out = net(s.x_test)
    acc = (out.argmax(1) == s.y_test).float().mean().item()
    assert res["accuracy"] == pytest.approx(acc)
    assert res["error_pct"] == pytest.approx(100 * (1 - acc))
    assert res["loss"] == pytest.approx(F.cross_entropy(out, s.y_test).item(), rel=1e-5)


def test_summarise_evals_best_of_last_and_best_val():
    evals = [{"step": 1000 * (i + 1), "val_accuracy": va, "test_error_pct": te, "val_error_pct": 100 * (1 - va)}
             for i, (va, te) in enumerate([(0.9, 3.0), (0.95, 9.0), (0.91, 2.0), (0.92, 5.0), (0.93, 4.0), (0.94, 6.0), (0.9, 7.0)])]
    s = train.summarise_evals(evals, 5)
    assert s["final_test_error_pct"] == 7.0
    assert s["best_last_test_error_pct"] == 2.0  # the last five are steps 3000..7000
    assert s["best_val_step"] == 2000 and s["best_val_test_error_pct"] == 9.0


def test_divergence_stops_and_is_recorded():
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    cfg = train_cfg(lr=1e6, iterations=200, log_interval=5)
    state = train.fit(net, params, None, toy_splits(), cfg, train.TrainState(), train.make_optimizer(net, cfg),
                      train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    assert state.status == "diverged" and state.step < 200 and "loss" in state.reason


def test_sampler_state_roundtrip():
    a = train.BatchSampler(50, 8, 3, torch.device("cpu"))
    for _ in range(9):
        a.next()
    b = train.BatchSampler(50, 8, 99, torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    for _ in range(20):
        assert torch.equal(a.next(), b.next())



def test_metrics_log_cross_entropy_l2_term_and_their_sum():
    net = tiny_mlp()
    params = pruning.prunable_parameters(net)
    masks = pruning.random_masks(params, 150, torch.Generator().manual_seed(0))
    pruning.apply_masks(params, masks)
    start = tiny_mlp()
    start.load_state_dict(net.state_dict())
    cfg = train_cfg(lr=0.2, l2=0.01, iterations=30, eval_interval=30, log_interval=10, batch_size=16)
    splits = toy_splits()
    first = train.BatchSampler(200, 16, 0, torch.device("cpu")).next()
    state = train.fit(net, params, masks, splits, cfg, train.TrainState(), train.make_optimizer(net, cfg),
                      train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    rows = {(m["step"], m["name"]): m["value"] for m in state.metrics if m["split"] == "train"}
    assert sorted({s for s, _ in rows}) == [10, 20, 30]
    for step in (10, 20, 30):
        assert rows[(step, "total")] == pytest.approx(rows[(step, "loss")] + rows[(step, "l2")], rel=1e-12)
    # At the last step the weights are the model's: its L2 term, summed plainly in float64.
    expected = 0.01 * sum(float((p.detach().double() ** 2).sum()) for p in net.parameters())
    assert rows[(30, "l2")] == pytest.approx(expected, rel=1e-12)
    assert rows[(30, "l2")] > 0.01 * rows[(30, "loss")]  # large enough that mixing the two up would show

    # ``loss`` stays the cross-entropy alone: one step logs the first batch's cross-entropy at the start weights.
    one = train.fit(start, pruning.prunable_parameters(start), masks, splits, train_cfg(lr=0.2, l2=0.01, iterations=1,
                    log_interval=1, batch_size=16), train.TrainState(), train.make_optimizer(start, cfg),
                    train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
    logged = {m["name"]: m["value"] for m in one.metrics if m["split"] == "train"}
    net0 = tiny_mlp(dtype=torch.float64)
    params0 = pruning.prunable_parameters(net0)
    pruning.apply_masks(params0, masks)
    ce = F.cross_entropy(net0(splits.x_train[first].double()), splits.y_train[first]).item()
    assert logged["loss"] == pytest.approx(ce, rel=1e-5)  # float32 network against a float64 reference


def _first_divergence(losses, num_classes=10, initial=None, log_every=100):
    """Replay logged mean losses through the rule: (step, reason) of the first that counts as diverged."""
    limit = train.divergence_limit(num_classes, losses[0] if initial is None else initial)
    for i, loss in enumerate(losses, start=1):
        reason = train.divergence_reason(loss, i * log_every, limit)
        if reason is not None:
            return i * log_every, reason
    return None


def test_divergence_rule_on_synthetic_loss_sequences():
    log10 = math.log(10)
    # The paper's default run: from about log(10) down towards 0, with noise, and a transient bump.
    healthy = [2.31, 1.2, 0.6, 0.9, 2.5, 0.4, 0.2, 0.15, 0.3, 0.1]
    assert _first_divergence(healthy, initial=2.30) is None
    # A run that starts far above log(C) (a large init scale) and stays there has not diverged.
    assert _first_divergence([40.0, 45.0, 60.0, 30.0], initial=35.0) is None
    # lr=1000: the loss is near 1000 from the first interval on, never NaN.
    assert _first_divergence([950.0, 1010.0, 980.0], initial=2.35)[0] == 100
    # Slow growth is caught the first time it crosses 10 x max(log C, first loss).
    step, reason = _first_divergence([3.0, 10.0, 20.0, 23.0, 24.0, 30.0], initial=2.0)
    assert step == 500 and "exceeds" in reason and 10 * log10 < 24.0
    assert _first_divergence([2.3, float("nan")], initial=2.3)[0] == 200
    assert _first_divergence([2.3, float("inf")], initial=2.3)[0] == 200
    assert train.divergence_limit(10, None) == pytest.approx(10 * log10)
    assert train.divergence_limit(10, float("nan")) == pytest.approx(10 * log10)
    assert train.divergence_limit(2, 5.0) == pytest.approx(50.0)


def test_a_finite_exploding_loss_is_recorded_diverged_and_a_normal_run_is_not():
    outcomes = {}
    for lr in (1000.0, 0.1):
        torch.manual_seed(0)
        net = tiny_mlp()
        params = pruning.prunable_parameters(net)
        cfg = train_cfg(lr=lr, iterations=300, log_interval=20, eval_interval=100, batch_size=16)
        state = train.fit(net, params, None, toy_splits(), cfg, train.TrainState(), train.make_optimizer(net, cfg),
                          train.BatchSampler(200, 16, 0, torch.device("cpu")), progress=False)
        losses = [m["value"] for m in state.metrics if m["name"] == "loss"]
        outcomes[lr] = (state, losses)
    state, losses = outcomes[1000.0]
    assert state.status == "diverged" and "exceeds" in state.reason
    assert all(math.isfinite(v) for v in losses)  # it exploded without becoming NaN
    assert losses[-1] > train.divergence_limit(5, state.initial_loss)
    state, losses = outcomes[0.1]
    assert state.status == "completed" and state.step == 300
    assert max(losses) < train.divergence_limit(5, state.initial_loss)
