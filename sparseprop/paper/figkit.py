"""Shared pieces of the paper figures: panel grids, the order of options, grouped bars with spreads."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from sparseprop.runner.plots import plt

ACTIVATIONS = ("linear", "tanh")
ERROR_LABEL = "test error (%) at best validation step"
METHOD_COLOURS = {"VS-L": "tab:blue", "VS-L + AI": "tab:cyan", "LDI": "tab:red", "LDI-AI": "tab:green"}


def present(values: Sequence[Any], wanted: Sequence[Any]) -> list[Any]:
    """``wanted`` values that occur in ``values`` (in that order), then any others, sorted."""
    seen = list(dict.fromkeys(values))
    return [w for w in wanted if w in seen] + sorted((v for v in seen if v not in wanted), key=str)


def grouped_bars(ax: Any, agg: pd.DataFrame, group: str, bar: str, metric: str, groups: Sequence[Any],
                 bars: Sequence[Any], labels: dict[Any, str] | None = None, log: bool = False,
                 colours: dict[Any, str] | None = None, annotate: bool = False) -> None:
    """Bars of ``<metric>_mean`` (± std) for each ``group`` value, one bar per ``bar`` value.

    With ``annotate``, each bar's value and its number of diverged runs are written above it.
    """
    width = 0.8 / max(1, len(bars))
    top = 0.0
    for j, b in enumerate(bars):
        rows = [agg[(agg[group] == g) & (agg[bar] == b)] for g in groups]
        means = np.array([r[f"{metric}_mean"].iloc[0] if len(r) else np.nan for r in rows], dtype=float)
        stds = np.array([r[f"{metric}_std"].iloc[0] if len(r) else np.nan for r in rows], dtype=float)
        xs = np.arange(len(groups)) + (j - (len(bars) - 1) / 2) * width
        colour = (colours or {}).get(b)
        # An infinite value (e.g. the condition number of a network with no path left) cannot be a bar: say so.
        for x in xs[np.isinf(means)]:
            ax.annotate("inf", (x, 0.98), xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7)
        means[np.isinf(means)] = np.nan
        stds[~np.isfinite(stds)] = 0.0
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=str(b), color=colour, error_kw={"elinewidth": 0.8})
        top = np.nanmax([top, *(means + stds)]) if np.isfinite(means).any() else top
        if not annotate:
            continue
        diverged = [int(r["diverged"].iloc[0]) if len(r) and "diverged" in r else 0 for r in rows]
        for x, m, s, k in zip(xs, means, stds, diverged):
            # The value above its error bar, and how many runs diverged (they are not in the mean).
            text = (f"{m:.1f}" if np.isfinite(m) else "") + (f" ({k} diverged)" if k else "")
            if text:
                ax.annotate(text.strip(), (x, (m if np.isfinite(m) else 0) + s), ha="center", va="bottom", fontsize=6,
                            rotation=90, xytext=(0, 2), textcoords="offset points")
    if annotate and not log and np.isfinite(top) and top > 0:
        ax.set_ylim(0, 1.2 * top)  # room for the values written above the bars
    ax.set_xticks(range(len(groups)), [(labels or {}).get(g, str(g)) for g in groups])
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)


def isometry_line(ax: Any) -> None:
    """A dotted horizontal line at 1, where every singular value of an isometry lies."""
    ax.axhline(1.0, color="k", ls=":", lw=1, label="isometry (1)")


def panels(rows: int, cols: int, width: float = 5.2, height: float = 3.6) -> tuple[Any, np.ndarray]:
    """A figure with a rows x cols grid of axes (always 2-D), each panel ``width`` x ``height`` inches."""
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return fig, axes


def figure_legend(fig: Any, title: str | None = None) -> None:
    """One legend for the whole figure, below its panels, with every distinct label of every panel."""
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(entries), 6), fontsize=8, frameon=False, title=title, title_fontsize=8)


def finish(fig: Any, title: str, legend: bool = True, legend_title: str | None = None) -> Any:
    """Title the figure, lay out its panels and, with ``legend``, put one legend for all of them below; returns it."""
    fig.suptitle(title)
    fig.tight_layout()
    if legend:
        figure_legend(fig, legend_title)
    return fig
