"""`sparseprop <command> [overrides]`: check the input, then hand over to Hydra (train) or to a tool."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

from sparseprop.errors import ConfigError, SparsepropError

USAGE = """usage: sparseprop <command> [args]

commands:
  train [overrides] [-m]   prune at initialisation and train (Hydra overrides, e.g. init=orthogonal prune=snip)
  collect PATH...          gather run directories into one results table
  figures                  redraw the paper figures from collected results
  plot RUN_DIR...          draw a run's own figures from its records (runs made with figures=false)

`sparseprop train --help` lists the config groups and their options."""

# Hydra flags that take a value: their value is not an override.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp",
                "--config-dir", "-cd", "--experimental-rerun", "--info", "-i"}
_NO_CHECK_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--version", "--shell-completion", "-sc"}
MAX_COMBINATIONS = 512


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    print(f"sparseprop: error: {message}", file=sys.stderr)
    sys.exit(code)


def split_args(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, skip_checks) from the arguments of `sparseprop train`."""
    overrides, multirun, skip = [], False, False
    it = iter(args)
    for a in it:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a in _NO_CHECK_FLAGS:
            skip = True
            if a in ("--info", "-i"):
                break
        elif a in _VALUE_FLAGS:
            next(it, None)
        elif a.startswith("-"):
            continue  # another Hydra flag; overrides never start with '-'
        else:
            overrides.append(a)
    return overrides, multirun, skip


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


def expand(overrides: list[str]) -> list[list[str]]:
    """The single-run override lists a sweep stands for (one value varied at a time when there are too many)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise SparsepropError(str(exc).strip().splitlines()[0]) from None
    prefix = {"ADD": "+", "FORCE_ADD": "++", "DEL": "~", "CHANGE": ""}
    options: list[list[str]] = []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        head = f"{prefix[o.type.name]}{o.key_or_group}"
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - e.g. glob sweeps: Hydra resolves and checks those itself
                continue
            options.append([f"{head}={v}" for v in values])
        else:
            options.append([o.input_line])
    total = 1
    for opt in options:
        total *= len(opt)
    if total <= MAX_COMBINATIONS:
        return [list(c) for c in itertools.product(*options)]
    firsts = [opt[0] for opt in options]
    return [firsts[:i] + [v] + firsts[i + 1:] for i, opt in enumerate(options) for v in opt]


def group_options(group: str) -> list[str]:
    """The option names of a config group: the YAML stems in conf/<group>/."""
    from sparseprop.config import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check(overrides: list[str]) -> None:
    """Compose and validate every run the overrides stand for; raise SparsepropError on the first bad one."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sparseprop import config, data

    seen_data: set[tuple[str, str, bool]] = set()
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3", job_name="check"):
        for combo in expand(overrides):
            for ov in combo:
                key, _, value = ov.lstrip("+~").partition("=")
                if key in (*config.GROUPS, "experiment") and value not in group_options(key) and value != "null":
                    raise ConfigError(key, value, f"choose one of {', '.join(group_options(key))}")
            try:
                cfg = compose(config_name="train", overrides=combo)
                OmegaConf.to_container(cfg, resolve=True)
            except SparsepropError:
                raise
            except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf errors become one line
                raise SparsepropError(_one_line(exc)) from None
            config.validate(cfg)
            for name in {cfg.dataset.name, cfg.prune.dataset or cfg.dataset.name}:
                key = (name, str(cfg.dataset.root), bool(cfg.dataset.download))
                if key not in seen_data:
                    seen_data.add(key)
                    data.check_available(*key)


def train_command(args: list[str]) -> None:
    """`sparseprop train`: validate everything, then run Hydra's app (single run or sweep)."""
    overrides, _multirun, skip = split_args(args)
    if not skip:
        try:
            check(overrides)
        except SparsepropError as exc:
            fail(str(exc))
    from sparseprop import app

    sys.argv = ["sparseprop-train", *args]
    app.main()


# command -> (module, function); modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sparseprop.cli", "train_command"),
    "collect": ("sparseprop.collect", "main"),
    "figures": ("sparseprop.figures", "main"),
    "plot": ("sparseprop.plots", "main"),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `sparseprop` console script."""
    import importlib

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
    except KeyboardInterrupt:
        print("sparseprop: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
