"""`sparseprop <command> [overrides]`: check the input, then hand over to Hydra (train) or to a tool."""

from __future__ import annotations

import sys
from pathlib import Path

from sparseprop.args import parse_train_args
from sparseprop.cli.check import check
from sparseprop.cli.overrides import apply_override, nest
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.jobs import parse as _parse

__all__ = ["apply_override", "check", "check_args", "fail", "main", "train_command"]

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

        if checks.unknown_keys(nest(package, 0)):
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
