"""Datasets as whole in-memory tensor splits: train / validation / test, normalised as PAPER.md.

``base`` holds the contract (DATASETS, declared shapes, Splits), ``idx`` MNIST and Fashion-MNIST,
``digits`` scikit-learn's digits.
"""

from sparseprop.data import digits as _digits  # noqa: F401 - registers dataset=digits
from sparseprop.data.base import (
    DATASETS,
    LOCATORS,
    SHAPES,
    STANDARDISE,
    DatasetOptions,
    DatasetShape,
    Splits,
    cache_dir,
    check_available,
    default_root,
    finish_splits,
    held_out,
    hold_out,
    input_statistics,
    load,
    split_sizes,
    standardise,
)
from sparseprop.data.idx import DEBIAN_FASHION_MNIST, FileDatasetOptions, locate_idx, read_idx
from sparseprop.errors import DataError

__all__ = ["DATASETS", "DEBIAN_FASHION_MNIST", "DataError", "DatasetOptions", "FileDatasetOptions", "LOCATORS", "SHAPES",
           "STANDARDISE", "DatasetShape", "Splits",
           "cache_dir", "check_available", "default_root", "finish_splits", "held_out", "hold_out",
           "input_statistics", "load", "locate_idx", "read_idx", "split_sizes", "standardise"]
