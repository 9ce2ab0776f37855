"""`sparseprop <command> [overrides]`: check the input, then hand over to Hydra (train) or to a tool."""

from __future__ import annotations

import itertools
import math
import re
import sys
from pathlib import Path

from sparseprop.args import parse_train_args
from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.sweeps.jobs import expand, group_options, is_group, parse as _parse, sweep_axes  # noqa: F401 - expand

USAGE = """usage: sparseprop <command> [args]

commands:
  train [overrides] [-m]   prune at initialisation and train (Hydra overrides, e.g. init=orthogonal prune=snip)
  collect PATH...          gather run directories into one results table
  figures                  redraw the paper figures from collected results
  plot RUN_DIR...          draw a run's own figures from its records (runs made with figures=false)

`sparseprop train --help` lists the config groups and their options."""

def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    print(f"sparseprop: error: {message}", file=sys.stderr)
    sys.exit(code)


def _one_line(exc: BaseException) -> str:
    """A one-line account of a Hydra / OmegaConf composition error."""
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in reversed(chain):
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            msg = str(getattr(e, "msg", "") or e).strip().splitlines()[0]
            if isinstance(e, ConfigKeyError) or "not in struct" in msg or re.search(r"Key '.*' not in", msg):
                return f"unknown key '{e.full_key}'; `sparseprop train --cfg job` lists every key"
            value = getattr(e, "value", None)
            return f"{e.full_key}={value!r} is not valid: {msg}" if value is not None else f"{e.full_key}: {msg}"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:2]) if lines else type(exc).__name__


def apply_override(cfg, o) -> None:
    """Apply one value override to a composed config in place, as Hydra does after composing its defaults.

    ``key=v`` changes an existing key (the schema checks its type), ``+key=v`` adds a new one,
    ``++key=v`` adds or changes, ``~key`` (or ``~key=v`` when it holds v) deletes.
    """
    from omegaconf import OmegaConf, open_dict

    key, value = o.key_or_group, o.value()
    _refuse_foreign_setting(cfg, key, value)
    current = OmegaConf.select(cfg, key, throw_on_missing=False)
    if o.package is not None:
        raise SparsepropError(f"{o.input_line}: a package (@...) is only allowed on config groups")
    if o.is_delete():
        if current is None:
            raise SparsepropError(f"{o.input_line}: there is no {key} to delete")
        if value is not None and value != current:
            raise SparsepropError(f"{o.input_line}: {key} is {current!r}, not {value!r}")
        from sparseprop.runner import checks

        group, _, setting = key.partition(".")
        registry = checks.registries().get(group)
        if registry is not None and setting and OmegaConf.select(cfg, f"{group}.name") in registry:
            needed = setting in registry.settings_of(cfg[group].name)
        else:
            needed = key in checks.registries() or not checks.unknown_keys(OmegaConf.to_container(_nest(key, current)))
        if needed:
            raise SparsepropError(f"{o.input_line} is not valid: {key} is a setting every run needs and cannot be "
                                  f"deleted; change it with {key}=...")
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        with open_dict(node):
            del node[leaf]
    elif o.is_add() and current is not None and not isinstance(value, (dict, list)):
        raise SparsepropError(f"{o.input_line}: {key} already exists; set it with {o.input_line[1:]} "
                              f"(or +{o.input_line} to add or change it)")
    else:
        if isinstance(current, bool) and isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")  # OmegaConf would read 2 as true
        OmegaConf.update(cfg, key, value, merge=True, force_add=o.is_add() or o.is_force_add())


def _group_setting(key: str) -> bool:
    """Whether an override key sets a config group option's setting (``prune.target``), not a root key."""
    from sparseprop.config import GROUPS

    group, _, setting = key.lstrip("+~").partition(".")
    return bool(setting) and group in GROUPS


def _lacks_setting(cfg, key: str) -> bool:
    """Whether ``key`` is a setting that the chosen option of its config group does not have."""
    try:
        _refuse_foreign_setting(cfg, key, None)
    except ConfigError:
        return True
    return False


