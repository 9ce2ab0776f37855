"""Benchmark: the pruning criteria's scoring against the bare passes each one needs, as ratios.

Every criterion's ``score()`` (one round of scoring; the mask selection is separate) is timed against
a hand-written loop doing the passes the criterion's definition requires, alternating in one process
so that machine drift hits both alike, on MLP-7 (784-100x6-10, tanh) and LeNet-5 (ReLU) at 28x28x1:

- SNIP: one forward and backward per scoring batch (bare: model(x_b), cross-entropy, autograd.grad).
  SNIP also back-propagates the sizes of its logit gradient's terms, for the check that its scores
  stand above rounding (``check_signal``): a second backward, so it is also shown against a bare
  loop that does that backward too;
- GraSP: a gradient pass, then a Hessian-vector product by double back-propagation, in float64
  (bare: grad, grad(create_graph=True), dot with g, grad again, on a float64 copy made beforehand;
  the criterion makes its copy on its first round and refreshes its values in every later one);
- SynFlow: one float64 forward and backward of the |W| network on a ones input (bare: the same
  network with its activations removed, made beforehand; per round |W| in, sum, autograd.grad);
- magnitude: |w| (bare: abs of every tensor).

Then SynFlow's whole ``prune()`` at 99.5% in 100 rounds on MLP-7, in seconds, with the share spent
in scoring and in the per-round top-k selection. Prints figures, never pass/fail (target: every
scoring ratio <= 1.2x). Run ``python scripts/bench_prune.py [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sparseprop import inits, models, pruning
from sparseprop.pruning import scored
from sparseprop.pruning.effective import ACTIVATION_TYPES
from sparseprop.pruning.grasp import balanced_batches
from sparseprop.pruning.scoring import batch_indices

SEED = 0
SHAPE = (1, 28, 28)
CLASSES = 10


def network(arch: str) -> nn.Module:
    """MLP-7 (tanh, VS-L) or LeNet-5 (ReLU, VS-H) for MNIST-shaped inputs, seeded."""
    if arch == "mlp7":
        net = models.build_model("mlp", SHAPE, CLASSES, models.build_activation("tanh"), depth=7, width=100)
        inits.initialise(net, "vs_l", generator=torch.Generator().manual_seed(SEED))
    else:
        net = models.build_model("lenet5", SHAPE, CLASSES, models.build_activation("relu"))
        inits.initialise(net, "vs_h", generator=torch.Generator().manual_seed(SEED))
    return net


def scoring_data(n: int) -> pruning.ScoringData:
    """n standard-normal MNIST-shaped examples with balanced labels."""
    x = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(SEED + 1))
    return pruning.ScoringData(x, torch.arange(n) % CLASSES)


def alternate(ours: Callable[[], object], bare: Callable[[], object], repeats: int,
              inner: int) -> tuple[float, float, list[float]]:
    """(median CPU seconds of ours, of bare, ratios ours/bare per repeat), each repeat timing ``inner`` calls of each.

    Process CPU time on one thread: other work on a shared machine disturbs it far less than wall time.
    """
    ours(), bare()  # warm-up: allocator, lazy initialisation
    t_ours, t_bare = [], []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(inner):
            bare()
        t_bare.append((time.process_time() - t) / inner)
        t = time.process_time()
        for _ in range(inner):
            ours()
        t_ours.append((time.process_time() - t) / inner)
    return statistics.median(t_ours), statistics.median(t_bare), [o / b for o, b in zip(t_ours, t_bare)]


def criterion_call(name: str, net: nn.Module, data: pruning.ScoringData | None, **settings: object) -> Callable[[], object]:
    """One round of the criterion's scoring, as its round loop calls it (fresh generator each call)."""
    pruner = pruning.make_pruner({"name": name, **settings})
    params = pruning.prunable_parameters(net)
    initial = {k: p.detach().clone() for k, p in params.items()}
    return lambda: pruner.score(net, params, data, initial, torch.Generator().manual_seed(SEED))


def bare_snip(net: nn.Module, data: pruning.ScoringData, batches: int, batch_size: int,
              check: bool = False) -> Callable[[], object]:
    """A forward and a backward per batch; with ``check`` also the second backward that SNIP's rounding check needs."""
    tensors = list(pruning.prunable_parameters(net).values())

    def run() -> list[torch.Tensor]:
        chosen = batch_indices(data.x.shape[0], batch_size, batches, torch.Generator().manual_seed(SEED))
        g = [torch.zeros_like(t) for t in tensors]
        scale = [torch.zeros_like(t) for t in tensors]
        for b in chosen:
            logits = net(data.x[b])
            for acc, gb in zip(g, torch.autograd.grad(F.cross_entropy(logits, data.y[b]), tensors, retain_graph=check)):
                acc += gb
            if check:  # the logit gradient's term sizes p + onehot, back-propagated
                sizes = (logits.detach().softmax(1) + F.one_hot(data.y[b], CLASSES)) / len(b)
                for acc, gb in zip(scale, torch.autograd.grad((logits * sizes).sum(), tensors)):
                    acc += gb
        return [t.detach() * gb for t, gb in zip(tensors, g)] + [t.detach() * gb for t, gb in zip(tensors, scale)]
    return run


