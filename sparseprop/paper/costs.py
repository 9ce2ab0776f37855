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
    # GraSP's scoring of one batch of 100 (a gradient pass and a Hessian-vector product, float64), and one
    # round of a scored criterion without data (SynFlow: a float64 one-example pass, then the top-k selection).
    grasp_batch: float = 0.0
    scored_round: float = 0.0


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
        grasp = timed(lambda: pruned("grasp", batches=1, batch_size=100))
        scored_round = timed(lambda: pruned("synflow", rounds=10)) / 10
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
    return Costs(train_step=step, eval_example=eval_s, snip_batch=snip, io_example=io, layer_example=layer, ai_step=ai,
                 grasp_batch=grasp, scored_round=scored_round)


def _training_examples(dataset: str) -> int:
    return {"digits": 1294}.get(dataset, 54_000)


# Multiply-adds of one MLP-7 (width 100) example, the network the costs are measured on.
MLP7_MACS = 784 * 100 + 5 * 100 * 100 + 100 * 10
# Multiply-adds of one approximate-isometry step of MLP-7: M Mᵀ and A M of each (out, in) weight, out²·in each.
MLP7_AI_MACS = 2 * (100 * 100 * 784 + 5 * 100 * 100 * 100 + 10 * 10 * 100)


def network_macs(cfg: Any) -> tuple[int, int]:
    """(multiply-adds of one example's forward pass, of one AI step) of the configured network, from its meta layout.

    An AI step forms M Mᵀ and A M for every weight reshaped to M = (out, in·k·k): 2·out·(out·in·k·k) multiply-adds.
    """
    import torch
    from torch import nn

    from sparseprop import data
    from sparseprop.runner import setup

    shape = data.SHAPES[cfg.dataset.name]
    model = setup.meta_model(cfg, shape).eval()
    total = 0

    def count(module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += out[0].numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.empty(1, *shape.in_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    ai = sum(2 * m.weight.shape[0] * m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return total, ai


def run_cost(cfg: Any, costs: Costs) -> float:
    """Estimated seconds of one run with config ``cfg`` on this machine's CPU (one thread).

    Everything costly is products over the weights: an MLP's costs scale with its parameter count, another
    network's with its multiply-adds per example (against MLP-7's), and AI with its step's multiply-adds. Convolutions
    run fewer multiply-adds a second than matrix products on a CPU, so for conv nets this is a lower bound.
    """
    n = _training_examples(cfg.dataset.name)
    if cfg.arch.name in ("mlp", "lenet300"):
        depth, width = int(cfg.arch.get("depth", 7)), int(cfg.arch.get("width", 100))
        scale = (784 * width + (depth - 2) * width * width + 10 * width) / MLP7_MACS
        ai = 2 * (width * width * 784 + (depth - 2) * width**3 + 10 * 10 * width)
        ai_scale, classes, batch = ai / MLP7_AI_MACS, 10, 100
    else:
        macs, ai_macs = network_macs(cfg)
        scale, ai_scale = macs / MLP7_MACS, ai_macs / MLP7_AI_MACS
        classes, batch = _classes(cfg.dataset.name), int(cfg.train.batch_size)
        n = _split_size(cfg, n)
    its = int(cfg.train.iterations)
    test = 10_000 + (n // 9 if n > 50_000 else 6_000)  # validation and test examples per evaluation
    total = its * costs.train_step * batch / 100 + (its // cfg.train.eval_interval + 1) * test * costs.eval_example
    total += prune_cost(cfg.prune, n, costs)
    stages = [s for s in cfg.signal.stages if s != "isometry" or cfg.isometry.name != "none"]
    from sparseprop.signal.jacobians import EXACT_LAYER_EXAMPLES, GENERIC_IO_EXAMPLES

    wanted = str(cfg.signal.examples)
    if wanted == "auto":  # as signal.measure.io_examples resolves it: MLPs have the exact fast path
        wanted = "all" if cfg.arch.name in ("mlp", "lenet300") else str(GENERIC_IO_EXAMPLES)
    io = n if wanted == "all" else min(n, int(wanted))
    # Conv nets' layerwise spectra are Lanczos estimates (signal/layer_operator.py), not in this model yet:
    # at E4's 20 examples they take seconds a stage.
    wanted_layer = str(cfg.signal.layer_examples)
    if wanted_layer == "auto":  # as signal.measure.layer_examples resolves it for an MLP
        wanted_layer = str(EXACT_LAYER_EXAMPLES)
    layer = min(n, int(wanted_layer)) if cfg.arch.name in ("mlp", "lenet300") else 0
    total += len(stages) * (io * costs.io_example * classes / 10 + layer * costs.layer_example)
    ai = int(cfg.isometry.steps) * costs.ai_step * ai_scale if cfg.isometry.name == "ai" else 0.0
    return scale * total + ai + costs.per_run


# The criteria that score on examples, by the measured cost of one scoring batch of 100 they use.
_BATCH_COSTS = {"snip": "snip_batch", "iterative_snip": "snip_batch", "grasp": "grasp_batch"}
# The scored criteria without data: each round one scoring of the whole network and one selection.
_DATA_FREE = ("synflow", "magnitude")


def prune_cost(prune: Any, n: int, costs: Costs) -> float:
    """Estimated seconds of the pruning of one MLP-7-sized run on ``n`` training examples (``run_cost`` scales it).

    A data-driven criterion costs rounds × scoring batches × the measured cost of one batch (SNIP's,
    iterative SNIP's and FORCE's a forward and two backward passes, GraSP's two backward passes and a
    Hessian-vector product in float64), in proportion to the batch size; every scored criterion also
    selects once per round. SynFlow and magnitude cost rounds × one measured round. Random and
    dense pruning cost nothing worth counting.
    """
    name, rounds = str(prune.name), int(prune.get("rounds", 1))
    if name in _BATCH_COSTS:
        size = int(prune.get("batch_size", 100))
        batches = n // size if str(prune.get("batches", "all")) == "all" else int(prune.batches)
        per_batch = getattr(costs, _BATCH_COSTS[name])
        return rounds * (batches * per_batch * size / 100 + costs.scored_round)
    if name in _DATA_FREE:
        return rounds * costs.scored_round
    return 0.0


def _classes(dataset: str) -> int:
    from sparseprop import data

    shape = data.SHAPES.get(dataset)
    return shape.num_classes if shape is not None else 10


def _split_size(cfg: Any, default: int) -> int:
    from sparseprop import data

    sizes = data.split_sizes(cfg.dataset.name, float(cfg.dataset.val_fraction))
    return sizes[0] if sizes is not None else default


# Keys whose values change what a run costs; jobs that agree on them share one composed config.
COST_KEYS = ("prune", "isometry", "arch", "method", "arch.depth", "arch.width", "arch.widen", "dataset", "train.iterations",
             "isometry.steps", "signal.stages", "signal.examples", "signal.layer_examples", "prune.batches",
             "train.eval_interval", "prune.rounds", "prune.batch_size")
