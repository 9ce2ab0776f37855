"""`sparseprop collect PATH...`: run directories, sweeps or whole trees into one runs table and one per-layer table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from sparseprop import records
from sparseprop.args import ArgumentParser
from sparseprop.config import GROUPS
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.jobs import RUNTIME_KEYS, override_key
from sparseprop.sweeps.report import expected_jobs
from sparseprop.sweeps.state import flatten, status_of

RUNS_CSV = "results.csv"
LAYERS_CSV = "results_layers.csv"
STATUSES = ("completed", "diverged", "failed", "partial", "busy", "damaged", "missing")
ID_COLUMNS = ["run", "sweep", "job", "status", "reason", "overrides"]
CHOICE_COLUMNS = [*GROUPS, "experiment"]
# signal.csv columns that are statistics (the rest say where and on what a measurement was taken).
SIGNAL_STATS = ["nonfinite", "mean", "std", "min", "max", "condition", "q05", "q25", "q50", "q75", "q95",
                "median_example_condition", "residual"]
# In the per-layer table: layer scope is the layer's Jacobian (jsv_), weights scope its masked weight matrix.
LAYER_SCOPES = {"layer": "jsv", "weights": "weights"}
MARKDOWN_METRICS = ["sparsity", "final_test_error_pct", "best_last_test_error_pct", "best_val_test_error_pct",
                    "jsv_pruned_condition"]


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
    return any((path / f).is_file() for f in (".hydra/config.yaml", "summary.json", "checkpoint.pt"))


def _sweep_of(run_dir: Path) -> Path | None:
    parent = run_dir.parent
    return parent if (parent / "multirun.yaml").is_file() else None


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
            if "multirun.yaml" in files:
                sweeps.add(here)
            elif "multirun.yaml" in dirs or (here / "multirun.yaml").is_symlink():
                problems.append(f"{here / 'multirun.yaml'} is damaged (not a file); the jobs of that sweep that "
                                "never started are not listed")
            if here != p and is_run_dir(here):
                found.setdefault(here.resolve(), Found(here, _sweep_of(here)))
                dirs[:] = []
    for s in sorted(sweeps):
        try:
            hydra_cfg = read_sweep_config(s / "multirun.yaml")
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
    hydra_dir = run_dir / ".hydra"
    path = hydra_dir / "config.yaml"
    try:
        if path.is_file():
            node = OmegaConf.load(path)
            try:
                cfg = OmegaConf.to_container(node, resolve=True)
            except Exception:  # noqa: BLE001 - an interpolation this machine cannot resolve: keep it as written
                cfg = OmegaConf.to_container(node, resolve=False)
        path = hydra_dir / "overrides.yaml"
        if path.is_file():
            overrides = [str(o) for o in OmegaConf.load(path)]
    except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf raise many kinds of errors on a damaged file
        raise records.DamagedRecord(path, exc) from None
    if not isinstance(cfg, dict):
        raise records.DamagedRecord(hydra_dir / "config.yaml", ValueError("not a mapping"))
    # Never from the checkpoint: collect reads text records only, so nothing in a run directory can run code.
    return cfg, overrides


def _signal_frame(run_dir: Path) -> pd.DataFrame | None:
    path = run_dir / "signal.csv"
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
    summary_path = f.run_dir / "summary.json"
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


def varying_columns(runs: pd.DataFrame, config_keys: set[str]) -> list[str]:
    """Config choices and parameters whose values differ between the runs (the sweep's dimensions)."""
    missing = runs.status == "missing"
    out = []
    for c in runs.columns:
        if c not in config_keys or c in RUNTIME_KEYS:
            continue
        # A missing job knows only the values its overrides set; its other cells are unknown, not different.
        known = runs.loc[~(missing & runs[c].isna()), c]
        if known.astype(str).nunique() > 1:
            out.append(c)
    return out


def layer_rows(f: Found, run: dict[str, Any], keep: list[str]) -> list[dict[str, Any]]:
    """Rows of the per-layer table for one run: layers.csv joined with its layer and weight signal by stage."""
    path = f.run_dir / "layers.csv"
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


def collect(paths: Iterable[str | Path],
            problems: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs table, per-layer table, varying config columns) of every run under ``paths``, unfinished ones included.

    Damaged records that are not a run's (a sweep's ``multirun.yaml``) are named in ``problems``.
    """
    paths = list(paths)
    found = discover(paths, problems)
    if not found:
        raise SparsepropError(f"no sparseprop runs under {', '.join(map(str, paths))}: a run directory holds "
                              ".hydra/config.yaml, summary.json or checkpoint.pt")
    built = [run_row(f) for f in found]
    rows = [row for row, _ in built]
    config_keys = set().union(*(keys for _, keys in built))
    frame = pd.DataFrame(rows)
    ordered = [c for c in ID_COLUMNS + CHOICE_COLUMNS if c in frame.columns]
    columns = ordered + [c for c in frame.columns if c not in ordered]
    varying = varying_columns(frame[columns], config_keys)
    keep = [c for c in varying if c not in CHOICE_COLUMNS]
    # Layer rows first: a damaged layers.csv or signal.csv marks its run's row before the runs table is made.
    layers = pd.DataFrame([r for f, run in zip(found, rows) if not f.missing for r in layer_rows(f, run, keep)])
    return pd.DataFrame(rows)[columns], layers, varying


def markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    """A GitHub-flavoured Markdown table of ``columns`` (numbers to 4 significant digits, blanks for missing)."""
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in values) + " |" for values in frame[columns].itertuples(index=False)]
    return "\n".join(lines)


def default_markdown_columns(runs: pd.DataFrame, varying: list[str]) -> list[str]:
    """The sweep's varying config (or the run path when nothing varies), status and the headline metrics."""
    return [*(varying or ["run"]), "status", *(c for c in MARKDOWN_METRICS if c in runs.columns)]


