"""E2 (claims C2, C3): the input-output and layerwise Jacobian spectra of MLP-7 by initialisation, SNIP against random pruning."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ACTIVATIONS, ERROR_LABEL, finish, grouped_bars, isometry_line, panels, present
from sparseprop.paper.judge import Verdict, distance_from_one, less
from sparseprop.paper.labels import INIT_LABELS, PRUNE_LABELS
from sparseprop.paper.profiles import QUICK_SIGNAL, QUICK_TRAIN
from sparseprop.paper.tables import BEFORE_TRAINING, ERROR, ERRORS, aggregate, usable

INITS = ("vs_l", "vs_g", "vs_h", "orthogonal")


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
    return finish(fig, "E2: input-output Jacobian singular values, MLP-7, 90% sparsity (mean ± std over seeds)")


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
    return finish(fig, "E2: test error by initialisation and pruning method, MLP-7 (mean ± std over seeds)", legend_title="pruning")


def _col(runs: pd.DataFrame, column: str, **where: Any) -> pd.Series:
    """``column`` of the runs matching ``where``: completed runs, and diverged ones for measurements before training."""
    sel = usable(runs, diverged=column.startswith(BEFORE_TRAINING))
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel[column] if column in sel else pd.Series(dtype=float)


def layerwise_init(layers: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run: layerwise Jacobians J^l at init, averaged over layers: |log10 mean singular value| and log10 condition."""
    runs = usable(runs, diverged=True)
    columns = ["run", "activation", "init", "distance", "log_condition"]
    if layers.empty or runs.empty or not {"run", "kind", "jsv_init_mean", "jsv_init_condition"} <= set(layers):
        return pd.DataFrame(columns=columns)
    rows = layers[(layers.kind == "weight") & layers.jsv_init_mean.notna()][["run", "jsv_init_mean", "jsv_init_condition"]]
    rows = rows.merge(runs[["run", "activation", "init"]], on="run")
    rows = rows.assign(distance=distance_from_one(rows.jsv_init_mean),
                       log_condition=np.log10(rows.jsv_init_condition.astype(float)))
    return rows.groupby(["run", "activation", "init"], as_index=False)[["distance", "log_condition"]].mean()


def c2(e2: dict[str, Any] | None) -> list[Verdict]:
    """C2: orthogonal init gives layerwise dynamical isometry: every layer's Jacobian has singular values near 1."""
    out = []
    for act in ("linear", "tanh"):
        v = Verdict("C2", act, f"orthogonal initialisation gives layerwise dynamical isometry in a {act} MLP-7"
                    + (" (approximately)" if act == "tanh" else ""),
                    "E2: singular values of every layerwise Jacobian J^l = diag(phi'(h^l)) W^l after initialisation, "
                    "before pruning (on `signal.layer_examples` training examples); per run, the average over the 7 layers "
                    "of |log10 mean singular value| (distance from 1) and of log10 condition number; one run per seed",
                    "orthogonal's average distance from 1 and average log10 condition number both below every "
                    "variance-scaling init's, beyond the seed spread")
        if not e2:
            out.append(v.skip("E2 has no completed runs"))
            continue
        # SNIP and random runs of one seed share their initialisation, so one of them counts per seed.
        runs = e2["runs"][e2["runs"].prune == "snip"]
        per_run = layerwise_init(e2["layers"], runs)
        per_run = per_run[per_run.activation == act]
        orth = per_run[per_run.init == "orthogonal"]
        for init in ("vs_l", "vs_g", "vs_h"):
            other = per_run[per_run.init == init]
            v.checks.append(less(f"layerwise |log10 mean JSV|: orthogonal vs {INIT_LABELS[init]}", orth.distance, other.distance))
            v.checks.append(less(f"layerwise log10 condition number: orthogonal vs {INIT_LABELS[init]}", orth.log_condition,
                                 other.log_condition))
        out.append(v)
    return out


def c3(e2: dict[str, Any] | None) -> list[Verdict]:
    """C3: pruning shrinks and spreads the JSV, and random pruning far more than SNIP."""
    breaks = Verdict("C3", "pruning breaks isometry", "after pruning, Jacobian singular values shrink and spread",
                     "E2: input-output JSV after init and after SNIP pruning at orthogonal init (which starts at isometry)",
                     "after SNIP the mean JSV is further from 1 (|log10 mean|) and the condition number larger than at "
                     "init, beyond the seed spread, for linear and tanh")
    random = Verdict("C3", "random worse than SNIP", "random pruning destroys signal propagation far more than SNIP",
                     "E2: input-output JSV after pruning, random against SNIP, every init and activation",
                     "after random pruning the mean JSV is further from 1 (|log10 mean|) than after SNIP, beyond the "
                     "seed spread, for every init and activation")
    if not e2:
        return [v.skip("E2 has no completed runs") for v in (breaks, random)]
    runs = e2["runs"]
    for act in ("linear", "tanh"):
        w = {"activation": act, "init": "orthogonal", "prune": "snip"}
        breaks.checks.append(less(f"{act}: |log10 mean JSV| init vs pruned",
                                  distance_from_one(_col(runs, "jsv_init_mean", **w)),
                                  distance_from_one(_col(runs, "jsv_pruned_mean", **w))))
        breaks.checks.append(less(f"{act}: condition number init vs pruned", _col(runs, "jsv_init_condition", **w),
                                  _col(runs, "jsv_pruned_condition", **w), digits=2))
        for init in ("vs_l", "vs_g", "vs_h", "orthogonal"):
            snip = distance_from_one(_col(runs, "jsv_pruned_mean", activation=act, init=init, prune="snip"))
            rand = distance_from_one(_col(runs, "jsv_pruned_mean", activation=act, init=init, prune="random"))
            random.checks.append(less(f"{act}, {INIT_LABELS[init]}: |log10 mean JSV| SNIP vs random", snip, rand))
    return [breaks, random]


EXPERIMENT = register(Experiment(
    id="e2_init",
    title="E2: Jacobian singular values and errors of MLP-7 by initialisation, after SNIP or random pruning",
    order=2,
    profiles={"quick": [*QUICK_TRAIN, *QUICK_SIGNAL, "seed=0,1"], "paper": []},
    figures=(Figure("e2_jsv", e2_jsv), Figure("e2_error", e2_error)),
    tables=(Table("e2_init", ("activation", "init", "prune"), {
        **ERRORS, "jsv_init_mean": "JSV mean (init)", "jsv_pruned_mean": "JSV mean (pruned)",
        "jsv_init_condition": "JSV condition (init)", "jsv_pruned_condition": "JSV condition (pruned)"}),),
    rules=(c2, c3),
))