def _refuse_foreign_setting(cfg, key: str, value: object) -> None:
    """A ConfigError when ``key`` is a setting the group's chosen option does not have (``prune=random prune.target=x``)."""
    from omegaconf import OmegaConf

    from sparseprop.runner import checks

    group, _, setting = key.partition(".")
    registry = checks.registries().get(group)
    name = OmegaConf.select(cfg, f"{group}.name", default=None) if registry is not None else None
    if registry is not None and setting and name in registry and setting.partition(".")[0] not in registry.settings_of(name):
        raise registry.foreign_setting(name, setting.partition(".")[0], value)


def _nest(key: str, value: object):
    """``a.b`` and ``v`` as the config ``{a: {b: v}}``."""
    from omegaconf import OmegaConf

    node: object = value
    for part in reversed(key.split(".")):
        node = {part: node}
    return OmegaConf.create(node)


def _compose(compose, config_name: str, overrides: list[str], hydra: bool = False):
    """Hydra's composition, any failure as one line."""
    from hydra.errors import MissingConfigException

    try:
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra)
    except MissingConfigException as exc:
        missing = getattr(exc, "missing_cfg_file", None) or ""
        group, _, name = missing.rpartition("/")
        if getattr(exc, "options", None) and group:
            raise SparsepropError(f"{group}={name!r} is not valid: choose one of {', '.join(exc.options)}") from None
        raise SparsepropError(_one_line(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
        line = _one_line(exc)
        unknown = re.match(r"unknown key '(\w+)\.(\w+)'", line)
        if unknown:
            _refuse_unknown_setting(compose, config_name, overrides, *unknown.groups())
        raise SparsepropError(line) from None


def _refuse_unknown_setting(compose, config_name: str, overrides: list[str], group: str, setting: str) -> None:
    """Raise the option's own error when ``group.setting`` is a setting the chosen option of ``group`` lacks."""
    from sparseprop.runner import checks

    registry = checks.registries().get(group)
    if registry is None:
        return
    parsed = _parse(overrides)
    choices = [o.input_line for o in parsed
               if o.key_or_group.startswith("hydra.") or is_group(o.key_or_group.lstrip("+~").partition("@")[0])]
    try:
        name = compose(config_name=config_name, overrides=choices)[group].name
    except Exception:  # noqa: BLE001 - the group choice itself is broken: the generic message stands
        return
    values = [o.value() for o in parsed if o.key_or_group == f"{group}.{setting}"]
    if name in registry and setting not in registry.settings_of(name):
        raise registry.foreign_setting(name, setting, values[-1] if values else None)


def _show_progress(done: int, total: int, t0: float, final: bool = False, failed: bool = False) -> None:
    """A progress line on a terminal once checking has taken a few seconds (wiped if a job is refused)."""
    import time

    if sys.stderr.isatty() and time.time() - t0 > 3:
        line = f"sparseprop: checked {done}/{total} jobs"
        if failed:
            print("\r" + " " * len(line) + "\r", end="", file=sys.stderr, flush=True)
        else:
            print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)


def check(overrides: list[str], multirun: bool = True, config_name: str = "train", local: bool | None = None,
          partial: set[str] | None = None) -> int:
    """Compose and validate every run the overrides stand for; raise SparsepropError on the first bad one.

    Composition (Hydra's defaults list) happens once per distinct choice of config groups; the
    value overrides of each job are then applied to a copy of that composition with Hydra's
    semantics, and the result validated. Returns the number of jobs checked.

    A setting of a config group's option (``isometry.steps``) that only some jobs' options have
    (``-m isometry=none,ai``) applies to those jobs; its key goes into ``partial``. A setting that
    no job's option has is refused.
    """
    import copy
    import time

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sparseprop import config, data, plugins, pruning
    from sparseprop.runner import checks, run

    t0 = time.time()
    searchpath = plugins.search_path_overrides()
    axes = sweep_axes(overrides)
    for key, opts in axes.items():
        if len(opts) > 1 and key.lstrip("+~").startswith("hydra"):
            raise SparsepropError(f"{key}: Hydra's own settings cannot be swept; give one value")
    plain = [opts[0].input_line for key, opts in axes.items() if len(opts) == 1 and not _group_setting(key)]
    seen_data: set[tuple[str, str, bool]] = set()
    read: set[str] = set()
    unused: dict[str, tuple] = {}
    lacking: dict[str, tuple] = {}  # group settings some job's option does not have: key -> (its config, override)
    having: set[str] = set()
    jobs = 0
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3", job_name="check"):
        # The config the sweep itself is set up from (Hydra's launcher, sweeper and the experiment's
        # own sweep parameters), composed once from the overrides that are not swept.
        master = _compose(compose, config_name, [*plain, *searchpath], hydra=True)
        for key in ("hydra.run.dir", "hydra.sweep.dir"):
            if not str(OmegaConf.select(master, key) or "").strip():
                raise ConfigError(key, OmegaConf.select(master, key), "a directory path")
        if local is None:
            local = master.hydra.runtime.choices.get("hydra/launcher") in config.LOCAL_LAUNCHERS
        params = OmegaConf.select(master, "hydra.sweeper.params") if multirun else None
        if params:
            axes = {**sweep_axes([f"{k}={v}" for k, v in params.items()]), **axes}
        for key in [k for k in axes if k.lstrip("+~").startswith("hydra")]:
            del axes[key]
        groups = [opts for key, opts in axes.items() if is_group(key.lstrip("+~").partition("@")[0])]
        values = [opts for key, opts in axes.items() if not is_group(key.lstrip("+~").partition("@")[0])]
        total = math.prod(len(g) for g in groups) * math.prod(len(v) for v in values)
        for combo in itertools.product(*groups):
            for o in combo:
                key, value = o.key_or_group, o.value()
                if key in (*config.GROUPS, "experiment") and value not in group_options(key) and value is not None:
                    raise ConfigError(key, value, f"choose one of {', '.join(group_options(key))}")
            base = _compose(compose, config_name, [*(o.input_line for o in combo), *searchpath])
            for job in itertools.product(*values):
                cfg = copy.deepcopy(base)
                try:
                    for o in job:
                        if multirun and _lacks_setting(cfg, o.key_or_group):
                            lacking.setdefault(o.key_or_group, (cfg, o))
                            continue
                        having.add(o.key_or_group)
                        apply_override(cfg, o)
                    chosen = checks.validate(cfg, memory_here=local)
                except SparsepropError:
                    _show_progress(jobs, total, t0, failed=True)
                    raise
                except Exception as exc:  # noqa: BLE001 - OmegaConf errors (types, interpolations) become one line
                    _show_progress(jobs, total, t0, failed=True)
                    raise SparsepropError(_one_line(exc)) from None
                read |= checks.train_keys_read(cfg)
                for key, value, why in checks.unused_train_settings(cfg):
                    unused.setdefault(key, (value, why))
                ds = chosen["dataset"]
                uses_data = pruning.make_pruner(cfg.prune).uses_data
                for name in {ds.name, run.scoring_dataset(cfg) if uses_data else ds.name}:
                    key = (name, str(getattr(ds, "root", "")), bool(getattr(ds, "download", False)))
                    if key not in seen_data:
                        seen_data.add(key)
                        data.check_available(*key)
                jobs += 1
                if jobs % 50 == 0:
                    _show_progress(jobs, total, t0)
    # A training setting no job reads is a mistake (train.momentum with train.optimizer=sgd); in a sweep
    # where some jobs read it (train.optimizer=sgd,momentum train.momentum=0.5) it is meant for those.
    for key, (value, why) in unused.items():
        if key not in read:
            _show_progress(jobs, total, t0, failed=True)
            raise ConfigError(key, value, f"{why}; leave it out")
    for key, (cfg, o) in lacking.items():
        if key not in having:
            _show_progress(jobs, total, t0, failed=True)
            _refuse_foreign_setting(cfg, key, o.value())
    if partial is not None:
        partial |= lacking.keys() & having
    _show_progress(jobs, total, t0, final=True)
    return jobs


def _config_name(flags: dict[str, str | None]) -> str:
    """The primary config's name; an error unless conf/ (or the --config-dir / --config-path given) has it."""
    from sparseprop.config import CONF_DIR

    name = flags.get("--config-name") or "train"
    stem = name[:-5] if name.endswith(".yaml") else name
    dirs = [CONF_DIR] + [Path(d) for d in (flags.get("--config-dir"), flags.get("--config-path")) if d]
    if not any((d / f"{stem}.yaml").is_file() for d in dirs):
        known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise SparsepropError(f"--config-name={name!r} is not valid: choose one of {', '.join(known)}")
    return stem


def check_args(args: list[str]) -> list[str]:
    """Check `sparseprop train`'s arguments and every job they stand for; return them in the order Hydra reads."""
    flags, overrides, given = parse_train_args(args)
    # Hydra's parser wants the overrides in one run, so the flags go first wherever they were typed.
    ordered = [*given, *overrides]
    if any(f in flags for f in ("--hydra-help", "--version", "--shell-completion", "--experimental-rerun")):
        return ordered
    if any(f in flags for f in ("--help", "--info")) and not overrides:
        return ordered  # nothing to check: Hydra shows the default config
    package = flags.get("--package")
    if package and flags.get("--cfg") == "job" and package != "_global_":
        from sparseprop.runner import checks

        if checks.unknown_keys(_nest(package, 0)):
            raise SparsepropError(f"--package={package!r} is not valid: the job config has no {package}; "
                                  "give a key of it (train, prune.sparsity)")
    multirun = "--multirun" in flags
    if not multirun:
        for o in _parse(overrides):
            if o.is_sweep_override():
                raise SparsepropError(f"{o.input_line} is a sweep: add -m to run one job per value "
                                      f"(or write {o.key_or_group}=[...] if you mean a list)")
    if _config_name(flags) != "train" or "--config-path" in flags or "--config-dir" in flags:
        return ordered  # another primary config: Hydra composes and checks it itself
    partial: set[str] = set()
    check(overrides, multirun=multirun, partial=partial)
    # Hydra composes every job with every override: a setting meant for some jobs' options is added
    # (++) to the others, whose job then drops it (train_app) before recording or running anything.
    given = {o.partition("=")[0] for o in overrides}
    for key in sorted(partial - given):
        raise SparsepropError(f"{key} is swept by the experiment for jobs some of whose {key.partition('.')[0]} options "
                              f"do not have it; sweep it on the command line instead")
    return [f"++{o}" if o.partition("=")[0] in partial else o for o in ordered]


def train_command(args: list[str]) -> None:
    """`sparseprop train`: validate everything, then run Hydra's app (single run or sweep)."""
    try:
        ordered = check_args(args)
    except SparsepropError as exc:
        fail(str(exc))
    from sparseprop.cli import train_app as app

    from sparseprop import plugins

    sys.argv = ["sparseprop-train", *ordered, *plugins.search_path_overrides()]
    app.main()


# command -> (module, function); modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sparseprop.cli.main", "train_command"),
    "collect": ("sparseprop.sweeps.collect", "main"),
    "figures": ("sparseprop.paper.figures", "main"),
    "plot": ("sparseprop.runner.plots", "main"),
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds as from Ctrl-C: files being written stay whole."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `sparseprop` console script."""
    import importlib
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}")
    module, func = COMMANDS[command]
    try:
        getattr(importlib.import_module(module), func)(rest)
    except SparsepropError as exc:
        fail(str(exc))
    except BrokenPipeError:
        # The reader of our output went away (`sparseprop train --help | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except Terminated:
        print("sparseprop: terminated (SIGTERM); run the same command again to resume", file=sys.stderr)
        sys.exit(143)
    except KeyboardInterrupt:
        print("sparseprop: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
