"""Figures, one function each, drawn only from records on disk (matplotlib, PNG and PDF)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def save(fig: "plt.Figure", path_stem: str | Path) -> list[Path]:
    """Save ``fig`` as PNG and PDF (each atomically) and close it; returns the two paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        target = stem.with_suffix(f".{ext}")
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".{ext}", dir=target.parent)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=150 if ext == "png" else None, bbox_inches="tight", format=ext)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        out.append(target)
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


def run_figures(run_dir: str | Path) -> list[Path]:
    """Draw the figures of one run directory from its records; returns the written paths."""
    run_dir = Path(run_dir)
    written: list[Path] = []
    metrics_path, layers_path = run_dir / "metrics.csv", run_dir / "layers.csv"
    if metrics_path.is_file():
        metrics = pd.read_csv(metrics_path)
        if len(metrics):
            written += save(training_curves(metrics), run_dir / "training_curves")
    if layers_path.is_file():
        layers = pd.read_csv(layers_path)
        if len(layers):
            written += save(layer_kept(layers), run_dir / "layer_kept")
    return written
