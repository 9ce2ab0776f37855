"""scikit-learn's bundled 8x8 digits: a dataset that needs no download."""

from __future__ import annotations

import torch

from sparseprop.data.base import DATASETS, SHAPES, DatasetOptions, DatasetShape, Splits, finish_splits, held_out, hold_out

_DIGITS, _DIGITS_TEST_FRACTION = 1797, 0.2
SHAPES["digits"] = DatasetShape(_DIGITS - held_out(_DIGITS, _DIGITS_TEST_FRACTION), held_out(_DIGITS, _DIGITS_TEST_FRACTION),
                                (1, 8, 8), 10)


@DATASETS.register("digits", schema=DatasetOptions)
def digits(val_fraction: float = 0.1, split_seed: int = 0, test_fraction: float = _DIGITS_TEST_FRACTION,
           standardise: str = "all", **_: object) -> Splits:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download): a fixed 20% test split, then validation."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    x_tr, y_tr, x_te, y_te = hold_out(x, y, test_fraction, split_seed + 1)
    return finish_splits("digits", x_tr, y_tr, x_te, y_te, 10, val_fraction, split_seed, standardise)
