"""Figures, one function each, drawn only from records on disk (matplotlib, PNG and PDF)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sparseprop import records  # noqa: E402


def save(fig: "plt.Figure", path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as PNG and PDF (each atomically) and close it; returns the two paths."""
    stem = Path(path_stem)
    out = []
    try:
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise records.os_error(stem.parent, exc) from None
        for ext in ("png", "pdf"):
            target = stem.with_suffix(f".{ext}")
            # records' temporary names: the umask's permissions, and removed by records.remove_temporaries.
            tmp = records.create_temporary(target)
            try:
                fig.savefig(tmp, dpi=150 if ext == "png" else None, bbox_inches="tight", format=ext)
                os.replace(tmp, target)
            except OSError as exc:
                raise records.os_error(target, exc) from None
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            out.append(target)
    finally:
        plt.close(fig)
    return out


def training_curves(metrics: pd.DataFrame, title: str = "") -> "plt.Figure":
    """Training loss and validation / test error against step."""
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    loss = metrics[(metrics.split == "train") & (metrics.name == "loss")]
    ax_loss.plot(loss.step, loss.value, label="train (mean over log interval)")
    for split in ("val", "test"):
        ev = metrics[(metrics.split == split) & (metrics.name == "loss")]
        if len(ev):
            ax_loss.plot(ev.step, ev.value, marker="o", ms=3, label=split)
        err = metrics[(metrics.split == split) & (metrics.name == "error_pct")]
        if len(err):
            ax_err.plot(err.step, err.value, marker="o", ms=3, label=split)
    ax_loss.set(xlabel="iteration", ylabel="cross-entropy loss", title="loss")
    ax_err.set(xlabel="iteration", ylabel="error (%)", title="error")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def layer_kept(layers: pd.DataFrame, title: str = "") -> "plt.Figure":
    """Kept fraction of every prunable tensor (weights as bars, biases as markers)."""
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(layers)), 3.8))
    w = layers[layers.kind == "weight"].reset_index(drop=True)
    ax.bar(range(len(w)), 100 * w.kept_fraction, color="tab:blue", label="weights")
    b = layers[layers.kind == "bias"].reset_index(drop=True)
    if len(b) == len(w) and len(b):
        ax.plot(range(len(b)), 100 * b.kept_fraction, "o", color="tab:orange", label="biases")
    ax.set_xticks(range(len(w)), [f"{i + 1}\n{s}" for i, s in enumerate(w["shape"])], fontsize=7)
    ax.set(xlabel="layer (weight shape out x in)", ylabel="kept (%)", ylim=(0, 105),
           title=title or "kept fraction per layer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


STAGE_ORDER = ("init", "pruned", "isometry", "final")
STAGE_COLOURS = {"init": "tab:blue", "pruned": "tab:red", "isometry": "tab:green", "final": "tab:purple"}


def jsv_histogram(spectra: dict[str, "np.ndarray"], title: str = "") -> "plt.Figure":
    """Histograms of the pooled input–output Jacobian singular values, one per stage, on a log axis."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4))
    stages = [st for st in STAGE_ORDER if f"{st}/io" in spectra]
    values = {st: spectra[f"{st}/io"].ravel() for st in stages}
    values = {st: v[np.isfinite(v) & (v > 0)] for st, v in values.items()}
    pooled = np.concatenate([v for v in values.values() if len(v)]) if values else np.array([1.0])
    lo, hi = np.log10(max(pooled.min(), 1e-12)), np.log10(pooled.max())
    bins = np.logspace(lo - 0.05, hi + 0.05, 60)
    for st, v in values.items():
        if not len(v):
            # A collapsed network (a layer pruned away) has no positive singular value to draw: say so.
            ax.plot([], [], color=STAGE_COLOURS[st], lw=1.6, label=f"{st} (no positive singular value)")
            continue
        ax.hist(v, bins=bins, histtype="step", lw=1.6, color=STAGE_COLOURS[st], density=False,
                label=f"{st} (mean {v.mean():.3g})")
    ax.axvline(1.0, color="k", ls=":", lw=1, label="isometry (1)")
    ax.set(xscale="log", xlabel="input-output Jacobian singular value", ylabel="count (all examples pooled)",
           title=title or "Jacobian singular values by stage")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def layer_jsv(signal: pd.DataFrame, title: str = "") -> "plt.Figure":
    """Mean singular value per layer by stage: layerwise Jacobians (left) and masked weights (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=False)
    for ax, scope, label in ((axes[0], "layer", "layerwise Jacobian J^l"), (axes[1], "weights", "masked weights C^l*W^l")):
        rows = signal[(signal.scope == scope) & (signal.stage != "train")]
        for st in STAGE_ORDER:
            r = rows[rows.stage == st].sort_values("layer")
            if len(r):
                ax.errorbar(r.layer + 1, r["mean"], yerr=r["std"], marker="o", ms=4, capsize=3,
                            color=STAGE_COLOURS[st], label=st)
        ax.axhline(1.0, color="k", ls=":", lw=1)
        ax.set(xlabel="layer", ylabel="mean singular value (± std)", title=label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# The per-layer spectra in spectra.npz, by scope, with what each panel shows.
SPECTRUM_SCOPES = {"weights": "reshaped kernel C^l*W^l (out x in*k*k)",
                   "operator": "layer operator (circular padding)",
                   "layer": "layerwise Jacobian J^l (examples pooled)"}
_LAYER_SPECTRUM = re.compile(r"^([a-z]+)/(" + "|".join(SPECTRUM_SCOPES) + r")(\d+)$")
# Values below this fraction of the figure's largest are numerically zero: they share the bottom row.
ZERO_FRACTION = 1e-7
MIN_SHARE = 1e-4  # the colour scale's floor: rarer cells are drawn in its colour, empty ones left blank


def layer_spectra(spectra: dict[str, "np.ndarray"], bins: int = 48, title: str = "") -> "plt.Figure":
    """Heat strips of every layer's singular values: one panel per stage (rows) and scope (columns).

    In a panel each layer is a column, each row a bin of log singular value (the bottom row holds the
    zeros), and the colour is the share of that layer's values in the bin: readable for 110 layers,
    where one line per layer would not be.
    """
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    found: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    # Each value's weight: 1, except for estimated layerwise spectra (Ritz values with their quadrature
    # weights in <stage>/layer<l>_weights, each example's summing to one).
    weight_of: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    for key, values in spectra.items():
        match = _LAYER_SPECTRUM.match(key)
        if match and match[1] in STAGE_ORDER:
            v = np.asarray(values, dtype=np.float64).ravel()
            w = spectra.get(f"{key}_weights")
            w = np.ones_like(v) if w is None else np.asarray(w, dtype=np.float64).ravel()
            keep = np.isfinite(v) & np.isfinite(w)
            found.setdefault((match[1], match[2]), {})[int(match[3])] = v[keep]
            weight_of.setdefault((match[1], match[2]), {})[int(match[3])] = w[keep]
    stages = [st for st in STAGE_ORDER if any(st == k[0] for k in found)]
    scopes = [sc for sc in SPECTRUM_SCOPES if any(sc == k[1] for k in found)]
    if not found:
        raise ValueError("no per-layer spectra (<stage>/weights<l>, operator<l> or layer<l>)")
    pooled = np.concatenate([v for layers in found.values() for v in layers.values()] + [np.zeros(1)])
    high = pooled.max() if pooled.max() > 0 else 1.0
    positive = pooled[pooled > high * ZERO_FRACTION]
    low = positive.min() if len(positive) else high
    lo, hi = np.log10(low), np.log10(high)
    if hi - lo < 1e-3:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    width = edges[1] - edges[0]
    y_edges = np.concatenate([[lo - 1.5 * width], edges])  # the zero row, 1.5 bins tall, below the rest
    n_layers = max(max(layers) + 1 for layers in found.values())
    fig, axes = plt.subplots(len(stages), len(scopes), squeeze=False, sharex=True, sharey=True,
                             figsize=(max(3.6, 1.6 + 0.05 * n_layers) * len(scopes) + 1, 2.3 * len(stages) + 0.6))
    norm = LogNorm(vmin=MIN_SHARE, vmax=1.0)
    mesh = None
    for i, st in enumerate(stages):
        for j, sc in enumerate(scopes):
            ax = axes[i, j]
            share = np.zeros((bins + 1, n_layers))
            for layer, v in found.get((st, sc), {}).items():
                if not len(v):
                    continue
                w = weight_of[(st, sc)][layer]
                total = w.sum() if w.sum() > 0 else 1.0
                zero = v <= high * ZERO_FRACTION
                share[0, layer] = w[zero].sum() / total
                logs = np.clip(np.log10(v[~zero]), lo, hi)
                share[1:, layer] = np.histogram(logs, bins=edges, weights=w[~zero])[0] / total
            mesh = ax.pcolormesh(np.arange(n_layers + 1) + 0.5, y_edges, np.ma.masked_equal(share, 0.0),
                                 norm=norm, cmap="viridis", shading="flat")
            ax.axhline(0.0, color="tab:red", ls=":", lw=1)  # singular value 1: isometry
            ax.set_facecolor("white")
            if i == 0:
                ax.set_title(SPECTRUM_SCOPES[sc], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{st}\nsingular value")
            if i == len(stages) - 1:
                ax.set_xlabel("layer")
    axes[0, 0].xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
    axes[0, 0].yaxis.set_major_formatter(FuncFormatter(
        lambda y, _: "0" if y < lo - 0.5 * width else f"1e{y:g}" if float(y).is_integer() else f"{10 ** y:.2g}"))
    decades = list(range(int(np.ceil(lo)), int(np.floor(hi)) + 1))
    # A spectrum within a decade or two gets ticks between the powers of ten as well.
    axes[0, 0].set_yticks([lo - width] + (decades if len(decades) >= 2 else list(np.linspace(lo, hi, 5)[1:])))
    fig.colorbar(mesh, ax=axes, label="share of the layer's singular values", shrink=0.9)
    fig.suptitle(title or "singular values per layer by stage (bottom row: zero)")
    return fig


def jsv_training(signal: pd.DataFrame, title: str = "") -> "plt.Figure":
    """Input–output singular values (mean ± std, min and max) against training step."""
    r = signal[(signal.scope == "network") & (signal.stage == "train")].sort_values("step")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(r.step, r["mean"], marker="o", ms=3, label="mean")
    ax.fill_between(r.step, r["mean"] - r["std"], r["mean"] + r["std"], alpha=0.25, label="± std")
    ax.plot(r.step, r["min"], ls="--", lw=1, label="min")
    ax.plot(r.step, r["max"], ls="--", lw=1, label="max")
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set(yscale="log", xlabel="iteration", ylabel="input-output Jacobian singular value",
           title=title or "Jacobian singular values during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def isometry_curve(curve: pd.DataFrame, title: str = "") -> "plt.Figure":
    """The approximate-isometry objective (summed over layers) against step."""
    if "layer" in curve.columns:  # isometry.csv also holds each layer's objective before and after
        curve = curve[curve.layer == "total"]
    operator = "level" in curve.columns and (curve.level == "operator").any()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(curve.step, curve.objective)
    ax.set(xlabel="isometry step", yscale="log", title=title or "approximate isometry",
           ylabel="sum over layers of ||AA^T - I||_F / sqrt(positions)" if operator
           else "sum over layers of ||(CW)^T(CW) - I||_F")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def run_figures(run_dir: str | Path) -> list[Path]:
    """Draw the figures of one run directory from its records; returns the written paths.

    A record that does not parse raises ``records.DamagedRecord`` naming it.
    """
    run_dir = Path(run_dir)
    written: list[Path] = []
    metrics_path, layers_path = run_dir / records.METRICS, run_dir / records.LAYERS
    if metrics_path.is_file():
        metrics = records.read_csv(metrics_path)
        if len(metrics):
            written += _drawn(metrics_path, training_curves, metrics, run_dir / "training_curves")
    if layers_path.is_file():
        layers = records.read_csv(layers_path)
        if len(layers):
            written += _drawn(layers_path, layer_kept, layers, run_dir / "layer_kept")
    if (run_dir / records.SPECTRA).is_file():
        spectra = records.read_npz(run_dir / records.SPECTRA)
        if any(k.endswith("/io") for k in spectra):
            written += _drawn(run_dir / records.SPECTRA, jsv_histogram, spectra, run_dir / "jsv_histogram")
        if any(_LAYER_SPECTRUM.match(k) and k.split("/")[0] in STAGE_ORDER for k in spectra):
            written += _drawn(run_dir / records.SPECTRA, layer_spectra, spectra, run_dir / "layer_spectra")
    signal_path = run_dir / records.SIGNAL
    if signal_path.is_file():
        signal = records.read_csv(signal_path)
        if len(signal) and "stage" in signal.columns and "scope" in signal.columns:
            if len(signal[signal.stage != "train"]):
                written += _drawn(signal_path, layer_jsv, signal, run_dir / "layer_jsv")
            if len(signal[(signal.stage == "train") & (signal.scope == "network")]):
                written += _drawn(signal_path, jsv_training, signal, run_dir / "jsv_training")
        elif len(signal):
            raise records.DamagedRecord(signal_path, ValueError("no stage and scope columns"))
    isometry_path = run_dir / records.ISOMETRY
    if isometry_path.is_file():
        curve = records.read_csv(isometry_path)
        if len(curve):
            written += _drawn(isometry_path, isometry_curve, curve, run_dir / "isometry_curve")
    return written


def _drawn(source: Path, draw: Any, table: Any, stem: Path) -> list[Path]:
    """Draw and save one figure; a table that parsed but lacks what the figure needs is a damaged ``source``."""
    try:
        fig = draw(table)
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        plt.close("all")
        raise records.DamagedRecord(source, exc) from None
    return save(fig, stem)


def main(args: list[str]) -> None:
    """`sparseprop plot RUN_DIR...`: draw each run's own figures from its records (e.g. runs made with figures=false)."""
    import sys

    from sparseprop.args import ArgumentParser
    from sparseprop.errors import SparsepropError

    parser = ArgumentParser(prog="sparseprop plot", description=main.__doc__.split(": ", 1)[1])
    parser.add_argument("runs", nargs="+", help="run directories (each holding the records of one run)")
    opts = parser.parse_args(args)
    # Check every directory before drawing any: a typo fails at once, not after minutes of plotting.
    for run in opts.runs:
        if not (Path(run) / records.SUMMARY).is_file() and not (Path(run) / records.METRICS).is_file():
            raise SparsepropError(f"RUN_DIR={run} is not valid: it holds no run records (summary.json or metrics.csv)")
    failed = 0
    for run in opts.runs:
        try:
            written = run_figures(run)
        except SparsepropError as exc:  # a damaged or unwritable run costs its own figures only
            print(f"sparseprop: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{run}: {len(written)} files" + (f" ({', '.join(sorted({p.stem for p in written}))})" if written else ""))
    if failed:
        raise SparsepropError(f"{failed} of {len(opts.runs)} runs could not be drawn (above)")
