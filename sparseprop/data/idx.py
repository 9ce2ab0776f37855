"""MNIST and Fashion-MNIST: torchvision's file layout of IDX files, found, checked, extracted and read here."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sparseprop.data.base import (
    DATASETS,
    LOCATORS,
    SHAPES,
    DatasetOptions,
    DatasetShape,
    Splits,
    cache_dir,
    finish_splits,
)
from sparseprop.errors import DataError


@dataclass
class FileDatasetOptions(DatasetOptions):
    """A dataset read from files under the data root, downloaded there if missing and allowed."""

    root: str = "${oc.env:SPARSEPROP_DATA,./data}"
    download: bool = True

    def check(self) -> None:
        super().check()
        if not str(self.root).strip():
            self.refuse("root", "a folder path (the data root)")

# Debian's dataset-fashion-mnist package installs the four files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# torchvision's folder name under the data root and the published MD5 sums of the four archives.
# Reading the files here, rather than through torchvision's dataset classes, spares every run the
# import of torchvision (about a second); torchvision is still what downloads them.
_IDX_SOURCES: dict[str, tuple[str, dict[str, str]]] = {
    "mnist": ("MNIST", {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
    "fashion_mnist": ("FashionMNIST", {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
}


def _download(name: str, root: str | os.PathLike) -> None:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
    cls(str(root), train=True, download=True)
    cls(str(root), train=False, download=True)


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An IDX file of unsigned bytes (the MNIST format) as a uint8 tensor of the shape its header gives."""
    import numpy as np

    raw = Path(path).read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise ValueError(f"{path} holds {len(raw) - header} bytes after its header, its shape {shape} needs {math.prod(shape)}")
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy())


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def locate_idx(name: str, root: str | os.PathLike, download: bool = True) -> Path:
    """A torchvision-style root whose ``<Class>/raw`` holds the four extracted IDX files of ``name``.

    Looks in ``root/<Class>/raw`` (and, for Fashion-MNIST, Debian's package location), checks the
    archives' MD5 sums, extracts them (into the cache, leaving the data root untouched) and, if the
    files are nowhere and ``download`` is true, lets torchvision download them into ``root``.
    """
    folder, md5 = _IDX_SOURCES[name]
    raw = Path(root) / folder / "raw"
    if all((raw / f).is_file() for f in _IDX_FILES):
        return Path(root)
    cached_root = cache_dir() / "data"
    sources = [raw] + ([DEBIAN_FASHION_MNIST] if name == "fashion_mnist" else [])
    for src in sources:
        archives = [src / f"{f}.gz" for f in _IDX_FILES]
        if not all(a.is_file() for a in archives):
            continue
        for a in archives:
            # Debian recompresses the archives, so only torchvision's own layout can be checked by
            # MD5; other copies are checked by their parsed shapes when loaded.
            if src == raw and _md5(a) != md5[a.name]:
                raise DataError(f"dataset={name}: {a} is corrupt (MD5 mismatch); delete it and download it again")
        # Extracted copies go to a cache, never next to the originals: data roots are often shared
        # or read-only, and the archives stay the single source of truth.
        target = cached_root / folder / "raw"
        for a in archives:
            if (target / a.stem).is_file():
                continue
            tmp = target / f".{a.stem}.tmp{os.getpid()}"
            try:
                target.mkdir(parents=True, exist_ok=True)
                with gzip.open(a, "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.replace(tmp, target / a.stem)
            except OSError as exc:
                # A full or read-only cache must leave no half-extracted file behind, and say where it is.
                tmp.unlink(missing_ok=True)
                raise DataError(f"dataset={name}: cannot extract {a.name} into {target}: {exc.strerror or exc}; "
                                "free space there or set SPARSEPROP_CACHE to another folder") from None
        return cached_root
    if download:
        try:
            _download(name, root)
            return Path(root)
        except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear message
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(_missing_message(name, raw, f"download failed: {reason}")) from None
    raise DataError(_missing_message(name, raw, "dataset.download=false"))


def _missing_message(name: str, raw: Path, why: str) -> str:
    return (f"dataset={name}: files not found in {raw} ({why}); put the four *-ubyte.gz files there or set "
            f"SPARSEPROP_DATA / dataset.root to a folder that has them; dataset=digits needs no download")


def _load_idx(name: str, root: str, download: bool, val_fraction: float, split_seed: int,
              standardise_from: str = "all") -> Splits:
    raw = locate_idx(name, root, download) / _IDX_SOURCES[name][0] / "raw"
    try:
        x_tr, y_tr, x_te, y_te = (read_idx(raw / f) for f in _IDX_FILES)
    except (OSError, ValueError) as exc:
        raise DataError(f"dataset={name}: could not read the files under {raw} "
                        f"({type(exc).__name__}: {exc}); delete them and download again") from None
    if tuple(x_tr.shape) != (60000, 28, 28) or tuple(x_te.shape) != (10000, 28, 28) \
            or y_tr.shape[0] != 60000 or y_te.shape[0] != 10000:
        raise DataError(f"dataset={name}: unexpected shapes {tuple(x_tr.shape)} / {tuple(y_tr.shape)}; the files are corrupt")
    # Inputs keep a channel axis (N, 1, 28, 28) so convolutional networks can use the same splits.
    to_float = lambda t: t.float().div_(255.0).unsqueeze(1)  # noqa: E731
    return finish_splits(name, to_float(x_tr), y_tr, to_float(x_te), y_te, 10, val_fraction, split_seed, standardise_from)


SHAPES["mnist"] = SHAPES["fashion_mnist"] = DatasetShape(60_000, 10_000, (1, 28, 28), 10)


@DATASETS.register("mnist", schema=FileDatasetOptions)
def mnist(root: str, download: bool = True, val_fraction: float = 0.1, split_seed: int = 0, standardise: str = "all",
          **_: object) -> Splits:
    """MNIST: 54,000 / 6,000 / 10,000 with the default 10% validation split."""
    return _load_idx("mnist", root, download, val_fraction, split_seed, standardise)


@DATASETS.register("fashion_mnist", schema=FileDatasetOptions)
def fashion_mnist(root: str, download: bool = True, val_fraction: float = 0.1, split_seed: int = 0,
                  standardise: str = "all", **_: object) -> Splits:
    """Fashion-MNIST, same shapes and split as MNIST."""
    return _load_idx("fashion_mnist", root, download, val_fraction, split_seed, standardise)


LOCATORS["mnist"] = lambda root, download: locate_idx("mnist", root, download)
LOCATORS["fashion_mnist"] = lambda root, download: locate_idx("fashion_mnist", root, download)
