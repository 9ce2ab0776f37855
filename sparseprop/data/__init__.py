"""Datasets as whole in-memory tensor splits: train / validation / test, normalised as PAPER.md."""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from sparseprop.errors import ConfigError, DataError
from sparseprop.config import GENERATOR_SEEDS
from sparseprop.registry import Options, Registry

DATASETS: Registry[Callable[..., "Splits"]] = Registry("dataset", group="dataset")
STANDARDISE = ("all", "split")


@dataclass
class DatasetOptions(Options):
    """How any dataset is split and standardised."""

    val_fraction: float = 0.1
    split_seed: int = 0
    standardise: str = "all"

    def check(self) -> None:
        if not 0 < self.val_fraction < 1:
            self.refuse("val_fraction", "a number in (0, 1)")
        # The validation split is drawn with split_seed (digits' test split with split_seed + 1).
        lo, hi = GENERATOR_SEEDS
        if not lo <= self.split_seed <= hi - 1:
            self.refuse("split_seed", f"an integer in [{lo:,}, {hi - 1:,}]")
        if self.standardise not in STANDARDISE:
            self.refuse("standardise", f"choose one of {', '.join(STANDARDISE)}")


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


@dataclass(frozen=True)
class DatasetShape:
    """What a dataset holds, declared so that configs can be checked before it is loaded."""

    train: int                  # examples the validation split is held out of
    test: int
    in_shape: tuple[int, ...]
    num_classes: int


# Each registered dataset declares its shape here, next to its loader below.
SHAPES: dict[str, DatasetShape] = {}


def split_sizes(name: str, val_fraction: float) -> tuple[int, int, int] | None:
    """(train, validation, test) sizes of dataset ``name`` for ``val_fraction``; None if it declares no shape."""
    shape = SHAPES.get(name)
    if shape is None:
        return None
    n_val = held_out(shape.train, val_fraction)
    return shape.train - n_val, n_val, shape.test


@dataclass
class Splits:
    """Normalised inputs and integer labels of the three splits, all on one device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Splits":
        """The same splits moved to ``device``."""
        fields = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()}
        return Splits(**fields)


def default_root() -> str:
    """The data root: ``$SPARSEPROP_DATA`` if set, else ``./data``."""
    return os.environ.get("SPARSEPROP_DATA", "./data")


def cache_dir() -> Path:
    """Where files that cannot be extracted next to read-only originals go."""
    base = os.environ.get("SPARSEPROP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sparseprop")
    return Path(base)


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` examples ``hold_out`` sets aside for a ``fraction``."""
    return int(round(fraction * n))


def hold_out(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Split off ``val_fraction`` of (x, y) as validation with a fixed-seed shuffle: (x_tr, y_tr, x_val, y_val)."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = held_out(n, val_fraction)
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


# Where the scalar mean and standard deviation of the inputs come from: ``all`` images of the official
# training set with the population std (the authors' statistics: 0.130660 / 0.308108 on MNIST), or
# the training ``split`` left after the validation hold-out with Bessel's correction.


def input_statistics(x: torch.Tensor, bessel: bool = False, chunk: int = 10_000) -> tuple[float, float]:
    """One scalar mean and std over every entry of ``x``, accumulated in float64 (population std unless ``bessel``)."""
    # Chunks of rows in float64: as exact as a float64 copy of the whole set, without its memory.
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start:start + chunk].double().sum().cpu()
    n = x.numel()
    mean = float(total) / n
    squares = torch.zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        squares += (x[start:start + chunk].double() - mean).square().sum().cpu()
    return mean, math.sqrt(float(squares) / (n - 1 if bessel else n))


def standardise(mean: float, std: float, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Subtract one scalar mean and divide by one scalar std."""
    return [(t - mean) / std for t in tensors]


def _finish(name: str, x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor,
            num_classes: int, val_fraction: float, split_seed: int, standardise_from: str = "all") -> Splits:
    if standardise_from not in STANDARDISE:
        raise ConfigError("dataset.standardise", standardise_from, f"one of {', '.join(STANDARDISE)}")
    x_all = x_tr
    x_tr, y_tr, x_val, y_val = hold_out(x_tr, y_tr, val_fraction, split_seed)
    mean, std = input_statistics(x_all) if standardise_from == "all" else input_statistics(x_tr, bessel=True)
    x_tr, x_val, x_te = standardise(mean, std, x_tr, x_val, x_te)
    return Splits(name, x_tr.contiguous(), y_tr.long(), x_val.contiguous(), y_val.long(),
                  x_te.contiguous(), y_te.long(), num_classes)


# ---- MNIST and Fashion-MNIST: torchvision's file layout, read here ---------------------------------

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
    return _finish(name, to_float(x_tr), y_tr, to_float(x_te), y_te, 10, val_fraction, split_seed, standardise_from)


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
    return _finish("digits", x_tr, y_tr, x_te, y_te, 10, val_fraction, split_seed, standardise)


def check_available(name: str, root: str, download: bool = True) -> None:
    """Make sure ``name``'s files can be had (found, checked, extracted or downloaded) without loading them."""
    DATASETS.get(name, "dataset")
    if name in ("mnist", "fashion_mnist"):
        locate_idx(name, root, download)


def load(name: str, root: str, device: torch.device | str = "cpu", **options: object) -> Splits:
    """The splits of dataset ``name`` on ``device``."""
    return DATASETS.get(name, "dataset")(root=root, **options).to(device)
