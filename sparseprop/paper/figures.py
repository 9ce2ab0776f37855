"""The paper's figures, one function each, drawn from collected results (never from training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.figkit import ACTIVATIONS, figure_legend, grouped_bars, isometry_line, panels, present
from sparseprop.paper.layerfigures import e1_kept_fraction, e1_masks, e1_saliency
from sparseprop.runner.plots import plt, save
from sparseprop.paper.tables import DATASET_LABELS, ERROR, INIT_LABELS, aggregate, usable, with_method

INITS = ("vs_l", "vs_g", "vs_h", "orthogonal")
METHODS = ("VS-L", "VS-L + AI", "LDI", "LDI-AI")
METHOD_COLOURS = {"VS-L": "tab:blue", "VS-L + AI": "tab:cyan", "LDI": "tab:red", "LDI-AI": "tab:green"}
ERROR_LABEL = "test error (%) at best validation step"
TARGET_LABELS = {"labels": "labels", "uniform": "uniform 1/C", "self_hard": "own hard predictions",
                 "self_soft": "own soft predictions (entropy)"}
PRUNE_LABELS = {"snip": "SNIP", "random": "random"}


def e2_stages(runs: pd.DataFrame, stat: str) -> pd.DataFrame:
    """E2's JSV statistic ``stat`` per activation, init and stage (after init, after SNIP, after random pruning)."""
    parts = []
    for stage, metric, which in (("after init", f"jsv_init_{stat}", None), ("after SNIP pruning", f"jsv_pruned_{stat}", "snip"),
                                 ("after random pruning", f"jsv_pruned_{stat}", "random")):
        sel = runs if which is None else runs[runs.prune == which]
        agg = aggregate(sel, ["activation", "init"], [metric])
        if not agg.empty:
            parts.append(agg.rename(columns={f"{metric}_mean": "value_mean", f"{metric}_std": "value_std"}).assign(stage=stage))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def e2_jsv(runs: pd.DataFrame) -> Any:
    """Mean and condition number of the input-output JSV by initialisation, after init and after pruning."""
    acts = present(usable(runs, diverged=True).activation, ACTIVATIONS)
    fig, axes = panels(2, len(acts))
    stage_colours = {"after init": "tab:blue", "after SNIP pruning": "tab:orange", "after random pruning": "tab:gray"}
    for row, (stat, ylabel) in enumerate((("mean", "mean JSV"), ("condition", "JSV condition number (max/min)"))):
        data = e2_stages(runs, stat)
        for ax, a in zip(axes[row], acts):
            d = data[data.activation == a]
            grouped_bars(ax, d, "init", "stage", "value", present(d.init, INITS), list(stage_colours),
                         labels=INIT_LABELS, log=True, colours=stage_colours)
            if stat == "mean":
                isometry_line(ax)
            ax.set(xlabel="initialisation", ylabel=f"{ylabel} (log)", title=f"{a}: {ylabel}")
    fig.suptitle("E2: input-output Jacobian singular values, MLP-7, 90% sparsity (mean ± std over seeds)")
    fig.tight_layout()
    figure_legend(fig)
    return fig


def e2_error(runs: pd.DataFrame) -> Any:
    """Test error by initialisation, SNIP against random pruning, linear and tanh."""
    agg = aggregate(runs, ["activation", "init", "prune"], [ERROR])
    acts = present(agg.activation, ACTIVATIONS)
    fig, axes = panels(1, len(acts))
    for ax, a in zip(axes[0], acts):
        d = agg[agg.activation == a].assign(prune=lambda f: f.prune.map(lambda p: PRUNE_LABELS.get(p, p)))
        grouped_bars(ax, d, "init", "prune", ERROR, present(d.init, INITS), present(d.prune, PRUNE_LABELS.values()),
                     labels=INIT_LABELS, colours={"SNIP": "tab:orange", "random": "tab:gray"}, annotate=True)
        ax.set(xlabel="initialisation", ylabel=ERROR_LABEL, title=f"{a}: test error, 90% sparsity")
    fig.suptitle("E2: test error by initialisation and pruning method, MLP-7 (mean ± std over seeds)")
    fig.tight_layout()
    figure_legend(fig, "pruning")
    return fig


# ---- E3 -----------------------------------------------------------------------------------------

