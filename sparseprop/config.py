"""Typed config schema (registered with Hydra's ConfigStore), range checks and early validation."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from sparseprop.errors import ConfigError, SparsepropError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("dataset", "arch", "activation", "init", "prune", "isometry")
# Launchers that run the jobs on this machine: only for them can the memory here be checked up front.
LOCAL_LAUNCHERS = ("basic", "joblib", "submitit_local")
# Bounds beyond any plausible budget: 10 million steps is 1,000 times the paper's training length.
MAX_STEPS = 10_000_000
MAX_DEPTH = 10_000


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


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1, maximum: int | None = None) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, value, f"an integer >= {minimum:,}" if maximum is None else f"an integer in [{minimum:,}, {maximum:,}]")
    if maximum is not None and value > maximum:
        raise ConfigError(key, value, f"an integer in [{minimum:,}, {maximum:,}]")


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


def _positive_float(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(key, value, "a finite number > 0")


def _choice(cfg: DictConfig, key: str, allowed: list[str] | tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(key, value, f"choose one of {', '.join(allowed)}")


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    """The schema's keys as plain nested dicts, made once: every job of a sweep is compared with it."""
    return OmegaConf.to_container(OmegaConf.structured(Config))


def unknown_keys(cfg: DictConfig | dict) -> list[str]:
    """Dotted keys of ``cfg`` that the schema does not know (added with ``+key=...``)."""
    found = []

    def walk(node: dict, ref: dict, prefix: str) -> None:
        for key, value in node.items():
            if key == "hydra":
                continue
            if key not in ref:
                found.append(prefix + str(key))
            elif isinstance(value, dict) and isinstance(ref[key], dict):
                walk(value, ref[key], f"{prefix}{key}.")

    walk(cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg), _schema(), "")
    return found


def validate(cfg: DictConfig, memory: bool = True) -> None:
    """Range and name checks of a composed config; raises ConfigError naming key, value and what is allowed.

    With ``memory``, also refuses a run that would not fit in the memory available here.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    for key in unknown_keys(plain):
        raise ConfigError(key, OmegaConf.select(cfg, key), "unknown key; `sparseprop train --cfg job` lists every key")
    bad = _non_finite(plain)
    if bad:
        raise ConfigError(bad[0], bad[1], "a finite number")
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
    _positive_int(cfg, "train.iterations", minimum=0, maximum=MAX_STEPS)
    _positive_int(cfg, "isometry.steps", maximum=MAX_STEPS)
    if "depth" in cfg.arch:
        _positive_int(cfg, "arch.depth", maximum=MAX_DEPTH)
    for key in ("arch.width", "prune.batch_size", "train.batch_size",
                "train.eval_interval", "train.checkpoint_interval", "train.log_interval", "train.best_of_last",
                "signal.layer_examples"):
        _positive_int(cfg, key)
    from sparseprop.runner import run

    lo, hi = run.seed_range()
    _positive_int(cfg, "seed", minimum=lo, maximum=hi)
    # hold_out seeds with split_seed (digits also with split_seed + 1), the batch order with shuffle_seed.
    _positive_int(cfg, "dataset.split_seed", minimum=run.GENERATOR_SEEDS[0], maximum=run.GENERATOR_SEEDS[1] - 1)
    _positive_int(cfg, "train.shuffle_seed", minimum=run.GENERATOR_SEEDS[0], maximum=run.GENERATOR_SEEDS[1])
    _positive_int(cfg, "signal.every", minimum=0)
    _positive_int(cfg, "threads", minimum=0, maximum=4096)
    for key in ("train.lr", "isometry.lr", "init.scale", "init.gain"):
        _positive_float(cfg, key)
    s = cfg.prune.sparsity
    if not (isinstance(s, (int, float)) and 0 <= s < 1):
        raise ConfigError("prune.sparsity", s, "a number in [0, 1)")
    if cfg.train.l2 < 0 or not math.isfinite(cfg.train.l2):
        raise ConfigError("train.l2", cfg.train.l2, "a finite number >= 0")
    if not 0 <= cfg.train.momentum < 1:
        raise ConfigError("train.momentum", cfg.train.momentum, "a number in [0, 1)")
    if cfg.train.nesterov and cfg.train.optimizer != "momentum":
        raise ConfigError("train.nesterov", True, "false unless train.optimizer=momentum (plain SGD has no momentum)")
    if cfg.train.nesterov and cfg.train.momentum == 0:
        raise ConfigError("train.momentum", cfg.train.momentum, "a number in (0, 1) with train.nesterov=true")
    pruning._parse_batches(cfg.prune.batches)
    ex = cfg.signal.examples
    if ex != "all" and (isinstance(ex, bool) or not isinstance(ex, int) or ex < 1):
        raise ConfigError("signal.examples", ex, "all or an integer >= 1")
    if not isinstance(cfg.signal.stages, (list, ListConfig)):
        raise ConfigError("signal.stages", cfg.signal.stages, "a list drawn from init, pruned, isometry, final")
    if not str(cfg.dataset.root).strip():
        raise ConfigError("dataset.root", cfg.dataset.root, "a folder path (the data root)")
    stages = list(cfg.signal.stages)
    for stage in stages:
        if stage not in ("init", "pruned", "isometry", "final") or stages.count(stage) > 1:
            raise ConfigError("signal.stages", list(cfg.signal.stages), "a list drawn from init, pruned, isometry, final, each at most once")
    if cfg.prune.dataset is not None:
        _choice(cfg, "prune.dataset", data.DATASETS.names())
    train.check_schedule(cfg.train)
    if cfg.progress not in ("auto", True, False) or cfg.progress in (0, 1) and not isinstance(cfg.progress, bool):
        raise ConfigError("progress", cfg.progress, "auto, true or false")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device", "cuda", "no CUDA device is visible here; use device=cpu or device=auto")
    check_sizes(cfg, memory)


def _named_parameters(fn: Any) -> set[str]:
    """The keyword settings a registered component reads: its named parameters."""
    import inspect

    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind not in kinds}


def settings_read(cfg: DictConfig) -> dict[str, set[str]]:
    """Per component setting (``init``, ``train.optimizer``), the keys the chosen component reads.

    A component reads the settings it names as parameters (``init=vs_custom`` reads ``scale`` and
    ``mode``; ``vs_l`` reads neither). A pruner that takes the prunable parameters also reads
    ``prune.include_bias``, and one that takes data also reads ``prune.dataset``.
    """
    return {kind: _reads(kind, name) for kind, name in _choices(cfg).items()}


def keys_read(cfg: DictConfig) -> set[str]:
    """The dotted keys of the optional settings that this run's components read."""
    return {f"{kind.partition('.')[0]}.{key}" for kind, keys in settings_read(cfg).items() for key in keys}


