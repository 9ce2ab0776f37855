"""The end-of-sweep report: which jobs a sweep stands for, and how each of them stands."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.sweeps.jobs import expand, job_dirname, parse
from sparseprop.sweeps.state import RunState, status_of

# Exit code of `sparseprop train` when a run or a sweep job did not complete (2 is bad input).
UNFINISHED_EXIT = 3


@dataclass
class JobOutcome:
    """One job of a sweep: its directory name under the sweep, and how it stands."""

    job: str
    state: RunState


@dataclass
class SweepOutcome:
    """The jobs of a finished sweep and which of them did not complete."""

    sweep_dir: Path
    jobs: list[JobOutcome]

    @property
    def unfinished(self) -> list[JobOutcome]:
        """Jobs whose status is not ``completed``."""
        return [j for j in self.jobs if j.state.status != "completed"]


def expected_jobs(hydra_cfg: DictConfig) -> list[tuple[list[str], str]] | None:
    """(overrides, directory name) of every job a basic-sweeper sweep stands for, or None if that cannot be known.

    ``hydra_cfg`` is the ``hydra`` node of the sweep's config (live, or read back from multirun.yaml).
    """
    from hydra.core.override_parser.types import Glob

    try:
        plain = OmegaConf.to_container(hydra_cfg, resolve=False)
        if not str(plain["sweeper"].get("_target_", "")).endswith("BasicSweeper"):
            return None
        if plain["sweep"]["subdir"] != "${hydra:job.override_dirname}":
            return None
        params = [f"{k}={v}" for k, v in (plain["sweeper"].get("params") or {}).items()]
        overrides = [*params, *plain["overrides"]["task"]]
        if any(isinstance(o.value(), Glob) for o in parse(overrides)):
            return None  # its options come from the sweep's config search path, which may not be conf/
        od = plain["job"]["config"]["override_dirname"]
        return [(job, job_dirname(job, list(od["exclude_keys"]), od["item_sep"], od["kv_sep"]))
                for job in expand(overrides)]
    except Exception:  # noqa: BLE001 - a sweep that cannot be expanded here: fall back to what is on disk
        return None


def sweep_outcome(sweep_dir: Path, hydra_cfg: DictConfig | None) -> SweepOutcome:
    """The state of every job of the sweep in ``sweep_dir``: the expected ones if known, else those on disk."""
    sweep_dir = Path(sweep_dir)
    expected = expected_jobs(hydra_cfg) if hydra_cfg is not None else None
    if expected is not None:
        names = list(dict.fromkeys(name for _, name in expected))
    else:
        names = sorted(p.parent.name for p in sweep_dir.glob(f"*/{records.HYDRA_DIR}"))
    return SweepOutcome(sweep_dir, [JobOutcome(name, status_of(sweep_dir / name)) for name in names])


def print_report(outcome: SweepOutcome) -> None:
    """Print to stderr how many jobs completed and one line per job that did not."""
    total, bad = len(outcome.jobs), outcome.unfinished
    if not bad:
        print(f"sparseprop: all {total} jobs completed in {outcome.sweep_dir}", file=sys.stderr)
        return
    print(f"sparseprop: {len(bad)} of {total} jobs did not complete in {outcome.sweep_dir}:", file=sys.stderr)
    width = max(len(j.job) for j in bad)
    for j in bad:
        print(f"  {j.state.status:<8}  {j.job:<{width}}  {j.state.reason}", file=sys.stderr)
    print("sparseprop: run the same command again to retry failed and interrupted jobs (finished ones are skipped); "
          f"`sparseprop collect {outcome.sweep_dir}` tabulates the sweep", file=sys.stderr)
