"""Approximate isometry (AI): make every masked weight matrix nearly orthogonal, without data."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from sparseprop.errors import ConfigError, SparsepropError
from sparseprop.config import MAX_STEPS
from sparseprop.models.base import measuring, weight_layers
from sparseprop.registry import Options, Registry
from sparseprop.signal.jacobians import single_threaded
from sparseprop.signal.weights import as_matrix, weight_matrices

ISOMETRY: Registry[Callable[..., dict | None]] = Registry("isometry", group="isometry")


@dataclass
class NoIsometry(Options):
    """No isometry step: no settings."""


# Multiply-adds per AI step from which the step runs on torch's configured threads instead of one. MLP-7's
# step (about 2.6e7) is a few small products whose thread synchronisations cost more than they save, and
# many times more when other jobs share the cores; VGG-C's (about 1e10, 512 x 4608 kernels) is large
# products that threads divide.
THREADED_MACS = 1e8

# What AI makes near-orthogonal in a conv layer: its reshaped kernel (the authors' definition) or the layer's
# circular-padding convolution operator on its input grid.
LEVELS = ("kernel", "operator")


@dataclass
class AIOptions(Options):
    steps: int = 10_000
    lr: float = 0.1
    level: str = "kernel"

    def check(self) -> None:
        if not 1 <= self.steps <= MAX_STEPS:
            self.refuse("steps", f"an integer in [1, {MAX_STEPS:,}]")
        if not (math.isfinite(self.lr) and self.lr > 0):
            self.refuse("lr", "a finite number > 0")
        if self.level not in LEVELS:
            self.refuse("level", " or ".join(LEVELS))


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


@dataclass(frozen=True)
class ConvGeometry:
    """Where a conv layer's circular operator acts: its input grid (rows, columns), stride and dilation."""

    grid: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]


