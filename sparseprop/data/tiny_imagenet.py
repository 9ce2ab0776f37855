"""Tiny-ImageNet from the official ``tiny-imagenet-200`` folder, read once into a cached array.

The 200 classes are numbered in the order of ``wnids.txt``; the training images are
``train/<wnid>/images/*.JPEG`` (read in sorted order) and the official validation images, labelled
by ``val/val_annotations.txt``, are the test set. Decoding 110,000 JPEGs takes minutes, so the
first load writes them as one uint8 ``.npz`` into the cache folder (``$SPARSEPROP_CACHE``, else
``~/.cache/sparseprop``; the data folder is left untouched), named by a fingerprint of the files'
names and sizes, written to a temporary name and renamed into place; later loads read that.
The splits are held in memory standardised, as float32: 110,000 × 3 × 64 × 64 × 4 bytes = 5.4 GB.
Images are RGB; ``channel_order=bgr`` reverses the channels as the authors' OpenCV reader had them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparseprop.data.augment import CropPad, Flip
from sparseprop.data.base import DATASETS, LOCATORS, SHAPES, DatasetShape, Splits, cache_dir
from sparseprop.data.images import ImageDatasetOptions, finish_image_splits
from sparseprop.errors import DataError

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
CHANNEL_ORDERS = ("rgb", "bgr")

SHAPES["tiny_imagenet"] = DatasetShape(100_000, 10_000, (3, 64, 64), 200)


@dataclass
class TinyImageNetOptions(ImageDatasetOptions):
    """Tiny-ImageNet's options: those of every colour dataset and the channel order."""

    channel_order: str = "rgb"

    def check(self) -> None:
        super().check()
        if self.channel_order not in CHANNEL_ORDERS:
            self.refuse("channel_order", f"choose one of {', '.join(CHANNEL_ORDERS)}")


def _listing(folder: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """The class ids, and the (image, label) pairs of the training and the test set, in a fixed order."""
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    label = {w: i for i, w in enumerate(wnids)}
    train = [(p, label[w]) for w in wnids for p in sorted((folder / "train" / w / "images").glob("*.JPEG"))]
    test = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        if fields[1] not in label:
            raise ValueError(f"val_annotations.txt names class {fields[1]!r}, which wnids.txt does not list")
        test.append((folder / "val" / "images" / fields[0], label[fields[1]]))
    return wnids, train, sorted(test)


def _fingerprint(items: list[tuple[Path, int]], folder: Path) -> str:
    h = hashlib.sha256()
    for path, lab in items:
        h.update(f"{path.relative_to(folder)}\t{lab}\t{path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def _decode(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    x = np.empty((len(items), 64, 64, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        with Image.open(path) as im:
            # A few Tiny-ImageNet images are greyscale: RGB repeats their one channel.
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (64, 64, 3):
            raise ValueError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, not 64x64")
        x[i] = arr
    return x.transpose(0, 3, 1, 2).copy(), np.array([lab for _, lab in items], dtype=np.int64)


def read_tiny_imagenet(folder: str | os.PathLike, cache: str | os.PathLike | None = None) -> tuple[torch.Tensor, ...]:
    """uint8 (N, 3, 64, 64) RGB images and labels of the training and the test set, from the cache when it has them."""
    folder = Path(folder)
    _, train, test = _listing(folder)
    key = _fingerprint(train + test, folder)
    target = Path(cache if cache is not None else cache_dir() / "tiny_imagenet") / f"tiny-imagenet-200-{key}.npz"
    if target.is_file():
        with np.load(target) as z:
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        arrays = [*_decode(train), *_decode(test)]
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
            os.replace(tmp, target)
        except OSError as exc:
            # A cache that cannot be written costs the next run the decoding again, never this run.
            tmp.unlink(missing_ok=True)
            import warnings

            warnings.warn(f"dataset=tiny_imagenet: could not cache the decoded images in {target.parent}: "
                          f"{exc.strerror or exc}", stacklevel=2)
    return tuple(torch.from_numpy(a) for a in arrays)


def locate_tiny_imagenet(root: str | os.PathLike, download: bool = True) -> Path:
    """``root/tiny-imagenet-200`` when it has the official layout (there is no download)."""
    folder = Path(root) / FOLDER
    needed = [folder / "wnids.txt", folder / "train", folder / "val" / "val_annotations.txt", folder / "val" / "images"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise DataError(f"dataset=tiny_imagenet: {missing[0]} not found; unzip tiny-imagenet-200.zip ({URL}) into "
                        f"{Path(root)} or set SPARSEPROP_DATA / dataset.root to the folder that holds {FOLDER}/")
    return folder


@DATASETS.register("tiny_imagenet", schema=TinyImageNetOptions)
def tiny_imagenet(root: str, download: bool = True, val_fraction: float = 0.1, split_seed: int = 0,
                  standardise: str = "all", augment: str = "some_of", channel_order: str = "rgb",
                  **_: object) -> Splits:
    """Tiny-ImageNet: 90,000 / 10,000 / 10,000 (the official validation images as test), standardised per channel."""
    folder = locate_tiny_imagenet(root, download)
    try:
        x_tr, y_tr, x_te, y_te = read_tiny_imagenet(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"dataset=tiny_imagenet: could not read {folder} ({type(exc).__name__}: {exc})") from None
    shape = SHAPES["tiny_imagenet"]
    if x_tr.shape[0] != shape.train or x_te.shape[0] != shape.test:
        raise DataError(f"dataset=tiny_imagenet: {folder} holds {x_tr.shape[0]:,} training and {x_te.shape[0]:,} test "
                        f"images, not {shape.train:,} and {shape.test:,}; it is incomplete")
    if channel_order == "bgr":
        x_tr, x_te = x_tr.flip(1), x_te.flip(1)
    return finish_image_splits("tiny_imagenet", x_tr, y_tr, x_te, y_te, 200, val_fraction, split_seed, standardise,
                               [Flip(), CropPad(8)], augment)


LOCATORS["tiny_imagenet"] = lambda root, download: locate_tiny_imagenet(root, download)
