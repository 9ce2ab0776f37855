"""The MLP's Jacobian spectra from its weights and activation slopes, without autograd; registered for ``MLP``."""

from __future__ import annotations

import torch
from torch import nn

from sparseprop.models.mlp import MLP
from sparseprop.signal.jacobians import (
    CHUNK_BYTES,
    FastPaths,
    chunk_size_or,
    gram_singular_values,
    memory_chunk,
    register_fast_paths,
    single_threaded,
)


def _activation_and_derivative(activation: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(φ(h), φ'(h)) for an element-wise activation, the derivative exactly as autograd takes it."""
    # Because the activation acts element by element, the gradient of Σ φ(h) is φ'(h) entry by entry,
    # which works for any activation without a hand-written derivative table.
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        y = activation(h)
        (grad,) = torch.autograd.grad(y.sum(), h, allow_unused=True)
    return y.detach(), torch.zeros_like(h) if grad is None else grad


def _mlp_pieces(model: MLP, x: torch.Tensor, dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights of every layer and φ'(h^l) of every hidden layer for a chunk of inputs, in ``dtype``."""
    weights = [layer.weight.detach().to(dtype) for layer in model.layers]
    biases = [None if layer.bias is None else layer.bias.detach().to(dtype) for layer in model.layers]
    a = x.reshape(x.shape[0], -1).to(dtype)
    slopes = []
    for w, b in zip(weights[:-1], biases[:-1]):
        a, slope = _activation_and_derivative(model.activation, a @ w.T if b is None else torch.addmm(b, a, w.T))
        slopes.append(slope)
    return weights, slopes


def io_singular_values(model: MLP, x: torch.Tensor, chunk_size: int | None) -> torch.Tensor:
    """jacobians.io_singular_values for an MLP (``x`` already on its device)."""
    widths = [layer.out_features for layer in model.layers]
    chunk = chunk_size_or(chunk_size, memory_chunk(x[0].numel() + 4 * sum(widths) + 3 * widths[-1] * max(widths)))
    # The product is formed in the model's own precision (at least float32), as the model computes
    # its logits; only the Gram matrix, which squares the condition number, needs float64.
    dtype = torch.float64 if model.layers[0].weight.dtype == torch.float64 else torch.float32
    classes = model.layers[-1].out_features
    k = min(classes, model.layers[0].in_features)
    # With W¹ᵀ = Q R (Q orthonormal columns), J = P W¹ = P Rᵀ Qᵀ for P = W^L D^{L-1} … D¹, so J has
    # the singular values of the small P Rᵀ: the wide input dimension never enters per example.
    r_t = torch.linalg.qr(model.layers[0].weight.detach().double().T).R.T.to(dtype)
    out = []
    for xb in x.split(chunk):
        weights, slopes = _mlp_pieces(model, xb, dtype)
        n = xb.shape[0]
        if len(weights) == 1:
            # A single layer is J = W¹ = Rᵀ Qᵀ itself.
            prod = r_t.expand(n, -1, -1)
        else:
            # Walking from the output towards the input keeps the product only C rows tall, and the
            # weights are shared by all examples, so each step is one large matrix product.
            prod = weights[-1] * slopes[-1][:, None, :]
            for l in range(len(weights) - 2, -1, -1):
                w = weights[l] if l > 0 else r_t
                prod = (prod.reshape(-1, w.shape[0]) @ w).reshape(n, classes, w.shape[1])
                if l > 0:
                    prod.mul_(slopes[l - 1][:, None, :])
        prod = prod.double()
        out.append(gram_singular_values(prod @ prod.transpose(1, 2), k))
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.float64)


def _layer_singular_values(weight: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """Singular values of diag(slopes_b) W for every row b of ``slopes``."""
    out_features, in_features = weight.shape
    if out_features <= in_features:
        # (D W)(D W)ᵀ = (d dᵀ) ⊙ (W Wᵀ): one small Gram matrix per example, never D W itself.
        gram = weight @ weight.T * (slopes[:, :, None] * slopes[:, None, :])
    else:
        scaled = weight * slopes[:, :, None]
        gram = scaled.transpose(1, 2) @ scaled
    return gram_singular_values(gram, min(out_features, in_features))


def layer_singular_values(model: MLP, x: torch.Tensor, chunk_size: int | None) -> list[torch.Tensor]:
    """jacobians.layer_singular_values for an MLP (``x`` already on its device)."""
    widths = [layer.out_features for layer in model.layers]
    chunk = chunk_size_or(chunk_size, memory_chunk(x[0].numel() + 4 * sum(widths) + 3 * max(widths) ** 2))
    per_layer: list[list[torch.Tensor]] = [[] for _ in model.layers]
    for xb in x.split(chunk):
        weights, slopes = _mlp_pieces(model, xb, torch.float64)
        for l, (w, d) in enumerate(zip(weights[:-1], slopes)):
            per_layer[l].append(_layer_singular_values(w, d))
    with single_threaded(x.device):
        last = torch.linalg.svdvals(model.layers[-1].weight.detach().double())
    hidden = [torch.cat(parts) if parts else torch.empty(0, min(layer.weight.shape), dtype=torch.float64)
              for parts, layer in zip(per_layer[:-1], model.layers[:-1])]
    return [*hidden, last.expand(x.shape[0], -1).clone()]


def memory(model: MLP, in_features: int, n_io: int, n_layer: int) -> int:
    """Bytes at the peak: the stored per-example singular values and twice one chunk's float64 working set."""
    widths = [layer.out_features for layer in model.layers]
    one = 8 * (in_features + 4 * sum(widths) + 3 * max(widths) ** 2)
    stored = 8 * (n_io * min(widths[-1], in_features) + n_layer * sum(min(l.in_features, l.out_features) for l in model.layers))
    return stored + 2 * max(CHUNK_BYTES, one)


register_fast_paths(MLP, FastPaths(io=io_singular_values, layers=layer_singular_values, memory=memory))
