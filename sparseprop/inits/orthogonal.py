"""Orthogonal init of dense layers: Haar-distributed orthonormal rows or columns, times a gain."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparseprop.errors import SparsepropError
from sparseprop.inits.base import INITS, positive
from sparseprop.registry import Options


@dataclass
class OrthogonalOptions(Options):
    gain: float = 1.0

    def check(self) -> None:
        positive(self, "gain")


def orthogonal_matrix(rows: int, cols: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A (rows, cols) matrix with orthonormal rows or columns (whichever are fewer), Haar-distributed."""
    big, small = max(rows, cols), min(rows, cols)
    gauss = torch.randn(big, small, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    # Multiplying by the signs of R's diagonal makes the factorisation unique, so Q is uniform
    # over the orthogonal group instead of biased by the QR routine's sign convention.
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    q = q * signs
    return (q if rows >= cols else q.T).to(dtype)


@INITS.register("orthogonal", schema=OrthogonalOptions)
def orthogonal(weight: torch.Tensor, generator: torch.Generator | None = None, gain: float = 1.0, **_: object) -> None:
    """Orthogonal init of a dense layer, times ``gain``."""
    if weight.dim() != 2:
        raise SparsepropError(
            "init=orthogonal supports dense (linear) layers only so far; choose a vs_* init for convolutional layers"
        )
    with torch.no_grad():
        weight.copy_(float(gain) * orthogonal_matrix(*weight.shape, generator=generator, dtype=weight.dtype))
