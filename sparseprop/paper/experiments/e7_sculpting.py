"""E7 (claim C7): architecture sculpting: a bulky network pruned at initialisation to the parameter count of a
hand-designed dense one, both trained with the same protocol, compared at equal parameter count.

Each sweep holds the pair: the same ``prune.keep`` (the reference's count of prunable parameters) prunes the
bulky network and leaves the reference dense. A run is the reference when it kept all its prunable parameters
and sculpted when it kept fewer. ``e7_sculpting`` (a wide MLP-7 on MNIST) and ``e7_sculpting_conv`` (a wide
LeNet-5 on Fashion-MNIST) run in every profile; ``e7_sculpting_cifar`` (VGG-C against ResNet-32 on CIFAR-10) is
a GPU job of the paper profile, skipped without its data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from sparseprop.paper.experiment import Experiment, Figure, Table, register
from sparseprop.paper.figkit import ERROR_LABEL, finish, panels
from sparseprop.paper.judge import FAILS, HOLDS, Check, Verdict, less
from sparseprop.paper.labels import ARCH_LABELS, DATASET_LABELS
from sparseprop.paper.profiles import QUICK_TRAIN
from sparseprop.paper.tables import ERROR, ERRORS, usable

REFERENCE, SCULPTED = "reference (dense)", "sculpted (pruned bulky)"
ROLE_COLOURS = {REFERENCE: "tab:blue", SCULPTED: "tab:red", "bulky (before pruning)": "tab:grey"}
PARAMS = "kept_parameters"
EFFECTIVE = "effective_params"


def network_name(arch: Any, width: Any = None, widen: Any = None, depth: Any = None) -> str:
    """A run's network: "MLP-7-400", "LeNet-5 x2", "VGG-C" (its size is part of its name)."""
    if arch == "mlp":
        return f"MLP-{int(float(depth))}-{int(float(width))}"
    label = ARCH_LABELS.get(arch, str(arch))
    if widen is not None and not pd.isna(widen) and int(float(widen)) != 1:
        label += f" x{int(float(widen))}"
    return label


