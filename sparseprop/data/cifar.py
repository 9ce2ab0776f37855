"""CIFAR-10 from the official ``cifar-10-python.tar.gz``: found or downloaded, MD5-checked, read from the archive."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from sparseprop.data.augment import Flip, Translate
from sparseprop.data.base import DATASETS, LOCATORS, SHAPES, DatasetShape, Splits
from sparseprop.data.idx import _md5
from sparseprop.data.images import ImageDatasetOptions, finish_image_splits
from sparseprop.errors import DataError

ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"  # the published sum, as torchvision checks it
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_FOLDER = "cifar-10-batches-py"
_TRAIN, _TEST = tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch"

SHAPES["cifar10"] = DatasetShape(50_000, 10_000, (3, 32, 32), 10)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch (a dict of bytes, lists and numpy arrays) and nothing that could run code."""

    # numpy.core is the module name in the official (Python 2) pickles, numpy._core numpy 2's own;
    # _codecs.encode is how Python 3's protocol 2 writes bytes.
    _ALLOWED = {("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR batch")
        return super().find_class(module, name)


def _read_batch(tar: tarfile.TarFile, member: str) -> tuple[np.ndarray, np.ndarray]:
    f = tar.extractfile(f"{_FOLDER}/{member}")
    if f is None:
        raise ValueError(f"{_FOLDER}/{member} is not a file")
    batch = _BatchUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    images, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[b"labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or labels.shape != (images.shape[0],):
        raise ValueError(f"{member} holds images {images.shape} and labels {labels.shape}; expected (n, 3072) and (n,)")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{member} has labels outside 0..9")
    return images.reshape(-1, 3, 32, 32), labels


def read_cifar10(archive: str | os.PathLike) -> tuple[torch.Tensor, ...]:
    """The five training batches and the test batch of a CIFAR-10 python archive: uint8 (N, 3, 32, 32) images, labels."""
    with tarfile.open(archive, "r:gz") as tar:
        train = [_read_batch(tar, m) for m in _TRAIN]
        x_te, y_te = _read_batch(tar, _TEST)
    x_tr, y_tr = np.concatenate([b[0] for b in train]), np.concatenate([b[1] for b in train])
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (x_tr, y_tr, x_te, y_te))


def locate_cifar10(root: str | os.PathLike, download: bool = True) -> Path:
    """``root``'s CIFAR-10 archive, MD5-checked; downloaded there by torchvision when missing and ``download``."""
    archive = Path(root) / ARCHIVE
    if not archive.is_file():
        if not download:
            raise DataError(_missing(archive, "dataset.download=false"))
        try:
            import torchvision.datasets as tvd

            tvd.CIFAR10(str(root), train=True, download=True)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(_missing(archive, f"download failed: {reason}")) from None
        if not archive.is_file():
            raise DataError(_missing(archive, "the download left no archive"))
    if _md5(archive) != ARCHIVE_MD5:
        raise DataError(f"dataset=cifar10: {archive} is corrupt (MD5 mismatch); delete it and download it again ({URL})")
    return archive


def _missing(archive: Path, why: str) -> str:
    return (f"dataset=cifar10: {archive} not found ({why}); put {ARCHIVE} ({URL}) in {archive.parent} "
            f"or set SPARSEPROP_DATA / dataset.root to the folder that has it")


@DATASETS.register("cifar10", schema=ImageDatasetOptions)
def cifar10(root: str, download: bool = True, val_fraction: float = 0.1, split_seed: int = 0, standardise: str = "all",
            augment: str = "some_of", **_: object) -> Splits:
    """CIFAR-10: 45,000 / 5,000 / 10,000 with the default 10% validation split, standardised per channel."""
    archive = locate_cifar10(root, download)
    try:
        x_tr, y_tr, x_te, y_te = read_cifar10(archive)
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError, tarfile.TarError) as exc:
        raise DataError(f"dataset=cifar10: could not read {archive} ({type(exc).__name__}: {exc}); "
                        "delete it and download it again") from None
    shape = SHAPES["cifar10"]
    if x_tr.shape[0] != shape.train or x_te.shape[0] != shape.test:
        raise DataError(f"dataset=cifar10: {archive} holds {x_tr.shape[0]:,} training and {x_te.shape[0]:,} test images, "
                        f"not {shape.train:,} and {shape.test:,}; the archive is corrupt")
    return finish_image_splits("cifar10", x_tr, y_tr, x_te, y_te, 10, val_fraction, split_seed, standardise,
                               [Flip(), Translate(4)], augment)


LOCATORS["cifar10"] = lambda root, download: locate_cifar10(root, download)
