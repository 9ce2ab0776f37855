"""Gather one experiment's sweep (through `sparseprop collect`) into the tables the paper figures read."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparseprop import records
from sparseprop.sweeps import collect
from sparseprop.errors import SparsepropError

RUNS, LAYERS, METRICS, MASKS = "runs.csv", "layers.csv", "metrics.csv", "masks.npz"
# collect's column names -> the short names the figures and verdicts use. collect's own ``run`` (the full
# path) gives way to the job's directory name, which is unique within one sweep.
RENAME = {"job": "run", "arch.depth": "depth", "arch.width": "width", "prune.target": "target",
          "prune.dataset": "prune_dataset", "prune.sparsity": "sparsity_target", "isometry.steps": "isometry_steps",
          "train.iterations": "iterations"}


def _short_names(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in ("run",) if c in frame]).rename(columns=RENAME)
    if "prune_dataset" in frame and "dataset" in frame:
        # No scoring dataset means the mask was scored on the training dataset (in-domain).
        frame["prune_dataset"] = frame["prune_dataset"].where(frame["prune_dataset"].notna(), frame["dataset"])
    return frame


def gather(sweep_dir: str | Path, out_dir: str | Path, masks: bool = False) -> pd.DataFrame:
    """Write runs.csv, layers.csv and metrics.csv (and masks.npz if asked) of the sweep into ``out_dir``; returns runs."""
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    problems: list[str] = []
    try:
        runs, layers, _ = collect.collect([sweep_dir], problems)
        for problem in problems:
            print(f"sparseprop: {problem}", file=sys.stderr)
    except SparsepropError:  # no run directory yet: nothing ran
        runs, layers = pd.DataFrame(columns=["job", "status"]), pd.DataFrame()
    runs, layers = _short_names(runs), _short_names(layers)
    metrics, mask_arrays = [], {}
    for name, status in zip(runs["run"], runs["status"]):
        run_dir = sweep_dir / name
        try:
            if (run_dir / records.METRICS).is_file() and (run_dir / records.METRICS).stat().st_size > 1:
                metrics.append(records.read_csv(run_dir / records.METRICS).assign(run=name))
            if masks and status == "completed" and (run_dir / records.CHECKPOINT).is_file():
                from sparseprop.runner.checkpoint import load_run

                for param, mask in load_run(run_dir).masks.items():
                    if param.endswith("weight"):
                        mask_arrays[f"{name}/{param}"] = mask.cpu().numpy().astype(np.uint8)
        except SparsepropError as exc:  # a damaged record costs its own run's curves or masks, named
            print(f"sparseprop: {exc}; left out", file=sys.stderr)
    records.write_csv(out_dir / RUNS, runs)
    records.write_csv(out_dir / LAYERS, layers)
    records.write_csv(out_dir / METRICS, pd.concat(metrics, ignore_index=True) if metrics else pd.DataFrame())
    if masks:
        records.write_npz(out_dir / MASKS, mask_arrays)
    return runs


def load(collected_dir: str | Path) -> dict[str, Any]:
    """The collected tables of one experiment: ``runs``, ``layers``, ``metrics`` (DataFrames) and ``masks`` (dict)."""
    d = Path(collected_dir)

    def read(name: str) -> pd.DataFrame:
        path = d / name
        if not path.is_file() or path.stat().st_size <= 1:
            return pd.DataFrame()
        try:
            return pd.read_csv(path, low_memory=False)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    masks = records.read_npz(d / MASKS) if (d / MASKS).is_file() else {}
    return {"runs": read(RUNS), "layers": read(LAYERS), "metrics": read(METRICS), "masks": masks}