def with_roles(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``role`` (reference: every prunable parameter kept; sculpted: fewer) and ``network`` columns."""
    runs = runs.copy()
    if runs.empty:
        return runs.assign(role=pd.Series(dtype=object), network=pd.Series(dtype=object))
    kept = pd.to_numeric(runs[PARAMS], errors="coerce")
    total = pd.to_numeric(runs["prunable_parameters"], errors="coerce")
    runs["role"] = np.where(kept >= total, REFERENCE, SCULPTED)

    def column(name: str) -> pd.Series:
        return runs[name] if name in runs else pd.Series(None, index=runs.index, dtype=object)

    runs["network"] = [network_name(a, w, k, d) for a, w, k, d in
                       zip(runs["arch"], column("width"), column("arch.widen"), column("depth"))]
    return runs


def _widths(runs: pd.DataFrame, layers: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per series (bulky, sculpted, reference): widths of the weight layers' outputs, as (mean, min, max) over runs."""
    if layers.empty or "effective_units" not in layers:
        return {}
    weights = layers[layers.kind == "weight"].merge(runs[["run", "role"]], on="run")
    sort = "index" if "index" in weights else "name"
    out = {}
    for name, role, column in (("bulky (before pruning)", SCULPTED, "units"), (SCULPTED, SCULPTED, "effective_units"),
                               (REFERENCE, REFERENCE, "units")):
        per_run = [g.sort_values(sort)[column].to_numpy(dtype=float) for _, g in weights[weights.role == role].groupby("run")]
        if per_run and len({len(w) for w in per_run}) == 1:
            stack = np.stack(per_run)
            out[name] = (stack.mean(0), stack.min(0), stack.max(0))
    return out


def e7_figure(runs: pd.DataFrame, layers: pd.DataFrame) -> Any:
    """Widths per layer (bulky, sculpted, reference) and test error against parameter count (mean ± std over seeds)."""
    runs = with_roles(usable(runs, diverged=True))
    fig, axes = panels(1, 2)
    ax = axes[0, 0]
    for name, (mean, lo, hi) in _widths(runs, layers).items():
        xs = np.arange(1, len(mean) + 1)
        ax.plot(xs, mean, marker="o", ms=4, color=ROLE_COLOURS[name], ls="--" if name.startswith("bulky") else "-",
                label=name)
        if (hi > lo).any():
            ax.fill_between(xs, lo, hi, color=ROLE_COLOURS[name], alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set(xlabel="weight layer", ylabel="width (units or channels; log)",
           title="widths: sculpted = units on an input-output path")
    ax.grid(alpha=0.3)
    ax = axes[0, 1]
    done = runs[runs.status == "completed"]
    for role in (REFERENCE, SCULPTED):
        r = done[done.role == role]
        if r.empty:
            continue
        err = pd.to_numeric(r[ERROR], errors="coerce")
        std = float(err.std(ddof=1)) if len(err) > 1 else 0.0
        kept = float(pd.to_numeric(r[PARAMS], errors="coerce").mean())
        ax.errorbar([kept], [err.mean()], yerr=[std], fmt="o", capsize=3, color=ROLE_COLOURS[role],
                    label=f"{role}: {r.network.iloc[0]}")
        if role == SCULPTED and EFFECTIVE in r:
            eff = float(pd.to_numeric(r[EFFECTIVE], errors="coerce").mean())
            ax.errorbar([eff], [err.mean()], yerr=[std], fmt="o", mfc="none", capsize=3, color=ROLE_COLOURS[role],
                        label="sculpted, at its effective connections")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.margins(x=0.3)
    ax.set(xlabel="parameters kept", ylabel=ERROR_LABEL, title="test error against parameters")
    ax.grid(alpha=0.3)
    return finish(fig, "E7: architecture sculpting (mean over seeds; bands: min to max; bars: ± std)")


def c7(e7: dict[str, Any] | None, name: str) -> list[Verdict]:
    """C7: the bulky network pruned to the reference's parameter count reaches a lower test error than the reference."""
    v = Verdict("C7", name, "pruning a bulky network to a parameter budget beats a hand-designed dense network of that budget",
                f"{name}: test error of the sculpted network (the bulky one pruned at initialisation with LDI to the "
                "reference's parameter count) against the dense reference's, trained with the same protocol, over seeds",
                "the sculpted network keeps exactly the reference's parameter count, and its test error is below "
                "the reference's beyond the seed spread (mean ± std intervals apart); above beyond it: does not hold")
    runs = with_roles(usable(e7["runs"])) if e7 else pd.DataFrame()
    if runs.empty:
        return [v.skip(f"{name} has no completed runs")]
    ref, sculpted = runs[runs.role == REFERENCE], runs[runs.role == SCULPTED]
    if ref.empty or sculpted.empty:
        return [v.skip(f"{name} has no completed {'reference' if ref.empty else 'sculpted'} run")]
    budget = set(pd.to_numeric(ref["prunable_parameters"]).astype(int))
    kept = set(pd.to_numeric(sculpted[PARAMS]).astype(int))
    same = len(budget) == 1 and kept == budget
    v.checks = [Check("parameters: sculpted kept vs reference", f"{', '.join(f'{k:,}' for k in sorted(kept))} vs "
                      f"{', '.join(f'{b:,}' for b in sorted(budget))}", HOLDS if same else FAILS,
                      "" if same else "the sculpted network does not keep the reference's parameter count"),
                less(f"test error % {sculpted.network.iloc[0]} sculpted vs {ref.network.iloc[0]}",
                     sculpted[ERROR], ref[ERROR], digits=2)]
    return [v]


def architecture_note(e7: dict[str, Any] | None, name: str) -> str:
    """The sculpted architecture in words: effective widths per layer and effective connections, against the reference."""
    if not e7:
        return ""
    runs = with_roles(usable(e7["runs"], diverged=True))
    widths = _widths(runs, e7.get("layers", pd.DataFrame()))
    if runs.empty or not widths:
        return ""

    def row(label: str, values: np.ndarray) -> str:
        return f"{label}: " + ", ".join(f"{v:,.0f}" for v in values)

    lines = [f"**{name}**: widths of the weight layers' outputs (mean over seeds)", ""]
    for series, (mean, _, _) in widths.items():
        lines.append(f"- {row(series, mean)}")
    sculpted = runs[runs.role == SCULPTED]
    if not sculpted.empty and EFFECTIVE in sculpted:
        eff = pd.to_numeric(sculpted[EFFECTIVE], errors="coerce")
        kept = pd.to_numeric(sculpted["kept_weights"] if "kept_weights" in sculpted else sculpted[PARAMS], errors="coerce")
        lines.append(f"- sculpted: {eff.mean():,.0f} of its {kept.mean():,.0f} kept weights can carry signal from the "
                     f"input to the output (effective connections, mean over {len(eff)} runs)")
    return "\n".join(lines) + "\n"


TABLE_METRICS = {**ERRORS, "prunable_parameters": "prunable parameters", PARAMS: "kept parameters",
                 EFFECTIVE: "effective connections", "sparsity": "sparsity"}

# The conv pair shortened as E4's quick profile does (400 steps, SNIP on 50 batches), with 3 evaluations.
QUICK_CONV = ("train.iterations=400", "train.boundaries=[200,300]", "train.eval_interval=200",
              "train.checkpoint_interval=400", "prune.batches=50", "seed=0,1")


def _experiment(id: str, name: str, order: float, profiles: dict[str, list[str]], data: tuple[str, ...],
                by: tuple[str, ...], only: tuple[str, ...] = ()) -> Experiment:
    return register(Experiment(
        id=id,
        title=f"E7: architecture sculpting, {name}",
        order=order,
        profiles=profiles,
        data=data,
        only=only,
        figures=(Figure(id, e7_figure, ("runs", "layers")),),
        tables=(Table(id, by, TABLE_METRICS),),
        rules=(lambda e7: c7(e7, f"E7 ({name})"),),
        notes={"C7": lambda e7: architecture_note(e7, f"E7 ({name})")},
    ))


MLP = _experiment("e7_sculpting", f"MLP-7-400 pruned to MLP-7-100's count, {DATASET_LABELS['mnist']}", 7,
                  {"quick": [*QUICK_TRAIN, "prune.batches=100", "seed=0,1"], "paper": []}, ("mnist",),
                  ("arch", "width"))
CONV = _experiment("e7_sculpting_conv", f"LeNet-5 x2 pruned to LeNet-5's count, {DATASET_LABELS['fashion_mnist']}",
                   7.1, {"quick": list(QUICK_CONV), "paper": []}, ("fashion_mnist",), ("arch", "arch.widen"))
CIFAR = _experiment("e7_sculpting_cifar", "VGG-C pruned to ResNet-32's count, CIFAR-10", 7.2,
                    {"quick": [], "paper": []}, ("cifar10",), ("arch",), only=("paper",))
EXPERIMENTS = {e.id: e for e in (MLP, CONV, CIFAR)}
