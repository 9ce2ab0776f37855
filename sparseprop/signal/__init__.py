"""Signal-propagation measurements: input-output and layerwise Jacobian singular values, weight isometry."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.models import MLP

# Layers whose weights are treated as the matrices C^l⊙W^l, the same kinds that pruning masks.
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
QUANTILES = {"q05": 0.05, "q25": 0.25, "q50": 0.50, "q75": 0.75, "q95": 0.95}
# Bytes of float64 working memory per chunk of the MLP computations; the peak stays a small
# multiple of this whatever the number of examples. Beyond about a thousand examples larger
# chunks were measured to be slower (their products no longer fit the caches).
_CHUNK_BYTES = 256 * 2**20
_MAX_CHUNK = 1024
_GENERIC_CHUNK = 64


def weight_matrices(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, weight) of every linear and conv layer in module order; the weight is not reshaped."""
    out = []
    for mod_name, module in model.named_modules():
        if isinstance(module, WEIGHT_LAYERS):
            out.append((f"{mod_name}.weight" if mod_name else "weight", module.weight))
    return out


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The torch weight as an (out, in·k·k) matrix."""
    return weight.reshape(weight.shape[0], -1)


def weight_singular_values(model: nn.Module) -> list[torch.Tensor]:
    """Singular values (descending, float64) of every layer's masked weight C^l⊙W^l, in module order."""
    # Pruned entries are already exactly zero in the model, so the current weight is C^l⊙W^l.
    return [torch.linalg.svdvals(as_matrix(w.detach()).double()) for _, w in weight_matrices(model)]


def isometry_residual(model: nn.Module) -> list[float]:
    """‖M Mᵀ − I‖_F of every layer's masked weight M = C^l⊙W^l reshaped to (out, in·k·k), in module order."""
    # PAPER.md writes WᵀW for TensorFlow's (in, out) weights; torch stores (out, in), so the same
    # (out × out) matrix is M Mᵀ here.
    out = []
    for _, w in weight_matrices(model):
        m = as_matrix(w.detach()).double()
        gram = m @ m.T
        gram.diagonal().sub_(1.0)
        out.append(float(torch.linalg.matrix_norm(gram)))
    return out


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


def _chunk(chunk_size: int | None, default: int) -> int:
    """The number of examples per chunk: ``chunk_size`` when given, else ``default``."""
    if chunk_size is None:
        return max(1, default)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
    return int(chunk_size)


