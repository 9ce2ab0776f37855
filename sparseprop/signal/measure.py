"""Signal-propagation measurements of a run at a stage: Jacobian spectra as signal.csv rows and raw arrays."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sparseprop.errors import SparsepropError
from sparseprop.models.base import measuring
from sparseprop.signal.jacobians import (auto_io_examples, auto_layer_examples, has_layer_path, io_singular_values,
                                         layer_singular_values)
from sparseprop.signal.layer_operator import estimated_stats, layer_spectra
from sparseprop.signal.operator import has_convolutions, operator_singular_values
from sparseprop.signal.spectra import spectrum_stats
from sparseprop.signal.weights import isometry_residual, weight_matrices, weight_singular_values

SIGNAL_COLUMNS = ["stage", "step", "scope", "layer", "name", "examples", "count", "nonfinite", "mean", "std", "min",
                  "max", "condition", "q05", "q25", "q50", "q75", "q95", "median_example_condition", "residual"]
HEADLINE = ("mean", "std", "min", "max", "condition", "median_example_condition")


def io_examples(wanted: Any, model: torch.nn.Module) -> Any:
    """``signal.examples`` for ``model``: ``auto`` resolved (all where the model has a fast path), else as given."""
    return auto_io_examples(model) if wanted == "auto" else wanted


def layer_examples(wanted: Any, model: torch.nn.Module) -> Any:
    """``signal.layer_examples`` for ``model``: ``auto`` resolved (``auto_layer_examples``), else as given."""
    return auto_layer_examples(model) if wanted == "auto" else wanted


def choose_examples(n_total: int, wanted: Any, seed: int = 0) -> torch.Tensor:
    """Indices of the examples to measure on: all (in order), or the first ``wanted`` of a fixed shuffle."""
    if wanted == "all" or int(wanted) >= n_total:
        return torch.arange(n_total)
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[: int(wanted)]


@dataclass
class Measurement:
    """What one stage's measurement produced."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _row(stage: str, step: int, scope: str, layer: int, name: str, examples: int, stats: dict[str, float],
         residual: float = float("nan")) -> dict[str, Any]:
    row = {"stage": stage, "step": step, "scope": scope, "layer": layer, "name": name, "examples": examples}
    row.update({k: stats.get(k, float("nan")) for k in SIGNAL_COLUMNS[6:-1]})
    row["residual"] = residual
    return row


def measure(model: torch.nn.Module, x_io: torch.Tensor | None, x_layer: torch.Tensor | None, stage: str,
            step: int = 0, keep_raw: bool = True, operators: bool = True) -> Measurement:
    """Input–output JSV on ``x_io``, layerwise JSV on ``x_layer`` (either may be None) and data-free weight spectra.

    A network with convolutions also gets, if ``operators``, each weight layer's operator spectrum
    (``scope=operator``: the circular-padding convolution on the layer's input grid, a dense layer's matrix).

    Measurements an architecture does not support yet are skipped with a warning in the result,
    never an exception: a run must not die because one statistic is unavailable.
    """
    out = Measurement()
    names = [name for name, _ in weight_matrices(model)]

    def stats_of(sv: torch.Tensor, what: str) -> dict[str, float]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = spectrum_stats(sv)
        out.warnings += [f"{stage} step {step} {what}: {w.message}" for w in caught]
        return stats

    def record(scope: str, layer: int, name: str, examples: int, sv: torch.Tensor, what: str, key: str,
               residual: float = float("nan")) -> None:
        out.rows.append(_row(stage, step, scope, layer, name, examples, stats_of(sv, what), residual))
        if keep_raw:
            out.raw[f"{stage}/{key}"] = sv.float().cpu().numpy()

    def failed(what: str, exc: Exception) -> None:
        if isinstance(exc, SparsepropError):
            out.warnings.append(f"{what} skipped: {exc}")
        else:
            out.warnings.append(f"{stage} step {step} {what} not finite: {str(exc).splitlines()[0]}")

    with measuring(model):
        if x_io is not None:
            try:
                sv = io_singular_values(model, x_io)
                record("network", -1, "input_output", int(sv.shape[0]), sv, "input-output JSV", "io")
            except (SparsepropError, torch.linalg.LinAlgError) as exc:
                failed("input-output JSV", exc)
                if isinstance(exc, torch.linalg.LinAlgError):
                    out.rows.append(_row(stage, step, "network", -1, "input_output", int(x_io.shape[0]), _nan_stats()))
        if x_layer is not None:
            try:
                if has_layer_path(model):
                    for layer, sv in enumerate(layer_singular_values(model, x_layer)):
                        record("layer", layer, names[layer], int(sv.shape[0]), sv, f"layer {layer} JSV", f"layer{layer}")
                else:
                    # Any other network: Lanczos estimates of each J^l applied as an operator (layer_operator).
                    for layer, (_, _, est) in enumerate(layer_spectra(model, x_layer)):
                        stats = estimated_stats(est)
                        if stats["nonfinite"]:
                            out.warnings.append(f"{stage} step {step} layer {layer} JSV: {stats['nonfinite']:.0f} of "
                                                f"{stats['count'] + stats['nonfinite']:.0f} singular values are not finite")
                        out.rows.append(_row(stage, step, "layer", layer, names[layer], int(est.values.shape[0]), stats))
                        if keep_raw:
                            out.raw.update({f"{stage}/layer{layer}": est.values.float().cpu().numpy(),
                                            f"{stage}/layer{layer}_weights": est.weights.float().cpu().numpy(),
                                            f"{stage}/layer{layer}_bounds": est.bounds.float().cpu().numpy()})
            except (SparsepropError, torch.linalg.LinAlgError) as exc:
                failed("layerwise JSV", exc)
        residuals = isometry_residual(model)
        for layer, (sv, res) in enumerate(zip(weight_singular_values(model), residuals)):
            record("weights", layer, names[layer], 0, sv, f"layer {layer} weights", f"weights{layer}", res)
        if operators and has_convolutions(model):
            in_shape = getattr(model, "in_shape", None) or next((tuple(x.shape[1:]) for x in (x_io, x_layer)
                                                                 if x is not None), None)
            if in_shape is None:
                out.warnings.append("operator spectra skipped: the network states no input shape and no examples were given")
            else:
                for layer, (grid, sv) in enumerate(operator_singular_values(model, in_shape)):
                    if isinstance(sv, SparsepropError):
                        failed(f"layer {layer} ({names[layer]}) operator spectrum", sv)
                        continue
                    record("operator", layer, names[layer], 0, sv, f"layer {layer} operator", f"operator{layer}")
                    if keep_raw and grid is not None:
                        # The grid each convolution was taken on, so its spectrum can be recomputed independently.
                        out.raw[f"grids/operator{layer}"] = np.array(grid, dtype=np.int64)
    return out


def _nan_stats() -> dict[str, float]:
    return {k: float("nan") for k in SIGNAL_COLUMNS[6:-1]}


def headline(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Summary scalars per stage: ``jsv_<stage>_<stat>`` of the input–output spectrum and ``ldi_residual_<stage>``."""
    out: dict[str, float] = {}
    for row in rows:
        if row["stage"] == "train":
            continue
        if row["scope"] == "network":
            out.update({f"jsv_{row['stage']}_{k}": row[k] for k in HEADLINE})
    for stage in dict.fromkeys(r["stage"] for r in rows if r["scope"] == "weights" and r["stage"] != "train"):
        out[f"ldi_residual_{stage}"] = float(sum(r["residual"] for r in rows if r["scope"] == "weights" and r["stage"] == stage))
    return out
