"""E1's figures: SNIP masks, kept fraction and saliency per layer, linear against tanh (from collected results)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.figkit import ACTIVATIONS, panels, present
from sparseprop.plots import plt
from sparseprop.tables import usable


def _with_config(layers: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per-layer rows of completed runs, with the run's activation, sparsity and seed, weights only."""
    cols = ["run", "activation", "sparsity_target", "seed"]
    merged = layers.drop(columns=[c for c in cols[1:] if c in layers]).merge(usable(runs)[cols], on="run")
    weights = merged[merged.kind == "weight"].copy()
    # Layer number from 1 in module order, counting weights only.
    weights["layer"] = weights.groupby("run").cumcount() + 1
    return weights


def e1_masks(masks: dict[str, np.ndarray], runs: pd.DataFrame, sparsity: float = 0.9) -> Any:
    """Mask images of the hidden 100x100 layers, linear (top) against tanh (bottom), at the sparsity nearest ``sparsity``."""
    runs = usable(runs)
    level = min(runs.sparsity_target.unique(), key=lambda s: abs(s - sparsity))
    chosen = runs[(runs.sparsity_target == level) & (runs.seed == runs.seed.min())]
    acts = present(chosen.activation, ACTIVATIONS)
    per_act = {a: {k.split("/", 1)[1]: v for k, v in masks.items()
                   if k.split("/", 1)[0] == chosen[chosen.activation == a].run.iloc[0]} for a in acts}
    square = [n for n, m in per_act[acts[0]].items() if m.ndim == 2 and m.shape[0] == m.shape[1]]
    fig, axes = panels(len(acts), max(1, len(square)), width=2.6, height=2.9)
    for i, a in enumerate(acts):
        for j, name in enumerate(square):
            ax, m = axes[i, j], per_act[a][name]
            ax.imshow(m, cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
            layer = int(name.split(".")[1]) + 1 if name.split(".")[1].isdigit() else j + 1
            ax.set_title(f"{a}, layer {layer}: {100 * m.mean():.1f}% kept", fontsize=8)
            ax.set_xlabel("input unit", fontsize=7)
            ax.set_ylabel("output unit", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(f"E1: SNIP masks of the hidden 100x100 layers (black = kept), MLP-7 VS-L, "
                 f"sparsity {100 * level:.0f}%, seed {int(chosen.seed.min())}")
    fig.tight_layout()
    return fig


def e1_kept_fraction(layers: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Kept fraction of each weight layer (mean over seeds), one line per sparsity, linear against tanh."""
    w = _with_config(layers, runs)
    acts = present(w.activation, ACTIVATIONS)
    fig, axes = panels(1, len(acts))
    levels = sorted(w.sparsity_target.unique())
    cmap = plt.get_cmap("viridis")
    for ax, a in zip(axes[0], acts):
        agg = w[w.activation == a].groupby(["sparsity_target", "layer"]).kept_fraction.agg(["mean", "std"]).reset_index()
        for k, s in enumerate(levels):
            r = agg[agg.sparsity_target == s]
            ax.errorbar(r.layer, 100 * r["mean"], yerr=100 * r["std"].fillna(0), marker="o", ms=3, capsize=2,
                        color=cmap(k / max(1, len(levels) - 1)), label=f"{100 * s:.0f}%")
        ax.set(yscale="log", xlabel="layer (1 = input, 7 = output)", ylabel="kept weights (%)",
               title=f"{a}: kept fraction per layer")
        ax.grid(alpha=0.3)
        ax.legend(title="sparsity", fontsize=7, ncol=2)
    fig.suptitle("E1: SNIP kept fraction per layer, MLP-7 VS-L (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def e1_saliency(layers: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Per-layer saliency distribution, one panel per activation on a shared axis: median line, 25-75%
    and 5-95% bands, mean and max.

    Each statistic is taken per run over one layer's connections, then averaged over runs (seeds and
    sparsities: the saliency does not depend on the sparsity). Records from before the quantiles were
    kept have no bands; the mean, median and max are drawn all the same.
    """
    w = _with_config(layers, runs)
    acts = present(w.activation, ACTIVATIONS)
    fig, axes = panels(1, len(acts), width=4.6, height=4.0)
    colours = {"linear": "tab:blue", "tanh": "tab:red"}
    bands = [c for c in ("saliency_q05", "saliency_q25", "saliency_q75", "saliency_q95") if c in w]
    for ax, a in zip(axes[0], acts):
        cols = ["saliency_median", "saliency_mean", "saliency_max", *bands]
        agg = w[w.activation == a].groupby("layer")[cols].mean()
        c = colours.get(a, "tab:gray")
        if len(bands) == 4:
            ax.fill_between(agg.index, agg.saliency_q05, agg.saliency_q95, color=c, alpha=0.15, lw=0,
                            label="5-95% of connections")
            ax.fill_between(agg.index, agg.saliency_q25, agg.saliency_q75, color=c, alpha=0.35, lw=0,
                            label="25-75%")
        ax.plot(agg.index, agg.saliency_median, "-s", color=c, ms=4, label="median")
        ax.plot(agg.index, agg.saliency_mean, "--o", color="k", ms=3, lw=1, label="mean")
        ax.plot(agg.index, agg.saliency_max, ":^", color="k", ms=3, lw=1, label="max")
        ax.set(yscale="log", xlabel="layer (1 = input, 7 = output)", title=a,
               ylabel="saliency per connection\n(normalised: all connections sum to 1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    # One y range for both panels, so linear and tanh compare by eye.
    lo = min(ax.get_ylim()[0] for ax in axes[0])
    hi = max(ax.get_ylim()[1] for ax in axes[0])
    for ax in axes[0]:
        ax.set_ylim(lo, hi)
    fig.suptitle("E1: distribution of connection sensitivity per layer, MLP-7 VS-L (mean over runs)")
    fig.tight_layout()
    return fig