def e3_jsv(runs: pd.DataFrame) -> Any:
    """JSV mean and condition number at init, after pruning and after AI, per method, linear and tanh."""
    runs = with_method(runs)
    acts = present(usable(runs, diverged=True).activation, ACTIVATIONS)
    fig, axes = panels(2, len(acts))
    stages = {"init": "after init", "pruned": "after pruning", "isometry": "after AI"}
    colours = {"after init": "tab:blue", "after pruning": "tab:orange", "after AI": "tab:green"}
    for row, (stat, ylabel) in enumerate((("mean", "mean JSV"), ("condition", "JSV condition number (max/min)"))):
        metrics = [f"jsv_{s}_{stat}" for s in stages]
        agg = aggregate(runs, ["activation", "method"], metrics)
        long = pd.concat([agg[["activation", "method"]].assign(stage=label, value_mean=agg.get(f"jsv_{s}_{stat}_mean"),
                                                              value_std=agg.get(f"jsv_{s}_{stat}_std"))
                          for s, label in stages.items()], ignore_index=True)
        for ax, a in zip(axes[row], acts):
            d = long[long.activation == a]
            grouped_bars(ax, d, "method", "stage", "value", present(d.method, METHODS), list(colours), log=True,
                         colours=colours)
            if stat == "mean":
                isometry_line(ax)
            ax.set(xlabel="method (SNIP at 90%)", ylabel=f"{ylabel} (log)", title=f"{a}: {ylabel}")
    fig.suptitle("E3: approximate isometry restores the Jacobian spectrum, MLP-7 (mean ± std over seeds)")
    fig.tight_layout()
    figure_legend(fig)
    return fig


def e3_training(metrics: pd.DataFrame, runs: pd.DataFrame) -> Any:
    """Training loss and test error against iteration, with and without AI (mean over seeds, band = min to max)."""
    runs = with_method(usable(runs))
    m = metrics.merge(runs[["run", "activation", "method"]], on="run")
    acts = present(runs.activation, ACTIVATIONS)
    fig, axes = panels(2, len(acts))
    for col, a in enumerate(acts):
        for row, (split, name, ylabel) in enumerate((("train", "loss", "training loss (cross-entropy)"),
                                                      ("test", "error_pct", "test error (%)"))):
            ax = axes[row, col]
            d = m[(m.activation == a) & (m.split == split) & (m.name == name)]
            for method in present(d.method, METHODS):
                g = d[d.method == method].groupby("step").value.agg(["mean", "min", "max"])
                c = METHOD_COLOURS.get(method)
                ax.plot(g.index, g["mean"], color=c, label=method)
                ax.fill_between(g.index, g["min"], g["max"], color=c, alpha=0.2)
            ax.set(xlabel="iteration", ylabel=ylabel, yscale="log", title=f"{a}: {ylabel}")
            ax.grid(alpha=0.3)
    fig.suptitle("E3: training with and without approximate isometry, MLP-7, SNIP 90%")
    fig.tight_layout()
    figure_legend(fig)
    return fig


# ---- sparsity sweep, E5, E6 -------------------------------------------------------------------------

def sparsity_sweep(runs: pd.DataFrame) -> Any:
    """Test error and mean JSV of the trained network against sparsity, per method, linear and tanh."""
    runs = with_method(usable(runs, diverged=True)).copy()
    # The spectrum of the network that is trained: after AI where AI ran, else after pruning.
    after_ai = pd.to_numeric(runs.get("jsv_isometry_mean"), errors="coerce") if "jsv_isometry_mean" in runs else np.nan
    runs["jsv_pretrain_mean"] = np.where(runs.isometry == "ai", after_ai, pd.to_numeric(runs.get("jsv_pruned_mean"), errors="coerce"))
    agg = aggregate(runs, ["activation", "method", "sparsity_target"], [ERROR, "jsv_pretrain_mean"])
    acts = present(agg.activation, ACTIVATIONS)
    fig, axes = panels(2, len(acts))
    for col, a in enumerate(acts):
        for row, (metric, ylabel, log) in enumerate(((ERROR, ERROR_LABEL, False),
                                                     ("jsv_pretrain_mean", "mean JSV after pruning (and AI)", True))):
            ax = axes[row, col]
            d = agg[agg.activation == a]
            for method in present(d.method, METHODS):
                r = d[d.method == method].sort_values("sparsity_target")
                ax.errorbar(r.sparsity_target, r[f"{metric}_mean"], yerr=r[f"{metric}_std"].fillna(0), marker="o",
                            ms=4, capsize=2, color=METHOD_COLOURS.get(method), label=method)
            if log:
                ax.set_yscale("log")
                isometry_line(ax)
            ax.set_xscale("logit")
            levels = sorted(d.sparsity_target.unique())
            ax.set_xticks(levels, [f"{100 * s:g}" for s in levels])
            ax.minorticks_off()
            ax.set(xlabel="sparsity (%, logit scale)", ylabel=ylabel, title=f"{a}: {ylabel}")
            ax.grid(alpha=0.3)
    fig.suptitle("Sparsity sweep: MLP-7, SNIP after VS-L or orthogonal init, with and without AI")
    fig.tight_layout()
    figure_legend(fig)
    return fig


