"""E3 (claim C4): approximate isometry after pruning, LDI against LDI-AI: Jacobian spectra and training."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ACTIVATIONS, METHOD_COLOURS, finish, grouped_bars, isometry_line, panels, present
from sparseprop.paper.judge import Verdict, distance_from_one, less
from sparseprop.paper.labels import METHODS, with_method
from sparseprop.paper.profiles import QUICK_AI, QUICK_SIGNAL, QUICK_TRAIN
from sparseprop.paper.tables import ERROR, ERRORS, aggregate, usable

# C4 "trains faster": mean training loss over the first this fraction of training.
EARLY_FRACTION = 0.2


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
    return finish(fig, "E3: approximate isometry restores the Jacobian spectrum, MLP-7 (mean ± std over seeds)")


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
    return finish(fig, "E3: training with and without approximate isometry, MLP-7, SNIP 90%")


def early_loss(metrics: pd.DataFrame, runs: pd.DataFrame, fraction: float = EARLY_FRACTION) -> pd.Series:
    """Per run: mean training loss over the first ``fraction`` of training (lower = trains faster)."""
    if metrics.empty:
        return pd.Series(dtype=float)
    loss = metrics[(metrics.split == "train") & (metrics.name == "loss")]
    out = {}
    for run, its in zip(runs.run, runs.iterations):
        r = loss[(loss.run == run) & (loss.step <= max(1, fraction * its))]
        if len(r):
            out[run] = float(r.value.mean())
    return pd.Series(out, dtype=float)


def c4(e3: dict[str, Any] | None) -> list[Verdict]:
    """C4: AI after LDI pruning brings the JSV back towards 1, trains faster and generalises better."""
    out = []
    for act in ("linear", "tanh"):
        v = Verdict("C4", act, f"approximate isometry restores signal propagation in a pruned {act} MLP-7: "
                    "JSV back towards 1, faster training, lower error",
                    f"E3: LDI (orthogonal + SNIP 90%) against LDI-AI: input-output JSV, mean training loss over the "
                    f"first {100 * EARLY_FRACTION:.0f}% of training, test error",
                    "LDI-AI's mean JSV closer to 1 after AI than after pruning, its early training loss and its test "
                    "error below LDI's, each beyond the seed spread")
        if not e3:
            out.append(v.skip("E3 has no completed runs"))
            continue
        runs = with_method(usable(e3["runs"], diverged=True))
        runs = runs[runs.activation == act]
        measured = runs[runs.method == "LDI-AI"]  # spectra are measured before training: diverged runs count
        runs = runs[runs.status == "completed"]
        ldi, ai = runs[runs.method == "LDI"], runs[runs.method == "LDI-AI"]
        early = early_loss(e3["metrics"], runs)
        v.checks = [
            less("|log10 mean JSV| after AI vs after pruning", distance_from_one(measured.get("jsv_isometry_mean", [])),
                 distance_from_one(measured.get("jsv_pruned_mean", []))),
            less("early training loss LDI-AI vs LDI", early.reindex(ai.run), early.reindex(ldi.run)),
            less("test error % LDI-AI vs LDI", ai[ERROR], ldi[ERROR], digits=2),
        ]
        out.append(v)
    return out


EXPERIMENT = register(Experiment(
    id="e3_isometry",
    title="E3: LDI against LDI-AI (and VS-L with and without AI): spectra, training curves and errors",
    order=3,
    profiles={"quick": [*QUICK_TRAIN, *QUICK_SIGNAL, *QUICK_AI, "seed=0,1"], "paper": []},
    figures=(Figure("e3_jsv", e3_jsv), Figure("e3_training", e3_training, ("metrics", "runs"))),
    tables=(Table("e3_isometry", ("activation", "method"), {
        **ERRORS, "jsv_init_mean": "JSV mean (init)", "jsv_pruned_mean": "JSV mean (pruned)",
        "jsv_isometry_mean": "JSV mean (after AI)", "jsv_pruned_condition": "JSV condition (pruned)",
        "jsv_isometry_condition": "JSV condition (after AI)", "ldi_residual_pruned": "LDI residual (pruned)",
        "ldi_residual_isometry": "LDI residual (after AI)"}),),
    rules=(c4,),
))
