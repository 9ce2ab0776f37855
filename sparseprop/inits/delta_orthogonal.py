"""Delta-orthogonal init (Xiao et al. 2018): an orthogonal matrix at the kernel's centre tap, zeros elsewhere."""

from __future__ import annotations

import torch

from sparseprop.inits.base import INITS
from sparseprop.inits.orthogonal import OrthogonalOptions, orthogonal_matrix


@INITS.register("delta_orthogonal", schema=OrthogonalOptions)
def delta_orthogonal(weight: torch.Tensor, generator: torch.Generator | None = None, gain: float = 1.0,
                     **_: object) -> None:
    """The centre tap an (out, in) matrix with orthonormal rows or columns times ``gain``, every other tap zero.

    A dense layer is its own centre tap, so it gets exactly what ``orthogonal`` gives it. The centre of an
    even kernel side k is tap (k - 1) // 2, as in TensorFlow's ConvolutionDeltaOrthogonal.
    """
    matrix = float(gain) * orthogonal_matrix(weight.shape[0], weight.shape[1], generator=generator, dtype=weight.dtype)
    centre = (slice(None), slice(None)) + tuple((k - 1) // 2 for k in weight.shape[2:])
    with torch.no_grad():
        weight.zero_()
        weight[centre] = matrix
