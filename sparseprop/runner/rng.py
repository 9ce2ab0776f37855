"""A run's random streams from its seed, and the random states of a checkpoint in a form ``weights_only`` loads."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparseprop.config import GENERATOR_SEEDS

# Run ``seed`` draws from generators seeded 1_000_003·seed + k, k < STREAMS (0 init, 1 pruning).
SEED_MULTIPLIER, STREAMS = 1_000_003, 2


def stream(seed: int, k: int) -> torch.Generator:
    """Independent CPU generator ``k`` of run ``seed`` (0 init, 1 pruning)."""
    return torch.Generator().manual_seed(SEED_MULTIPLIER * int(seed) + k)


def seed_range() -> tuple[int, int]:
    """The smallest and largest ``seed`` whose every stream seed is one torch's generators accept."""
    lo, hi = GENERATOR_SEEDS
    return -(-lo // SEED_MULTIPLIER), (hi - (STREAMS - 1)) // SEED_MULTIPLIER


def plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """The RNG states of ``train.rng_state`` with NumPy's array as a tensor, so ``weights_only`` loading accepts them."""
    name, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": [str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                               int(has_gauss), float(gauss)]}


def numpy_rng(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """``plain_rng``'s inverse: the states as ``train.set_rng_state`` takes them."""
    if not state:
        return state
    name, keys, pos, has_gauss, gauss = state["numpy"]
    return {**state, "numpy": (name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss),
            "python": (state["python"][0], tuple(state["python"][1]), state["python"][2])}