def parse_args(args: list[str]) -> argparse.Namespace:
    """The options of `sparseprop collect`."""
    p = ArgumentParser(prog="sparseprop collect", description="Gather runs into results.csv (one row per run) and "
                "results_layers.csv (one row per run and layer); lists partial, failed and missing runs.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="run directories, sweep directories or trees of them")
    p.add_argument("-o", "--out", help="folder for the two CSV files (default: PATH, or the common folder of several)")
    p.add_argument("--markdown", action="store_true", help="also print the runs as a Markdown table")
    p.add_argument("--columns", help="comma-separated columns of the Markdown table (default: what varies + metrics)")
    return p.parse_args(args)


def main(args: list[str]) -> None:
    """`sparseprop collect PATH... [--out DIR] [--markdown] [--columns a,b]`."""
    opts = parse_args(args)
    for flag, value in (("--out", opts.out), ("--columns", opts.columns)):
        if value is not None and not value.replace(",", "").strip():
            raise SparsepropError(f"collect: {flag} {value!r} is not valid: it names no "
                                  + ("folder" if flag == "--out" else "column; give comma-separated column names"))
    if opts.columns is not None and not opts.markdown:
        raise SparsepropError("collect: --columns chooses the columns of the Markdown table; add --markdown")
    out = Path(opts.out) if opts.out else Path(os.path.commonpath([os.path.abspath(p) for p in opts.paths]))
    if opts.out is None and len(opts.paths) == 1:
        out = Path(opts.paths[0])
    if out.exists() and not out.is_dir() or out.is_symlink() and not out.exists():
        raise SparsepropError(f"collect: --out {out} is not valid: it is a file or a dangling link, not a folder")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise SparsepropError(f"collect: cannot write the tables into {out} (read-only or not permitted); "
                              "choose a folder with --out DIR")
    problems: list[str] = []
    runs, layers, varying = collect(opts.paths, problems)
    # Checked before anything is written or printed, so a typo'd column is the only line.
    unknown = [c for c in (opts.columns or "").split(",") if opts.columns and c not in runs.columns]
    if unknown:
        raise SparsepropError(f"collect: no column {', '.join(unknown)} in the table; it has {', '.join(runs.columns)}")
    records.write_csv(out / RUNS_CSV, runs)
    records.write_csv(out / LAYERS_CSV, layers)
    counts = runs.status.value_counts()
    shown = [s for s in STATUSES if s not in ("busy", "damaged") or counts.get(s, 0)]  # rare ones only when present
    print(f"sparseprop: collected {len(runs)} runs: " + ", ".join(f"{int(counts.get(s, 0))} {s}" for s in shown),
          file=sys.stderr)
    print(f"sparseprop: wrote {out / RUNS_CSV} ({len(runs)} rows x {runs.shape[1]} columns) and "
          f"{out / LAYERS_CSV} ({len(layers)} rows)", file=sys.stderr)
    bad = runs[runs.status != "completed"]
    if len(bad):
        print("sparseprop: not completed:", file=sys.stderr)
        for _, r in bad.iterrows():
            print(f"  {r.status:<9} {r.run}  {r.reason}", file=sys.stderr)
    if opts.markdown:
        columns = opts.columns.split(",") if opts.columns else default_markdown_columns(runs, varying)
        print(markdown(runs, columns))
    for problem in problems:
        print(f"sparseprop: {problem}", file=sys.stderr)
    damaged = int((runs.status == "damaged").sum())
    if problems and not damaged:
        raise SparsepropError(f"collect: {len(problems)} damaged sweep record{'s' if len(problems) > 1 else ''} "
                              "(listed above); the tables list the runs on disk")
    if damaged:
        raise SparsepropError(f"collect: {damaged} runs have damaged records (listed above); the tables list them "
                              "as damaged")
