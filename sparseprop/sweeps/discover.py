"""Finding runs: run directories, sweeps and whole trees, and the jobs a sweep expects but never started."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.report import expected_jobs


@dataclass
class Found:
    """A run directory (or, for ``missing``, where one should be) and the sweep it belongs to."""

    run_dir: Path
    sweep_dir: Path | None = None
    order: int = 1 << 30
    overrides: list[str] = field(default_factory=list)
    missing: bool = False

    @property
    def job(self) -> str:
        """The job's directory name under its sweep, or the run directory's name."""
        return str(self.run_dir.relative_to(self.sweep_dir)) if self.sweep_dir else self.run_dir.name


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a sweep job or a run (its Hydra config, a summary or a checkpoint)."""
    return any((path / f).is_file() for f in (records.HYDRA_CONFIG, records.SUMMARY, records.CHECKPOINT))


def _sweep_of(run_dir: Path) -> Path | None:
    parent = run_dir.parent
    return parent if (parent / records.SWEEP_CONFIG).is_file() else None


def read_sweep_config(path: Path) -> DictConfig:
    """The ``hydra`` node of a sweep's ``multirun.yaml``; one that does not parse or is no sweep config is damaged."""
    try:
        hydra_cfg = OmegaConf.load(path).hydra
        if not isinstance(hydra_cfg, DictConfig):
            raise ValueError("its hydra key is not a mapping")
        return hydra_cfg
    except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf raise many kinds of errors on a damaged file
        raise records.DamagedRecord(path, exc) from None


def discover(paths: Iterable[str | Path], problems: list[str] | None = None) -> list[Found]:
    """Every run under ``paths`` (run, sweep or any tree), plus the jobs a sweep's multirun.yaml expects but lacks.

    A damaged ``multirun.yaml`` costs only the list of its missing jobs; it is named in ``problems``.
    """
    problems = [] if problems is None else problems
    found: dict[Path, Found] = {}
    sweeps: set[Path] = set()
    for p in map(Path, paths):
        if not p.is_dir():
            raise SparsepropError(f"{p}: no such directory")
        if is_run_dir(p):
            found.setdefault(p.resolve(), Found(p, _sweep_of(p)))
            continue
        for root, dirs, files in os.walk(p):
            here = Path(root)
            # Hidden folders hold Hydra's and submitit's bookkeeping, never runs.
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            if records.SWEEP_CONFIG in files:
                sweeps.add(here)
            elif records.SWEEP_CONFIG in dirs or (here / records.SWEEP_CONFIG).is_symlink():
                problems.append(f"{here / records.SWEEP_CONFIG} is damaged (not a file); the jobs of that sweep that "
                                "never started are not listed")
            if here != p and is_run_dir(here):
                found.setdefault(here.resolve(), Found(here, _sweep_of(here)))
                dirs[:] = []
    for s in sorted(sweeps):
        try:
            hydra_cfg = read_sweep_config(s / records.SWEEP_CONFIG)
        except SparsepropError as exc:  # it only costs the list of missing jobs, and is named
            problems.append(f"{exc}; the jobs of that sweep that never started are not listed")
            continue
        for i, (overrides, name) in enumerate(expected_jobs(hydra_cfg) or []):
            key = (s / name).resolve()
            if key in found:
                found[key].order, found[key].overrides = i, overrides
            else:
                found[key] = Found(s / name, s, i, overrides, missing=True)
    return sorted(found.values(), key=lambda f: (str(f.sweep_dir or ""), f.order, str(f.run_dir)))
