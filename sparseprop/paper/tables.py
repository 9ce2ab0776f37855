"""Result tables of the paper experiments (mean ± std over seeds) as CSV and Markdown, from collected runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from sparseprop import records
from sparseprop.paper.experiment import Experiment, Table
from sparseprop.paper.labels import with_method

# The test error the figures, tables and verdicts use: the test error at the evaluation with the best
# validation accuracy (the test set does not choose the checkpoint). The authors' figure, the best test
# error over the last evaluations, is in the tables beside it.
ERROR = "best_val_test_error_pct"
# Measurements taken before training starts: a run that diverged later still has them, and they count.
BEFORE_TRAINING = ("jsv_init_", "jsv_pruned_", "jsv_isometry_", "jsv_pretrain_", "ldi_residual_init",
                   "ldi_residual_pruned", "ldi_residual_isometry", "effective_sparsity", "collapsed")


def usable(runs: pd.DataFrame, diverged: bool = False) -> pd.DataFrame:
    """The completed runs, and with ``diverged`` also those that diverged (failed and unfinished runs never count)."""
    if runs.empty or "status" not in runs:
        return runs.iloc[0:0]
    return runs[runs.status.isin(("completed", "diverged") if diverged else ("completed",))]


def aggregate(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: ``n`` completed runs, how many ``diverged``, and ``<metric>_mean`` / ``_std`` (std needs 2).

    Measurements taken before training (``BEFORE_TRAINING``) average over diverged runs too; the
    others (errors, losses) over completed runs only.
    """
    runs = usable(runs, diverged=True)
    present = [m for m in metrics if m in runs]
    rows = []
    for key, group in runs.groupby(list(by), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        done = group[group.status == "completed"]
        row["n"], row["diverged"] = len(done), int((group.status == "diverged").sum())
        for m in present:
            source = group if m.startswith(BEFORE_TRAINING) else done
            values = pd.to_numeric(source[m], errors="coerce").dropna().to_numpy(dtype=float)
            finite = np.isfinite(values).all()
            # An infinite value (a condition number with a zero singular value) makes the mean infinite, with no spread.
            row[f"{m}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m}_std"] = float(values.std(ddof=1)) if len(values) > 1 and finite else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def pm(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std`` (just the mean when there is no spread), as text."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    fmt = f"{{:.{digits}f}}" if abs(mean) >= 10 ** -digits or mean == 0 else f"{{:.{digits}g}}"
    if std is None or not math.isfinite(std):
        return fmt.format(mean)
    return f"{fmt.format(mean)} ± {fmt.format(std)}"


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of ``frame`` (every cell as text)."""
    if frame.empty:
        return "(no completed runs)\n"
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(v) for v in row.values) + " |")
    return "\n".join(lines) + "\n"


def readable(agg: pd.DataFrame, by: Sequence[str], columns: dict[str, str], digits: dict[str, int] | None = None) -> pd.DataFrame:
    """The aggregate as people read it: group columns, ``n``, ``diverged``, one ``mean ± std`` column per metric (renamed)."""
    digits = digits or {}
    out = agg[list(by) + ["n", "diverged"]].copy()
    for metric, title in columns.items():
        if f"{metric}_mean" in agg:
            out[title] = [pm(m, s, digits.get(metric, 2)) for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"])]
    return out


ERRORS = {ERROR: "test error % (best val)", "final_test_error_pct": "test error % (final)",
          "best_last_test_error_pct": "test error % (best of last 5)"}


def table(spec: Table, runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric table for CSV, readable table for Markdown) of the table ``spec``."""
    by, metrics = list(spec.by), spec.metrics
    # Only runs that count are labelled: a job that never started knows only its overrides (no init, no prune).
    runs = with_method(usable(runs, diverged=True))
    if spec.prepare is not None:
        runs = spec.prepare(runs)
    agg = aggregate(runs, by, list(metrics))
    if agg.empty:
        return agg, agg
    digits = {m: 3 for m in metrics if m.startswith(("jsv", "ldi"))}
    digits.update({m: 0 for m in metrics if m.endswith(("parameters", "_params"))})  # counts: whole numbers
    digits.update({m: 4 for m in metrics if m.endswith("sparsity")})  # 0.9900 vs 0.9962: the effective cost shows
    return agg, readable(agg, by, metrics, digits)


def write_tables(results: dict[str, dict[str, Any]], out_dir: str | Path,
                 experiments: Sequence[Experiment]) -> list[Path]:
    """Write ``<name>.csv`` and ``<name>.md`` for every table of ``experiments`` that has results; returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for exp in experiments:
        for spec in exp.tables:
            runs = results.get(exp.id, {}).get("runs", pd.DataFrame())
            if usable(runs).empty:
                continue
            numeric, text = table(spec, runs)
            records.write_csv(out_dir / f"{spec.name}.csv", numeric)
            records.atomic_write_text(out_dir / f"{spec.name}.md", f"# {spec.name}\n\nmean ± std over seeds; n = completed "
                                      "runs (errors average over these); diverged runs count only in the JSV columns.\n\n"
                                      + markdown(text))
            written += [out_dir / f"{spec.name}.csv", out_dir / f"{spec.name}.md"]
    return written
