"""The jobs of a sweep as Hydra's basic sweeper makes them: each job's override list and its directory's name.

Built on Hydra's public override parser; the one place where a sweep is expanded and a job's directory named.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from sparseprop.errors import SparsepropError

# Keys that say how or where a job runs, not what it computes: they never name a job or a sweep
# directory, and changing them between an interrupted run and its resumption is allowed.
# conf/train.yaml repeats them in hydra.job.config.override_dirname.exclude_keys (a test checks).
RUNTIME_KEYS = ("progress", "resume", "figures", "device", "threads", "dataset.root", "dataset.download")
_SYNTAX = "overrides are key=value, group=option or +key=value"


def override_key(override: str) -> str:
    """The key (or config group) an override sets: Hydra's ``key_or_group``, without ``+``/``++``/``~`` and ``@package``."""
    return override.lstrip("+~").partition("=")[0].partition("@")[0]


def parse(overrides: list[str]) -> list[Any]:
    """Hydra's own parse of the overrides; a syntax error becomes one line."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for o in overrides:
        if not o.strip():
            raise SparsepropError(f"{o!r} is an empty argument, not an override; {_SYNTAX}")
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip() and not ln.startswith("See ")]
        raise SparsepropError(": ".join(lines[:2]) + f"; {_SYNTAX}") from None
    for o in parsed:
        if not o.key_or_group:
            raise SparsepropError(f"{o.input_line!r} has no key before '='; {_SYNTAX}")
    return parsed


def is_group(key: str) -> bool:
    """Whether an override's key chooses a config group (``init``, ``hydra/launcher``) rather than sets a value."""
    from sparseprop.plugins import config_dirs

    return "/" in key or ("." not in key and any((d / key).is_dir() for d in config_dirs()))


def group_options(group: str) -> list[str]:
    """The option names of a config group: the YAML stems in conf/<group>/ and in the plugins' conf/<group>/."""
    from sparseprop import plugins

    return plugins.group_options(group)


def _values(o: Any) -> list[str]:
    """The values (as the basic sweeper writes them) of one parsed sweep override; bad sweeps are one line."""
    from hydra.core.override_parser.types import Glob

    if isinstance(o.value(), Glob):
        if not is_group(o.key_or_group):
            raise SparsepropError(f"{o.input_line}: glob() chooses config group options; {o.key_or_group} is not a group")
        names = group_options(o.key_or_group)
        values = o.value().filter(names)
        if not values:
            raise SparsepropError(f"{o.input_line} matches no option of {o.key_or_group}; its options are {', '.join(names)}")
        return values
    if not o.is_discrete_sweep():
        raise SparsepropError(f"{o.input_line}: {o.value_type.name.lower()} sweeps need an optimising sweeper; "
                              "list the values (a,b,c) or use range(start,stop,step)")
    try:
        values = list(o.sweep_string_iterator())
    except ValueError as exc:  # range(0,3,0)
        raise SparsepropError(f"{o.input_line} is not valid: {exc}") from None
    if not values:
        raise SparsepropError(f"{o.input_line} sweeps over no value")
    return values


def _axes(overrides: list[str]) -> dict[str, tuple[Any, list[str]]]:
    """Key -> (its parsed override, the overrides of single jobs it stands for, written ``key=value`` as the basic
    sweeper writes them), in first-mention order; a later mention of a key replaces an earlier one (the basic
    sweeper's rule, so sweeper params followed by the command line's overrides combine as in Hydra)."""
    axes: dict[str, tuple[Any, list[str]]] = {}
    for o in parse(overrides):
        key = o.get_key_element()
        values = _values(o) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes[key] = (o, [f"{key}={v}" for v in values])
    return axes


def sweep_axes(overrides: list[str]) -> dict[str, list[Any]]:
    """Key -> its single-value overrides, parsed: a plain override as given, a sweep as one override per value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    return {key: [parser.parse_override(line) for line in lines] if o.is_sweep_override() else [o]
            for key, (o, lines) in _axes(overrides).items()}


def expand(overrides: list[str]) -> list[list[str]]:
    """The override list of every job a sweep stands for: the same jobs, in the same order and written the same way
    as Hydra's basic sweeper makes them (the product of all values, the last-named key varying fastest).

    ``overrides`` are the sweep's ``hydra.sweeper.params`` as ``key=value`` followed by the command line's
    overrides; Hydra's own settings (``hydra.*``, ``hydra/...``) are left out, as Hydra leaves them out of a job's.
    """
    axes = [lines for o, lines in _axes(overrides).values() if not o.is_hydra_override()]
    return [list(job) for job in itertools.product(*axes)]


def job_dirname(overrides: list[str], exclude_keys: list[str], item_sep: str = ",", kv_sep: str = "=") -> str:
    """Hydra's ``hydra.job.override_dirname`` of a job with ``overrides`` (as ``expand`` writes them): sorted,
    overrides of ``exclude_keys`` left out, joined by ``item_sep``, every ``=`` written ``kv_sep``."""
    lines = sorted(o for o in overrides if override_key(o) not in exclude_keys)
    joined = item_sep.join(lines)
    # Hydra writes kv_sep with re.sub, which reads backslashes in it as escapes; without one, a plain replace is the same.
    return joined.replace("=", kv_sep) if "\\" not in kv_sep else re.sub("[=]", kv_sep, joined)
