"""E1's figures: SNIP masks, kept fraction and saliency per layer, linear against tanh, one row per init (from collected results)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.figkit import ACTIVATIONS, finish, panels, present
from sparseprop.paper.labels import init_reading, readings
from sparseprop.paper.tables import usable
from sparseprop.runner.plots import plt

# E1's two readings of the paper's "all networks are initialized with γ = 1.0", in this order.
E1_INITS = ("vs_l", "normal")


def _runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed runs with their ``reading``: the init as its weight distribution (E1 runs two readings of γ = 1)."""
    runs = usable(runs)
    return runs.assign(reading=readings(runs))


def _order(found: pd.Series) -> list[str]:
    """The readings present, VS-L first, then N(0, 1), then any others."""
    return present(found, [init_reading(i, 1.0) for i in E1_INITS])


def _with_config(layers: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-layer rows of completed runs, with the run's init reading, activation, sparsity and seed, weights only."""
    cols = ["run", "reading", "activation", "sparsity_target", "seed"]
    merged = layers.drop(columns=[c for c in cols[1:] if c in layers]).merge(_runs(runs)[cols], on="run")
    weights = merged[merged.kind == "weight"].copy()
    # Layer number from 1 in module order, counting weights only.
    weights["layer"] = weights.groupby("run").cumcount() + 1
    return weights


def e1_masks(masks: dict[str, np.ndarray], runs: pd.DataFrame, sparsity: float = 0.9) -> Any:
    """Mask images of the hidden 100x100 layers, one row per (init, activation), at the sparsity nearest ``sparsity``."""
    runs = _runs(runs)
    level = min(runs.sparsity_target.unique(), key=lambda s: abs(s - sparsity))
    chosen = runs[(runs.sparsity_target == level) & (runs.seed == runs.seed.min())]
    rows = [(r, a) for r in _order(chosen.reading) for a in present(chosen.activation, ACTIVATIONS)
            if len(chosen[(chosen.reading == r) & (chosen.activation == a)])]
    per_row = {}
    for r, a in rows:
        run = chosen[(chosen.reading == r) & (chosen.activation == a)].run.iloc[0]
        per_row[r, a] = {k.split("/", 1)[1]: v for k, v in masks.items() if k.split("/", 1)[0] == run}
    square = [n for n, m in per_row[rows[0]].items() if m.ndim == 2 and m.shape[0] == m.shape[1]]
    fig, axes = panels(len(rows), max(1, len(square)), width=2.6, height=2.9)
    for i, (r, a) in enumerate(rows):
        for j, name in enumerate(square):
            ax, m = axes[i, j], per_row[r, a][name]
            ax.imshow(m, cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
            layer = int(name.split(".")[1]) + 1 if name.split(".")[1].isdigit() else j + 1
            pct = 100 * m.mean()
            # Two significant digits below 0.1%, so one kept weight does not read as none.
            ax.set_title(f"{a}, {r}\nlayer {layer}: {pct:.1f}% kept" if pct >= 0.1 or pct == 0 else
                         f"{a}, {r}\nlayer {layer}: {pct:.2g}% kept", fontsize=8)
            ax.set_xlabel("input unit", fontsize=7)
            ax.set_ylabel("output unit", fontsize=7)
            ax.tick_params(labelsize=6)
    return finish(fig, f"E1: SNIP masks of the hidden 100x100 layers (black = kept), MLP-7, one row per init and "
                  f"activation, sparsity {100 * level:.0f}%, seed {int(chosen.seed.min())}", legend=False)


def e1_kept_fraction(layers: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Kept fraction of each weight layer (mean over seeds), one line per sparsity; a row per init, a column per activation."""
    w = _with_config(layers, runs)
    inits, acts = _order(w.reading), present(w.activation, ACTIVATIONS)
    fig, axes = panels(len(inits), len(acts))
    levels = sorted(w.sparsity_target.unique())
    cmap = plt.get_cmap("viridis")
    for row, r in zip(axes, inits):
        for ax, a in zip(row, acts):
            sel = w[(w.reading == r) & (w.activation == a)]
            agg = sel.groupby(["sparsity_target", "layer"]).kept_fraction.agg(["mean", "std"]).reset_index()
            for k, s in enumerate(levels):
                d = agg[agg.sparsity_target == s]
                # Zeros become gaps: on a log axis a line to them would fall off the panel like an error bar.
                ax.errorbar(d.layer, 100 * d["mean"].where(d["mean"] > 0), yerr=100 * d["std"].fillna(0), marker="o",
                            ms=3, capsize=2,
                            color=cmap(k / max(1, len(levels) - 1)), label=f"{100 * s:.0f}%")
                # A layer that keeps nothing has no place on a log axis: mark it at the bottom edge instead.
                empty = d[d["mean"] == 0]
                if len(empty):
                    ax.plot(empty.layer, [0.0] * len(empty), "v", ms=6, color=cmap(k / max(1, len(levels) - 1)),
                            transform=ax.get_xaxis_transform(), clip_on=False,
                            label="no weight kept (marked on the bottom edge)")
            ax.set(yscale="log", xlabel="layer (1 = input, 7 = output)", ylabel="kept weights (%)", title=f"{a}, {r}")
            ax.grid(alpha=0.3)
    return finish(fig, "E1: SNIP kept fraction per layer, MLP-7, one row per init (mean ± std over seeds)", legend_title="sparsity")


def e1_saliency(layers: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Per-layer saliency distribution, a panel per init and activation on a shared axis: median line,
    25-75% and 5-95% bands, mean and max.

    Each statistic is taken per run over one layer's connections, then averaged over runs (seeds and
    sparsities: the saliency does not depend on the sparsity). Records from before the quantiles were
    kept have no bands; the mean, median and max are drawn all the same.
    """
    w = _with_config(layers, runs)
    inits, acts = _order(w.reading), present(w.activation, ACTIVATIONS)
    fig, axes = panels(len(inits), len(acts), width=4.6, height=4.0)
    colours = {"linear": "tab:blue", "tanh": "tab:red"}
    bands = [c for c in ("saliency_q05", "saliency_q25", "saliency_q75", "saliency_q95") if c in w]
    for (r, a), ax in zip(((r, a) for r in inits for a in acts), axes.flat):
        cols = ["saliency_median", "saliency_mean", "saliency_max", *bands]
        agg = w[(w.reading == r) & (w.activation == a)].groupby("layer")[cols].mean()
        c = colours.get(a, "tab:gray")
        if len(bands) == 4:
            ax.fill_between(agg.index, agg.saliency_q05, agg.saliency_q95, color=c, alpha=0.15, lw=0,
                            label="5-95% of connections")
            ax.fill_between(agg.index, agg.saliency_q25, agg.saliency_q75, color=c, alpha=0.35, lw=0,
                            label="25-75%")
        ax.plot(agg.index, agg.saliency_median, "-s", color=c, ms=4, label="median")
        ax.plot(agg.index, agg.saliency_mean, "--o", color="k", ms=3, lw=1, label="mean")
        ax.plot(agg.index, agg.saliency_max, ":^", color="k", ms=3, lw=1, label="max")
        ax.set(yscale="log", xlabel="layer (1 = input, 7 = output)", title=f"{a}, {r}",
               ylabel="saliency per connection\n(normalised: all connections sum to 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    # One y range for every panel, so activations and inits compare by eye.
    lo = min(ax.get_ylim()[0] for ax in axes.flat)
    hi = max(ax.get_ylim()[1] for ax in axes.flat)
    for ax in axes.flat:
        ax.set_ylim(lo, hi)
    return finish(fig, "E1: distribution of connection sensitivity per layer, MLP-7, one row per init (mean over runs)", legend=False)