def e5_supervision(runs: pd.DataFrame) -> Any:
    """Test error per depth, scoring with labels against label-free targets, linear and tanh."""
    agg = aggregate(runs, ["activation", "depth", "target"], [ERROR])
    acts = present(agg.activation, ACTIVATIONS)
    fig, axes = panels(1, len(acts))
    for ax, a in zip(axes[0], acts):
        d = agg[agg.activation == a].assign(target=lambda f: f.target.map(lambda t: TARGET_LABELS.get(t, t)))
        grouped_bars(ax, d, "depth", "target", ERROR, sorted(d.depth.unique()),
                     present(d.target, list(TARGET_LABELS.values())),
                     labels={k: f"MLP-{k}" for k in d.depth.unique()}, annotate=True)
        ax.set(xlabel="network", ylabel=ERROR_LABEL, title=f"{a}: LDI at 90%, scoring loss")
    fig.suptitle("E5: pruning without labels (orthogonal init, SNIP 90%; mean ± std over seeds)")
    fig.tight_layout()
    figure_legend(fig, "scoring target")
    return fig


def e6_transfer(runs: pd.DataFrame) -> Any:
    """Test error of masks found in-domain against masks transferred from the other dataset."""
    runs = usable(runs, diverged=True).copy()
    runs["mask"] = np.where(runs.prune_dataset == runs.dataset, "in-domain mask", "transferred mask")
    runs["setting"] = [f"{DATASET_LABELS.get(d, d)}\nMLP-{k}" for d, k in zip(runs.dataset, runs.depth)]
    agg = aggregate(runs, ["activation", "setting", "mask"], [ERROR])
    acts = present(agg.activation, ACTIVATIONS)
    fig, axes = panels(1, len(acts))
    for ax, a in zip(axes[0], acts):
        d = agg[agg.activation == a]
        grouped_bars(ax, d, "setting", "mask", ERROR, sorted(d.setting.unique()), ["in-domain mask", "transferred mask"],
                     colours={"in-domain mask": "tab:blue", "transferred mask": "tab:purple"}, annotate=True)
        ax.set(xlabel="trained and tested on", ylabel=ERROR_LABEL, title=f"{a}: LDI at 90%")
    fig.suptitle("E6: sparsity transfer between MNIST and Fashion-MNIST (mean ± std over seeds)")
    fig.tight_layout()
    figure_legend(fig)
    return fig


# (figure stem, experiment, function, which collected tables it takes)
FIGURES = (
    ("e1_masks", "e1_masks", e1_masks, ("masks", "runs")),
    ("e1_kept_fraction", "e1_masks", e1_kept_fraction, ("layers", "runs")),
    ("e1_saliency", "e1_masks", e1_saliency, ("layers", "runs")),
    ("e2_jsv", "e2_init", e2_jsv, ("runs",)),
    ("e2_error", "e2_init", e2_error, ("runs",)),
    ("e3_jsv", "e3_isometry", e3_jsv, ("runs",)),
    ("e3_training", "e3_isometry", e3_training, ("metrics", "runs")),
    ("sparsity_sweep", "sparsity_sweep", sparsity_sweep, ("runs",)),
    ("e5_supervision", "e5_supervision", e5_supervision, ("runs",)),
    ("e6_transfer", "e6_transfer", e6_transfer, ("runs",)),
)


def draw_all(results: dict[str, dict[str, Any]], out_dir: str | Path) -> tuple[list[Path], dict[str, str]]:
    """Draw every figure whose experiment has completed runs; returns (written paths, {figure: why not drawn})."""
    written, missing = [], {}
    for stem, experiment, fn, inputs in FIGURES:
        tables = results.get(experiment)
        if tables is None or usable(tables["runs"], diverged=True).empty:
            missing[stem] = f"no completed runs of {experiment}"
            continue
        try:
            written += save(fn(*(tables[i] for i in inputs)), Path(out_dir) / stem)
        except Exception as exc:  # noqa: BLE001 - one broken figure must not cost the others
            plt.close("all")
            missing[stem] = f"could not draw: {type(exc).__name__}: {exc}"
    return written, missing


def main(args: list[str]) -> None:
    """`sparseprop figures [--profile P] [--outputs DIR]`: gather the sweeps again and redraw, without training."""
    from sparseprop.paper import reproduce

    reproduce.main(["--figures-only", *args])