def bare_grasp(net: nn.Module, data: pruning.ScoringData, batch_size: int, temperature: float = 200.0) -> Callable[[], object]:
    twin = copy.deepcopy(net).double().eval()
    tensors = list(pruning.prunable_parameters(twin).values())

    def run() -> list[torch.Tensor]:
        chosen = balanced_batches(data.y, batch_size, 1, CLASSES, torch.Generator().manual_seed(SEED))
        x, y = data.x[chosen[0]].double(), data.y[chosen[0]]
        g = torch.autograd.grad(F.cross_entropy(twin(x) / temperature, y), tensors)
        grads = torch.autograd.grad(F.cross_entropy(twin(x) / temperature, y), tensors, create_graph=True)
        hg = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, g)), tensors)
        return [-(t.detach() * h) for t, h in zip(tensors, hg)]
    return run


def without_activations(module: nn.Module) -> nn.Module:
    """``module`` with every element-wise activation replaced by the identity, in place."""
    for name, child in module.named_children():
        if isinstance(child, ACTIVATION_TYPES):
            setattr(module, name, nn.Identity())
        else:
            without_activations(child)
    return module


def bare_synflow(net: nn.Module) -> Callable[[], object]:
    linear = without_activations(copy.deepcopy(net).double().eval())
    params = dict(net.named_parameters())
    names = list(pruning.prunable_parameters(net))
    ones = torch.ones(1, *SHAPE, dtype=torch.float64)

    def run() -> list[torch.Tensor]:
        values = {k: p.detach().double().abs().requires_grad_(k in names) for k, p in params.items()}
        r = functional_call(linear, values, (ones,)).sum()
        grads = torch.autograd.grad(r, [values[k] for k in names])
        return [(values[k].detach() * g).abs() for k, g in zip(names, grads)]
    return run


def bare_magnitude(net: nn.Module) -> Callable[[], object]:
    tensors = list(pruning.prunable_parameters(net).values())
    return lambda: [t.detach().abs() for t in tensors]


def scoring_rows(repeats: int, quick: bool) -> list[tuple[str, str, float, float, list[float]]]:
    data = scoring_data(2_000)
    snip_batches = 5 if quick else 10
    rows = []
    for arch, heavy in (("mlp7", 5), ("lenet5", 1)):
        net = network(arch)
        snip = criterion_call("snip", net, data, batches=snip_batches, batch_size=100)
        cases = [
            (f"SNIP, {snip_batches} batches of 100", heavy, snip, bare_snip(net, data, snip_batches, 100)),
            ("  against bare + the check's backward", heavy, snip, bare_snip(net, data, snip_batches, 100, check=True)),
            ("GraSP, 1 balanced batch of 100, float64", heavy, criterion_call("grasp", net, data), bare_grasp(net, data, 100)),
            ("SynFlow, one round", 50, criterion_call("synflow", net, None), bare_synflow(net)),
            ("magnitude", 200, criterion_call("magnitude", net, None), bare_magnitude(net)),
        ]
        for label, inner, ours, bare in cases:
            t_ours, t_bare, ratios = alternate(ours, bare, repeats, max(1, inner // (4 if quick else 1)))
            rows.append((arch, label, t_ours, t_bare, ratios))
    return rows


def synflow_prune(repeats: int) -> tuple[float, float, float]:
    """Median seconds of SynFlow's prune() at 99.5% in 100 rounds on MLP-7, and of its scoring and selection within."""
    net = network("mlp7")
    params = pruning.prunable_parameters(net)
    pruner = pruning.make_pruner({"name": "synflow", "sparsity": 0.995, "rounds": 100})
    spent = {"score": 0.0, "select": 0.0}
    score, select = pruner.score, scored.select

    def timed_score(*args, **kwargs):
        t = time.perf_counter()
        try:
            return score(*args, **kwargs)
        finally:
            spent["score"] += time.perf_counter() - t

    def timed_select(*args, **kwargs):
        t = time.perf_counter()
        try:
            return select(*args, **kwargs)
        finally:
            spent["select"] += time.perf_counter() - t

    pruner.score = timed_score
    scored.select = timed_select
    totals, scoring, selecting = [], [], []
    try:
        for _ in range(repeats):
            spent.update(score=0.0, select=0.0)
            t = time.perf_counter()
            pruner.prune(net, params, None, None, torch.Generator().manual_seed(SEED))
            totals.append(time.perf_counter() - t)
            scoring.append(spent["score"])
            selecting.append(spent["select"])
    finally:
        scored.select = select
    return statistics.median(totals), statistics.median(scoring), statistics.median(selecting)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls per repeat and fewer SNIP batches")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps timings stable on a busy 2-core machine)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats={args.repeats}: an integer >= 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    print(f"pruning criteria, scoring against bare passes (CPU time): torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats, medians; load average {os.getloadavg()[0]:.2f}")
    for arch, label, t_ours, t_bare, ratios in scoring_rows(args.repeats, args.quick):
        print(f"  {arch:7s} {label:40s} bare {t_bare * 1e3:8.3f} ms   sparseprop {t_ours * 1e3:8.3f} ms   "
              f"ratio median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})   target <= 1.2")
    total, scoring, selecting = synflow_prune(max(1, args.repeats // 2) if args.quick else args.repeats)
    print(f"  mlp7    SynFlow prune(), 99.5%, 100 rounds        {total:.2f} s wall: scoring {scoring:.2f} s ({scoring / total:.0%}), "
          f"selection {selecting:.2f} s ({selecting / total:.0%}), rest {total - scoring - selecting:.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} at end (the machine may be shared)")


if __name__ == "__main__":
    main()
