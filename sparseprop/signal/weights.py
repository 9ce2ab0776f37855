"""Data-free measurements of the masked weight matrices C^l⊙W^l: their spectra and isometry residuals."""

from __future__ import annotations

import torch
from torch import nn

from sparseprop.models.base import weight_parameters


def weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, weight) of every weight layer of the model contract, in order; the weight is not reshaped."""
    return weight_parameters(model)


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The torch weight as an (out, in·k·k) matrix."""
    return weight.reshape(weight.shape[0], -1)


def weight_singular_values(model: nn.Module) -> list[torch.Tensor]:
    """Singular values (descending, float64) of every layer's masked weight C^l⊙W^l, in order.

    A layer whose weights are not all finite gets NaNs (counted as non-finite by ``spectrum_stats``)
    instead of an error from the SVD.
    """
    # Pruned entries are already exactly zero in the model, so the current weight is C^l⊙W^l.
    out = []
    for _, w in weight_matrices(model):
        m = as_matrix(w.detach()).double()
        if torch.isfinite(m).all():
            out.append(torch.linalg.svdvals(m))
        else:
            out.append(torch.full((min(m.shape),), float("nan"), dtype=torch.float64))
    return out


def isometry_residual(model: nn.Module) -> list[float]:
    """‖M Mᵀ − I‖_F of every layer's masked weight M = C^l⊙W^l reshaped to (out, in·k·k), in order."""
    # PAPER.md writes WᵀW for TensorFlow's (in, out) weights; torch stores (out, in), so the same
    # (out × out) matrix is M Mᵀ here.
    out = []
    for _, w in weight_matrices(model):
        m = as_matrix(w.detach()).double()
        gram = m @ m.T
        gram.diagonal().sub_(1.0)
        out.append(float(torch.linalg.matrix_norm(gram)))
    return out
