"""Checks of a composed run config before anything expensive: each option's own range checks, the
settings of the root schema, and what needs the dataset's size or the network's shape (memory)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from sparseprop import config, data, inits, isometry, models, pruning, train
from sparseprop.errors import ConfigError
from sparseprop.models.base import NORM_MODES
from sparseprop.registry import Options, Registry
from sparseprop.runner import memory, rng, setup

STAGES = ("init", "pruned", "isometry", "final")


def registries() -> dict[str, Registry]:
    """The registry of every config group, by group."""
    return {"dataset": data.DATASETS, "arch": models.ARCHS, "activation": models.ACTIVATIONS, "init": inits.INITS,
            "prune": pruning.PRUNERS, "isometry": isometry.ISOMETRY}


def options(cfg: DictConfig) -> dict[str, Options]:
    """Every config group's chosen option as its schema instance, range-checked by the option itself."""
    out = {}
    for group, registry in registries().items():
        node = cfg[group]
        registry.get(node.name, f"{group}")  # an unknown option name, before its settings
        out[group] = registry.options(node)
    return out


def force_group_settings(overrides: list[str]) -> list[str]:
    """``overrides`` with each plain setting of a config group's option (``isometry.steps=2000``) as ``++``:
    added to the jobs whose option lacks it (which ``drop_foreign_settings`` then removes), set in the others."""
    return [f"++{o}" if not o.startswith(("+", "~")) and config.is_group_setting(o.partition("=")[0]) else o
            for o in overrides]


def drop_foreign_settings(cfg: DictConfig) -> list[str]:
    """Remove from ``cfg`` the settings its options do not have; return their dotted keys.

    A sweep's setting meant for the jobs whose option has it (``isometry.steps`` in
    ``-m isometry=none,ai isometry.steps=2000``) reaches the other jobs too (Hydra composes each job
    with every override); they drop it, so their records hold only their own options' settings.
    """
    from omegaconf import open_dict

    dropped = []
    for group, registry in registries().items():
        node = cfg[group]
        if node.name not in registry:
            continue
        own = set(registry.settings_of(node.name))
        for key in [k for k in node if k != "name" and k not in own]:
            with open_dict(node):
                del node[key]
            dropped.append(f"{group}.{key}")
    return dropped


def _integer(cfg: DictConfig, key: str, minimum: int = 1, maximum: int | None = None) -> None:
    value = OmegaConf.select(cfg, key)
    allowed = f"an integer >= {minimum:,}" if maximum is None else f"an integer in [{minimum:,}, {maximum:,}]"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(key, value, allowed)


def _non_finite(node: Any, prefix: str = "") -> tuple[str, Any] | None:
    """The first (key, value) of ``node`` holding a NaN or infinite number, if any."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        key = f"{prefix}{k}" if isinstance(node, dict) else f"{prefix.rstrip('.')}[{k}]"
        if isinstance(v, float) and not math.isfinite(v):
            return key, v
        found = _non_finite(v, f"{key}.") if isinstance(v, (dict, list)) else None
        if found:
            return found
    return None


def unknown_keys(cfg: DictConfig | dict) -> list[str]:
    """Dotted keys outside the config groups that the root schema does not know (added with ``+key=...``).

    Inside a config group, the chosen option's schema refuses unknown keys while Hydra composes.
    """
    found = []
    ref = config.schema_dict()

    def walk(node: dict, ref: dict, prefix: str) -> None:
        for key, value in node.items():
            if key == "hydra" or key in config.GROUPS and not prefix:
                continue
            if key not in ref:
                found.append(prefix + str(key))
            elif isinstance(value, dict) and isinstance(ref[key], dict):
                walk(value, ref[key], f"{prefix}{key}.")

    walk(cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg), ref, "")
    return found


def validate(cfg: DictConfig, memory_here: bool = True) -> dict[str, Options]:
    """Check a composed config; raise ConfigError naming key, value and what is allowed. Returns the options.

    With ``memory_here``, also refuses a run that would not fit in the memory available here.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    for key in unknown_keys(plain):
        raise ConfigError(key, OmegaConf.select(cfg, key), "unknown key; `sparseprop train --cfg job` lists every key")
    bad = _non_finite(plain)
    if bad:
        raise ConfigError(bad[0], bad[1], "a finite number")
    chosen = options(cfg)
    _check_root(cfg)
    check_sizes(cfg, chosen, memory_here)
    return chosen