def _registries() -> dict[str, Any]:
    from sparseprop import inits, isometry, models, pruning, train

    return {"arch": models.ARCHS, "activation": models.ACTIVATIONS, "init": inits.INITS, "prune": pruning.PRUNERS,
            "isometry": isometry.ISOMETRY, "train.optimizer": train.OPTIMIZERS, "train.schedule": train.SCHEDULES}


# Settings of `train` that only some optimizers or schedules read, by the choice that decides.
_TRAIN_CHOICE = {"momentum": "train.optimizer", "nesterov": "train.optimizer",
                 "boundaries": "train.schedule", "values": "train.schedule"}


def _choices(cfg: DictConfig) -> dict[str, str]:
    return {kind: OmegaConf.select(cfg, kind if kind.startswith("train.") else f"{kind}.name") for kind in _registries()}


def _reads(kind: str, name: str) -> set[str]:
    used = _named_parameters(_registries()[kind].get(name, kind))
    if kind == "prune":
        used |= {"include_bias"} if "params" in used else set()
        used |= {"dataset"} if "x" in used else set()
    return used


def unused_settings(cfg: DictConfig) -> list[tuple[str, Any, str]]:
    """(key, value, why) for each setting changed from its default that this run's components never read.

    The default of a setting is its option's YAML value where the YAML sets it, else the schema's.
    """
    found = []
    schema = _schema()
    reads = settings_read(cfg)
    checked = [(g, k) for g in reads if "." not in g for k in cfg[g] if k != "name" and k in schema[g]]
    checked += [("train", k) for k in _TRAIN_CHOICE]
    for group, key in checked:
        kind = _TRAIN_CHOICE[key] if group == "train" else group
        name = _choices(cfg)[kind]
        if key in reads[kind]:
            continue
        value = cfg[group][key]
        default = schema[group][key] if group == "train" else _option_yaml(group, name).get(key, schema[group][key])
        if value != default:
            readers = [n for n in _registries()[kind].names() if key in _reads(kind, n)]
            found.append((f"{group}.{key}", OmegaConf.to_container(value) if isinstance(value, ListConfig) else value,
                          f"{kind}={name} does not read it; only {', '.join(f'{kind}={n}' for n in readers)} "
                          f"{'does' if len(readers) == 1 else 'do'}"))
    return found


@functools.lru_cache(maxsize=None)
def _option_yaml(group: str, name: str) -> dict[str, Any]:
    """The values an option's YAML file sets (``conf/prune/none.yaml`` sets sparsity 0)."""
    path = CONF_DIR / group / f"{name}.yaml"
    return OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else {}


