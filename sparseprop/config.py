"""The root config schema, registered with Hydra's ConfigStore; the config groups' options bring their own."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf


CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("dataset", "arch", "activation", "init", "prune", "isometry")
# Launchers that run the jobs on this machine: only for them can the memory here be checked up front.
LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local")
# Bounds beyond any plausible budget: 10 million steps is 1,000 times the paper's training length.
MAX_STEPS = 10_000_000
# The seeds torch.Generator.manual_seed accepts: any 64-bit integer, signed or unsigned.
GENERATOR_SEEDS = (-(2**63), 2**64 - 1)


@dataclass
class TrainConf:
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "constant"
    boundaries: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    warmup: int = 0
    l2: float = 0.00025
    batch_size: int = 100
    iterations: int = 10_000
    eval_interval: int = 1000
    checkpoint_interval: int = 1000
    log_interval: int = 100
    best_of_last: int = 5
    shuffle_seed: int = 0
    amp: bool = False
    channels_last: bool = False


@dataclass
class SignalConf:
    stages: list[str] = field(default_factory=lambda: ["init", "pruned", "isometry", "final"])
    examples: Any = "auto"
    layer_examples: Any = "auto"
    every: int = 0


@dataclass
class Config:
    # Each config group holds one option's settings, typed by that option's own schema
    # (``schema/<group>/<name>``, named first in the option's YAML): Hydra checks them while composing.
    dataset: Any = MISSING
    arch: Any = MISSING
    activation: Any = MISSING
    init: Any = MISSING
    prune: Any = MISSING
    isometry: Any = MISSING
    train: TrainConf = field(default_factory=TrainConf)
    signal: SignalConf = field(default_factory=SignalConf)
    seed: int = 0
    batchnorm: str = "running"
    device: str = "auto"
    deterministic: bool = False
    threads: int = 0
    progress: Any = "auto"
    resume: bool = True
    figures: bool = True


def register_schema() -> None:
    """Register the schema so ``conf/train.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="schema", node=Config)


register_schema()


def is_group_setting(key: str) -> bool:
    """Whether an override key (``+`` / ``~`` prefixes aside) sets a config group option's setting (``prune.target``)."""
    group, _, setting = key.lstrip("+~").partition(".")
    return bool(setting) and group in GROUPS


@functools.lru_cache(maxsize=1)
def schema_dict() -> dict[str, Any]:
    """The root schema's keys and defaults as plain nested dicts (the config groups as ``???``), made once."""
    return OmegaConf.to_container(OmegaConf.structured(Config))
