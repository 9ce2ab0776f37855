"""Benchmark: sparseprop's training step on a conv net against a bare PyTorch loop with the same model and masks.

Both loops train copies of one masked conv + BatchNorm network (90% of its prunable entries pruned at
random) with momentum SGD, weight decay and batch 128 on the same in-memory images, alternating in one
process so that machine drift hits both alike. Prints images per second and their ratio (target: ours
>= 0.95 x bare), and the share of a step spent fetching the batch (target: < 5%). The network is a
registered architecture when there is one of that name (``--arch``), else a small conv + BatchNorm net
defined here. ``bench_gpu.py`` runs the same comparison on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from sparseprop import inits, models, pruning, train
from sparseprop.config import TrainConf
from sparseprop.data import Splits

BATCH = 128


class ConvBN(nn.Module):
    """conv3-16, conv3-16, pool, conv3-32, pool, FC: each conv followed by BatchNorm and ReLU."""

    def __init__(self, in_shape: tuple[int, ...], classes: int) -> None:
        super().__init__()
        c, h, w = in_shape
        block = lambda i, o: [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o, eps=1e-3, momentum=0.01), nn.ReLU()]  # noqa: E731
        self.features = nn.Sequential(*block(c, 16), *block(16, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2))
        self.fc = nn.Linear(32 * (h // 4) * (w // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def make_problem(arch: str, in_shape: tuple[int, ...], n: int, device: torch.device):
    """Splits of random images, an initialised network and 90% random masks, all on ``device``."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *in_shape, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    splits = Splits("bench", x, y, x[:BATCH], y[:BATCH], x[:BATCH], y[:BATCH], 10).to(device)
    if arch in models.ARCHS.names():
        net = models.build_model(arch, in_shape, 10, models.build_activation("relu"))
        inits.initialise(net, "vs_h", generator=torch.Generator().manual_seed(0))
    else:
        arch, net = "convbn (defined in this script)", ConvBN(in_shape, 10)
    net = net.to(device)
    params = pruning.prunable_parameters(net)
    m = sum(p.numel() for p in params.values())
    masks = pruning.random_masks(params, pruning.kept_count(m, 0.9), torch.Generator().manual_seed(0))
    masks = {k: v.to(device) for k, v in masks.items()}
    pruning.apply_masks(params, masks)
    return arch, splits, net, masks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(net, masks, splits, steps: int, amp: bool, channels_last: bool) -> float:
    """The reference: the plainest correct masked loop (shuffled epochs, masked gradients and weights)."""
    device = splits.x_train.device
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    params = dict(net.named_parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    n = splits.x_train.shape[0]
    perm, pos = torch.randperm(n, generator=g).to(device), 0
    net.train()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        if pos + BATCH > n:
            perm, pos = torch.randperm(n, generator=g).to(device), 0
        idx = perm[pos:pos + BATCH]
        pos += BATCH
        xb = splits.x_train[idx]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext():
            loss = F.cross_entropy(net(xb), splits.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for k, m in masks.items():
            params[k].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for k, m in masks.items():
                params[k].mul_(m)
    sync(device)
    return time.perf_counter() - t


def our_loop(net, masks, splits, steps: int, amp: bool, channels_last: bool) -> float:
    device = splits.x_train.device
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConf), dict(
        optimizer="momentum", l2=2.5e-4, batch_size=BATCH, iterations=steps, eval_interval=10**9,
        checkpoint_interval=10**9, log_interval=100, amp=amp, channels_last=channels_last))
    params = pruning.prunable_parameters(net)
    opt = train.make_optimizer(net, cfg)
    sampler = train.BatchSampler(splits.x_train.shape[0], BATCH, 0, device)
    sync(device)
    t = time.perf_counter()
    train.fit(net, params, masks, splits, cfg, train.TrainState(), opt, sampler, progress=False)
    sync(device)
    return time.perf_counter() - t


def fetch_share(splits, steps: int, step_s: float) -> float:
    """Seconds to fetch ``steps`` batches as the loop does, as a fraction of ``steps`` training steps."""
    device = splits.x_train.device
    sampler = train.BatchSampler(splits.x_train.shape[0], BATCH, 0, device)
    batch_of = getattr(splits, "train_batch", None)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        idx = sampler.next()
        xb = batch_of(idx, sampler.augment) if batch_of is not None else splits.x_train[idx]
        splits.y_train[idx]
    del xb
    sync(device)
    return (time.perf_counter() - t) / step_s


def compare(arch: str, in_shape: tuple[int, ...], n: int, steps: int, repeats: int, device: torch.device,
            amp: bool = False, channels_last: bool = False) -> float:
    """Print images/s of both loops, their ratio and the batch-fetch share; returns the median ratio."""
    name, splits, net, masks = make_problem(arch, in_shape, n, device)
    bare_loop(copy.deepcopy(net), masks, splits, 3, amp, channels_last)  # warm-up (allocator, cuDNN choices)
    our_loop(copy.deepcopy(net), masks, splits, 3, amp, channels_last)
    ours, bare = [], []
    for _ in range(repeats):
        bare.append(steps * BATCH / bare_loop(copy.deepcopy(net), masks, splits, steps, amp, channels_last))
        ours.append(steps * BATCH / our_loop(copy.deepcopy(net), masks, splits, steps, amp, channels_last))
    ratios = [o / b for o, b in zip(ours, bare)]
    share = fetch_share(splits, steps, steps * BATCH / statistics.median(ours))
    opts = ", ".join(o for o, on in (("bf16 autocast", amp), ("channels-last", channels_last)) if on) or "float32"
    print(f"  {name} {in_shape} on {device.type} ({opts}): bare {statistics.median(bare):8.0f} img/s   "
          f"sparseprop {statistics.median(ours):8.0f} img/s   ratio median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}; target >= 0.95)   batch fetch {100 * share:.1f}% of a step "
          f"(target < 5%)")
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings stable on a busy machine)")
    ap.add_argument("--arch", default="lenet5", help="a registered architecture (else the small net defined here)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps, repeats = args.steps or (20 if args.quick else 50), 3 if args.quick else 7
    print(f"conv training step, 90% masked, momentum SGD, batch {BATCH}, {steps} steps x {repeats} alternating repeats, "
          f"{torch.get_num_threads()} threads")
    compare(args.arch, (1, 28, 28), 10_000, steps, repeats, torch.device("cpu"))


if __name__ == "__main__":
    main()
