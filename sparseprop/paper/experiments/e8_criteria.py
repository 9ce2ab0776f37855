"""E8 (claim C9): the pruning criteria that followed SNIP, and whether closeness to isometry ranks their errors.

Every criterion (SNIP, GraSP, SynFlow, magnitude, iterative SNIP, FORCE, random with the ERK budget) prunes
MLP-7 (tanh and ReLU, MNIST) after VS-L or orthogonal init at 90 to 99.5% sparsity; ``e8_criteria_conv`` does the
same on LeNet-5 (Fashion-MNIST) under the paper profile. Each run records the input-output JSV after pruning,
its test error, its effective sparsity and whether a layer collapsed.

Distance from isometry is |log10 mean JSV| (decades; `judge.distance_from_one`, as C3 and C4 use): the mean JSV
after pruning ranges over many decades across criteria (about 1e-5 for SNIP at 99% on tanh), where mean |σ − 1|
would read about 1 for every vanishing spectrum and could not order them, and a spectrum shrunk by a factor is
as far from isometry as one grown by it. A run with a collapsed layer has no input-output path: its Jacobian
is zero, so its distance is +inf (tied farthest, whatever rounding left in its measured JSV), and its error (about
90%, chance) is its result; both enter the ranking as they are. A diverged run has no trained error: it is left
out of the ranking and counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ERROR_LABEL, finish, panels, present
from sparseprop.paper.judge import FAILS, HOLDS, UNSURE, Check, Verdict, distance_from_one
from sparseprop.paper.labels import CRITERIA, DATASET_LABELS, INIT_LABELS, criterion_label, network_label
from sparseprop.paper.profiles import QUICK_SIGNAL
from sparseprop.paper.tables import ERROR, ERRORS, markdown, usable

CLAIM = "C9"
JSV = "jsv_pruned_mean"
DISTANCE = "isometry_distance"
COLLAPSED = "collapsed"
# Criteria ranked in one condition (network, init, sparsity, seed): with 2 a rank correlation is always ±1.
MIN_CRITERIA = 3
CRITERION_COLOURS = {"SNIP": "tab:red", "GraSP": "tab:purple", "SynFlow": "tab:green", "magnitude": "tab:brown",
                     "Iterative SNIP": "tab:orange", "FORCE": "tab:cyan", "random (ERK)": "tab:grey"}
INIT_MARKERS = {"VS-L": "o", "orthogonal": "s"}
ACTIVATION_LABELS = {"relu": "ReLU"}


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)


def _numbers(runs: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(_column(runs, name), errors="coerce").astype(float)


def with_criteria(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``criterion`` (its published name), ``network`` ("MLP-7 tanh"), ``init_label``, ``collapsed``
    (1 where a layer kept no weight on an input-output path, 0 where none, NaN where not recorded) and
    ``isometry_distance`` (|log10 mean JSV after pruning|; +inf for a collapsed run)."""
    runs = runs.copy()
    if runs.empty:
        return runs.assign(**{c: pd.Series(dtype=object) for c in ("criterion", "network", "init_label")},
                           **{c: pd.Series(dtype=float) for c in (COLLAPSED, DISTANCE)})
    runs["criterion"] = [criterion_label(p, v, b) for p, v, b in
                         zip(runs["prune"], _column(runs, "prune.variant"), _column(runs, "prune.budget"))]
    runs["network"] = [f"{network_label(a, d)} {ACTIVATION_LABELS.get(act, act)}" for a, d, act in
                       zip(runs["arch"], _column(runs, "depth"), runs["activation"])]
    runs["init_label"] = [INIT_LABELS.get(i, str(i)) for i in runs["init"]]
    layers = _numbers(runs, "collapsed_layers")
    runs[COLLAPSED] = np.where(layers.isna(), np.nan, (layers > 0).astype(float))
    runs[DISTANCE] = np.where(runs[COLLAPSED] == 1, np.inf, _distances(_numbers(runs, JSV)))
    return runs


