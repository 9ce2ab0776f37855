"""Jacobian singular values of any model, and the registry through which an architecture adds faster paths.

``io_singular_values`` and ``layer_singular_values`` look the model's class up in ``FAST_PATHS``
(``mlp_fast`` registers the MLP's); every other model gets the generic path for the
input-output Jacobian (batched backward passes); ``layer_operator`` estimates layerwise spectra of any network.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.models.base import activations_per_example, measuring

# Bytes of float64 working memory per chunk of the fast computations; the peak stays a small
# multiple of this whatever the number of examples. Beyond about a thousand examples larger
# chunks were measured to be slower (their products no longer fit the caches).
CHUNK_BYTES = 256 * 2**20
_MAX_CHUNK = 1024
_GENERIC_CHUNK = 64
# Input-output examples ``signal.examples=auto`` measures on networks without an exact fast path: the
# generic path costs one forward and ten backward passes per example (measured on 2 CPU cores at
# 28x28: ResNet-32 about 19 ms, VGG-C 38 ms, WRN-16-6 135 ms), so all 54,000 would take hours.
GENERIC_IO_EXAMPLES = 500
# Layerwise examples ``signal.layer_examples=auto`` measures: 200 on an exact layerwise path (MLPs: 200 x 100
# values per layer); 50 where each layer's spectrum is estimated by 32 Lanczos steps (layer_operator), which
# cost about 64 applications of the layer and its transpose per example (measured on one core: ResNet-8 on
# 28x28 images 0.18 s an example).
EXACT_LAYER_EXAMPLES = 200
OPERATOR_LAYER_EXAMPLES = 50


@dataclass(frozen=True)
class FastPaths:
    """An architecture's own ways to the Jacobian spectra, and the memory they need.

    io(model, x, chunk_size) and layers(model, x, chunk_size) return what ``io_singular_values``
    and ``layer_singular_values`` promise; memory(model, in_features, n_io, n_layer) is the bytes
    the measurement of ``n_io`` and ``n_layer`` examples holds at its peak.
    """

    io: Callable[[nn.Module, torch.Tensor, int | None], torch.Tensor]
    layers: Callable[[nn.Module, torch.Tensor, int | None], list[torch.Tensor]] | None = None
    memory: Callable[[nn.Module, int, int, int], int] | None = None


# Keyed by the exact model class: a subclass may compute something else, so it is measured generically.
FAST_PATHS: dict[type, FastPaths] = {}


def register_fast_paths(model_class: type, paths: FastPaths) -> None:
    """Make ``paths`` the way the Jacobians of ``model_class`` networks are measured."""
    if model_class in FAST_PATHS:
        raise ValueError(f"fast Jacobian paths of {model_class.__name__} registered twice")
    FAST_PATHS[model_class] = paths


def fast_paths(model: nn.Module) -> FastPaths | None:
    """The fast paths registered for the model's class, or None."""
    return FAST_PATHS.get(type(model))


def chunk_size_or(chunk_size: int | None, default: int) -> int:
    """The number of examples per chunk: ``chunk_size`` when given, else ``default``."""
    if chunk_size is None:
        return max(1, default)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
    return int(chunk_size)


