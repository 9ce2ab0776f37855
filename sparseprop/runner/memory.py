"""The memory a run needs at its peak, estimated before it starts, and the memory the device has free."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sparseprop import data, pruning, train
from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.runner import setup
from sparseprop.models.base import activations_per_example
from sparseprop.pruning.scoring import scoring_chunk
from sparseprop.signal.jacobians import signal_memory
from sparseprop.signal.measure import io_examples, layer_examples

# Evaluation goes through the network at most this many examples at a time (fewer for large networks).
EVAL_CHUNK = train.EVAL_CHUNK


def memory_estimate(cfg: DictConfig, model: torch.nn.Module, shape: data.DatasetShape,
                    sizes: tuple[int, int, int]) -> dict[str, int]:
    """Bytes a run needs at its peak, by part: a float32 estimate, generous rather than tight.

    model: the parameters, their gradients, an optimiser buffer, the float masks and SNIP's two
    score tensors (6 copies); data: the three splits, twice (loading holds a second copy while it
    standardises); activations: one chunk of SNIP scoring or of training with its backward pass,
    or one evaluation chunk, from the model contract's count per example; signal: what the
    architecture's registered Jacobian paths say they hold (0 where none sizes itself).
    """
    params = sum(p.numel() for p in model.parameters())
    in_features = math.prod(shape.in_shape)
    per_example = activations_per_example(model, shape.in_shape)
    n_train = sizes[0]
    pruner = pruning.make_pruner(cfg.prune)
    scored = pruner.scored_examples(n_train)
    # SNIP scores in chunks with running statistics, one batch at a time with batch statistics.
    per_pass = pruner.options.batch_size if cfg.get("batchnorm") == "batch" and scored else scoring_chunk(per_example)
    batch = max(2 * cfg.train.batch_size, 2 * min(per_pass, scored), min(train.eval_chunk(per_example), max(sizes)))
    out = {"model": 4 * 6 * params, "data": 4 * 2 * sum(sizes) * in_features, "activations": 4 * per_example * batch,
           "signal": 0}
    if cfg.signal.stages or cfg.signal.every:
        wanted = io_examples(cfg.signal.examples, model)
        n_io = n_train if wanted == "all" else min(n_train, int(wanted))
        n_layer = min(n_train, int(layer_examples(cfg.signal.layer_examples, model)))
        out["signal"] = signal_memory(model, in_features, n_io, n_layer)
    return out


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run on ``device`` (the CUDA device's free memory, or the host's available memory
    within this process's cgroup limit); None if it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    try:  # a container's own limit (cgroup v2) can be far below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            room = max(0, int(limit) - used)
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


@dataclass
class _Network:
    model: Any
    prunable: int
    prunable_weights: int


_NETWORKS: dict[str, _Network] = {}


def network(cfg: DictConfig, shape: Any) -> _Network:
    """The configured network on the meta device with its prunable counts, made once per distinct network."""

    key = repr((OmegaConf.to_container(cfg.arch), OmegaConf.to_container(cfg.activation), shape))
    if key not in _NETWORKS:
        try:
            model = setup.meta_model(cfg, shape)
        except SparsepropError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a size beyond what a tensor can index
            raise ConfigError("arch", OmegaConf.to_container(cfg.arch),
                              f"the network cannot be built: {str(exc).splitlines()[0]}") from None
        count = lambda bias: sum(p.numel() for p in pruning.prunable_parameters(model, bias).values())  # noqa: E731
        _NETWORKS.clear()  # one entry is enough for a sweep ordered by config groups, and keeps memory flat
        _NETWORKS[key] = _Network(model, count(True), count(False))
    return _NETWORKS[key]


def check_memory(cfg: DictConfig, model: Any, shape: Any, sizes: tuple[int, int, int]) -> None:
    """Refuse a run whose estimated peak memory exceeds what is available on its device."""
    need = memory_estimate(cfg, model, shape, sizes)
    device = setup.resolve_device(cfg.device)
    free = available_memory(device)
    total = sum(need.values())
    if free is not None and total > free:
        gib = 2.0**30
        parts = ", ".join(f"{k} {v / gib:.3g}" for k, v in need.items() if v)
        opts = ", ".join(f"{k}={v}" for k, v in cfg.arch.items() if k != "name")
        arch = f"arch={cfg.arch.name}" + (f" ({opts})" if opts else "")
        raise SparsepropError(f"{arch} on dataset={cfg.dataset.name} needs about {total / gib:.3g} GiB "
                              f"({parts} GiB) but {free / gib:.3g} GiB is free on {device.type}; "
                              "choose a smaller network or batch, or another device")
