"""Command-line arguments: Hydra's flags of `sparseprop train` told apart from its overrides, and an argparse
parser for the other commands; bad arguments are one line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from sparseprop.errors import SparsepropError


def exit_bad_input(message: str) -> NoReturn:
    """Bad input found where an exception would reach the user as a traceback (Hydra's app and callbacks): one line
    on stderr and exit code 2 (Hydra does not catch SystemExit)."""
    print(f"sparseprop: error: {message}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with bad arguments reported as one line (a SparsepropError), like every other bad input."""

    def error(self, message: str) -> None:
        raise SparsepropError(f"{self.prog}: {message}; `{self.prog} --help` shows the usage")


# Hydra's flags of `sparseprop train`: name -> (other spelling, takes a value, allowed values or None).
# A value of None for "takes a value" means an optional value (--info).
_FLAGS: dict[str, tuple[str, bool | None, tuple[str, ...] | None]] = {
    "--help": ("-h", False, None), "--hydra-help": ("", False, None), "--version": ("", False, None),
    "--cfg": ("-c", True, ("job", "hydra", "all")), "--resolve": ("", False, None), "--package": ("-p", True, None),
    "--run": ("-r", False, None), "--multirun": ("-m", False, None), "--shell-completion": ("-sc", False, None),
    "--config-path": ("-cp", True, None), "--config-name": ("-cn", True, None), "--config-dir": ("-cd", True, None),
    "--experimental-rerun": ("", True, None),
    "--info": ("-i", None, ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")),
}
_SHORT = {short: long for long, (short, _, _) in _FLAGS.items() if short}


def parse_train_args(args: list[str]) -> tuple[dict[str, str | None], list[str], list[str]]:
    """(flags by long name, overrides, flag arguments as given) of `sparseprop train`; bad flags are an error."""
    flags: dict[str, str | None] = {}
    overrides: list[str] = []
    given: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("-"):
            overrides.append(a)
            continue
        given.append(a)
        name, eq, value = a.partition("=")
        name = _SHORT.get(name, name)
        if name not in _FLAGS:
            raise SparsepropError(f"unknown option {a!r}; `sparseprop train --help` lists the options")
        if name in flags:
            raise SparsepropError(f"option {name} is given twice; give it once (Hydra would use only the last)")
        _, takes, allowed = _FLAGS[name]
        if takes is False:
            if eq:
                raise SparsepropError(f"option {name} takes no value (got {a!r})")
            flags[name] = None
            continue
        if not eq:
            # An optional value is the next word unless that is an override (Hydra reads `--info bogus` so).
            if i < len(args) and not args[i].startswith("-") and (takes or takes is None and "=" not in args[i]):
                value = args[i]
                given.append(value)
                i += 1
            elif takes:
                raise SparsepropError(f"option {name} needs a value" + (f": one of {', '.join(allowed)}" if allowed else ""))
            else:
                value = (allowed or ("",))[0]
                if allowed:
                    given.append(value)  # written out, so Hydra does not take the next override for it
        if allowed and value not in allowed:
            raise SparsepropError(f"{name}={value!r} is not valid: choose one of {', '.join(allowed)}")
        if takes and not value:
            raise SparsepropError(f"option {name} needs a non-empty value")
        flags[name] = value
    for flag in ("--config-dir", "--config-path"):
        if flags.get(flag) and not Path(flags[flag]).is_dir():
            raise SparsepropError(f"{flag}={flags[flag]!r} is not valid: no such folder; give a folder of configs")
    rerun = flags.get("--experimental-rerun")
    if rerun and not Path(rerun).is_file():
        raise SparsepropError(f"--experimental-rerun={rerun!r} is not valid: no such file; give a job's saved config.pickle")
    for flag in ("--hydra-help", "--version", "--shell-completion", "--experimental-rerun"):
        if flag in flags and overrides:
            raise SparsepropError(f"option {flag} takes no overrides (got {' '.join(overrides)!r}); leave them out")
    for flag, needs in (("--resolve", ("--cfg", "--help")), ("--package", ("--cfg",))):
        if flag in flags and not any(f in flags for f in needs):
            raise SparsepropError(f"option {flag} only works with {' or '.join(needs)} (to show a config)")
    modes = [f for f in ("--run", "--multirun", "--cfg", "--info", "--shell-completion") if f in flags]
    if len(modes) > 1:
        raise SparsepropError(f"{' and '.join(modes)} cannot be used together: --cfg and --info show one job's "
                              "config, -m runs a sweep; drop one of them")
    return flags, overrides, given

