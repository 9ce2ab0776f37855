"""A toy experiment, as a contributor would add one: one module that registers itself (no other file changes)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import figure_legend, grouped_bars, panels
from sparseprop.paper.judge import Verdict, at_most
from sparseprop.paper.tables import aggregate, usable

LIMIT = 5.0


def toy_scores(runs: pd.DataFrame) -> Any:
    """Mean score per activation (bars, ± std over seeds)."""
    agg = aggregate(runs, ["activation"], ["score"]).assign(kind="score")
    fig, axes = panels(1, 1)
    grouped_bars(axes[0, 0], agg, "activation", "kind", "score", sorted(agg.activation), ["score"])
    axes[0, 0].set(xlabel="activation", ylabel="score", title="toy scores")
    figure_legend(fig)
    return fig


def c0(toy: dict[str, Any] | None) -> list[Verdict]:
    """C0: the toy score is at most LIMIT."""
    v = Verdict("C0", "toy part", "the toy score stays small", "toy: score per run", f"mean + std <= {LIMIT:g}")
    if not toy:
        return [v.skip("toy has no completed runs")]
    v.checks = [at_most("score", usable(toy["runs"]).score, LIMIT)]
    return [v]


EXPERIMENT = register(Experiment(
    id="toy",
    title="a toy experiment",
    order=8,
    profiles={"quick": ["seed=0,1"], "paper": []},
    figures=(Figure("toy_scores", toy_scores),),
    tables=(Table("toy", ("activation",), {"score": "score"}),),
    rules=(c0,),
    not_tested={"C9": "the toy claim C9 needs hardware nobody has"},
))
