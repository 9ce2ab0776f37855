"""The check of every job a `sparseprop train` command stands for, before Hydra starts the first."""

from __future__ import annotations

import itertools
import math
import sys

from sparseprop.cli.overrides import apply_override, compose_or_fail, lacks_setting, one_line, refuse_foreign_setting
from sparseprop.config import is_group_setting
from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.sweeps.jobs import group_options, is_group, sweep_axes


def _show_progress(done: int, total: int, t0: float, final: bool = False, failed: bool = False) -> None:
    """A progress line on a terminal once checking has taken a few seconds (wiped if a job is refused)."""
    import time

    if sys.stderr.isatty() and time.time() - t0 > 3:
        line = f"sparseprop: checked {done}/{total} jobs"
        if failed:
            print("\r" + " " * len(line) + "\r", end="", file=sys.stderr, flush=True)
        else:
            print("\r" + line, end="\n" if final else "", file=sys.stderr, flush=True)


# What a `method` option chooses itself (conf/method/: each sets both with `override /<group>`).
METHOD_SETS = ("init", "isometry")


def refuse_method_clash(choices: dict[str, object]) -> None:
    """A job that picks a method and also an init or isometry step would silently lose one of the two."""
    method = choices.get("method")
    clash = [g for g in METHOD_SETS if g in choices] if method is not None else []
    if clash:
        given = " ".join(f"{g}={choices[g]}" for g in clash)
        raise SparsepropError(f"method={method} sets {' and '.join(METHOD_SETS)} itself, so {given} beside it "
                              f"would be ignored; give the method or {' and '.join(METHOD_SETS)}, not both")


def refuse_criterion_clash(choices: dict[str, object]) -> None:
    """A job that picks a criterion (conf/criterion/, which sets prune itself) and also a prune option would lose one."""
    criterion = choices.get("criterion")
    if criterion is not None and "prune" in choices:
        raise SparsepropError(f"criterion={criterion} sets prune itself, so prune={choices['prune']} beside it would be "
                              "ignored; give the criterion or prune, not both (prune.<setting>=... may go with either)")


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
    plain = [opts[0].input_line for key, opts in axes.items() if len(opts) == 1 and not is_group_setting(key)]
    # Before anything is composed: with both given, Hydra keeps prune and refuses the criterion's own settings.
    refuse_criterion_clash({key.lstrip("+~"): opts[0].value() for key, opts in axes.items()
                            if key.lstrip("+~") in ("criterion", "prune")})
    seen_data: set[tuple[str, str, bool]] = set()
    read: set[str] = set()
    unused: dict[str, tuple] = {}
    lacking: dict[str, tuple] = {}  # group settings some job's option does not have: key -> (its config, override)
    having: set[str] = set()
    jobs = 0
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3", job_name="check"):
        # The config the sweep itself is set up from (Hydra's launcher, sweeper and the experiment's
        # own sweep parameters), composed once from the overrides that are not swept.
        master = compose_or_fail(compose, config_name, [*plain, *searchpath], hydra=True)
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
                if key in (*config.GROUPS, "method", "criterion", "experiment") and value not in group_options(key) \
                        and value is not None:
                    raise ConfigError(key, value, f"choose one of {', '.join(group_options(key))}")
            refuse_method_clash({o.key_or_group: o.value() for o in combo})
            refuse_criterion_clash({o.key_or_group: o.value() for o in combo})
            base = compose_or_fail(compose, config_name, [*(o.input_line for o in combo), *searchpath])
            for job in itertools.product(*values):
                cfg = copy.deepcopy(base)
                try:
                    for o in job:
                        if multirun and lacks_setting(cfg, o.key_or_group):
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
                    raise SparsepropError(one_line(exc)) from None
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
            refuse_foreign_setting(cfg, key, o.value())
    if partial is not None:
        partial |= lacking.keys() & having
    _show_progress(jobs, total, t0, final=True)
    return jobs
