"""What a run is built from: its device, its network (real or on the meta device), its data and library versions."""

from __future__ import annotations

import os
import platform
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from sparseprop import __version__, data, models
from sparseprop.errors import DataError
from sparseprop.models.base import set_norm_mode


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: DictConfig, splits: Any) -> torch.nn.Module:
    """The configured network for inputs of ``splits.in_shape`` and ``splits.num_classes`` (CPU, not initialised)."""
    act = models.build_activation(cfg.activation.name, **models.ACTIVATIONS.options(cfg.activation).settings())
    opts = models.ARCHS.options(cfg.arch).settings()
    model = models.build_model(cfg.arch.name, splits.in_shape, splits.num_classes, act, **opts)
    # How its BatchNorm layers are treated while SNIP scores (the contract's NORM_MODE).
    set_norm_mode(model, cfg.get("batchnorm", "running"))
    return model


def configure_backends(cfg: DictConfig, device: torch.device) -> None:
    """Deterministic algorithms when ``deterministic=true``; otherwise, on CUDA, cuDNN picks the fastest convolutions."""
    deterministic = bool(cfg.get("deterministic", False))
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace; it reads this when it first starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Set both ways: these are process-wide, and the jobs of a basic sweep share one process.
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def meta_model(cfg: DictConfig, shape: data.DatasetShape) -> torch.nn.Module:
    """The configured network laid out on the meta device: its parameters have shapes but no memory."""
    with torch.device("meta"):
        return build(cfg, SimpleNamespace(in_shape=shape.in_shape, num_classes=shape.num_classes))


def load_splits(cfg: DictConfig, device: torch.device) -> tuple[data.Splits, data.Splits]:
    """Training splits and the splits used for scoring (another dataset for transfer pruning)."""
    ds = data.DATASETS.options(cfg.dataset)
    # A scoring dataset is read with the training dataset's settings (root, validation split, standardisation).
    opts = ds.settings()
    root = opts.pop("root", None)
    splits = data.load(ds.name, root, device, **opts)
    score_name = scoring_dataset(cfg)
    if score_name == ds.name:
        return splits, splits
    score = data.load(score_name, root, device, **opts)
    if score.in_shape != splits.in_shape or score.num_classes != splits.num_classes:
        raise DataError(f"prune.dataset={score_name} has inputs {score.in_shape} and {score.num_classes} classes, "
                        f"but dataset={ds.name} has {splits.in_shape} and {splits.num_classes}: they must match")
    return splits, score


def scoring_dataset(cfg: DictConfig) -> str:
    """The dataset whose training split a data-driven criterion scores on (``prune.dataset``, else the training set)."""
    return OmegaConf.select(cfg, "prune.dataset", default=None) or cfg.dataset.name


def library_versions() -> dict[str, str]:
    """Versions that decide the numbers a run produces."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {"sparseprop": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": installed("torchvision"), "hydra": installed("hydra-core")}
