"""The sparsity sweep: test error and the trained network's mean JSV against sparsity, with and without AI."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, register
from sparseprop.paper.figkit import ACTIVATIONS, ERROR_LABEL, METHOD_COLOURS, finish, isometry_line, panels, present
from sparseprop.paper.labels import METHODS, with_method
from sparseprop.paper.profiles import QUICK_AI, QUICK_SIGNAL, QUICK_TRAIN
from sparseprop.paper.tables import ERROR, aggregate, usable


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
    return finish(fig, "Sparsity sweep: MLP-7, SNIP after VS-L or orthogonal init, with and without AI")


EXPERIMENT = register(Experiment(
    id="sparsity_sweep",
    title="Sparsity sweep: MLP-7 from 10% to 99% sparsity, VS-L or orthogonal init, with and without AI",
    # It runs after every paper experiment (the longest sweep); its figure belongs with E3's, which it
    # extends across sparsities.
    order=9,
    figure_order=3.5,
    profiles={"quick": [*QUICK_TRAIN, *QUICK_SIGNAL, *QUICK_AI, "prune.sparsity=0.5,0.9,0.99", "seed=0"], "paper": []},
    figures=(Figure("sparsity_sweep", sparsity_sweep),),
))