def conv_geometries(model: nn.Module, in_shape: tuple[int, ...]) -> dict[str, ConvGeometry]:
    """The ``ConvGeometry`` of every conv weight layer, by weight name, from one forward pass of one zero example.

    A grid that the stride does not divide is rounded up to the next multiple of the stride, the smallest
    grid on which the strided circular operator is defined.
    """
    found: dict[str, ConvGeometry] = {}
    hooks = []
    for name, module in weight_layers(model):
        if isinstance(module, nn.Linear):
            continue
        if not isinstance(module, nn.Conv2d) or module.groups != 1:
            raise SparsepropError(f"isometry.level=operator: layer {name or type(module).__name__} is not a plain 2-D "
                                  "convolution (groups=1) or a linear layer; use isometry.level=kernel")

        def hook(mod: nn.Conv2d, args: tuple[torch.Tensor, ...], _out: torch.Tensor, key: str = name) -> None:
            side = tuple(int(math.ceil(n / s) * s) for n, s in zip(args[0].shape[-2:], mod.stride))
            found[f"{key}.weight" if key else "weight"] = ConvGeometry(side, tuple(mod.stride), tuple(mod.dilation))

        hooks.append(module.register_forward_hook(hook))
    if not hooks:
        return found
    try:
        p = next(model.parameters())
        with measuring(model):
            model(torch.zeros(1, *in_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    return found


def _placement(taps: int, dilation: int, side: int, like: torch.Tensor) -> torch.Tensor:
    """The (side, taps) 0/1 matrix that puts kernel tap a at grid position (a·dilation) mod side, wrapping around."""
    out = torch.zeros(side, taps, dtype=like.dtype, device=like.device)
    out[(torch.arange(taps) * dilation) % side, torch.arange(taps)] = 1.0
    return out


def operator_grams(kernel: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """The diagonal blocks (one per output frequency, (h', w', c_out, c_out), complex) of A Aᵀ in the Fourier basis,
    A the circular-padding convolution operator of ``kernel`` (c_out, c_in, k, k) on ``geometry``'s grid.

    With the unitary 2-D DFT on every channel, a stride-1 circular convolution maps frequency q of the input to
    frequency q of the output through the c_out × c_in matrix K̂(q), the DFT of the kernel on the grid (Sedghi,
    Gupta and Long, ICLR 2019). Stride s keeps every s-th output, which folds the s_h·s_w input frequencies
    q ≡ p (mod grid/s) onto output frequency p: its block is (s_h·s_w)^(-1/2) [K̂(q_1) … K̂(q_{s_h s_w})], so
    the block of A Aᵀ is (s_h·s_w)^(-1) Σ_j K̂(q_j) K̂(q_j)ᴴ. Padding offsets only multiply K̂(q) by a phase,
    which cancels in K̂ K̂ᴴ.
    """
    (rows, cols), (sh, sw), (dh, dw) = geometry.grid, geometry.stride, geometry.dilation
    c_out, c_in, kh, kw = kernel.shape
    on_grid = torch.einsum("ha,oiab,wb->oihw", _placement(kh, dh, rows, kernel), kernel,
                           _placement(kw, dw, cols, kernel))
    spectrum = torch.fft.fft2(on_grid).permute(2, 3, 0, 1)  # (rows, cols, c_out, c_in)
    folded = spectrum.reshape(sh, rows // sh, sw, cols // sw, c_out, c_in)
    return torch.einsum("jpkqoc,jpkqrc->pqor", folded, folded.conj()) / (sh * sw)


def operator_objective(kernel: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """‖A Aᵀ − I‖_F / sqrt(h'·w') for the circular operator A of ``kernel`` on ``geometry`` (h' × w' output grid).

    Dividing by the square root of the number of output positions makes a 1×1 kernel (and a dense layer, a
    1×1 grid) score exactly its kernel-level objective ‖M Mᵀ − I‖_F, whatever the grid, so one learning rate
    serves both levels; it rescales each layer's term, so it changes no layer's minimisers.
    """
    grams = operator_grams(kernel, geometry)
    eye = torch.eye(grams.shape[-1], dtype=grams.dtype, device=grams.device)
    # The squared moduli through the real and imaginary parts: |z| would have no gradient at z = 0.
    squares = torch.view_as_real(grams - eye).square().sum()
    # At an exact isometry the root is not differentiable; the clamp makes its gradient zero there.
    return (squares.clamp_min(torch.finfo(squares.dtype).tiny) / (grams.shape[0] * grams.shape[1])).sqrt()


def _operator_step(kernel: torch.Tensor, mask: torch.Tensor, geometry: ConvGeometry, lr: float) -> None:
    """One plain SGD step on ``operator_objective``, in place, pruned entries fixed (masked gradient)."""
    with torch.enable_grad():
        leaf = kernel.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(operator_objective(leaf, geometry), leaf)
    kernel.addcmul_(grad, mask, value=-lr)


def step_macs(stacks: list[torch.Size], kernels: list[tuple[torch.Size, ConvGeometry]]) -> float:
    """Multiply-adds of one AI step: M Mᵀ and A M of each (G, out, in) stack; the Fourier blocks of each
    operator-level kernel (c_out, c_in, k, k) on its grid (its FFT's n·log n terms aside)."""
    dense = sum(2.0 * g * out * out * inner for g, out, inner in stacks)
    conv = sum(4.0 * geometry.grid[0] * geometry.grid[1] * shape[0] ** 2 * shape[1] for shape, geometry in kernels)
    return dense + conv


@torch.no_grad()
def approximate_isometry(model: nn.Module, masks: dict[str, torch.Tensor] | None, steps: int = 10_000,
                         lr: float = 0.1, record_every: int = 100, progress: bool = False, level: str = "kernel",
                         in_shape: tuple[int, ...] | None = None) -> dict:
    """Minimise Σ_l ‖(C^l⊙W^l)(C^l⊙W^l)ᵀ − I‖_F over the weights by plain SGD with the mask fixed, in place.

    ``level="operator"`` replaces each conv layer's term by ``operator_objective`` of its circular operator on
    its input grid (found by a forward pass of one example of ``in_shape``, the model's own by default);
    dense layers keep their kernel-level term. Returns ``level``, ``layers`` (weight names),
    ``objective_before`` / ``objective_after`` (per layer), ``total_before`` / ``total_after`` and ``curve``:
    (step, total objective) every ``record_every`` steps and at the last step. Biases and masks are left untouched.
    """
    if int(steps) < 0:
        raise ConfigError("isometry.steps", steps, "an integer >= 0")
    if not float(lr) > 0:
        raise ConfigError("isometry.lr", lr, "a number > 0")
    if int(record_every) < 1:
        raise ConfigError("isometry.record_every", record_every, "an integer >= 1")
    if level not in LEVELS:
        raise ConfigError("isometry.level", level, " or ".join(LEVELS))
    steps, lr, record_every = int(steps), float(lr), int(record_every)
    masks = masks or {}
    named = weight_matrices(model)
    geometries: dict[str, ConvGeometry] = {}
    if level == "operator":
        in_shape = in_shape if in_shape is not None else getattr(model, "in_shape", None)
        if in_shape is None:
            raise SparsepropError("isometry.level=operator needs the shape of one input example (a model of the "
                                  "Network contract has it as in_shape)")
        geometries = conv_geometries(model, tuple(in_shape))
    keep = [masks[name].to(device=w.device, dtype=w.dtype) if name in masks else torch.ones_like(w) for name, w in named]
    # Operator-level conv layers keep their (c_out, c_in, k, k) shape; every other weight is the (out, in·k·k)
    # matrix of the kernel level.
    operator = [i for i, (name, _) in enumerate(named) if name in geometries]
    kernels = {i: named[i][1].detach() * keep[i] for i in operator}
    matrix = [i for i in range(len(named)) if i not in kernels]
    # Layers of one shape (the hidden layers of an MLP) are updated as one batched product,
    # which removes most of the per-step Python and dispatch overhead.
    groups = [([matrix[j] for j in idx], stacked, mask, neg_eye) for idx, stacked, mask, neg_eye in
              _groups([as_matrix(named[i][1]).detach() * as_matrix(keep[i]) for i in matrix],
                      [as_matrix(keep[i]) for i in matrix])]

    def per_layer() -> list[float]:
        out = [0.0] * len(named)
        for idx, stacked, _, neg_eye in groups:
            for i, value in zip(idx, torch.linalg.vector_norm(_residual(stacked, neg_eye), dim=(1, 2)).tolist()):
                out[i] = value
        for i, kernel in kernels.items():
            out[i] = float(operator_objective(kernel, geometries[named[i][0]]))
        return out

    before = per_layer()
    curve = [(0, sum(before))]
    bar = tqdm(total=steps, desc="approximate isometry", unit="step") if progress else None
    macs = step_macs([stacked.shape for _, stacked, _, _ in groups],
                     [(kernel.shape, geometries[named[i][0]]) for i, kernel in kernels.items()])
    device = named[0][1].device if named else torch.device("cpu")
    try:
        with single_threaded(device) if macs < THREADED_MACS else nullcontext():
            for step in range(1, steps + 1):
                for _, stacked, mask, neg_eye in groups:
                    # Masking the gradient gives pruned entries no step, so they stay exactly zero.
                    stacked.addcmul_(isometry_gradient(stacked, neg_eye)[1], mask, value=-lr)
                for i, kernel in kernels.items():
                    _operator_step(kernel, keep[i], geometries[named[i][0]], lr)
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
    for i, kernel in kernels.items():
        named[i][1].copy_(kernel)
    after = per_layer()
    return {
        "level": level,
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
                 record_every: int = 100, progress: bool = False, level: str = "kernel", **_: object) -> dict:
    return approximate_isometry(model, masks, steps=steps, lr=lr, record_every=record_every, progress=progress,
                                level=level)