def _memory_chunk(per_example_floats: int) -> int:
    """The most examples whose float64 working set fits the per-chunk memory budget."""
    return min(_MAX_CHUNK, _CHUNK_BYTES // (8 * per_example_floats))


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run the enclosed torch CPU work on one thread, restoring the thread count afterwards."""
    # Batches of small matrices (eigensolvers, tiny products) gain nothing from threads, and their
    # many thread synchronisations become catastrophically slow (measured: tens of times) when other
    # jobs share the cores, as in parallel sweeps.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if device.type == "cpu":
            torch.set_num_threads(threads)


def _gram_singular_values(gram: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest singular values, descending, of matrices whose Gram matrices are ``gram``."""
    with single_threaded(gram.device):
        eig = torch.linalg.eigvalsh(gram)
    # Rounding can make the eigenvalues of a singular Gram matrix slightly negative; they are zeros.
    return eig.clamp_min_(0.0).sqrt_().flip(-1)[..., :k]


def _mlp_io_singular_values(model: MLP, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """io_singular_values for an MLP, from its weights and activation slopes without autograd."""
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
        out.append(_gram_singular_values(prod @ prod.transpose(1, 2), k))
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.float64)


def _generic_io_singular_values(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """io_singular_values for any differentiable model, by batched reverse-mode Jacobians."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def logits(example: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, (params, buffers), (example[None],))[0]

    jacobian = torch.func.vmap(torch.func.jacrev(logits))
    was_training = model.training
    # Evaluation mode makes every example independent of the others (BatchNorm uses running statistics).
    model.eval()
    out = []
    try:
        for xb in x.split(chunk):
            jac = jacobian(xb).reshape(xb.shape[0], -1, xb[0].numel()).double()
            with single_threaded(jac.device):
                out.append(torch.linalg.svdvals(jac))
    except RuntimeError as exc:
        raise SparsepropError(
            f"could not compute input-output Jacobians of {type(model).__name__} with torch.func ({exc}); "
            "use an MLP or a model built from standard layers"
        ) from exc
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def io_singular_values(model: nn.Module, x: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Per-example singular values (N, min(C, D)), descending, float64, of the logits' Jacobian w.r.t. the input.

    ``chunk_size`` examples are processed at a time (None picks a size that bounds memory). An MLP's
    Jacobian is formed in the model's precision, like its logits (pass ``model.double()`` for more),
    and its singular values in float64; values below about 1e-7 of an example's largest (float64:
    1e-8) are numerically zero.
    """
    device = next(model.parameters()).device
    x = x.to(device)
    if isinstance(model, MLP):
        widths = [layer.out_features for layer in model.layers]
        floats = x[0].numel() + 4 * sum(widths) + 3 * widths[-1] * max(widths)
        return _mlp_io_singular_values(model, x, _chunk(chunk_size, _memory_chunk(floats)))
    return _generic_io_singular_values(model, x, _chunk(chunk_size, _GENERIC_CHUNK))


def _layer_singular_values(weight: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """Singular values of diag(slopes_b) W for every row b of ``slopes``."""
    out_features, in_features = weight.shape
    if out_features <= in_features:
        # (D W)(D W)ᵀ = (d dᵀ) ⊙ (W Wᵀ): one small Gram matrix per example, never D W itself.
        gram = weight @ weight.T * (slopes[:, :, None] * slopes[:, None, :])
    else:
        scaled = weight * slopes[:, :, None]
        gram = scaled.transpose(1, 2) @ scaled
    return _gram_singular_values(gram, min(out_features, in_features))


@torch.no_grad()
def layer_singular_values(model: nn.Module, x: torch.Tensor, chunk_size: int | None = None) -> list[torch.Tensor]:
    """Per layer, per-example singular values (N, min(out, in)), descending, float64, of J^l = diag(φ'(h^l)) (C^l⊙W^l).

    The last layer has no activation, so its Jacobian is its weight, the same for every example.
    """
    if not isinstance(model, MLP):
        raise SparsepropError(
            f"layerwise Jacobians are supported for MLPs only so far, not {type(model).__name__}; "
            "use io_singular_values or the data-free weight_singular_values for this architecture"
        )
    device = next(model.parameters()).device
    x = x.to(device)
    widths = [layer.out_features for layer in model.layers]
    chunk = _chunk(chunk_size, _memory_chunk(x[0].numel() + 4 * sum(widths) + 3 * max(widths) ** 2))
    per_layer: list[list[torch.Tensor]] = [[] for _ in model.layers]
    for xb in x.split(chunk):
        weights, slopes = _mlp_pieces(model, xb, torch.float64)
        for l, (w, d) in enumerate(zip(weights[:-1], slopes)):
            per_layer[l].append(_layer_singular_values(w, d))
    with single_threaded(device):
        last = torch.linalg.svdvals(model.layers[-1].weight.detach().double())
    hidden = [torch.cat(parts) if parts else torch.empty(0, min(layer.weight.shape), dtype=torch.float64)
              for parts, layer in zip(per_layer[:-1], model.layers[:-1])]
    return [*hidden, last.expand(x.shape[0], -1).clone()]


def _quantile(sorted_values: torch.Tensor, q: float) -> float:
    """The q-quantile of ascending values with linear interpolation (NumPy's default)."""
    n = sorted_values.numel()
    if n == 0:
        return math.nan
    pos = q * (n - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    low = float(sorted_values[lo])
    if frac == 0.0:
        return low
    # Weighting both ends (instead of low + frac·(high − low)) keeps the result finite-or-inf
    # when the upper end is infinite, as per-example condition numbers can be.
    return (1.0 - frac) * low + frac * float(sorted_values[lo + 1])


def spectrum_stats(sv: torch.Tensor) -> dict[str, float]:
    """Pooled statistics of a per-example spectrum (N, k), or one spectrum (k,), and the median per-example condition.

    Keys: count, nonfinite, mean, std (population, ddof=0), min, max, condition (max/min, inf when
    min is 0), q05, q25, q50, q75, q95, median_example_condition. Non-finite entries are counted,
    left out of every statistic and reported with a warning.
    """
    sv = sv.detach().double().cpu()
    sv = sv.flatten(1) if sv.dim() > 1 else sv.reshape(1, -1)
    finite = torch.isfinite(sv)
    nonfinite = int((~finite).sum())
    if nonfinite:
        warnings.warn(f"{nonfinite} of {sv.numel()} singular values are not finite; statistics use the finite ones",
                      RuntimeWarning, stacklevel=2)
    values = torch.sort(sv[finite]).values
    stats: dict[str, float] = {"count": float(values.numel()), "nonfinite": float(nonfinite)}
    if values.numel() == 0:
        stats.update({k: math.nan for k in ("mean", "std", "min", "max", "condition", *QUANTILES)})
        stats["median_example_condition"] = math.nan
        return stats
    low, high = float(values[0]), float(values[-1])
    stats.update({
        "mean": float(values.mean()),
        "std": float(values.std(correction=0)),
        "min": low,
        "max": high,
        "condition": high / low if low > 0 else math.inf,
    })
    stats.update({k: _quantile(values, q) for k, q in QUANTILES.items()})
    row_max = torch.where(finite, sv, -math.inf).amax(dim=1)
    row_min = torch.where(finite, sv, math.inf).amin(dim=1)
    rows = finite.any(dim=1)
    row_max, row_min = row_max[rows], row_min[rows]
    # An example whose smallest singular value is zero has an infinite condition number.
    conditions = torch.where(row_min > 0, row_max / row_min.clamp_min(torch.finfo(torch.float64).tiny), math.inf)
    stats["median_example_condition"] = _quantile(torch.sort(conditions).values, 0.5)
    return stats
