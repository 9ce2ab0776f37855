"""Layerwise Jacobians of any network as matrix-free operators, and their spectra by Lanczos bidiagonalisation.

**The layer.** For weight layer l of the model contract (a convolution or a linear layer), J^l is the
Jacobian of the map from that layer's input x^{l-1} to the end of the chain of per-position operations
that follows its output: BatchNorm on its running statistics (a per-channel affine map), element-wise
activations, and the addition of a tensor that does not depend on the layer's output (a residual
shortcut, held fixed). The chain stops before any other operation (the next convolution or linear layer,
pooling, reshaping, averaging) and where a value is used more than once. So J^l = D^l·BN^l·(C^l⊙W^l),
with D^l the activation's slopes at the example; in a post-activation ResNet block the second convolution's
D^l is taken at the sum with the shortcut; a layer followed by no such operation (LeNet-5's convolutions,
the last linear layer) has J^l = C^l⊙W^l. The chain is found from the operations one forward pass of the
example actually performs (recorded with a torch function mode), so it holds for any network built from
standard torch operations.

**The spectrum.** J^l is applied matrix-free per example (the layer's linear operation without bias,
times the slopes; its transpose by a vector-Jacobian product). Golub-Kahan (Lanczos) bidiagonalisation
with full reorthogonalisation, started from a Rademacher vector in the smaller of the input and output
spaces, gives a k x k bidiagonal B whose singular values (Ritz values) estimate those of J^l:

- the largest Ritz value is a lower bound of the largest singular value, the smallest an upper bound of
  the smallest singular value (of the min(in, out) singular values), by interlacing; every Ritz value has
  a singular value within its residual bound β_{k+1}·|last entry of its right singular vector of B|;
- with k >= min(in, out) the Ritz values are the singular values (up to rounding);
- the squared first entries of B's left singular vectors are the weights of a Gauss quadrature of the
  start vector's spectral measure, whose expectation over Rademacher starts is the spectrum's histogram
  (stochastic Lanczos quadrature): pooled over the examples they give the estimated distribution.

The operator and the Lanczos bases are in the model's precision, the bidiagonal and its SVD in float64,
so in a float32 network values below about 1e-6 of a layer's largest are numerically zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from sparseprop.errors import SparsepropError
from sparseprop.models.base import activations_per_example, batch_norms, measuring, norm_mode, weight_layers
from sparseprop.signal.jacobians import CHUNK_BYTES, single_threaded
from sparseprop.signal.spectra import QUANTILES, _quantile

# Lanczos steps per example and layer. Largest values converge in a few tens of steps; the smallest of
# a wide spectrum converge slowly, which the recorded residual bounds show.
ITERATIONS = 32
# Operations that act position by position on the chained tensor (names of torch functions and methods).
_UNARY = {"tanh", "relu", "sigmoid", "selu", "elu", "celu", "leaky_relu", "hardtanh", "softplus", "gelu", "silu",
          "relu6", "hardswish", "mish", "softsign", "logsigmoid"}
_ADD = {"add", "__add__", "__radd__", "sub", "__sub__", "__rsub__"}
_SCALE = {"mul", "__mul__", "__rmul__", "div", "__truediv__", "neg", "__neg__"}
_WEIGHT_OPS = {"linear", "conv1d", "conv2d", "conv3d"}


@dataclass
class _Node:
    name: str
    func: Callable[..., Any]
    args: tuple
    kwargs: dict
    out: torch.Tensor
    inputs: list[int]  # ids of the tensors it read


class _Recorder(TorchFunctionMode):
    """Records every top-level torch operation of a forward pass with the tensors it read and wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[_Node] = []
        self.consumers: dict[int, list[int]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            name = getattr(func, "__name__", str(func))
            node = _Node(name, func, tuple(args), dict(kwargs), out, [id(t) for t in tensors])
            for t in tensors:
                self.consumers.setdefault(id(t), []).append(len(self.nodes))
            self.nodes.append(node)
        return out


@dataclass
class LayerMap:
    """Weight layer ``name``'s J^l on a chunk of examples: ``x`` its inputs, ``linear`` its operation without bias
    (batched over examples), ``slopes`` ∂(chain end)/∂(layer output) per position (None: the identity), ``ops``
    the chain's operations by name."""

    name: str
    x: torch.Tensor
    linear: Callable[[torch.Tensor], torch.Tensor]
    out_shape: tuple[int, ...]
    slopes: torch.Tensor | None
    ops: list[str] = field(default_factory=list)


def _arg(node: _Node, index: int, key: str) -> Any:
    return node.args[index] if len(node.args) > index else node.kwargs.get(key)


def _elementwise(node: _Node, t: torch.Tensor) -> bool:
    """Whether ``node`` acts on ``t`` position by position (its other inputs fixed)."""
    if node.out.shape != t.shape:
        return False
    name = node.name
    others = [a for a in (*node.args, *node.kwargs.values()) if a is not t]
    if name == "batch_norm":
        # Per-channel affine only on the running statistics (training=False with buffers).
        return node.args[0] is t and _arg(node, 5, "training") is False and _arg(node, 1, "running_mean") is not None
    if name in _UNARY:
        return node.args[0] is t and not any(isinstance(a, torch.Tensor) for a in others)
    if name in _ADD:
        # The other summand (a shortcut, a constant) is fixed; the shapes above rule out broadcasting t itself.
        return all(isinstance(a, (torch.Tensor, int, float)) for a in others)
    if name in _SCALE:
        return all(isinstance(a, (int, float)) for a in others)
    return False


def _replace(node: _Node, old: torch.Tensor, new: torch.Tensor) -> tuple[tuple, dict]:
    args = tuple(new if a is old else a for a in node.args)
    kwargs = {k: (new if v is old else v) for k, v in node.kwargs.items()}
    return args, kwargs


def layer_maps(model: nn.Module, x: torch.Tensor) -> list[LayerMap]:
    """Every weight layer's J^l on the examples ``x``, from one recorded forward pass in measuring mode."""
    if norm_mode(model) == "batch" and batch_norms(model):
        # With batch statistics an example's layer output depends on the other examples: no per-example J^l.
        raise SparsepropError("layerwise Jacobians are measured with BatchNorm on its running statistics; "
                              f"{type(model).__name__} is set to batch statistics")
    layers = weight_layers(model)
    recorder = _Recorder()
    with measuring(model), torch.no_grad(), recorder:
        model(x)
    nodes, consumers = recorder.nodes, recorder.consumers
    maps = []
    for name, module in layers:
        found = [n for n in nodes if n.name in _WEIGHT_OPS and _arg(n, 1, "weight") is module.weight]
        if len(found) != 1:
            raise SparsepropError(f"weight layer {name} of {type(model).__name__} is used {len(found)} times in a "
                                  "forward pass; layerwise Jacobians need it used once, by a linear or conv operation")
        op = found[0]
        chain: list[tuple[_Node, torch.Tensor]] = []
        t = op.out
        while True:
            users = consumers.get(id(t), [])
            if len(users) != 1 or not _elementwise(nodes[users[0]], t):
                break
            chain.append((nodes[users[0]], t))
            t = nodes[users[0]].out
        slopes = _slopes(op.out, chain) if chain else None
        maps.append(LayerMap(name, op.args[0], _linear_of(op), tuple(op.out.shape[1:]), slopes,
                             [n.name for n, _ in chain]))
    return maps


def _linear_of(op: _Node) -> Callable[[torch.Tensor], torch.Tensor]:
    """The weight operation ``op`` as a linear map of its input: the same call with the bias left out."""
    args, kwargs = list(op.args), dict(op.kwargs)
    if len(args) > 2:
        args[2] = None
    else:
        kwargs["bias"] = None
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    weight = weight.detach()
    if len(args) > 1:
        args[1] = weight
    else:
        kwargs["weight"] = weight
    return lambda v: op.func(v, *args[1:], **kwargs)


def _slopes(z: torch.Tensor, chain: list[tuple[_Node, torch.Tensor]]) -> torch.Tensor:
    """∂(chain end)/∂z per position: the chain acts position by position, so its Jacobian is this diagonal."""
    with torch.enable_grad():
        z0 = z.detach().requires_grad_(True)
        t = z0
        for node, old in chain:
            args, kwargs = _replace(node, old, t)
            t = node.func(*args, **kwargs)
        (grad,) = torch.autograd.grad(t, z0, torch.ones_like(t), allow_unused=True)
    return torch.zeros_like(z) if grad is None else grad.detach()


@dataclass
class Bidiagonal:
    """Per example: Ritz singular values (descending), their quadrature weights and residual bounds, (N, k) each."""

    values: torch.Tensor
    weights: torch.Tensor
    bounds: torch.Tensor
    dim: int  # min(in, out): how many singular values each example's J^l has


def _orthogonalise(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``v`` (N, d) minus its projection on the orthonormal rows of ``basis`` (N, j, d).

    Classical Gram-Schmidt, repeated once where a pass removed most of the vector ("twice is enough",
    Kahan and Parlett): the three-term recurrence has already removed most components, so the second
    pass, which dominated the cost, is rarely needed.
    """
    if basis.shape[1] == 0:
        return v
    before = v.norm(dim=1)
    v = v - _projection(v, basis)
    if bool((v.norm(dim=1) < 0.7 * before).any()):
        v = v - _projection(v, basis)
    return v


def _projection(v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    # The coefficients as row vector times transposed basis: torch's batched matrix-vector product
    # (basis @ v) was measured 15 times slower on the CPU for the same values.
    return torch.bmm(torch.bmm(v[:, None, :], basis.transpose(1, 2)), basis)[:, 0]


def _normalised(v: torch.Tensor, basis: torch.Tensor, tol: torch.Tensor,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(v/‖v‖, ‖v‖), where ‖v‖ <= tol (an exhausted Krylov space) gives a random unit vector orthogonal to
    ``basis`` and the coefficient 0 instead: the bidiagonal then decouples, its values stay Ritz values."""
    norm = v.norm(dim=1)
    broken = norm <= tol
    if bool(broken.any()):
        fresh = torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
        fresh = _orthogonalise(fresh, basis)
        unit = v / norm.clamp_min(torch.finfo(v.dtype).tiny)[:, None]
        v = torch.where(broken[:, None], fresh / fresh.norm(dim=1, keepdim=True), unit)
        return v, torch.where(broken, torch.zeros_like(norm), norm)
    return v / norm[:, None], norm


def bidiagonal_singular_values(forward: Callable[[torch.Tensor], torch.Tensor],
                               adjoint: Callable[[torch.Tensor], torch.Tensor], small: int, large: int,
                               start: torch.Tensor, iterations: int, eps: float) -> Bidiagonal:
    """Golub-Kahan bidiagonalisation of N operators M_b: R^large -> R^small (small <= large) at once.

    ``forward`` maps (N, large) to (N, small), ``adjoint`` back, in the dtype of ``start`` (N, small), the unit
    start vectors, in which the bases are kept (the operator's precision: a float64 basis would double the
    cost of the reorthogonalisation, which dominates, for no accuracy a float32 operator has); the
    coefficients and the bidiagonal's SVD are float64. min(iterations, small) steps; ``eps`` the operator's
    relative rounding (restarts below it).
    """
    n = start.shape[0]
    k = max(1, min(int(iterations), small))
    work, dtype, device = start.dtype, torch.float64, start.device
    gen = torch.Generator().manual_seed(1)
    P = torch.zeros(n, k, small, dtype=work, device=device)
    Q = torch.zeros(n, k, large, dtype=work, device=device)
    alpha = torch.zeros(n, k, dtype=dtype, device=device)
    beta = torch.zeros(n, k + 1, dtype=dtype, device=device)
    scale = torch.zeros(n, dtype=dtype, device=device)
    p = start
    for j in range(k):
        P[:, j] = p
        q = adjoint(p)
        if j > 0:
            q = q - beta[:, j, None].to(work) * Q[:, j - 1]
        q = _orthogonalise(q, Q[:, :j])
        scale = torch.maximum(scale, q.norm(dim=1).double())
        q, a = _normalised(q, Q[:, :j], (10 * eps * scale).to(work), gen)
        alpha[:, j] = a.double()
        Q[:, j] = q
        r = forward(q) - a[:, None] * p
        r = _orthogonalise(r, P[:, :j + 1])
        if j + 1 < k:
            scale = torch.maximum(scale, r.norm(dim=1).double())
            p, b = _normalised(r, P[:, :j + 1], (10 * eps * scale).to(work), gen)
            beta[:, j + 1] = b.double()
        else:
            beta[:, k] = r.norm(dim=1).double()  # the residual: zero when the whole space was spanned
    b = torch.diag_embed(alpha) + torch.diag_embed(beta[:, 1:k], offset=-1)
    # An example whose operator is not finite (a diverged network) gets NaNs, counted as non-finite later.
    values, weights, bounds = (torch.full((n, k), math.nan, dtype=dtype, device=device) for _ in range(3))
    ok = torch.isfinite(b).flatten(1).all(dim=1) & torch.isfinite(beta[:, k])
    if bool(ok.any()):
        with single_threaded(b.device):
            u, s, vh = torch.linalg.svd(b[ok])
        values[ok], weights[ok] = s, u[:, 0, :] ** 2
        bounds[ok] = beta[ok, k, None] * vh[:, :, k - 1].abs()
    return Bidiagonal(values, weights, bounds, small)


def layer_spectrum(layer: LayerMap, iterations: int = ITERATIONS, seeds: list[int] | None = None) -> Bidiagonal:
    """The Lanczos estimate of J^l's singular values for every example of ``layer``; ``seeds`` (one per example,
    default 0, 1, ...) draw the examples' Rademacher start vectors."""
    x = layer.x.detach()
    n = x.shape[0]
    in_shape, out_shape = tuple(x.shape[1:]), layer.out_shape
    d_in, d_out = math.prod(in_shape), math.prod(out_shape)
    op_dtype = x.dtype
    slopes = None if layer.slopes is None else layer.slopes.reshape(n, d_out)
    with torch.enable_grad():
        _, transpose = torch.func.vjp(layer.linear, torch.zeros_like(x))

    def jac(v: torch.Tensor) -> torch.Tensor:  # (N, d_in) -> (N, d_out)
        with torch.no_grad():
            out = layer.linear(v.reshape(n, *in_shape)).reshape(n, d_out)
        return out if slopes is None else out * slopes

    def jac_t(u: torch.Tensor) -> torch.Tensor:  # (N, d_out) -> (N, d_in)
        (v,) = transpose((u if slopes is None else u * slopes).reshape(n, *out_shape))
        return v.detach().reshape(n, d_in)

    small = min(d_in, d_out)
    seeds = list(range(n)) if seeds is None else seeds
    start = torch.stack([torch.randint(0, 2, (small,), generator=torch.Generator().manual_seed(s)) for s in seeds])
    start = ((start.double() * 2 - 1) / math.sqrt(small)).to(device=x.device, dtype=op_dtype)
    eps = float(torch.finfo(op_dtype).eps)
    if d_out <= d_in:  # M = J: input -> output, the smaller space is the output
        return bidiagonal_singular_values(jac, jac_t, d_out, d_in, start, iterations, eps)
    return bidiagonal_singular_values(jac_t, jac, d_in, d_out, start, iterations, eps)


def _chunk(model: nn.Module, x: torch.Tensor, iterations: int) -> int:
    """Examples per chunk: the Lanczos bases of the widest layer (counted as float64) and the recorded forward
    pass with every layer's inputs and slopes (about three copies of the activations) fit the budget."""
    maps = layer_maps(model, x[:1])
    widest = max(math.prod(m.x.shape[1:]) + math.prod(m.out_shape) for m in maps)
    activations = activations_per_example(model, tuple(x.shape[1:]))
    per_example = 8 * (min(iterations, widest) + 4) * widest + 3 * 8 * activations
    return max(1, CHUNK_BYTES // per_example)


def layer_spectra(model: nn.Module, x: torch.Tensor, iterations: int = ITERATIONS,
                  chunk_size: int | None = None) -> list[tuple[str, list[str], Bidiagonal]]:
    """(weight layer name, its chain's operations, Lanczos estimate of J^l's spectrum on ``x``), every weight layer."""
    x = x.to(next(model.parameters()).device)
    try:
        return _layer_spectra(model, x, iterations, chunk_size)
    except RuntimeError as exc:
        raise SparsepropError(f"could not apply the layerwise Jacobians of {type(model).__name__} as operators "
                              f"({str(exc).splitlines()[0]})") from exc


def _layer_spectra(model: nn.Module, x: torch.Tensor, iterations: int,
                   chunk_size: int | None) -> list[tuple[str, list[str], Bidiagonal]]:
    chunk = chunk_size or _chunk(model, x, iterations)
    parts: list[list[Bidiagonal]] = []
    names: list[tuple[str, list[str]]] = []
    for start in range(0, x.shape[0], chunk):
        maps = layer_maps(model, x[start:start + chunk])
        names = [(m.name, m.ops) for m in maps]
        # The start vectors depend on the layer and the example's index only: chunking changes nothing.
        seeds = [list(range(1_000_003 * l + start, 1_000_003 * l + start + m.x.shape[0])) for l, m in enumerate(maps)]
        parts.append([layer_spectrum(m, iterations, seeds[l]) for l, m in enumerate(maps)])
    out = []
    for l, (name, ops) in enumerate(names):
        per = [p[l] for p in parts]
        out.append((name, ops, Bidiagonal(torch.cat([b.values for b in per]), torch.cat([b.weights for b in per]),
                                          torch.cat([b.bounds for b in per]), per[0].dim)))
    return out


def estimated_stats(b: Bidiagonal) -> dict[str, float]:
    """signal.csv's statistics of a layer's spectrum from its Lanczos estimate (the keys of ``spectrum_stats``).

    ``min``/``max``: the smallest/largest Ritz value over examples (upper/lower bounds of the true ones);
    ``mean``, ``std`` and the quantiles: of the pooled quadrature distribution (the spectrum's histogram
    estimated by stochastic Lanczos quadrature, every example weighted alike); ``count``: the singular
    values described (examples x min(in, out)); ``median_example_condition``: of largest/smallest Ritz values.
    """
    values, weights = b.values.double().cpu(), b.weights.double().cpu()
    finite = torch.isfinite(values).all(dim=1) & torch.isfinite(weights).all(dim=1)
    n_bad = int((~finite).sum())
    values, weights = values[finite], weights[finite]
    stats: dict[str, float] = {"count": float(values.shape[0] * b.dim), "nonfinite": float(n_bad * b.dim)}
    if values.shape[0] == 0:
        stats.update({k: math.nan for k in ("mean", "std", "min", "max", "condition", *QUANTILES,
                                            "median_example_condition")})
        return stats
    w = (weights / weights.sum(dim=1, keepdim=True)).flatten() / values.shape[0]
    v = values.flatten()
    order = torch.argsort(v)
    v, w = v[order], w[order]
    mean = float((w * v).sum())
    low, high = float(values[:, -1].min()), float(values[:, 0].max())
    cdf = torch.cumsum(w, 0)
    stats.update({
        "mean": mean,
        "std": math.sqrt(max(0.0, float((w * v * v).sum()) - mean * mean)),
        "min": low,
        "max": high,
        "condition": high / low if low > 0 else math.inf,
    })
    for key, q in QUANTILES.items():
        # The smallest node whose cumulative weight reaches q (rounding allowed for).
        stats[key] = float(v[min(int(torch.searchsorted(cdf, torch.tensor(q - 1e-12, dtype=cdf.dtype))), len(v) - 1)])
    conditions = torch.where(values[:, -1] > 0, values[:, 0] / values[:, -1].clamp_min(1e-300), math.inf)
    stats["median_example_condition"] = _quantile(torch.sort(conditions).values, 0.5)
    return stats
