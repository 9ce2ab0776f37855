"""The sweep itself: where it lives, and the Hydra callback that checks its directories before any job runs and
reports its jobs after the last."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.args import exit_bad_input, parse_train_args
from sparseprop.sweeps.jobs import RUNTIME_KEYS, override_key
from sparseprop.sweeps.launchers import clean_shared_memory
from sparseprop.sweeps.report import UNFINISHED_EXIT, JobOutcome, SweepOutcome, expected_jobs, print_report, sweep_outcome
from sparseprop.sweeps.state import FINISHED, config_changes, plain_config, saved_config, status_of

SWEEPS_DIR = "outputs/sweeps"
_MAX_NAME = 150

# The report of the last sweep in this process, set by the SweepReport callback and read by
# `sparseprop train` to choose its exit code (Hydra's main function returns nothing).
last_report: SweepOutcome | None = None


def sweep_name(overrides: list[str]) -> str:
    """A readable, stable directory name for a sweep: its overrides sorted, runtime and Hydra keys left out."""
    kept = sorted(o for o in overrides if override_key(o) not in RUNTIME_KEYS and not override_key(o).startswith("hydra"))
    name = "__".join(kept) or "defaults"
    safe = re.sub(r"[^A-Za-z0-9._,=+~-]", "_", name)
    if safe != name or len(safe) > _MAX_NAME:
        # A hash of the exact overrides keeps two sweeps apart when cleaning or shortening made their names equal.
        safe = f"{safe[:_MAX_NAME - 20]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return safe


def with_sweep_dir(args: list[str]) -> list[str]:
    """The arguments of `sparseprop train`, plus ``hydra.sweep.dir=outputs/sweeps/<name>`` for a sweep without one."""
    flags, overrides, _ = parse_train_args(args)
    if "--multirun" not in flags or any(override_key(o) == "hydra.sweep.dir" for o in overrides):
        return list(args)
    # Quoted, because a name holds ',' and '=' which Hydra's override grammar would otherwise parse.
    extra = f"hydra.sweep.dir='{SWEEPS_DIR}/{sweep_name(overrides)}'"
    # Next to the other overrides: Hydra's argument parser wants them all in one run, before or after -m.
    at = args.index(overrides[0]) if overrides else len(args)
    return [*args[:at], extra, *args[at:]]


def _base_config(config: DictConfig) -> dict[str, Any] | None:
    """The sweep's config without its ``hydra`` node, resolved where possible (None when it cannot be read)."""
    try:
        plain = OmegaConf.to_container(config, resolve=False)
        plain.pop("hydra", None)
        return plain_config(OmegaConf.create(plain))
    except Exception:  # noqa: BLE001
        return None


def read_only_sweep(config: DictConfig, sweep_dir: Path, expected: list[tuple[list[str], str]] | None) -> None:
    """A sweep directory that cannot be written: when every job finished with this config, report and end (nothing
    runs, nothing is written); otherwise refuse. Hydra would write multirun.yaml into it before any job starts."""
    where = f"cannot write to {sweep_dir} (read-only or not permitted)"
    if expected is None:
        exit_bad_input(f"{where}; write the sweep to another directory (hydra.sweep.dir=...)")
    base = _base_config(config)
    jobs, stale = [], []
    for overrides, name in expected:
        state = status_of(sweep_dir / name)
        if state.status in FINISHED and base is not None:
            # Keys a job's own overrides set are in its directory's name; every other key must match the sweep's.
            keys = [override_key(o) for o in overrides]
            changes = [c for c in config_changes(saved_config(sweep_dir / name), base)
                       if not any(c.startswith((f"{k}:", f"{k}.")) for k in keys)]
            if changes:
                stale.append(f"{name} ({changes[0]})")
        jobs.append(JobOutcome(name, state))
    unfinished = [j.job for j in jobs if j.state.status not in FINISHED]
    if stale:
        exit_bad_input(f"{where}, and its records were made with another config: {stale[0]}; write the sweep to another "
                "directory (hydra.sweep.dir=...)")
    if base is None:
        exit_bad_input(f"{where}, and the sweep's config cannot be compared with its records; write the sweep to another "
                "directory (hydra.sweep.dir=...)")
    if unfinished:
        exit_bad_input(f"{where}, and {len(unfinished)} of its {len(jobs)} jobs are not finished ({unfinished[0]}); "
                "write the sweep to another directory (hydra.sweep.dir=...)")
    global last_report
    last_report = SweepOutcome(sweep_dir, jobs)
    print(f"sparseprop: {sweep_dir} is read-only and every job in it is finished: nothing was run", file=sys.stderr)
    print_report(last_report)
    sys.exit(UNFINISHED_EXIT if last_report.unfinished else 0)


def check_sweep(config: DictConfig) -> None:
    """Before any job runs, refuse a sweep whose job directories are files or dangling links (Hydra would raise at
    its mkdir), and settle a sweep directory that cannot be written (``read_only_sweep``)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    expected = expected_jobs(config.hydra)
    blocked = [sweep_dir / name for _, name in expected or []
               if (sweep_dir / name).is_symlink() and not (sweep_dir / name).exists()
               or (sweep_dir / name).exists() and not (sweep_dir / name).is_dir()]
    if blocked:
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        exit_bad_input(f"{blocked[0]} is a file or a dangling link where the sweep's job directory goes{more}; move it away, "
                "or write the sweep to another directory (hydra.sweep.dir=...)")
    config_file = sweep_dir / records.SWEEP_CONFIG
    if config_file.is_symlink() or config_file.exists() and not config_file.is_file():
        # Hydra rewrites it before the first job: through a link it would overwrite the link's target.
        exit_bad_input(f"{config_file} is a {'link' if config_file.is_symlink() else 'folder'}, not the sweep config Hydra "
                "writes there; move it away, or write the sweep to another directory (hydra.sweep.dir=...)")
    if sweep_dir.is_dir() and not os.access(sweep_dir, os.W_OK | os.X_OK):
        read_only_sweep(config, sweep_dir, expected)


class SweepReport(Callback):
    """Hydra callback (conf/train.yaml): after a sweep, report the jobs that did not complete."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the sweep's directories, then clear what killed joblib sweeps left in shared memory."""
        check_sweep(config)
        clean_shared_memory()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Read every job's records, print the report and keep it for the exit code."""
        global last_report
        clean_shared_memory()
        last_report = sweep_outcome(Path(str(config.hydra.sweep.dir)), config.hydra)
        print_report(last_report)
