"""A cost model of one run, measured on this machine: how long a sweep will take before it starts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Costs:
    """Measured seconds of the pieces of a run on this machine (one thread), for MLP-7 width 100."""

    train_step: float
    eval_example: float
    snip_batch: float
    io_example: float
    layer_example: float
    ai_step: float
    # Loading the data, writing records and Hydra's set-up of the job: about 1.5 s per run in a sweep
    # (0.7 s of it inside the run, measured over the quick profile's 108 runs on the 2-core reference
    # machine; the reproduction's jobs draw no figures of their own). It does not depend on the
    # settings, so it is not re-measured.
    per_run: float = 1.5
    # Starting a sweep: the interpreter, Hydra's composition, the config checks and the joblib workers.
    per_sweep: float = 15.0


def calibrate() -> Costs:
    """Time a few steps of every costly piece of a run (training, SNIP, JSV, AI) on random data, single-threaded."""
    import torch
    from omegaconf import OmegaConf

    from sparseprop import config, data, inits, isometry, models, pruning, signal, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2000, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (2000,), generator=gen)
        net = models.MLP(784, [100] * 6, 10, models.build_activation("tanh"))
        inits.initialise(net, "orthogonal", generator=gen)
        params = pruning.prunable_parameters(net, True)

        def timed(fn: Any) -> float:
            t = time.perf_counter()
            fn()
            return time.perf_counter() - t

        def pruned(name: str, **settings: Any) -> pruning.Pruned:
            pruner = pruning.make_pruner({"name": name, "sparsity": 0.9, **settings})
            return pruner.prune(net, params, pruning.ScoringData(x, y), None, gen)

        snip = timed(lambda: pruned("snip", batches=10, batch_size=100, target="labels")) / 10
        masks = pruned("random").masks
        pruning.apply_masks(params, masks)
        io = timed(lambda: signal.io_singular_values(net, x[:500])) / 500
        layer = timed(lambda: signal.layer_singular_values(net, x[:100])) / 100
        ai = timed(lambda: isometry.approximate_isometry(net, masks, steps=100)) / 100
        splits = data.Splits("random", x, y, x[:500], y[:500], x[500:1000], y[500:1000], 10)
        cfg = OmegaConf.structured(config.TrainConf(iterations=200, eval_interval=10**6, log_interval=100,
                                                    checkpoint_interval=10**6))
        opt = train.make_optimizer(net, cfg)
        sampler = train.BatchSampler(2000, 100, 0, torch.device("cpu"))
        eval_s = timed(lambda: train.evaluate(net, x, y)) / 2000
        step = (timed(lambda: train.fit(net, params, masks, splits, cfg, train.TrainState(), opt, sampler, progress=False))
                - 1000 * eval_s) / 200
    finally:
        torch.set_num_threads(threads)
    return Costs(train_step=step, eval_example=eval_s, snip_batch=snip, io_example=io, layer_example=layer, ai_step=ai)


def _training_examples(dataset: str) -> int:
    return {"digits": 1294}.get(dataset, 54_000)


def run_cost(cfg: Any, costs: Costs) -> float:
    """Estimated seconds of one run with config ``cfg`` (an MLP; other archs are scaled by nothing)."""
    depth, width = int(cfg.arch.get("depth", 7)), int(cfg.arch.get("width", 100))
    # Everything costly is matrix products over the weights, so it scales with the parameter count.
    scale = (784 * width + (depth - 2) * width * width + 10 * width) / (784 * 100 + 5 * 100 * 100 + 1000)
    n = _training_examples(cfg.dataset.name)
    its = int(cfg.train.iterations)
    total = its * costs.train_step + (its // cfg.train.eval_interval + 1) * 16_000 * costs.eval_example
    if cfg.prune.name == "snip":
        batches = n // cfg.prune.batch_size if str(cfg.prune.batches) == "all" else int(cfg.prune.batches)
        total += batches * costs.snip_batch
    if cfg.isometry.name == "ai":
        total += int(cfg.isometry.steps) * costs.ai_step
    stages = [s for s in cfg.signal.stages if s != "isometry" or cfg.isometry.name != "none"]
    io = n if str(cfg.signal.examples) == "all" else min(n, int(cfg.signal.examples))
    layer = min(n, int(cfg.signal.layer_examples))
    total += len(stages) * (io * costs.io_example + layer * costs.layer_example)
    return scale * total + costs.per_run


# Keys whose values change what a run costs; jobs that agree on them share one composed config.
COST_KEYS = ("prune", "isometry", "arch.depth", "arch.width", "dataset", "train.iterations", "isometry.steps",
              "signal.stages", "signal.examples", "signal.layer_examples", "prune.batches", "train.eval_interval")
