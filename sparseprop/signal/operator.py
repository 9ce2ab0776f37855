"""Singular values of each weight layer's operator: the linear map C^l⊙W^l applies to a whole feature map.

A convolution with circular padding on an n₁×…×n_d grid is block-circulant: the unitary DFT over the
grid turns it into one (c_out × c_in) matrix per frequency ω, K̂(ω) = Σ_a w[:, :, a] e^{2πi ω·a/n},
and its singular values are the union over frequencies of those of the K̂(ω) (Sedghi, Gupta and
Long, ICLR 2019). A stride-s convolution is a stride-1 one on the coarse grid n/s once the input is
split into its s^d phases (a permutation of the input, so the singular values are unchanged): the
kernel becomes c_out × (c_in·s^d) with ⌈k/s⌉ taps per axis. Zero padding is not block-circulant;
what is reported for every convolution is the circular-padding operator of the same kernel on the
layer's input grid (exact when the layer pads circularly, the standard approximation otherwise).
A dense layer's operator is its matrix.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.models.base import weight_layers

# The frequency matrices are decomposed in chunks of about this many complex entries (16 bytes each),
# so a wide layer on a large grid never holds all of K̂ at once.
CHUNK_ENTRIES = 1 << 21


def polyphase(weight: torch.Tensor, stride: Sequence[int]) -> torch.Tensor:
    """The stride-1 kernel (c_out, c_in·∏s, ⌈k/s⌉…) on the coarse grid equivalent to ``weight`` with ``stride``.

    Tap a = s·a' + r of input channel c becomes tap a' of channel (c, r): input phase r on the coarse grid.
    """
    cout, cin, *k = weight.shape
    d = len(k)
    if all(s == 1 for s in stride):
        return weight
    kc = [-(-ki // s) for ki, s in zip(k, stride)]
    pad: list[int] = []
    for ki, kci, s in reversed(list(zip(k, kc, stride))):
        pad += [0, kci * s - ki]
    w = torch.nn.functional.pad(weight, pad)
    # (cout, cin, k'₁, s₁, …, k'_d, s_d) -> (cout, cin, s₁…s_d, k'₁…k'_d)
    w = w.reshape(cout, cin, *[v for pair in zip(kc, stride) for v in pair])
    w = w.permute(0, 1, *[3 + 2 * i for i in range(d)], *[2 + 2 * i for i in range(d)])
    return w.reshape(cout, cin * math.prod(stride), *kc)


def circular_conv_singular_values(weight: torch.Tensor, grid: Sequence[int], stride: Sequence[int] | int = 1,
                                  chunk_entries: int = CHUNK_ENTRIES) -> torch.Tensor:
    """Singular values (descending, float64) of the circular-padding convolution ``weight`` on an input ``grid``.

    ``weight`` is a torch cross-correlation kernel (c_out, c_in, k₁, …, k_d) and ``grid`` the input's
    spatial size (n₁, …, n_d); every n_i must be a multiple of its stride. The operator maps
    c_in·∏n values to c_out·∏(n/s) and all min(c_out, c_in·∏s)·∏(n/s) of its singular values are
    returned (zeros included). Kernels wider than the grid wrap around it, as circular padding does.
    """
    d = weight.dim() - 2
    grid = [int(n) for n in grid]
    stride = [int(stride)] * d if isinstance(stride, int) else [int(s) for s in stride]
    if len(grid) != d or len(stride) != d:
        raise ValueError(f"a {d}-d kernel needs a {d}-d grid and stride, got grid {grid} and stride {stride}")
    _check_stride(grid, stride)
    # On the CPU whatever the network's device: float64 decompositions of small matrices, deterministic.
    w = polyphase(weight.detach().to(device="cpu", dtype=torch.float64), stride)
    coarse = [n // s for n, s in zip(grid, stride)]
    cout, cin = w.shape[:2]
    taps = w.reshape(cout * cin, -1)  # (cout·cin, ∏k')
    count = math.prod(coarse)
    if taps.shape[1] == 1:
        # One tap (a 1x1 kernel, or one split by its stride): K̂(ω) is the tap's matrix at every frequency.
        sv = torch.linalg.svdvals(taps.reshape(cout, cin))
        return torch.sort(sv.repeat(count), descending=True).values
    # A real kernel has K̂(−ω) = conj K̂(ω), with the same singular values: decompose one frequency of each
    # such pair and count it twice. A self-conjugate frequency (ω = −ω: every ω_i is 0 or n_i/2) has a
    # real K̂(ω), whose real SVD is several times cheaper than a complex one.
    freqs = torch.cartesian_prod(*[torch.arange(n) for n in coarse]).reshape(-1, d)
    flat = _flat_index(freqs, coarse)
    conj_flat = _flat_index((-freqs) % torch.tensor(coarse), coarse)
    offsets = torch.cartesian_prod(*[torch.arange(k) for k in w.shape[2:]]).reshape(-1, d).to(torch.float64)
    scale = 2 * math.pi / torch.tensor(coarse, dtype=torch.float64)
    per_chunk = max(1, chunk_entries // max(1, cout * cin))
    values = []
    for group, real in ((freqs[flat == conj_flat], True), (freqs[flat < conj_flat], False)):
        for start in range(0, group.shape[0], per_chunk):
            phase = offsets @ (group[start:start + per_chunk].to(torch.float64) * scale).T  # (∏k', F)
            # cos(πm) is ±1 to rounding, and the imaginary part of a self-conjugate frequency is 0.
            basis = torch.cos(phase) if real else torch.polar(torch.ones_like(phase), phase)
            khat = (taps.to(basis.dtype) @ basis).reshape(cout, cin, -1).permute(2, 0, 1)  # (F, cout, cin)
            sv = torch.linalg.svdvals(khat).flatten()
            values += [sv] if real else [sv, sv]
    return torch.sort(torch.cat(values), descending=True).values


def _check_stride(grid: Sequence[int], stride: Sequence[int]) -> None:
    if any(int(n) % int(s) for n, s in zip(grid, stride)):
        raise SparsepropError(f"input grid {tuple(grid)} is not a multiple of the stride {tuple(stride)}")


def _flat_index(index: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    flat = torch.zeros(index.shape[0], dtype=torch.long)
    for i, n in enumerate(shape):
        flat = flat * n + index[:, i]
    return flat


def input_grids(model: nn.Module, in_shape: Sequence[int]) -> list[tuple[int, ...] | None]:
    """The spatial size of each weight layer's input (None for a dense layer's), from one forward pass.

    Two zero examples are passed (with one, a BatchNorm on vectors measured on batch statistics
    would refuse); nothing is recorded of them but the shapes, and the caller's mode is kept.
    """
    layers = weight_layers(model)
    grids: list[tuple[int, ...] | None] = [None] * len(layers)

    def hook(index: int):
        def record(module: nn.Module, inputs: tuple) -> None:
            grids[index] = tuple(int(n) for n in inputs[0].shape[2:]) if isinstance(module, nn.modules.conv._ConvNd) else None
        return record

    handles = [module.register_forward_pre_hook(hook(i)) for i, (_, module) in enumerate(layers)]
    first = next(model.parameters(), None)
    device, dtype = (first.device, first.dtype) if first is not None else (torch.device("cpu"), torch.float32)
    try:
        with torch.no_grad():
            model(torch.zeros(2, *in_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return grids


def layer_operator_singular_values(module: nn.Module, grid: tuple[int, ...] | None) -> torch.Tensor:
    """Singular values (descending, float64) of one weight layer's operator on its input ``grid``.

    A convolution it cannot treat exactly (groups, dilation, transposed) is a SparsepropError naming why.
    """
    w = module.weight.detach()
    if isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            raise SparsepropError("transposed convolutions are not handled")
        if module.groups != 1:
            raise SparsepropError(f"groups={module.groups} is not handled (only 1)")
        if any(d != 1 for d in module.dilation):
            raise SparsepropError(f"dilation={tuple(module.dilation)} is not handled (only 1)")
        if grid is None:
            raise SparsepropError("its input grid is unknown (the layer was not reached by a forward pass)")
        _check_stride(grid, module.stride)
        if not torch.isfinite(w).all():
            return torch.full((_operator_rank_bound(w, grid, module.stride),), float("nan"), dtype=torch.float64)
        return circular_conv_singular_values(w, grid, tuple(module.stride))
    if w.dim() != 2:
        raise SparsepropError(f"a {type(module).__name__} weight of shape {tuple(w.shape)} is neither a matrix nor a convolution")
    m = w.to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(m).all():
        return torch.full((min(m.shape),), float("nan"), dtype=torch.float64)
    return torch.linalg.svdvals(m)


def _operator_rank_bound(w: torch.Tensor, grid: Sequence[int], stride: Sequence[int]) -> int:
    """How many singular values the operator has: min(c_out, c_in·∏s)·∏(n/s)."""
    s = math.prod(stride)
    return min(w.shape[0], w.shape[1] * s) * math.prod(n // si for n, si in zip(grid, stride))


def has_convolutions(model: nn.Module) -> bool:
    """Whether any weight layer of ``model`` is a convolution (the nets whose operator spectra are recorded)."""
    return any(isinstance(module, nn.modules.conv._ConvNd) for _, module in weight_layers(model))


def operator_singular_values(model: nn.Module, in_shape: Sequence[int]
                             ) -> list[tuple[tuple[int, ...] | None, torch.Tensor | SparsepropError]]:
    """Per weight layer, in order: its input grid (None for a dense layer) and its operator's singular values,
    or the SparsepropError saying why not.

    ``in_shape`` is one example's shape; each convolution is taken on the grid its input has in the model.
    """
    grids = input_grids(model, in_shape)
    out: list[tuple[tuple[int, ...] | None, torch.Tensor | SparsepropError]] = []
    for (_, module), grid in zip(weight_layers(model), grids):
        try:
            out.append((grid, layer_operator_singular_values(module, grid)))
        except SparsepropError as exc:
            out.append((grid, exc))
    return out
