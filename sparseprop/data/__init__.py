"""Datasets as whole in-memory tensor splits: train / validation / test, normalised as PAPER.md.

``base`` holds the contract (DATASETS, declared shapes, Splits and its ``train_batch``), ``idx``
MNIST and Fashion-MNIST, ``digits`` scikit-learn's digits, ``cifar`` CIFAR-10, ``tiny_imagenet``
Tiny-ImageNet; ``images`` what the colour sets share (per-channel standardisation) and
``augment`` their augmentation on batches.
"""

from sparseprop.data import cifar as _cifar  # noqa: F401 - registers dataset=cifar10
from sparseprop.data import digits as _digits  # noqa: F401 - registers dataset=digits
from sparseprop.data import tiny_imagenet as _tiny_imagenet  # noqa: F401 - registers dataset=tiny_imagenet
from sparseprop.data.augment import AUGMENT_MODES, Augmentation
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
from sparseprop.data.cifar import read_cifar10
from sparseprop.data.idx import DEBIAN_FASHION_MNIST, FileDatasetOptions, locate_idx, read_idx
from sparseprop.data.images import ImageDatasetOptions, channel_statistics
from sparseprop.data.tiny_imagenet import read_tiny_imagenet
from sparseprop.errors import DataError

__all__ = ["AUGMENT_MODES", "Augmentation", "DATASETS", "ImageDatasetOptions", "channel_statistics", "read_cifar10",
           "read_tiny_imagenet", "DEBIAN_FASHION_MNIST", "DataError", "DatasetOptions", "FileDatasetOptions", "LOCATORS", "SHAPES",
           "STANDARDISE", "DatasetShape", "Splits",
           "cache_dir", "check_available", "default_root", "finish_splits", "held_out", "hold_out",
           "input_statistics", "load", "locate_idx", "read_idx", "split_sizes", "standardise"]
