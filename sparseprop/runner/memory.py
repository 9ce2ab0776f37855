"""The memory a run needs at its peak, estimated before it starts, and the memory the device has free."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

from sparseprop import data, pruning
from sparseprop.models.base import activations_per_example
from sparseprop.signal.jacobians import signal_memory

# Evaluation and SNIP scoring go through the network this many examples at a time (train.evaluate,
# pruning.connection_sensitivity).
EVAL_CHUNK = 10_000


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
    scored = pruning.make_pruner(cfg.prune).scored_examples(n_train)
    batch = max(2 * cfg.train.batch_size, 2 * min(EVAL_CHUNK, scored),
                min(EVAL_CHUNK, max(sizes)))
    out = {"model": 4 * 6 * params, "data": 4 * 2 * sum(sizes) * in_features, "activations": 4 * per_example * batch,
           "signal": 0}
    if cfg.signal.stages or cfg.signal.every:
        n_io = n_train if cfg.signal.examples == "all" else min(n_train, int(cfg.signal.examples))
        n_layer = min(n_train, int(cfg.signal.layer_examples))
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
