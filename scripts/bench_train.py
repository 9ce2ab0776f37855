"""Benchmark: sparseprop's training loop against a bare hand-written PyTorch loop doing the same work.

Both loops train the same masked MLP-7 (tanh, 90% SNIP-sized random mask) with the same optimiser
on the same in-memory MNIST-shaped data, alternating in one process so that machine drift hits
both alike. Prints steps per second and their ratio (target: ours >= 0.9 x bare). With MNIST
available under $SPARSEPROP_DATA it also times the default `sparseprop train` run as a whole
process (target: <= 60 s wall, <= 1.5 GB peak memory).
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sparseprop import inits, models, pruning, train
from sparseprop.config import TrainConf
from sparseprop.data import Splits
from omegaconf import OmegaConf


def make_problem(n: int = 54_000):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    splits = Splits("bench", x, y, x[:1000], y[:1000], x[:1000], y[:1000], 10)
    net = models.build_model("mlp", (1, 28, 28), 10, models.build_activation("tanh"))
    inits.initialise(net, "vs_l", generator=torch.Generator().manual_seed(0))
    params = pruning.prunable_parameters(net)
    masks = pruning.random_masks(params, pruning.kept_count(sum(p.numel() for p in params.values()), 0.9),
                                 torch.Generator().manual_seed(0))
    pruning.apply_masks(params, masks)
    return splits, net, masks


def bare_loop(net, masks, splits, steps: int, optimizer: str) -> float:
    """The reference: the plainest correct loop (shuffled epochs, masked grads and weights)."""
    params = dict(net.named_parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=5e-4, momentum=0.9 if optimizer == "momentum" else 0)
    g = torch.Generator().manual_seed(0)
    n, bs = splits.x_train.shape[0], 100
    perm, pos = torch.randperm(n, generator=g), 0
    t = time.perf_counter()
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + bs]
        pos += bs
        loss = F.cross_entropy(net(splits.x_train[idx]), splits.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for k, m in masks.items():
            params[k].grad.mul_(m)
        opt.step()
        with torch.no_grad():
            for k, m in masks.items():
                params[k].mul_(m)
    return time.perf_counter() - t


def our_loop(net, masks, splits, steps: int, optimizer: str) -> float:
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConf), dict(
        optimizer=optimizer, iterations=steps, eval_interval=10 ** 9, checkpoint_interval=10 ** 9, log_interval=100))
    params = pruning.prunable_parameters(net)
    opt = train.make_optimizer(net, cfg)
    sampler = train.BatchSampler(splits.x_train.shape[0], 100, 0, torch.device("cpu"))
    t = time.perf_counter()
    train.fit(net, params, masks, splits, cfg, train.TrainState(), opt, sampler, progress=False)
    return time.perf_counter() - t


def loop_ratio(steps: int, repeats: int) -> None:
    splits, net, masks = make_problem()
    print(f"training loop, MLP-7 tanh, 90% masked, batch 100, {steps} steps x {repeats} alternating repeats, "
          f"{torch.get_num_threads()} threads")
    for optimizer in ("sgd", "momentum"):
        ours, bare = [], []
        for _ in range(repeats):
            bare.append(steps / bare_loop(copy.deepcopy(net), masks, splits, steps, optimizer))
            ours.append(steps / our_loop(copy.deepcopy(net), masks, splits, steps, optimizer))
        ratios = [o / b for o, b in zip(ours, bare)]
        print(f"  {optimizer:9s} bare {statistics.median(bare):7.1f} steps/s   sparseprop {statistics.median(ours):7.1f} steps/s"
              f"   ratio median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})   target >= 0.9")


def default_run() -> None:
    root = Path(os.environ.get("SPARSEPROP_DATA", "data"))
    if not (root / "MNIST" / "raw").is_dir():
        print("default MNIST run: skipped (no MNIST under $SPARSEPROP_DATA)")
        return
    exe = Path(sys.executable).parent / "sparseprop"
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = subprocess.run([str(exe), "train", "progress=false", f"hydra.run.dir={tmp}/run"], capture_output=True, text=True)
        wall = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if res.returncode != 0:
            print("default MNIST run failed:", res.stderr[-1000:])
            return
        import json

        s = json.load(open(f"{tmp}/run/summary.json"))
    print(f"default MNIST run (MLP-7 tanh, SNIP over 54,000, 10,000 steps): wall {wall:.1f} s (target <= 60), "
          f"peak RSS {peak_mb:.0f} MB (target <= 1536); train {s['train_time_s']:.1f} s, prune {s['prune_time_s']:.1f} s, "
          f"test error final {s['final_test_error_pct']:.2f}% / best-of-last-5 {s['best_last_test_error_pct']:.2f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, and no whole default run")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings stable on a busy 2-core machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loop_ratio(args.steps or (300 if args.quick else 2000), 3)
    if not args.quick:
        default_run()


if __name__ == "__main__":
    main()