def memory_chunk(per_example_floats: int) -> int:
    """The most examples whose float64 working set fits the per-chunk memory budget."""
    return min(_MAX_CHUNK, CHUNK_BYTES // (8 * per_example_floats))


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


def gram_singular_values(gram: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest singular values, descending, of matrices whose Gram matrices are ``gram``."""
    with single_threaded(gram.device):
        eig = torch.linalg.eigvalsh(gram)
    # Rounding can make the eigenvalues of a singular Gram matrix slightly negative; they are zeros.
    return eig.clamp_min_(0.0).sqrt_().flip(-1)[..., :k]


def generic_chunk(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Examples per chunk of the generic path: its backward passes hold about three copies of their activations."""
    return max(1, min(_GENERIC_CHUNK, CHUNK_BYTES // (3 * 4 * activations_per_example(model, in_shape))))


def _generic_io_singular_values(model: nn.Module, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """io_singular_values for any differentiable model: per chunk of examples, one forward pass and one
    backward pass per output unit, with respect to the input only.

    The backward pass of the chunk's summed logit k gives row k of every example's Jacobian because the
    contract's measuring mode makes every example independent of the others (BatchNorm uses its running
    statistics). The weights' gradients are not needed, so they are not computed.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    out = []
    with measuring(model), torch.enable_grad():
        for p in trainable:
            p.requires_grad_(False)
        try:
            for xb in x.split(chunk):
                xb = xb.detach().requires_grad_(True)
                logits = model(xb)
                classes = logits.shape[1]
                rows = [torch.autograd.grad(logits[:, k].sum(), xb, retain_graph=k < classes - 1)[0].reshape(len(xb), -1)
                        for k in range(classes)]
                jac = torch.stack(rows, 1).double()
                # The small C x C Gram matrix J Jᵀ in float64 instead of an SVD of the wide J: its error,
                # about sqrt(1e-16) of the largest singular value, stays below a float32 Jacobian's own.
                out.append(gram_singular_values(jac @ jac.transpose(1, 2), min(classes, jac.shape[2])))
        except RuntimeError as exc:
            raise SparsepropError(
                f"could not compute input-output Jacobians of {type(model).__name__} ({exc}); "
                "use an MLP or a model built from standard layers"
            ) from exc
        finally:
            for p in trainable:
                p.requires_grad_(True)
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
    fast = fast_paths(model)
    if fast is not None:
        return fast.io(model, x, chunk_size)
    # The default chunk costs a one-example pass to count the activations: only taken when needed.
    chunk = chunk_size_or(chunk_size, 1) if chunk_size is not None else generic_chunk(model, tuple(x.shape[1:]))
    return _generic_io_singular_values(model, x, chunk)


def has_layer_path(model: nn.Module) -> bool:
    """Whether the model's class registered an exact layerwise path (else ``layer_operator`` estimates them)."""
    fast = fast_paths(model)
    return fast is not None and fast.layers is not None


@torch.no_grad()
def layer_singular_values(model: nn.Module, x: torch.Tensor, chunk_size: int | None = None) -> list[torch.Tensor]:
    """Per layer, per-example singular values (N, min(out, in)), descending, float64, of J^l = diag(φ'(h^l)) (C^l⊙W^l).

    The last layer has no activation, so its Jacobian is its weight, the same for every example.
    Only architectures that registered an exact layerwise path (MLPs); ``layer_operator.layer_spectra``
    estimates them for any network.
    """
    fast = fast_paths(model)
    if fast is None or fast.layers is None:
        raise SparsepropError(
            f"exact layerwise singular values are computed for MLPs only, not {type(model).__name__}; "
            "sparseprop.signal.layer_operator.layer_spectra estimates them for any network"
        )
    return fast.layers(model, x.to(next(model.parameters()).device), chunk_size)


def auto_io_examples(model: nn.Module) -> str | int:
    """What ``signal.examples=auto`` means for ``model``: all examples where its class has a fast
    input-output path, else ``GENERIC_IO_EXAMPLES`` of a fixed shuffle."""
    fast = fast_paths(model)
    return "all" if fast is not None else GENERIC_IO_EXAMPLES


def auto_layer_examples(model: nn.Module) -> int:
    """What ``signal.layer_examples=auto`` means for ``model``: ``EXACT_LAYER_EXAMPLES`` where its class has an exact
    layerwise path, else ``OPERATOR_LAYER_EXAMPLES`` (each costs a Lanczos run per layer)."""
    return EXACT_LAYER_EXAMPLES if has_layer_path(model) else OPERATOR_LAYER_EXAMPLES


def signal_memory(model: nn.Module, in_features: int, n_io: int, n_layer: int) -> int:
    """Bytes measuring ``n_io`` input-output and ``n_layer`` layerwise examples holds at its peak (0: not sized)."""
    fast = fast_paths(model)
    if fast is None or fast.memory is None:
        return 0
    return fast.memory(model, in_features, n_io, n_layer)
