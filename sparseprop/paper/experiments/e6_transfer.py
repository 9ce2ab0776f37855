"""E6 (claim C6): sparsity transfer: masks found on MNIST trained on Fashion-MNIST and the other way round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ACTIVATIONS, ERROR_LABEL, finish, grouped_bars, panels, present
from sparseprop.paper.judge import CLOSE_PP, Verdict, at_most, paired_differences
from sparseprop.paper.labels import DATASET_LABELS
from sparseprop.paper.profiles import QUICK_TRAIN
from sparseprop.paper.tables import ERROR, ERRORS, aggregate, usable


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
    return finish(fig, "E6: sparsity transfer between MNIST and Fashion-MNIST (mean ± std over seeds)")


def c6(e6: dict[str, Any] | None) -> list[Verdict]:
    """C6: a mask found on one dataset trains about as well on another of the same shape as an in-domain mask."""
    out = []
    for trained, source in (("mnist", "fashion_mnist"), ("fashion_mnist", "mnist")):
        label = f"{DATASET_LABELS[source]} mask on {DATASET_LABELS[trained]}"
        v = Verdict("C6", label, f"a mask found on {DATASET_LABELS[source]} trains on {DATASET_LABELS[trained]} about "
                    "as well as one found on it", f"E6: test error on {DATASET_LABELS[trained]} with the transferred "
                    "mask minus with the in-domain mask, per (depth, activation, seed), LDI at 90% (percentage points)",
                    f"mean + std of the differences <= {CLOSE_PP:g} pp")
        if not e6:
            out.append(v.skip("E6 has no completed runs"))
            continue
        runs = usable(e6["runs"])
        diffs = paired_differences(runs[runs.dataset == trained], "prune_dataset", source, trained,
                                   ["depth", "activation", "seed"])
        v.checks = [at_most("error(transferred) - error(in-domain), pp", diffs, CLOSE_PP)]
        out.append(v)
    return out


EXPERIMENT = register(Experiment(
    id="e6_transfer",
    title="E6: LDI at 90%, masks scored on one dataset and trained on the other (MNIST, Fashion-MNIST)",
    order=6,
    profiles={"quick": [*QUICK_TRAIN, "arch.depth=7", "seed=0"], "paper": []},
    data=("mnist", "fashion_mnist"),
    figures=(Figure("e6_transfer", e6_transfer),),
    tables=(Table("e6_transfer", ("dataset", "prune_dataset", "depth", "activation"), ERRORS),),
    rules=(c6,),
))