def _distances(jsv: pd.Series) -> np.ndarray:
    """|log10 v| of each value, NaN kept where nothing was measured (`distance_from_one` drops NaNs)."""
    out = np.full(len(jsv), np.nan)
    measured = jsv.notna().to_numpy()
    out[measured] = distance_from_one(jsv[measured])
    return out


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation of two equally long sequences (ties take their mean rank; +inf ranks last);
    NaN when either side has no spread (every value tied) or fewer than 2 values."""
    a, b = pd.Series(np.asarray(x, dtype=float)), pd.Series(np.asarray(y, dtype=float))
    if len(a) < 2:
        return math.nan
    ra, rb = a.rank(method="average").to_numpy(), b.rank(method="average").to_numpy()
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def condition_correlations(runs: pd.DataFrame) -> pd.DataFrame:
    """Per condition (network, init, sparsity, seed): Spearman's ρ between the criteria's isometry distance and
    their test error, over the criteria with a completed, measured run there; ``criteria`` says how many.

    Collapsed runs count with distance +inf and their measured error; diverged runs (no trained error) and runs
    without a JSV are left out of their condition. A condition with fewer than ``MIN_CRITERIA`` criteria, or
    where every distance or every error is tied, has no correlation (NaN).
    """
    done = runs[(runs.status == "completed")].copy()
    done[ERROR] = _numbers(done, ERROR)
    done = done[done[ERROR].notna() & pd.notna(done[DISTANCE])]
    rows = []
    for (net, init, sparsity, seed), g in done.groupby(["network", "init_label", "sparsity_target", "seed"], sort=True):
        per = g.groupby("criterion").agg(distance=(DISTANCE, "mean"), error=(ERROR, "mean"))
        rho = spearman(per.distance, per.error) if len(per) >= MIN_CRITERIA else math.nan
        rows.append({"network": net, "init": init, "sparsity": float(sparsity), "seed": seed, "criteria": len(per),
                     "rho": rho})
    return pd.DataFrame(rows, columns=["network", "init", "sparsity", "seed", "criteria", "rho"])


def seed_correlations(runs: pd.DataFrame) -> pd.Series:
    """Per seed: the mean over its conditions (init x sparsity) of Spearman's ρ, for one network's runs."""
    per = condition_correlations(runs).dropna(subset=["rho"])
    return per.groupby("seed").rho.mean() if not per.empty else pd.Series(dtype=float)


def correlation_check(rhos: pd.Series, conditions: int, collapsed: int, left_out: int) -> Check:
    """The C9 rule on the per-seed correlations: mean − std above 0 holds; mean + std at most 0 does not hold;
    an interval that straddles 0, or fewer than 2 seeds, is inconclusive."""
    values = rhos.to_numpy(dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    per_seed = ", ".join(f"seed {s}: {r:+.2f}" for s, r in rhos.items())
    spread = f" ± {std:.2f}" if n > 1 else ""
    numbers = (f"ρ = {mean:+.2f}{spread} (n={n} seeds; {per_seed}) over {conditions} init x sparsity conditions; "
               f"{collapsed} collapsed runs ranked farthest from isometry; {left_out} diverged or unmeasured runs "
               "left out") if n else f"no condition with {MIN_CRITERIA} or more ranked criteria"
    what = "Spearman ρ (|log10 mean JSV| after pruning vs test error, across criteria), per seed"
    if n < 2:
        return Check(what, numbers, UNSURE, "fewer than 2 seeds with a correlation, so no spread to judge by")
    if mean - std > 0:
        return Check(what, numbers, HOLDS)
    if mean + std <= 0:
        return Check(what, numbers, FAILS, "no positive rank correlation beyond the seed spread")
    return Check(what, numbers, UNSURE, "the mean ± std interval of ρ contains 0")


def c9(e8: dict[str, Any] | None, name: str, networks: str) -> list[Verdict]:
    """C9: the criteria whose pruned networks are closer to isometry reach lower test errors (a verdict per
    network; ``networks`` names them where nothing ran)."""
    def verdict(net: str) -> Verdict:
        return Verdict(CLAIM, f"criteria, {net}",
                       f"among pruning criteria at initialisation, those that leave {net}'s input-output Jacobian "
                       "closer to isometry train to lower test errors (an extension of C3 and C4 to the criteria that "
                       "followed SNIP, not a claim of the paper)",
                       f"{name}: per init, sparsity and seed, Spearman's rank correlation across the criteria (SNIP, "
                       "GraSP, SynFlow, magnitude, Iterative SNIP, FORCE, random (ERK)) between the distance from "
                       "isometry after pruning, |log10 mean JSV| (+inf for a run with a collapsed layer: its Jacobian "
                       "is zero), and the test error (a collapsed run's own, about 90%; diverged runs left out); the "
                       "correlations averaged per seed",
                       "mean − std of the per-seed correlations above 0: holds; mean + std at most 0: does not hold; "
                       "otherwise, or fewer than 2 seeds: inconclusive")

    runs = with_criteria(usable(e8["runs"], diverged=True)) if e8 else pd.DataFrame()
    if runs.empty or usable(runs).empty:
        return [verdict(networks).skip(f"{name} has no completed runs")]
    out = []
    for net in present(runs.network, []):
        r = runs[runs.network == net]
        conditions = condition_correlations(r)
        ranked = conditions.dropna(subset=["rho"])
        done = r[r.status == "completed"]
        left_out = int((r.status != "completed").sum() + (pd.isna(done[DISTANCE]) | _numbers(done, ERROR).isna()).sum())
        v = verdict(net)
        v.checks = [correlation_check(seed_correlations(r),
                                      len(ranked.drop_duplicates(["init", "sparsity"])),
                                      int((done[COLLAPSED] == 1).sum()), left_out)]
        out.append(v)
    return out


def ranking(runs: pd.DataFrame) -> pd.DataFrame:
    """Per network and criterion: median isometry distance over runs (collapsed ones at +inf), mean test error,
    collapsed and diverged runs, and the mean ranks (1 = closest to isometry, 1 = lowest error) over conditions."""
    runs = with_criteria(usable(runs, diverged=True))
    done = runs[runs.status == "completed"].copy()
    done[ERROR] = _numbers(done, ERROR)
    rank_rows = []
    for _, g in done.groupby(["network", "init_label", "sparsity_target", "seed"]):
        per = g.groupby("criterion").agg(distance=(DISTANCE, "mean"), error=(ERROR, "mean")).dropna()
        if len(per) >= MIN_CRITERIA:
            rank_rows.append(pd.DataFrame({"network": g.network.iloc[0], "criterion": per.index,
                                           "distance_rank": per.distance.rank().to_numpy(),
                                           "error_rank": per.error.rank().to_numpy()}))
    ranks = pd.concat(rank_rows) if rank_rows else pd.DataFrame(columns=["network", "criterion", "distance_rank",
                                                                          "error_rank"])
    rows = []
    for (net, crit), g in runs.groupby(["network", "criterion"]):
        d = g[g.status == "completed"]
        rk = ranks[(ranks.network == net) & (ranks.criterion == crit)]
        rows.append({"network": net, "criterion": crit, "runs": len(g),
                     "median decades from isometry": float(np.median(g[DISTANCE].dropna())) if g[DISTANCE].notna().any() else math.nan,
                     "mean test error %": float(_numbers(d, ERROR).mean()),
                     "collapsed": int((g[COLLAPSED] == 1).sum()), "diverged": int((g.status == "diverged").sum()),
                     "mean distance rank": float(rk.distance_rank.mean()) if len(rk) else math.nan,
                     "mean error rank": float(rk.error_rank.mean()) if len(rk) else math.nan})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["network", "median decades from isometry", "mean test error %"]) if not frame.empty else frame


def ranking_note(e8: dict[str, Any] | None, name: str) -> str:
    """Which criteria keep the pruned Jacobian closest to isometry, and their errors, as a table per network."""
    if not e8 or usable(e8["runs"], diverged=True).empty:
        return ""
    frame = ranking(e8["runs"])
    if frame.empty:
        return ""
    text = frame.copy()
    for col in ("median decades from isometry", "mean test error %", "mean distance rank", "mean error rank"):
        text[col] = [("inf" if math.isinf(v) else f"{v:.2f}") if not math.isnan(v) else "n/a" for v in text[col]]
    return (f"**{name}**: criteria from closest to farthest from isometry after pruning (median over runs, collapsed "
            "runs at +inf), with their mean test error and mean ranks within each init, sparsity and seed\n\n"
            + markdown(text))


def _floor(values: pd.Series) -> float:
    """Where a zero (or unmeasured) JSV is drawn on a log axis: a decade below the smallest positive one."""
    positive = values[(values > 0) & np.isfinite(values)]
    return float(positive.min()) / 10 if len(positive) else 1e-6


def error_figure(runs: pd.DataFrame) -> Any:
    """Test error against sparsity, one line per criterion (mean ± std over seeds), a panel per network and init;
    a cross marks a setting where at least one run lost a whole layer (collapse)."""
    runs = with_criteria(usable(runs, diverged=True))
    done = runs[runs.status == "completed"].copy()
    done[ERROR] = _numbers(done, ERROR)
    nets = present(runs.network, [])
    inits = present(runs.init_label, list(INIT_MARKERS))
    fig, axes = panels(max(1, len(nets)), max(1, len(inits)))
    for row, net in enumerate(nets):
        for col, init in enumerate(inits):
            ax = axes[row, col]
            d = done[(done.network == net) & (done.init_label == init)]
            for crit in present(d.criterion, CRITERIA):
                c = d[d.criterion == crit]
                g = c.groupby("sparsity_target")
                mean, std = g[ERROR].mean(), g[ERROR].std(ddof=1).fillna(0)
                ax.errorbar(mean.index, mean.to_numpy(), yerr=std.to_numpy(), marker="o", ms=4, capsize=2,
                            color=CRITERION_COLOURS.get(crit), label=crit)
                hit = g[COLLAPSED].max()
                hit = hit[hit == 1].index
                if len(hit):
                    ax.plot(hit, mean.reindex(hit).to_numpy(), "x", color="k", ms=8, ls="none",
                            label="at least one run with a collapsed layer")
            levels = sorted(runs.sparsity_target.dropna().unique())
            if levels and all(0 < s < 1 for s in levels):
                ax.set_xscale("logit")
                ax.set_xticks(levels, [f"{100 * s:g}" for s in levels])
                ax.minorticks_off()
            ax.set(xlabel="sparsity (%, logit scale)", ylabel=ERROR_LABEL, title=f"{net}, {init} init")
            ax.grid(alpha=0.3)
    return finish(fig, "E8: test error of each pruning criterion against sparsity (mean ± std over seeds)",
                  legend_title="criterion")


def isometry_figure(runs: pd.DataFrame) -> Any:
    """Mean input-output JSV after pruning against test error, one point per completed run (colour: criterion,
    marker: init); a run with a zero JSV (a collapsed layer) is drawn as a cross a decade left of the others.
    Each panel's title gives Spearman's ρ of C9 (mean ± std over seeds)."""
    runs = with_criteria(usable(runs, diverged=True))
    done = runs[runs.status == "completed"].copy()
    done[ERROR] = _numbers(done, ERROR)
    done[JSV] = _numbers(done, JSV)
    nets = present(runs.network, [])
    fig, axes = panels(1, max(1, len(nets)))
    for col, net in enumerate(nets):
        ax = axes[0, col]
        d = done[done.network == net]
        floor = _floor(d[JSV])
        for crit in present(d.criterion, CRITERIA):
            for init in present(d.init_label, list(INIT_MARKERS)):
                c = d[(d.criterion == crit) & (d.init_label == init)]
                if c.empty:
                    continue
                zero = (c[COLLAPSED] == 1) | ~(c[JSV] > 0) | ~np.isfinite(c[JSV])
                ax.scatter(c[JSV][~zero], c[ERROR][~zero], s=18, alpha=0.8, color=CRITERION_COLOURS.get(crit),
                           marker=INIT_MARKERS.get(init, "^"), label=f"{crit}, {init}")
                if zero.any():
                    ax.scatter(np.full(int(zero.sum()), floor), c[ERROR][zero], s=30, marker="x",
                               color=CRITERION_COLOURS.get(crit), label=f"{crit}: JSV 0 (collapsed), drawn at left")
        ax.set_xscale("log")
        isometry_line_vertical(ax)
        rhos = seed_correlations(runs[runs.network == net])
        rho = (f"ρ = {rhos.mean():+.2f}" + (f" ± {rhos.std(ddof=1):.2f}" if len(rhos) > 1 else "")
               if len(rhos) else "ρ: n/a")
        ax.set(xlabel="mean input-output JSV after pruning (log)", ylabel=ERROR_LABEL, title=f"{net}: {rho}")
        ax.grid(alpha=0.3)
    return finish(fig, "E8: does isometry after pruning predict the test error across criteria? (one point per run)",
                  legend_title="criterion, init")


def isometry_line_vertical(ax: Any) -> None:
    """A dotted vertical line at a mean JSV of 1 (isometry)."""
    ax.axvline(1.0, color="k", ls=":", lw=1, label="isometry (1)")


def prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with the table's columns: criterion, network, init label, collapsed."""
    return with_criteria(runs)


