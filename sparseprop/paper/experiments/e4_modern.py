"""E4 (claim C8, and C3 and C4 on conv nets): the paper's five methods on convolutional networks.

``e4_conv`` is CPU-sized (Fashion-MNIST, LeNet-5 and ResNet-8) and runs in every profile; ``e4_<net>`` are the
paper's CIFAR-10 VGG-C and ResNet-32/56/110 and Tiny-ImageNet WRN-16 runs, GPU jobs that run only under the
paper profile and only where their data are in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ERROR_LABEL, finish, grouped_bars, isometry_line, panels, present
from sparseprop.paper.experiments.e3_isometry import early_loss
from sparseprop.paper.judge import Verdict, distance_from_one, less
from sparseprop.paper.labels import ARCH_LABELS, E4_METHODS, with_method
from sparseprop.paper.profiles import QUICK_AI
from sparseprop.paper.tables import ERROR, ERRORS, aggregate, usable

VS_METHODS = ("VS-L", "VS-G", "VS-H")
# Input-output JSV mean before training: after AI for LDI-AI, after pruning for the others.
JSV_START = "jsv_pretrain_mean"
# C4 "trains faster" on the conv nets: mean training loss over the first quarter of training. The loss is
# recorded every 100 steps (`train.log_interval`), so the quick profile's 400 steps have one value there.
CONV_EARLY_FRACTION = 0.25
E4_COLOURS = {"VS-L": "tab:blue", "VS-G": "tab:purple", "VS-H": "tab:orange", "LDI": "tab:red", "LDI-AI": "tab:green"}


def _runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with ``method``, ``network`` and ``JSV_START`` columns."""
    runs = with_method(runs)
    if runs.empty:
        return runs.assign(network=pd.Series(dtype=object), **{JSV_START: pd.Series(dtype=float)})
    pruned = pd.to_numeric(runs.get("jsv_pruned_mean", pd.Series(np.nan, index=runs.index)), errors="coerce")
    after_ai = pd.to_numeric(runs.get("jsv_isometry_mean", pd.Series(np.nan, index=runs.index)), errors="coerce")
    runs[JSV_START] = np.where(runs.isometry == "ai", after_ai, pruned)
    return runs


def e4_figure(runs: pd.DataFrame) -> Any:
    """Test error and the input-output JSV mean before training, by network and method (mean ± std over seeds)."""
    runs = _runs(runs)
    agg = aggregate(runs, ["network", "method"], [ERROR, JSV_START])
    nets = present(usable(runs, diverged=True).network, list(ARCH_LABELS.values()))
    methods = present(agg.method, E4_METHODS) if not agg.empty else []
    fig, axes = panels(1, 2)
    grouped_bars(axes[0, 0], agg, "network", "method", ERROR, nets, methods, colours=E4_COLOURS, annotate=True)
    axes[0, 0].set(xlabel="network", ylabel=ERROR_LABEL, title="test error, SNIP at 90%")
    grouped_bars(axes[0, 1], agg, "network", "method", JSV_START, nets, methods, log=True, colours=E4_COLOURS)
    isometry_line(axes[0, 1])
    axes[0, 1].set(xlabel="network", ylabel="mean input-output JSV (log)",
                   title="JSV before training: after pruning (LDI-AI: after AI)")
    return finish(fig, "E4: the paper's five methods on convolutional networks (mean ± std over seeds)",
                  legend_title="method")


def c8(e4: dict[str, Any] | None, name: str = "E4") -> list[Verdict]:
    """C8: LDI and LDI-AI reach lower test errors than the best of the variance-scaling inits, per network."""
    def verdict(net: str) -> Verdict:
        return Verdict("C8", net, f"LDI and LDI-AI improve on SNIP's variance-scaling results for {net}",
                       f"{name}: test error at 90% SNIP sparsity of LDI (orthogonal init) and LDI-AI against the "
                       "best (lowest mean) of VS-L, VS-G and VS-H, over seeds",
                       "LDI's and LDI-AI's test errors each below the best VS init's, beyond the seed spread")

    runs = _runs(usable(e4["runs"])) if e4 else pd.DataFrame()
    if runs.empty:
        return [verdict("convolutional networks").skip(f"{name} has no completed runs")]
    out = []
    for net in present(runs.network, list(ARCH_LABELS.values())):
        r = runs[runs.network == net]
        errors = {m: pd.to_numeric(r[r.method == m][ERROR], errors="coerce").dropna() for m in E4_METHODS}
        vs = {m: e for m, e in errors.items() if m in VS_METHODS and len(e)}
        v = verdict(net)
        if not vs:
            out.append(v.skip(f"{name} has no completed VS-L, VS-G or VS-H run of {net}"))
            continue
        best = min(vs, key=lambda m: float(vs[m].mean()))
        v.checks = [less(f"test error % {m} vs {best} (best VS)", errors[m], vs[best], digits=2) for m in ("LDI", "LDI-AI")]
        out.append(v)
    return out


