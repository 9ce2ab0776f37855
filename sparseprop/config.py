"""Typed config schema (registered with Hydra's ConfigStore), range checks and early validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from sparseprop.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("dataset", "arch", "activation", "init", "prune", "isometry")


@dataclass
class DatasetConf:
    name: str = "mnist"
    root: str = "${oc.env:SPARSEPROP_DATA,./data}"
    download: bool = True
    val_fraction: float = 0.1
    split_seed: int = 0
    standardise: str = "all"


@dataclass
class ArchConf:
    name: str = "mlp"
    depth: int = 7
    width: int = 100


@dataclass
class ActivationConf:
    name: str = "tanh"
    negative_slope: float = 0.01


@dataclass
class InitConf:
    name: str = "vs_l"
    scale: float = 1.0
    mode: str = "fan_in"
    gain: float = 1.0


@dataclass
class PruneConf:
    name: str = "snip"
    sparsity: float = 0.9
    batches: Any = "all"
    batch_size: int = 100
    include_bias: bool = True
    target: str = "labels"
    dataset: Optional[str] = None


@dataclass
class IsometryConf:
    name: str = "none"
    steps: int = 10_000
    lr: float = 0.1


@dataclass
class TrainConf:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"
    boundaries: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    l2: float = 0.00025
    batch_size: int = 100
    iterations: int = 10_000
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    log_interval: int = 100
    best_of_last: int = 5
    shuffle_seed: int = 0


@dataclass
class SignalConf:
    stages: list[str] = field(default_factory=lambda: ["init", "pruned", "isometry", "final"])
    examples: Any = "all"
    layer_examples: int = 200
    every: int = 0


@dataclass
class Config:
    dataset: DatasetConf = field(default_factory=DatasetConf)
    arch: ArchConf = field(default_factory=ArchConf)
    activation: ActivationConf = field(default_factory=ActivationConf)
    init: InitConf = field(default_factory=InitConf)
    prune: PruneConf = field(default_factory=PruneConf)
    isometry: IsometryConf = field(default_factory=IsometryConf)
    train: TrainConf = field(default_factory=TrainConf)
    signal: SignalConf = field(default_factory=SignalConf)
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    progress: Any = "auto"
    resume: bool = True
    figures: bool = True


def register_schema() -> None:
    """Register the schema so ``conf/train.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="schema", node=Config)


register_schema()


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum}")


def _positive_float(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "a finite number > 0")


def _choice(cfg: DictConfig, key: str, allowed: list[str] | tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, f"choose one of {', '.join(allowed)}")


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Dotted keys of ``cfg`` that the schema does not know (added with ``+key=...``)."""
    schema = OmegaConf.structured(Config)
    found = []

    def walk(node: Any, ref: Any, prefix: str) -> None:
        for key in node:
            if key == "hydra":
                continue
            if key not in ref:
                found.append(prefix + str(key))
            elif OmegaConf.is_dict(node[key]) and OmegaConf.is_dict(ref[key]):
                walk(node[key], ref[key], f"{prefix}{key}.")

    walk(cfg, schema, "")
    return found


def validate(cfg: DictConfig) -> None:
    """Range and name checks of a composed config; raises ConfigError naming key, value and what is allowed."""
    for key in unknown_keys(cfg):
        raise ConfigError(key, OmegaConf.select(cfg, key), "unknown key; `sparseprop train --cfg job` lists every key")
    # Imports are local so that `sparseprop --help` and config checks stay light.
    from sparseprop import data, inits, isometry, models, pruning, train

    _choice(cfg, "dataset.name", data.DATASETS.names())
    _choice(cfg, "arch.name", models.ARCHS.names())
    _choice(cfg, "activation.name", models.ACTIVATIONS.names())
    _choice(cfg, "init.name", inits.INITS.names())
    _choice(cfg, "prune.name", pruning.PRUNERS.names())
    _choice(cfg, "isometry.name", isometry.ISOMETRY.names())
    _choice(cfg, "init.mode", inits.FAN_MODES)
    _choice(cfg, "prune.target", pruning.TARGETS)
    _choice(cfg, "dataset.standardise", data.STANDARDISE)
    _choice(cfg, "train.optimizer", train.OPTIMIZERS.names())
    _choice(cfg, "train.schedule", train.SCHEDULES.names())
    _choice(cfg, "device", ("auto", "cpu", "cuda"))
    if not 0 < cfg.dataset.val_fraction < 1:
        raise ConfigError("dataset.val_fraction", cfg.dataset.val_fraction, "a number in (0, 1)")
    # iterations=0 is a prune-only run (masks and spectra, no training), as the paper's mask figures need.
    _positive_int(cfg, "train.iterations", minimum=0)
    for key in ("arch.depth", "arch.width", "prune.batch_size", "train.batch_size",
                "train.eval_interval", "train.checkpoint_interval", "train.log_interval", "train.best_of_last",
                "isometry.steps", "signal.layer_examples"):
        _positive_int(cfg, key)
    _positive_int(cfg, "signal.every", minimum=0)
    _positive_int(cfg, "threads", minimum=0)
    for key in ("train.lr", "isometry.lr", "init.scale"):
        _positive_float(cfg, key)
    s = cfg.prune.sparsity
    if not (isinstance(s, (int, float)) and 0 <= s < 1):
        raise ConfigError("prune.sparsity", s, "a number in [0, 1)")
    if cfg.train.l2 < 0 or not math.isfinite(cfg.train.l2):
        raise ConfigError("train.l2", cfg.train.l2, "a finite number >= 0")
    if not 0 <= cfg.train.momentum < 1:
        raise ConfigError("train.momentum", cfg.train.momentum, "a number in [0, 1)")
    pruning._parse_batches(cfg.prune.batches)
    if cfg.signal.examples != "all":
        _positive_int(cfg, "signal.examples")
    for stage in cfg.signal.stages:
        if stage not in ("init", "pruned", "isometry", "final"):
            raise ConfigError("signal.stages", list(cfg.signal.stages), "a list drawn from init, pruned, isometry, final")
    if cfg.prune.dataset is not None:
        _choice(cfg, "prune.dataset", data.DATASETS.names())
    train.check_schedule(cfg.train)
    if cfg.progress not in ("auto", True, False):
        raise ConfigError("progress", cfg.progress, "auto, true or false")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "no CUDA device is visible here; use device=cpu or device=auto")
