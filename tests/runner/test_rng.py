"""A run's random streams and the random states a checkpoint keeps."""

from __future__ import annotations

import random

import numpy as np
import torch

from sparseprop import records, train
from sparseprop.runner.rng import GENERATOR_SEEDS, SEED_MULTIPLIER, STREAMS, numpy_rng, plain_rng, seed_range, stream


def test_seed_range_is_exactly_the_seeds_whose_streams_torch_accepts():
    lo, hi = seed_range()
    low, high = GENERATOR_SEEDS
    assert SEED_MULTIPLIER * lo >= low > SEED_MULTIPLIER * (lo - 1)
    assert SEED_MULTIPLIER * hi + STREAMS - 1 <= high < SEED_MULTIPLIER * (hi + 1) + STREAMS - 1
    for seed in (lo, hi):
        for k in range(STREAMS):
            stream(seed, k)  # accepted by torch.Generator.manual_seed


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(), torch.rand(1)  # noqa: B018 - advance every generator
    records.save_torch(tmp_path / "rng.pt", {"rng": plain_rng(train.rng_state())})
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    train.set_rng_state(numpy_rng(records.load_torch(tmp_path / "rng.pt", "cpu")["rng"]))
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == expected
