"""`sparseprop collect PATH...`: run directories, sweeps or whole trees into one runs table and one per-layer table."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from sparseprop import records
from sparseprop.args import ArgumentParser
from sparseprop.errors import SparsepropError
from sparseprop.sweeps.discover import discover
from sparseprop.sweeps.jobs import RUNTIME_KEYS
from sparseprop.sweeps.rows import CHOICE_COLUMNS, ID_COLUMNS, layer_rows, run_row

RUNS_CSV = "results.csv"
LAYERS_CSV = "results_layers.csv"
STATUSES = ("completed", "diverged", "failed", "partial", "busy", "damaged", "missing")
MARKDOWN_METRICS = ["sparsity", "final_test_error_pct", "best_last_test_error_pct", "best_val_test_error_pct",
                    "jsv_pruned_condition"]


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


def collect(paths: Iterable[str | Path],
            problems: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs table, per-layer table, varying config columns) of every run under ``paths``, unfinished ones included.

    Damaged records that are not a run's (a sweep's ``multirun.yaml``) are named in ``problems``.
    """
    paths = list(paths)
    found = discover(paths, problems)
    if not found:
        raise SparsepropError(f"no sparseprop runs under {', '.join(map(str, paths))}: a run directory holds "
                              f"{records.HYDRA_CONFIG}, {records.SUMMARY} or {records.CHECKPOINT}")
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