def _check_root(cfg: DictConfig) -> None:
    """The settings of the root schema: training, signal measurements, seed, device, threads, progress."""
    train.OPTIMIZERS.get(cfg.train.optimizer, "train.optimizer")
    train.SCHEDULES.get(cfg.train.schedule, "train.schedule")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError("device", cfg.device, "choose one of auto, cpu, cuda")
    if cfg.batchnorm not in NORM_MODES:
        raise ConfigError("batchnorm", cfg.batchnorm, f"choose one of {', '.join(NORM_MODES)}")
    # iterations=0 is a prune-only run (masks and spectra, no training), as the paper's mask figures need.
    _integer(cfg, "train.iterations", minimum=0, maximum=config.MAX_STEPS)
    for key in ("train.batch_size", "train.eval_interval", "train.checkpoint_interval", "train.log_interval",
                "train.best_of_last"):
        _integer(cfg, key)
    if cfg.signal.layer_examples != "auto":
        _integer(cfg, "signal.layer_examples")
    lo, hi = rng.seed_range()
    _integer(cfg, "seed", minimum=lo, maximum=hi)
    _integer(cfg, "train.shuffle_seed", minimum=config.GENERATOR_SEEDS[0], maximum=config.GENERATOR_SEEDS[1])
    _integer(cfg, "signal.every", minimum=0)
    _integer(cfg, "train.warmup", minimum=0, maximum=config.MAX_STEPS)
    _integer(cfg, "threads", minimum=0, maximum=4096)
    if not (math.isfinite(cfg.train.lr) and cfg.train.lr > 0):
        raise ConfigError("train.lr", cfg.train.lr, "a finite number > 0")
    if cfg.train.l2 < 0 or not math.isfinite(cfg.train.l2):
        raise ConfigError("train.l2", cfg.train.l2, "a finite number >= 0")
    if not 0 <= cfg.train.momentum < 1:
        raise ConfigError("train.momentum", cfg.train.momentum, "a number in [0, 1)")
    if cfg.train.nesterov and cfg.train.optimizer != "momentum":
        raise ConfigError("train.nesterov", True, "false unless train.optimizer=momentum (plain SGD has no momentum)")
    if cfg.train.nesterov and cfg.train.momentum == 0:
        raise ConfigError("train.momentum", cfg.train.momentum, "a number in (0, 1) with train.nesterov=true")
    ex = cfg.signal.examples
    if ex not in ("all", "auto") and (isinstance(ex, bool) or not isinstance(ex, int) or ex < 1):
        raise ConfigError("signal.examples", ex, "auto, all or an integer >= 1")
    stages = list(cfg.signal.stages) if isinstance(cfg.signal.stages, (list, ListConfig)) else None
    if stages is None or any(s not in STAGES or stages.count(s) > 1 for s in stages):
        raise ConfigError("signal.stages", cfg.signal.stages if stages is None else stages,
                          f"a list drawn from {', '.join(STAGES)}, each at most once")
    train.check_schedule(cfg.train)
    if cfg.progress not in ("auto", True, False) or cfg.progress in (0, 1) and not isinstance(cfg.progress, bool):
        raise ConfigError("progress", cfg.progress, "auto, true or false")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "no CUDA device is visible here; use device=cpu or device=auto")


# Settings of `train` that only some optimizers or schedules read, by the choice that decides.
_TRAIN_CHOICE = {"momentum": "optimizer", "nesterov": "optimizer", "boundaries": "schedule", "values": "schedule"}


def _train_registries() -> dict[str, Registry]:
    return {"optimizer": train.OPTIMIZERS, "schedule": train.SCHEDULES}


def _reads(choice: str, name: str) -> set[str]:
    import inspect

    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    fn = _train_registries()[choice].get(name, f"train.{choice}")
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind not in kinds}


def train_keys_read(cfg: DictConfig) -> set[str]:
    """The optional ``train`` settings the chosen optimizer and schedule read (``train.momentum``, ...)."""
    return {f"train.{key}" for key, choice in _TRAIN_CHOICE.items() if key in _reads(choice, cfg.train[choice])}


def unused_train_settings(cfg: DictConfig) -> list[tuple[str, Any, str]]:
    """(key, value, why) for each ``train`` setting changed from its default that the chosen optimizer or schedule never reads."""
    found = []
    defaults = config.schema_dict()["train"]
    for key, choice in _TRAIN_CHOICE.items():
        name = cfg.train[choice]
        value = cfg.train[key]
        if key in _reads(choice, name) or value == defaults[key]:
            continue
        readers = [n for n in _train_registries()[choice].names() if key in _reads(choice, n)]
        found.append((f"train.{key}", OmegaConf.to_container(value) if isinstance(value, ListConfig) else value,
                      f"train.{choice}={name} does not read it; only "
                      f"{', '.join(f'train.{choice}={n}' for n in readers)} {'does' if len(readers) == 1 else 'do'}"))
    return found