def check_sizes(cfg: DictConfig, memory: bool = True) -> None:
    """Checks that need the dataset's declared size and the network's shape, neither built nor loaded.

    Every split must hold an example, the batches and signal examples must fit the training
    split, pruning must keep at least one weight, and (with ``memory``) the run must fit here.
    """
    from sparseprop import data, pruning

    names = {cfg.dataset.name, cfg.prune.dataset or cfg.dataset.name}
    if any(n not in data.SHAPES for n in names):
        return  # a dataset that declares no shape is checked when it is loaded
    sizes = {n: data.split_sizes(n, cfg.dataset.val_fraction) for n in names}
    for name, (n_train, n_val, _) in sizes.items():
        if n_train < 2 or n_val < 1:
            raise ConfigError("dataset.val_fraction", cfg.dataset.val_fraction,
                              f"it leaves {n_train} training and {n_val} validation examples of dataset={name}'s "
                              f"{data.SHAPES[name].train:,}; each split needs at least 2 and 1")
    if cfg.prune.dataset is not None:
        a, b = data.SHAPES[cfg.dataset.name], data.SHAPES[cfg.prune.dataset]
        if (a.in_shape, a.num_classes) != (b.in_shape, b.num_classes):
            raise ConfigError("prune.dataset", cfg.prune.dataset,
                              f"a dataset with inputs {a.in_shape} and {a.num_classes} classes like dataset={cfg.dataset.name}; "
                              f"{cfg.prune.dataset} has {b.in_shape} and {b.num_classes}")
    n_train = sizes[cfg.dataset.name][0]
    where = f"the training split of dataset={cfg.dataset.name} holds {n_train:,} examples"
    if cfg.train.batch_size > n_train:
        raise ConfigError("train.batch_size", cfg.train.batch_size, f"at most {n_train:,}: {where}")
    if cfg.signal.stages or cfg.signal.every:
        if cfg.signal.examples != "all" and cfg.signal.examples > n_train:
            raise ConfigError("signal.examples", cfg.signal.examples, f"all or at most {n_train:,}: {where}")
        if cfg.signal.layer_examples > n_train:
            raise ConfigError("signal.layer_examples", cfg.signal.layer_examples, f"at most {n_train:,}: {where}")
    score_name = cfg.prune.dataset or cfg.dataset.name
    n_score = sizes[score_name][0]
    if cfg.prune.name == "snip":
        if cfg.prune.batch_size > n_score:
            raise ConfigError("prune.batch_size", cfg.prune.batch_size,
                              f"at most {n_score:,}: the training split of dataset={score_name} holds {n_score:,} examples")
        batches = pruning._parse_batches(cfg.prune.batches)
        fit = -(-n_score // cfg.prune.batch_size)
        if batches is not None and batches > fit:
            raise ConfigError("prune.batches", cfg.prune.batches,
                              f"all or at most {fit:,}: that many batches of {cfg.prune.batch_size} cover dataset={score_name}'s training split")
    shape = data.SHAPES[cfg.dataset.name]
    net = _network(cfg, shape)
    if cfg.prune.name != "none":
        m = net.prunable if cfg.prune.include_bias else net.prunable_weights
        if pruning.kept_count(m, cfg.prune.sparsity) == 0:
            most = 1 - 0.5 / m  # round((1 - s)·m) >= 1 exactly when (1 - s)·m >= 0.5
            raise ConfigError("prune.sparsity", cfg.prune.sparsity,
                              f"it keeps round((1 - s)·m) = 0 of the m = {m:,} prunable parameters; use s < {most:.6g}")
    if memory:
        check_memory(cfg, net.model, shape, sizes[cfg.dataset.name])


@dataclass
class _Network:
    model: Any
    prunable: int
    prunable_weights: int


_NETWORKS: dict[str, _Network] = {}


def _network(cfg: DictConfig, shape: Any) -> _Network:
    """The configured network on the meta device with its prunable counts, made once per distinct network."""
    from sparseprop import pruning
    from sparseprop.runner import run

    key = repr((OmegaConf.to_container(cfg.arch), OmegaConf.to_container(cfg.activation), shape))
    if key not in _NETWORKS:
        try:
            model = run.meta_model(cfg, shape)
        except SparsepropError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a size beyond what a tensor can index
            raise ConfigError("arch", OmegaConf.to_container(cfg.arch),
                              f"the network cannot be built: {str(exc).splitlines()[0]}") from None
        count = lambda bias: sum(p.numel() for p in pruning.prunable_parameters(model, bias).values())  # noqa: E731
        _NETWORKS.clear()  # one entry is enough for a sweep ordered by config groups, and keeps memory flat
        _NETWORKS[key] = _Network(model, count(True), count(False))
    return _NETWORKS[key]


def check_memory(cfg: DictConfig, model: Any, shape: Any, sizes: tuple[int, int, int]) -> None:
    """Refuse a run whose estimated peak memory exceeds what is available on its device."""
    from sparseprop.runner import run

    need = run.memory_estimate(cfg, model, shape, sizes)
    device = run.resolve_device(cfg.device)
    free = run.available_memory(device)
    total = sum(need.values())
    if free is not None and total > free:
        gib = 2.0**30
        parts = ", ".join(f"{k} {v / gib:.3g}" for k, v in need.items() if v)
        opts = ", ".join(f"{k}={v}" for k, v in cfg.arch.items() if k != "name")
        arch = f"arch={cfg.arch.name}" + (f" ({opts})" if opts else "")
        raise SparsepropError(f"{arch} on dataset={cfg.dataset.name} needs about {total / gib:.3g} GiB "
                              f"({parts} GiB) but {free / gib:.3g} GiB is free on {device.type}; "
                              "choose a smaller network or batch, or another device")
