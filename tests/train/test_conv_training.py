"""Training a conv + BatchNorm net: masks exact under every option, the L2 step against autograd, batches from
``Splits.train_batch``, evaluation in chunks; the CUDA path where a GPU is present."""

import copy

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sparseprop import pruning, train
from sparseprop.config import TrainConf
from sparseprop.data import Splits
from tests.conftest import tiny_conv_bn

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def image_splits(n=400, classes=5, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 7, 7, generator=g, dtype=dtype)
    y = x[:, 0, 3, :classes].argmax(1)
    return Splits("toy_images", x[:300], y[:300], x[300:350], y[300:350], x[350:], y[350:], classes)


def train_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(TrainConf), kw)


def pruned_net(device="cpu", dtype=torch.float32, keep=120):
    net = tiny_conv_bn(dtype=dtype).to(device)
    params = pruning.prunable_parameters(net)
    masks = pruning.random_masks(params, keep, torch.Generator().manual_seed(0))
    masks = {k: m.to(device) for k, m in masks.items()}
    pruning.apply_masks(params, masks)
    return net, params, masks


def run_fit(net, params, masks, splits, cfg, device="cpu"):
    opt = train.make_optimizer(net, cfg)
    sampler = train.BatchSampler(splits.x_train.shape[0], cfg.batch_size, 0, torch.device(device))
    state = train.fit(net, params, masks, splits, cfg, train.TrainState(), opt, sampler, progress=False)
    return state, opt


def assert_masks_exact(params, masks, opt):
    for k, m in masks.items():
        assert params[k].dtype == torch.float32
        assert torch.count_nonzero(params[k].detach()[~m]) == 0, k
        assert torch.count_nonzero(opt.state[params[k]]["momentum_buffer"][~m]) == 0, k
        assert torch.count_nonzero(params[k].detach()[m]) > 0.9 * m.sum(), k  # kept weights did train


@pytest.mark.parametrize("amp, channels_last", [(False, False), (True, False), (False, True), (True, True)])
def test_conv_bn_training_keeps_pruned_entries_exactly_zero(amp, channels_last):
    net, params, masks = pruned_net()
    cfg = train_cfg(optimizer="momentum", lr=0.1, l2=0.0005, schedule="piecewise", boundaries=[20], values=[0.1, 0.01],
                    batch_size=128, iterations=40, eval_interval=20, log_interval=10, amp=amp, channels_last=channels_last)
    running_mean = net.bn1.running_mean.clone()
    state, opt = run_fit(net, params, masks, image_splits(), cfg)
    assert state.status == "completed" and state.step == 40
    assert_masks_exact(params, masks, opt)
    assert not torch.equal(net.bn1.running_mean, running_mean)  # BatchNorm trained in training mode
    assert net.conv2.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert len(state.evals) == 2 and all(0 <= e["test_error_pct"] <= 100 for e in state.evals)


def reference_step(net, splits, idx, masks, lr, l2, xform=lambda x: x):
    """w − lr · ∂/∂w [mean CE of the batch (BatchNorm in training mode) + l2 Σ (c⊙w)²], masked, in float64 autograd."""
    ref = copy.deepcopy(net).train()
    w = pruning.prunable_parameters(ref)
    rest = [p for n, p in ref.named_parameters() if n not in w]
    loss = F.cross_entropy(ref(xform(splits.x_train[idx])), splits.y_train[idx])
    loss = loss + l2 * (sum(((masks[k] * w[k]) ** 2).sum() for k in w) + sum((p ** 2).sum() for p in rest))
    grads = torch.autograd.grad(loss, list(w.values()))
    return {k: (p.detach() - lr * g) * masks[k] for (k, p), g in zip(w.items(), grads)}


def test_one_conv_bn_step_with_weight_decay_matches_the_l2_objective():
    net, params, masks = pruned_net(dtype=torch.float64)
    splits = image_splits(dtype=torch.float64)
    cfg = train_cfg(lr=0.3, l2=0.05, iterations=1, batch_size=128)
    idx = train.BatchSampler(300, 128, 0, torch.device("cpu")).next()
    expected = reference_step(net, splits, idx, masks, 0.3, 0.05)
    run_fit(net, params, masks, splits, cfg)
    for k, p in params.items():
        assert torch.allclose(p.detach(), expected[k], rtol=0, atol=1e-12), k


class AugmentedSplits(Splits):
    """Splits whose training batches come from ``train_batch``: here the batch reversed left to right and scaled,
    with one random sign per batch drawn from the generator the loop passes."""

    def __init__(self, base, calls):
        super().__init__(**vars(base))
        self.calls = calls

    def train_batch(self, idx, generator):
        sign = 1.0 - 2.0 * torch.randint(0, 2, (), generator=generator, device=idx.device).to(self.x_train.dtype)
        self.calls.append((idx.clone(), generator, float(sign)))
        return sign * 2.0 * self.x_train[idx].flip(-1)


