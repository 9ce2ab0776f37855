"""E5 (claim C5): pruning without labels: SNIP scored with uniform targets or the network's own predictions."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ACTIVATIONS, ERROR_LABEL, finish, grouped_bars, panels, present
from sparseprop.paper.judge import CLOSE_PP, Verdict, at_most, paired_differences
from sparseprop.paper.labels import TARGET_LABELS
from sparseprop.paper.profiles import QUICK_TRAIN
from sparseprop.paper.tables import ERROR, ERRORS, aggregate


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
    return finish(fig, "E5: pruning without labels (orthogonal init, SNIP 90%; mean ± std over seeds)", legend_title="scoring target")


def c5(e5: dict[str, Any] | None) -> list[Verdict]:
    """C5: pruning with label-free losses gives errors close to pruning with the labels."""
    names = {"uniform": "uniform targets 1/C", "self_hard": "own hard predictions", "self_soft": "own soft predictions (entropy)"}
    out = []
    for target, label in names.items():
        v = Verdict("C5", label, f"pruning with {label} instead of labels gives errors close to pruning with labels",
                    "E5: test error of each (depth, activation, seed) scored with this target minus the same "
                    "setting scored with the labels (percentage points), MLP-3/5/7 linear and tanh, LDI at 90%",
                    f"mean + std of the differences <= {CLOSE_PP:g} pp (no worse by more than {CLOSE_PP:g} pp)")
        if not e5:
            out.append(v.skip("E5 has no completed runs"))
            continue
        diffs = paired_differences(e5["runs"], "target", target, "labels", ["depth", "activation", "seed"])
        v.checks = [at_most(f"error({target}) - error(labels), pp", diffs, CLOSE_PP)]
        out.append(v)
    return out


EXPERIMENT = register(Experiment(
    id="e5_supervision",
    title="E5: LDI at 90% on MLP-3/5/7, the SNIP loss scored with labels or with label-free targets",
    order=5,
    profiles={"quick": [*QUICK_TRAIN, "arch.depth=3,7", "seed=0"], "paper": []},
    figures=(Figure("e5_supervision", e5_supervision),),
    tables=(Table("e5_supervision", ("depth", "activation", "target"), ERRORS),),
    rules=(c5,),
))