def _networks(e4: dict[str, Any] | None, diverged: bool) -> tuple[pd.DataFrame, list[str]]:
    """E4's usable runs (with ``method`` and ``network``) and the networks among them, in the paper's order."""
    runs = _runs(usable(e4["runs"], diverged=diverged)) if e4 else pd.DataFrame()
    if runs.empty:
        return runs, []
    return runs, present(runs.network, list(ARCH_LABELS.values()))


def _values(runs: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of ``runs`` as numbers (empty where it was not recorded)."""
    return pd.to_numeric(runs[column], errors="coerce") if column in runs else pd.Series(dtype=float)


def c3_conv(e4: dict[str, Any] | None, name: str = "E4") -> list[Verdict]:
    """C3 on conv nets: SNIP pruning at orthogonal init (LDI) moves the input-output JSV away from 1 and spreads them."""
    def verdict(net: str) -> Verdict:
        return Verdict("C3", f"pruning breaks isometry, {net}", f"after pruning, Jacobian singular values of {net} "
                       "shrink and spread",
                       f"{name}: input-output JSV (logits with respect to the input, BatchNorm with its running "
                       "statistics) after init and after SNIP pruning at 90%, LDI runs (orthogonal init), over seeds",
                       "after SNIP the mean JSV is further from 1 (|log10 mean|) and the condition number larger than "
                       "at init, beyond the seed spread (the rule of the MLP experiment E2)")

    # Spectra are measured before training, so diverged runs count; LDI-AI runs share LDI's init and mask.
    runs, nets = _networks(e4, diverged=True)
    if not nets:
        return [verdict("convolutional networks").skip(f"{name} has no completed runs")]
    out = []
    for net in nets:
        ldi = runs[(runs.network == net) & (runs.method == "LDI")]
        v = verdict(net)
        v.checks = [less("|log10 mean JSV| init vs pruned", distance_from_one(_values(ldi, "jsv_init_mean")),
                         distance_from_one(_values(ldi, "jsv_pruned_mean"))),
                    less("condition number init vs pruned", _values(ldi, "jsv_init_condition"),
                         _values(ldi, "jsv_pruned_condition"), digits=2)]
        out.append(v)
    return out


def c4_conv(e4: dict[str, Any] | None, name: str = "E4") -> list[Verdict]:
    """C4 on conv nets: AI after LDI pruning brings the JSV back towards 1, trains faster and generalises better."""
    def verdict(net: str) -> Verdict:
        return Verdict("C4", net, f"approximate isometry restores signal propagation in a pruned {net}: JSV back "
                       "towards 1, faster training, lower error",
                       f"{name}: LDI (orthogonal + SNIP 90%) against LDI-AI: input-output JSV, mean training loss over "
                       f"the first {100 * CONV_EARLY_FRACTION:.0f}% of training, test error, over seeds",
                       "LDI-AI's mean JSV closer to 1 after AI than after pruning, its early training loss and its test "
                       "error below LDI's, each beyond the seed spread (the rule of the MLP experiment E3)")

    measured, nets = _networks(e4, diverged=True)
    if not nets:
        return [verdict("convolutional networks").skip(f"{name} has no completed runs")]
    out = []
    for net in nets:
        runs = measured[measured.network == net]
        ai_measured = runs[runs.method == "LDI-AI"]
        runs = runs[runs.status == "completed"]
        ldi, ai = runs[runs.method == "LDI"], runs[runs.method == "LDI-AI"]
        early = early_loss(e4["metrics"], runs, CONV_EARLY_FRACTION)
        v = verdict(net)
        v.checks = [
            less("|log10 mean JSV| after AI vs after pruning", distance_from_one(_values(ai_measured, "jsv_isometry_mean")),
                 distance_from_one(_values(ai_measured, "jsv_pruned_mean"))),
            less("early training loss LDI-AI vs LDI", early.reindex(ai.run), early.reindex(ldi.run)),
            less("test error % LDI-AI vs LDI", ai[ERROR], ldi[ERROR], digits=2),
        ]
        out.append(v)
    return out


TABLE_METRICS = {**ERRORS, "jsv_init_mean": "JSV mean (init)", "jsv_pruned_mean": "JSV mean (pruned)",
                 "jsv_isometry_mean": "JSV mean (after AI)", "jsv_init_condition": "JSV condition (init)",
                 "jsv_pruned_condition": "JSV condition (pruned)", "jsv_isometry_condition": "JSV condition (after AI)",
                 "ldi_residual_pruned": "LDI residual (pruned)"}

# CPU-sized: LeNet-5 and ResNet-8 on Fashion-MNIST. The quick profile trains 400 steps of 64, evaluates twice and
# scores SNIP on 50 batches. At batches of 128 and an evaluation every 100 steps the whole quick profile was on
# course for about 36 min on 2 idle cores (stopped at 24.6 min with 16 of e4_conv's 20 runs done; training was
# 170 s of a ResNet-8 run's 205 s, 69 s of a LeNet-5 run's 86 s, one thread each).
QUICK_CONV = ("train.iterations=400", "train.boundaries=[200,300]", "train.eval_interval=200", "train.batch_size=64",
              "train.checkpoint_interval=400", "prune.batches=50", "signal.examples=200")

CONV = register(Experiment(
    id="e4_conv",
    title="E4 (CPU-sized): VS-L/G/H, LDI and LDI-AI at 90% on LeNet-5 and ResNet-8, Fashion-MNIST",
    order=4,
    # ResNet's depth is a command-line setting in every profile: a sweep file may not set a key one of its archs lacks.
    profiles={"quick": ["arch.depth=8", *QUICK_CONV, *QUICK_AI, "seed=0,1"], "paper": ["arch.depth=8"]},
    data=("fashion_mnist",),
    figures=(Figure("e4_conv", e4_figure),),
    tables=(Table("e4_conv", ("network", "method"), TABLE_METRICS),),
    rules=(lambda e4: c3_conv(e4, "E4 (LeNet-5, ResNet-8 on Fashion-MNIST)"),
           lambda e4: c4_conv(e4, "E4 (LeNet-5, ResNet-8 on Fashion-MNIST)"),
           lambda e4: c8(e4, "E4 (LeNet-5, ResNet-8 on Fashion-MNIST)")),
))


def _paper(net: str, dataset: str, order: float) -> Experiment:
    """The paper's E4 run of ``net`` (its conf/experiment/e4_<net>.yaml): a GPU job, paper profile only."""
    label = f"{ARCH_LABELS[net]} on {'CIFAR-10' if dataset == 'cifar10' else 'Tiny-ImageNet'}"
    return register(Experiment(
        id=f"e4_{net}",
        title=f"E4: VS-L/G/H, LDI and LDI-AI at 90% on {label} (GPU)",
        order=order,
        profiles={"quick": [], "paper": []},
        only=("paper",),
        data=(dataset,),
        figures=(Figure(f"e4_{net}", e4_figure),),
        tables=(Table(f"e4_{net}", ("network", "method"), TABLE_METRICS),),
        rules=(lambda e4: c3_conv(e4, f"E4 ({label})"), lambda e4: c4_conv(e4, f"E4 ({label})"),
               lambda e4: c8(e4, f"E4 ({label})")),
    ))


PAPER_NETS = (("vgg_c", "cifar10"), ("resnet32", "cifar10"), ("resnet56", "cifar10"), ("resnet110", "cifar10"),
              ("wrn16", "tiny_imagenet"))
# Every E4 experiment by id: the CPU-sized one and the paper's (GPU) ones.
EXPERIMENTS = {CONV.id: CONV, **{f"e4_{net}": _paper(net, ds, 4.1 + 0.1 * i) for i, (net, ds) in enumerate(PAPER_NETS)}}