def test_the_loop_takes_its_batches_from_train_batch_with_the_samplers_augmentation_generator():
    net, params, masks = pruned_net(dtype=torch.float64)
    calls = []
    splits = AugmentedSplits(image_splits(dtype=torch.float64), calls)
    cfg = train_cfg(lr=0.3, l2=0.05, iterations=1, batch_size=128)
    sampler = train.BatchSampler(300, 128, 0, torch.device("cpu"))
    expected_sign = 1.0 - 2.0 * float(torch.randint(0, 2, (), generator=copy.deepcopy(sampler).augment))
    idx = copy.deepcopy(sampler).next()
    expected = reference_step(net, splits, idx, masks, 0.3, 0.05, lambda x: expected_sign * 2.0 * x.flip(-1))
    train.fit(net, params, masks, splits, cfg, train.TrainState(), train.make_optimizer(net, cfg), sampler, progress=False)
    assert len(calls) == 1 and torch.equal(calls[0][0], idx) and calls[0][1] is sampler.augment
    assert calls[0][2] == expected_sign
    for k, p in params.items():
        assert torch.allclose(p.detach(), expected[k], rtol=0, atol=1e-12), k


def test_the_augmentation_generator_is_saved_and_restored_with_the_sampler():
    a = train.BatchSampler(50, 8, 3, torch.device("cpu"))
    torch.rand(5, generator=a.augment)
    b = train.BatchSampler(50, 8, 99, torch.device("cpu"))
    b.load_state_dict(a.state_dict())
    assert torch.equal(torch.rand(7, generator=a.augment), torch.rand(7, generator=b.augment))
    fresh = train.BatchSampler(50, 8, 3, torch.device("cpu"))  # the shuffle and the augmentation draw apart
    assert not torch.equal(torch.rand(7, generator=fresh.augment), torch.rand(7, generator=fresh.generator))


def test_evaluation_in_chunks_covers_the_whole_split(monkeypatch):
    net, params, masks = pruned_net(dtype=torch.float64)
    splits = image_splits(n=1000, dtype=torch.float64)  # 650 test examples
    whole = train.evaluate(net, splits.x_test, splits.y_test, chunk=10_000)
    per_example = 187  # TinyConvBN's activations per 1x7x7 example (tests/models)
    monkeypatch.setattr("sparseprop.train.loop.EVAL_BYTES", 4 * per_example * 64)
    assert train.eval_chunk(per_example) == 64
    state = train.TrainState(step=1)
    seen = []
    monkeypatch.setattr("sparseprop.train.loop.evaluate", lambda m, x, y, chunk: seen.append(chunk) or whole)
    train.record_evaluation(net, splits, state, train.eval_chunk(per_example))
    assert seen == [64, 64]
    chunked = train.evaluate(net, splits.x_test, splits.y_test, chunk=64)
    assert chunked["accuracy"] == whole["accuracy"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-12)
    assert train.eval_chunk(1) == train.EVAL_CHUNK


@CUDA
@pytest.mark.parametrize("amp, channels_last", [(False, False), (True, True)])
def test_cuda_training_keeps_masks_exact(amp, channels_last):
    net, params, masks = pruned_net(device="cuda")
    splits = image_splits().to("cuda")
    cfg = train_cfg(optimizer="momentum", lr=0.1, l2=0.0005, batch_size=128, iterations=40, eval_interval=20,
                    log_interval=10, amp=amp, channels_last=channels_last)
    state, opt = run_fit(net, params, masks, splits, cfg, device="cuda")
    assert state.status == "completed"
    assert all(p.device.type == "cuda" for p in net.parameters()) and all(m.device.type == "cuda" for m in masks.values())
    assert_masks_exact(params, masks, opt)


@CUDA
def test_cuda_deterministic_mode_repeats_a_run_exactly():
    from sparseprop.runner.setup import configure_backends

    configure_backends(OmegaConf.create({"deterministic": True}), torch.device("cuda"))
    try:
        results = []
        for _ in range(2):
            net, params, masks = pruned_net(device="cuda")
            cfg = train_cfg(optimizer="momentum", batch_size=128, iterations=20, eval_interval=20, log_interval=10)
            run_fit(net, params, masks, image_splits().to("cuda"), cfg, device="cuda")
            results.append({k: v.detach().cpu() for k, v in params.items()})
        assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    finally:
        configure_backends(OmegaConf.create({"deterministic": False}), torch.device("cpu"))
