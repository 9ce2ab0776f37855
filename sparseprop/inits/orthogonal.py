"""Orthogonal inits, times a gain: dense layers get Haar-distributed orthonormal rows or columns; conv kernels the
block-orthogonal construction of Xiao et al. 2018 (``orthogonal``) or an orthogonal flattened kernel (``orthogonal_flat``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sparseprop.errors import ConfigError
from sparseprop.inits.base import INITS, positive, shape_check
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


def symmetric_projection(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random (n, n) float64 orthogonal projection P = Pᵀ = P²: onto the span of the columns of a Haar orthogonal
    matrix that each survive a fair coin toss."""
    q = orthogonal_matrix(n, n, generator=generator, dtype=torch.float64)
    kept = q[:, torch.rand(n, generator=generator, dtype=torch.float64) < 0.5]
    return kept @ kept.T


def block_orthogonal_kernel(out_channels: int, in_channels: int, size: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """A float64 (out, in, size, size) conv kernel whose circular convolution is an isometry (in <= out).

    Xiao et al. 2018 (TensorFlow's ConvolutionOrthogonal2D): the kernel's polynomial in the shifts z1, z2 is
    A(z) H, with H an (out, in) matrix with orthonormal columns and A(z) the product over size - 1 factors
    (P + (I - P) z1)(Q + (I - Q) z2) of symmetric projections P, Q. Each factor is unitary wherever
    |z1| = |z2| = 1, so A(z) H is an isometry at every frequency.
    """
    h = orthogonal_matrix(out_channels, in_channels, generator=generator, dtype=torch.float64)
    eye = torch.eye(out_channels, dtype=torch.float64)
    poly = eye[None, None]  # coefficients of A(z) by power of (z1, z2), each an (out, out) matrix
    for _ in range(size - 1):
        p, q = symmetric_projection(out_channels, generator), symmetric_projection(out_channels, generator)
        side = poly.shape[0]
        grown = poly.new_zeros(side + 1, side + 1, out_channels, out_channels)
        # The factor's coefficient of z1^a z2^b is P_a Q_b with P_0 = P, P_1 = I - P (and the same for Q).
        for a, pa in enumerate((p, eye - p)):
            for b, qb in enumerate((q, eye - q)):
                grown[a:a + side, b:b + side] += poly @ (pa @ qb)
        poly = grown
    return torch.einsum("ijab,bc->acij", poly, h)


def _layer(layer: str | None) -> str:
    return f"layer {layer}" if layer else "the weight"


@shape_check("orthogonal")
def check_orthogonal(shape: tuple[int, ...], layer: str | None = None) -> None:
    """Refuse a weight the orthogonal init cannot draw: neither dense nor a square 2-D conv kernel with in <= out."""
    if len(shape) == 2:
        return
    other = "choose init=delta_orthogonal or init=orthogonal_flat for this network"
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ConfigError("init", "orthogonal", f"{_layer(layer)} has shape {tuple(shape)}, but init=orthogonal draws dense "
                                                f"(out, in) and square 2-D conv (out, in, k, k) weights only; {other}")
    if shape[1] > shape[0]:
        raise ConfigError("init", "orthogonal", f"{_layer(layer)} is a conv with {shape[1]} in-channels > {shape[0]} "
                                                f"out-channels, and the block-orthogonal conv kernel needs in-channels "
                                                f"<= out-channels; {other}")


@INITS.register("orthogonal", schema=OrthogonalOptions)
def orthogonal(weight: torch.Tensor, generator: torch.Generator | None = None, gain: float = 1.0, **_: object) -> None:
    """Orthogonal init times ``gain``: a dense matrix with orthonormal rows or columns, a block-orthogonal conv kernel."""
    check_orthogonal(tuple(weight.shape))
    if weight.dim() == 2:
        with torch.no_grad():
            weight.copy_(float(gain) * orthogonal_matrix(*weight.shape, generator=generator, dtype=weight.dtype))
        return
    kernel = block_orthogonal_kernel(weight.shape[0], weight.shape[1], weight.shape[2], generator)
    with torch.no_grad():
        weight.copy_((float(gain) * kernel).to(weight.dtype))


@INITS.register("orthogonal_flat", schema=OrthogonalOptions)
def orthogonal_flat(weight: torch.Tensor, generator: torch.Generator | None = None, gain: float = 1.0,
                    **_: object) -> None:
    """torch's ``orthogonal_`` semantics: the weight flattened to (out, in·k·k) has orthonormal rows or columns,
    times ``gain``; a dense layer gets exactly what ``orthogonal`` gives it."""
    matrix = orthogonal_matrix(weight.shape[0], weight[0].numel(), generator=generator, dtype=weight.dtype)
    with torch.no_grad():
        weight.copy_((float(gain) * matrix).reshape(weight.shape))