TABLE_METRICS = {**ERRORS, JSV: "JSV mean (pruned)", "jsv_pruned_condition": "JSV condition (pruned)",
                 "effective_sparsity": "effective sparsity", COLLAPSED: "collapsed (fraction of runs)"}

# MLP-7 tanh only, at 90 and 99%, 2 seeds, 500 steps with an evaluation every 100, JSV on 1,000 examples; every
# criterion at its own defaults (SynFlow, iterative SNIP and FORCE keep their 100 rounds: on MLP-7 they take about
# 2 s a run; a prune.rounds setting would also reach SNIP, GraSP and magnitude). 56 runs.
QUICK = ("activation=tanh", "prune.sparsity=0.9,0.99", "seed=0,1", "train.iterations=500", "train.eval_interval=100",
         "train.checkpoint_interval=500", *QUICK_SIGNAL)

MLP = register(Experiment(
    id="e8_criteria",
    title=f"E8: pruning criteria (SNIP, GraSP, SynFlow, magnitude, Iterative SNIP, FORCE, random ERK) on MLP-7, "
          f"{DATASET_LABELS['mnist']}",
    order=8,
    profiles={"quick": list(QUICK), "paper": []},
    figures=(Figure("e8_criteria_error", error_figure), Figure("e8_criteria_isometry", isometry_figure)),
    tables=(Table("e8_criteria", ("network", "init_label", "criterion", "sparsity_target"), TABLE_METRICS, prepare),),
    rules=(lambda e8: c9(e8, "E8 (MLP-7, MNIST)", "MLP-7 tanh and ReLU"),),
    notes={CLAIM: lambda e8: ranking_note(e8, "E8 (MLP-7, MNIST)")},
))

CONV = register(Experiment(
    id="e8_criteria_conv",
    title=f"E8: pruning criteria on LeNet-5, {DATASET_LABELS['fashion_mnist']}",
    order=8.1,
    profiles={"quick": [], "paper": []},
    only=("paper",),
    data=("fashion_mnist",),
    figures=(Figure("e8_criteria_conv_error", error_figure), Figure("e8_criteria_conv_isometry", isometry_figure)),
    tables=(Table("e8_criteria_conv", ("network", "init_label", "criterion", "sparsity_target"), TABLE_METRICS,
                  prepare),),
    rules=(lambda e8: c9(e8, "E8 (LeNet-5, Fashion-MNIST)", "LeNet-5 ReLU"),),
    notes={CLAIM: lambda e8: ranking_note(e8, "E8 (LeNet-5, Fashion-MNIST)")},
))
EXPERIMENTS = {e.id: e for e in (MLP, CONV)}
