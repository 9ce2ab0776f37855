"""Approximate isometry (AI): make every masked weight matrix nearly orthogonal, without data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from sparseprop.errors import ConfigError
from sparseprop.config import MAX_STEPS
from sparseprop.registry import Options, Registry
from sparseprop.signal.jacobians import single_threaded
from sparseprop.signal.weights import as_matrix, weight_matrices

ISOMETRY: Registry[Callable[..., dict | None]] = Registry("isometry", group="isometry")


@dataclass
class NoIsometry(Options):
    """No isometry step: no settings."""


@dataclass
class AIOptions(Options):
    steps: int = 10_000
    lr: float = 0.1

    def check(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            self.refuse("steps", f"an integer in [1, {MAX_STEPS:,}]")
        if not (math.isfinite(self.lr) and self.lr > 0):
            self.refuse("lr", "a finite number > 0")


def _negative_identities(stacked: torch.Tensor) -> torch.Tensor:
    """−I for every matrix M of a (G, out, in) stack, shaped like M Mᵀ."""
    eye = torch.eye(stacked.shape[1], dtype=stacked.dtype, device=stacked.device)
    return (-eye).expand(stacked.shape[0], -1, -1)


def _residual(stacked: torch.Tensor, negative_identities: torch.Tensor) -> torch.Tensor:
    """A = M Mᵀ − I for every matrix M of a (G, out, in) stack."""
    # PAPER.md writes WᵀW for TensorFlow's (in, out) weights; torch stores (out, in), so the same
    # (out × out) product is M Mᵀ here, as in signal.isometry_residual.
    return torch.baddbmm(negative_identities, stacked, stacked.transpose(1, 2))


def isometry_gradient(matrices: torch.Tensor,
                      negative_identities: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(‖M Mᵀ − I‖_F, its gradient with respect to M) for one matrix (out, in) or each of a stack (G, out, in)."""
    # With A = M Mᵀ − I, d‖A‖_F = ⟨A, dA⟩/‖A‖_F and dA = dM Mᵀ + M dMᵀ, so the gradient is
    # (A + Aᵀ) M / ‖A‖_F = 2 A M / ‖A‖_F because A is symmetric: two matrix products, no autograd.
    stacked = matrices if matrices.dim() == 3 else matrices[None]
    if negative_identities is None:
        negative_identities = _negative_identities(stacked)
    residual = _residual(stacked, negative_identities)
    norms = torch.linalg.vector_norm(residual, dim=(1, 2))
    # At an exact isometry A = 0 and the norm is not differentiable; clamping the divisor makes
    # the gradient zero there, so such a layer stays put.
    residual.mul_((2.0 / norms.clamp_min(torch.finfo(norms.dtype).tiny))[:, None, None])
    grad = torch.bmm(residual, stacked)
    return (norms, grad) if matrices.dim() == 3 else (norms[0], grad[0])


def _groups(matrices: list[torch.Tensor],
            masks: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Layers of equal shape stacked together: (their indices, weights, masks, −I for each)."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, m in enumerate(matrices):
        by_shape.setdefault(tuple(m.shape), []).append(i)
    out = []
    for idx in by_shape.values():
        stacked = torch.stack([matrices[i] for i in idx])
        out.append((idx, stacked, torch.stack([masks[i] for i in idx]), _negative_identities(stacked)))
    return out


@torch.no_grad()
def approximate_isometry(model: nn.Module, masks: dict[str, torch.Tensor] | None, steps: int = 10_000,
                         lr: float = 0.1, record_every: int = 100, progress: bool = False) -> dict:
    """Minimise Σ_l ‖(C^l⊙W^l)(C^l⊙W^l)ᵀ − I‖_F over the weights by plain SGD with the mask fixed, in place.

    Returns ``layers`` (weight names), ``objective_before`` / ``objective_after`` (per layer),
    ``total_before`` / ``total_after`` and ``curve``: (step, total objective) every
    ``record_every`` steps and at the last step. Biases and masks are left untouched.
    """
    if int(steps) < 0:
        raise ConfigError("isometry.steps", steps, "an integer >= 0")
    if not float(lr) > 0:
        raise ConfigError("isometry.lr", lr, "a number > 0")
    if int(record_every) < 1:
        raise ConfigError("isometry.record_every", record_every, "an integer >= 1")
    steps, lr, record_every = int(steps), float(lr), int(record_every)
    masks = masks or {}
    named = weight_matrices(model)
    matrices = [as_matrix(w) for _, w in named]
    keep = [as_matrix(masks[name]).to(device=w.device, dtype=w.dtype) if name in masks else torch.ones_like(m)
            for (name, w), m in zip(named, matrices)]
    # Layers of one shape (the hidden layers of an MLP) are updated as one batched product,
    # which removes most of the per-step Python and dispatch overhead.
    groups = _groups([m.detach() * k for m, k in zip(matrices, keep)], keep)

    def per_layer() -> list[float]:
        out = [0.0] * len(matrices)
        for idx, stacked, _, neg_eye in groups:
            for i, value in zip(idx, torch.linalg.vector_norm(_residual(stacked, neg_eye), dim=(1, 2)).tolist()):
                out[i] = value
        return out

    before = per_layer()
    curve = [(0, sum(before))]
    bar = tqdm(total=steps, desc="approximate isometry", unit="step") if progress else None
    try:
        # The matrices are small, so one step is a few tiny products that threads cannot speed up.
        with single_threaded(groups[0][1].device if groups else torch.device("cpu")):
            for step in range(1, steps + 1):
                for _, stacked, mask, neg_eye in groups:
                    # Masking the gradient gives pruned entries no step, so they stay exactly zero.
                    stacked.addcmul_(isometry_gradient(stacked, neg_eye)[1], mask, value=-lr)
                if step % record_every == 0 or step == steps:
                    curve.append((step, sum(per_layer())))
                if bar is not None and (step % 250 == 0 or step == steps):
                    bar.update(step - bar.n)
    finally:
        if bar is not None:
            bar.close()
    for idx, stacked, _, _ in groups:
        for i, m in zip(idx, stacked):
            named[i][1].copy_(m.view_as(named[i][1]))
    after = per_layer()
    return {
        "layers": [name for name, _ in named],
        "objective_before": before,
        "objective_after": after,
        "total_before": sum(before),
        "total_after": sum(after),
        "curve": curve,
    }


@ISOMETRY.register("none", schema=NoIsometry)
def _isometry_none(model: nn.Module, masks: dict[str, torch.Tensor] | None, **_: object) -> None:
    return None


@ISOMETRY.register("ai", schema=AIOptions)
def _isometry_ai(model: nn.Module, masks: dict[str, torch.Tensor] | None, steps: int = 10_000, lr: float = 0.1,
                 record_every: int = 100, progress: bool = False, **_: object) -> dict:
    return approximate_isometry(model, masks, steps=steps, lr=lr, record_every=record_every, progress=progress)
