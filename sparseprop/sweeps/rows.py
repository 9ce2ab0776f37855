"""One run as table rows: its identity, status, config, summary and signal statistics (runs table), and its layers
joined with their signal statistics (per-layer table). A damaged record marks its own run, never the table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import OmegaConf

from sparseprop import records
from sparseprop.config import GROUPS
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.discover import Found
from sparseprop.sweeps.jobs import override_key
from sparseprop.sweeps.state import flatten, plain_config, status_of

ID_COLUMNS = ["run", "sweep", "job", "status", "reason", "overrides"]
CHOICE_COLUMNS = [*GROUPS, "experiment"]
# signal.csv columns that are statistics (the rest say where and on what a measurement was taken).
SIGNAL_STATS = ["nonfinite", "mean", "std", "min", "max", "condition", "q05", "q25", "q50", "q75", "q95",
                "median_example_condition", "residual"]
# In the per-layer table: layer scope is the layer's Jacobian (jsv_), weights scope its masked weight matrix.
LAYER_SCOPES = {"layer": "jsv", "weights": "weights"}


def _number(value: Any) -> Any:
    """Non-finite floats come back from JSON as strings ('nan', 'inf'); turn them into floats again."""
    if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(value)
    return value


def _flat(node: Any) -> dict[str, Any]:
    """Dotted keys to scalars; lists become one '; '-joined string."""
    return {k: ("; ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else _number(v))
            for k, v in flatten(node).items()}


def _parse_value(text: str) -> Any:
    """An override's value as a table cell of a recorded config would hold it (number, bool, null, string)."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)  # as _flat writes the lists of a recorded config
    return value if isinstance(value, (int, float, bool, str)) or value is None else text


def read_config(run_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The run's composed config (resolved where possible) and its overrides, from .hydra/ (empty if it has none)."""
    cfg: dict[str, Any] = {}
    overrides: list[str] = []
    path = run_dir / records.HYDRA_CONFIG
    try:
        if path.is_file():
            cfg = plain_config(OmegaConf.load(path))
        path = run_dir / records.HYDRA_OVERRIDES
        if path.is_file():
            overrides = [str(o) for o in OmegaConf.load(path)]
    except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf raise many kinds of errors on a damaged file
        raise records.DamagedRecord(path, exc) from None
    if not isinstance(cfg, dict):
        raise records.DamagedRecord(run_dir / records.HYDRA_CONFIG, ValueError("not a mapping"))
    # Never from the checkpoint: collect reads text records only, so nothing in a run directory can run code.
    return cfg, overrides


def _signal_frame(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / records.SIGNAL
    if not path.is_file():
        return None
    frame = records.read_csv(path)
    if len(frame) and not {"stage", "scope"} <= set(frame.columns):
        raise records.DamagedRecord(path, ValueError("no stage and scope columns"))
    return frame if len(frame) else None


def _stage_stats(rows: pd.DataFrame, prefix: str) -> dict[str, Any]:
    """``<prefix>_<stage>_<stat>`` from one row per stage (the last if measured twice); training-time rows left out."""
    out: dict[str, Any] = {}
    for _, row in rows[rows.stage != "train"].iterrows():
        for stat in SIGNAL_STATS:
            if stat in row and not (isinstance(row[stat], float) and math.isnan(row[stat])):
                out[f"{prefix}_{row.stage}_{stat}"] = row[stat]
    return out


def run_row(f: Found) -> tuple[dict[str, Any], set[str]]:
    """One row of the runs table (identity, status, config, summary scalars, signal by stage) and its config keys."""
    state = status_of(f.run_dir)
    row: dict[str, Any] = {"run": str(f.run_dir), "sweep": str(f.sweep_dir or ""), "job": f.job,
                           "status": state.status, "reason": state.reason}
    if f.missing:
        row["overrides"] = " ".join(f.overrides)
        for o in f.overrides:
            key, _, value = o.lstrip("+~").partition("=")
            row[key] = _parse_value(value)
        return row, set(row) - set(ID_COLUMNS)
    try:
        cfg, overrides = read_config(f.run_dir)
    except SparsepropError as exc:  # the run's own records are still read and shown
        cfg, overrides = {}, []
        mark_damaged(row, exc)
    row["overrides"] = " ".join(overrides or f.overrides)
    for group in GROUPS:
        if isinstance(cfg.get(group), dict):
            row[group] = cfg[group].get("name")
    for o in overrides:
        if override_key(o) == "experiment":
            row["experiment"] = o.partition("=")[2]
    for key, value in _flat(cfg).items():
        if not (key.endswith(".name") and key[:-5] in GROUPS):
            row.setdefault(key, value)
    config_keys = set(row) - set(ID_COLUMNS)
    summary_path = f.run_dir / records.SUMMARY
    try:
        if summary_path.is_file() and state.status != "damaged":
            for key, value in _flat(records.read_summary(summary_path)).items():
                if key not in ("status", "reason"):
                    row.setdefault(key, value)
        signal = _signal_frame(f.run_dir)
        if signal is not None:
            for key, value in _stage_stats(signal[signal.scope == "network"], "jsv").items():
                row.setdefault(key, value)
    except SparsepropError as exc:  # a damaged record costs its own run's row, named, never the table
        mark_damaged(row, exc)
    return row, config_keys


def mark_damaged(row: dict[str, Any], exc: Exception) -> None:
    """Mark a run's row ``damaged``, naming the record (the first one, if several are damaged)."""
    if row.get("status") != "damaged":
        row.update(status="damaged", reason=str(exc))


def layer_rows(f: Found, run: dict[str, Any], keep: list[str]) -> list[dict[str, Any]]:
    """Rows of the per-layer table for one run: layers.csv joined with its layer and weight signal by stage."""
    path = f.run_dir / records.LAYERS
    try:
        layers = records.read_csv(path).to_dict("records") if path.is_file() else []
        per_name: dict[str, dict[str, Any]] = {}
        signal = _signal_frame(f.run_dir)
        if signal is not None and "name" in signal.columns:
            for scope, prefix in LAYER_SCOPES.items():
                for name, rows in signal[signal.scope == scope].groupby("name", sort=False):
                    per_name.setdefault(str(name), {}).update(_stage_stats(rows, prefix))
    except SparsepropError as exc:
        mark_damaged(run, exc)
        return []
    base = {k: run.get(k) for k in ["run", "sweep", "job", "status", *CHOICE_COLUMNS, *keep] if k in run}
    out = [{**base, **layer, **per_name.pop(str(layer.get("name")), {})} for layer in layers]
    # Measured layers that layers.csv does not list (it lists prunable tensors) still get their row.
    out += [{**base, "name": name, **stats} for name, stats in per_name.items()]
    return out