def check_sizes(cfg: DictConfig, chosen: dict[str, Options], memory_here: bool = True) -> None:
    """Checks that need the dataset's declared size and the network's shape, neither built nor loaded.

    Every split must hold an example, the batches and signal examples must fit the training
    split, pruning must keep at least one weight, and (with ``memory_here``) the run must fit here.
    """
    ds, pruner = chosen["dataset"], pruning.make_pruner(cfg.prune)
    score_name = setup.scoring_dataset(cfg) if pruner.uses_data else ds.name
    if score_name != ds.name:
        data.DATASETS.get(score_name, "prune.dataset")
    names = {ds.name, score_name}
    if any(n not in data.SHAPES for n in names):
        return  # a dataset that declares no shape is checked when it is loaded
    sizes = {n: data.split_sizes(n, ds.val_fraction) for n in names}
    for name, (n_train, n_val, _) in sizes.items():
        if n_train < 2 or n_val < 1:
            ds.refuse("val_fraction", f"it leaves {n_train} training and {n_val} validation examples of dataset={name}'s "
                                      f"{data.SHAPES[name].train:,}; each split needs at least 2 and 1")
    if score_name != ds.name:
        a, b = data.SHAPES[ds.name], data.SHAPES[score_name]
        if (a.in_shape, a.num_classes) != (b.in_shape, b.num_classes):
            raise ConfigError("prune.dataset", score_name,
                              f"a dataset with inputs {a.in_shape} and {a.num_classes} classes like dataset={ds.name}; "
                              f"{score_name} has {b.in_shape} and {b.num_classes}")
    n_train = sizes[ds.name][0]
    where = f"the training split of dataset={ds.name} holds {n_train:,} examples"
    if cfg.train.batch_size > n_train:
        raise ConfigError("train.batch_size", cfg.train.batch_size, f"at most {n_train:,}: {where}")
    if cfg.signal.stages or cfg.signal.every:
        if cfg.signal.examples not in ("all", "auto") and cfg.signal.examples > n_train:
            raise ConfigError("signal.examples", cfg.signal.examples, f"auto, all or at most {n_train:,}: {where}")
        if cfg.signal.layer_examples != "auto" and cfg.signal.layer_examples > n_train:
            raise ConfigError("signal.layer_examples", cfg.signal.layer_examples, f"auto or at most {n_train:,}: {where}")
    if pruner.uses_data:
        pruner.options.check_split(sizes[score_name][0], score_name)
        _check_batch_statistics(cfg, pruner.options, sizes[score_name][0])
    shape = data.SHAPES[ds.name]
    net = memory.network(cfg, shape)
    inits.check(net.model, cfg.init.name)  # an init that cannot draw some layer of this network, from shapes alone
    m = net.prunable if pruner.options.include_bias else net.prunable_weights
    if pruner.options.keep is not None:
        pruner.options.kept(m)  # a count of more entries than the network has is refused here, before any data loads
    elif pruner.options.sparsity > 0 and pruning.kept_count(m, pruner.options.sparsity) == 0:
        most = 1 - 0.5 / m  # round((1 - s)·m) >= 1 exactly when (1 - s)·m >= 0.5
        pruner.options.refuse("sparsity", f"it keeps round((1 - s)·m) = 0 of the m = {m:,} prunable parameters; "
                                          f"use s < {most:.6g}")
    if memory_here:
        memory.check_memory(cfg, net.model, shape, sizes[ds.name])


def _check_batch_statistics(cfg: DictConfig, options: Options, n_score: int) -> None:
    """With ``batchnorm=batch`` every scoring batch needs two examples: one example has no batch statistics."""
    size = getattr(options, "batch_size", None)
    if cfg.batchnorm != "batch" or not isinstance(size, int):
        return
    if size < 2:
        options.refuse("batch_size", "at least 2 with batchnorm=batch (BatchNorm needs two examples for batch statistics)")
    if n_score % size == 1 and str(getattr(options, "batches", "all")).strip().lower() == "all":
        options.refuse("batch_size", f"a size that does not leave a last scoring batch of 1 of the {n_score:,} "
                                     "training examples with batchnorm=batch (one example has no batch statistics)")


def check_memory_here(cfg: DictConfig) -> None:
    """The memory check alone, for a job whose launcher sent it to a machine the sweep's check could not see."""
    ds = data.DATASETS.options(cfg.dataset)
    if ds.name in data.SHAPES:
        shape = data.SHAPES[ds.name]
        memory.check_memory(cfg, memory.network(cfg, shape).model, shape, data.split_sizes(ds.name, ds.val_fraction))
