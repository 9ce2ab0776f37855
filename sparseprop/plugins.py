"""The components a run can choose from: the built-in ones and those of plugins named by SPARSEPROP_PLUGINS.

A plugin adds options to the config groups without editing sparseprop: a folder holding Python
modules that register themselves (``@PRUNERS.register("mine", schema=MineOptions)``) and a ``conf/``
tree with each option's YAML (``conf/prune/mine.yaml``). ``SPARSEPROP_PLUGINS`` lists such folders,
single module files or importable module names, separated by ``os.pathsep`` (``:`` on Linux).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from sparseprop.errors import SparsepropError

ENV = "SPARSEPROP_PLUGINS"


def _import_file(path: Path) -> None:
    """Import ``path`` as the top-level module named by its stem, its folder put on ``sys.path``.

    A plain importable name matters: a launcher's worker process unpickles the job's config, whose
    nodes name the plugin's option classes by module, and it inherits ``sys.path``.
    """
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    existing = sys.modules.get(path.stem)
    if existing is not None:
        if Path(getattr(existing, "__file__", "") or "").resolve() != path:
            raise SparsepropError(f"{ENV}: the plugin module {path} is named {path.stem!r} like the module "
                                  f"{getattr(existing, '__file__', path.stem)}; rename the plugin file")
        return
    try:
        importlib.import_module(path.stem)
    except SparsepropError:
        raise
    except Exception as exc:
        sys.modules.pop(path.stem, None)
        raise SparsepropError(f"{ENV}: the plugin module {path} failed to import: {type(exc).__name__}: {exc}") from None


@functools.lru_cache(maxsize=None)
def _load(spec: str) -> tuple[Path, ...]:
    import sparseprop.data  # noqa: F401  (importing a component package registers its options)
    import sparseprop.inits  # noqa: F401
    import sparseprop.isometry  # noqa: F401
    import sparseprop.models  # noqa: F401
    import sparseprop.pruning  # noqa: F401

    conf_dirs = []
    for entry in filter(None, (e.strip() for e in spec.split(os.pathsep))):
        path = Path(entry).expanduser()
        if path.is_dir():
            for module in sorted(path.glob("*.py")):
                if not module.name.startswith("_"):
                    _import_file(module.resolve())
            if (path / "conf").is_dir():
                conf_dirs.append((path / "conf").resolve())
        elif path.suffix == ".py":
            if not path.is_file():
                raise SparsepropError(f"{ENV}: {entry} is not a file")
            _import_file(path.resolve())
        else:
            try:
                importlib.import_module(entry)
            except ImportError as exc:
                raise SparsepropError(f"{ENV}: {entry!r} is neither a folder, a .py file nor an importable module "
                                      f"({exc})") from None
    return tuple(conf_dirs)


def load() -> list[Path]:
    """Register every built-in option and every plugin's; the plugins' config folders, to add to Hydra's search path."""
    return list(_load(os.environ.get(ENV, "")))


def search_path_overrides() -> list[str]:
    """The Hydra override that adds the plugins' config folders to the search path (none without plugins)."""
    dirs = load()
    return [f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs)}]"] if dirs else []


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML stems in conf/<group>/ and in the plugins' conf/<group>/."""
    return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def groups_help() -> str:
    """One line per config group listing its options, for ``sparseprop train --help``."""
    from sparseprop.config import GROUPS

    lines = [f"{group}: {', '.join(group_options(group))}" for group in GROUPS]
    lines.append(f"method: {', '.join(group_options('method'))} (the paper's methods: each sets init and isometry)")
    lines.append(f"criterion: {', '.join(group_options('criterion'))} (pruning criteria: each sets prune and its variant or budget)")
    lines.append(f"experiment: {', '.join(group_options('experiment'))}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("sparseprop_groups", groups_help, replace=True)


def config_dirs() -> list[Path]:
    """The folders holding config groups: the project's conf/ and every plugin's."""
    from sparseprop.config import CONF_DIR

    return [CONF_DIR, *load()]
