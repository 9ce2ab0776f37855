"""The model contract: what every architecture states about itself, and the ARCHS registry.

Pruning, inits, signal measurements, approximate isometry and the records act on a network only
through this contract, never by scanning for layer types of their own:

- ``weight_layers()``: the layers whose weights are the matrices C^l⊙W^l, in forward order, as
  (module name, module with ``.weight`` and possibly ``.bias``). Pruning masks them, inits draw
  them, signal measures their spectra and approximate isometry orthogonalises them.
- ``prunable_parameters(include_bias)``: the tensors a mask may cover: every weight layer's weight
  and, if asked, its bias, by parameter name, in that order. Normalisation parameters never are.
- ``NORM_MODE``: how BatchNorm is treated while scoring for pruning and measuring signal:
  ``"running"`` (the default, the authors'), evaluation mode with the running statistics, so each
  example's result depends on that example alone; or ``"batch"``, evaluation mode except that
  BatchNorm normalises with the statistics of the batch it is given and leaves its running buffers
  untouched. A run chooses it with ``set_norm_mode``; ``measuring(model)`` applies it.
- ``in_shape`` and ``num_outputs``: the shape of one input example and the number of logits.
- ``activations_per_example()``: the values one example's forward pass produces (for memory sizing).

``Network`` is the base class of architectures that implement it. A plain ``nn.Module`` built
from torch's standard layers is treated by the default below: its linear and conv layers in module order.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import nn

from sparseprop.registry import Registry

ARCHS: Registry[Callable[..., nn.Module]] = Registry("arch", group="arch")

# The layer types whose weights a network built from torch's standard layers exposes by default.
STANDARD_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_MODES = ("running", "batch")


def standard_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The linear and conv layers of ``model`` in module order: the default weight-layer listing."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, STANDARD_WEIGHT_LAYERS)]


class Network(nn.Module):
    """Base class of the architectures: implements the model contract described in this module."""

    # BatchNorm while scoring and measuring: evaluation mode with its running statistics.
    NORM_MODE: ClassVar[str] = "running"
    in_shape: tuple[int, ...]
    num_outputs: int

    def weight_layers(self) -> list[tuple[str, nn.Module]]:
        """(module name, module) of every weight layer, in forward order."""
        return standard_weight_layers(self)

    def prunable_parameters(self, include_bias: bool = True) -> dict[str, nn.Parameter]:
        """Weights (and, if ``include_bias``, biases) of the weight layers, by parameter name, in order."""
        return _prunable(self.weight_layers(), include_bias)

    def activations_per_example(self) -> int:
        """Values one example's forward pass produces: every leaf module's output."""
        return traced_activations(self, self.in_shape)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The weight layers ``model`` states (or, for a plain module, its standard linear and conv layers)."""
    return model.weight_layers() if isinstance(model, Network) else standard_weight_layers(model)


def weight_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """(parameter name, weight) of every weight layer, in order; the weight is not reshaped."""
    return [(_param_name(name, "weight"), module.weight) for name, module in weight_layers(model)]


def prunable_parameters(model: nn.Module, include_bias: bool = True) -> dict[str, nn.Parameter]:
    """The tensors a mask may cover, by parameter name: weights, and biases if ``include_bias``; never BatchNorm."""
    if isinstance(model, Network):
        return model.prunable_parameters(include_bias)
    return _prunable(standard_weight_layers(model), include_bias)


def _prunable(layers: list[tuple[str, nn.Module]], include_bias: bool) -> dict[str, nn.Parameter]:
    out: dict[str, nn.Parameter] = {}
    for name, module in layers:
        out[_param_name(name, "weight")] = module.weight
        if include_bias and module.bias is not None:
            out[_param_name(name, "bias")] = module.bias
    return out


def _param_name(module_name: str, param: str) -> str:
    return f"{module_name}.{param}" if module_name else param


def norm_mode(model: nn.Module) -> str:
    """How ``model``'s BatchNorm is treated while scoring and measuring (``NORM_MODE``, ``running`` if unstated)."""
    mode = getattr(model, "NORM_MODE", "running")
    if mode not in NORM_MODES:
        raise ValueError(f"{type(model).__name__}.NORM_MODE={mode!r}: choose one of {', '.join(NORM_MODES)}")
    return mode


def set_norm_mode(model: nn.Module, mode: str) -> None:
    """Make ``mode`` (one of ``NORM_MODES``) the way this network's BatchNorm is treated while scoring and measuring."""
    if mode not in NORM_MODES:
        raise ValueError(f"BatchNorm mode {mode!r}: choose one of {', '.join(NORM_MODES)}")
    model.NORM_MODE = mode


def batch_norms(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``model`` that keep running statistics: those the mode changes."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """The model as it is scored and measured (evaluation mode; BatchNorm as ``NORM_MODE`` says); its mode restored after."""
    mode = norm_mode(model)
    was_training = model.training
    model.eval()
    # In evaluation mode a BatchNorm layer without running buffers normalises with the batch's own
    # statistics and has nothing to update, so taking the buffers away for the block is the batch
    # mode, with the running statistics (and num_batches_tracked) exactly as they were afterwards.
    saved = [(bn, bn.running_mean, bn.running_var) for bn in batch_norms(model)] if mode == "batch" else []
    for bn, _, _ in saved:
        bn.running_mean, bn.running_var = None, None
    try:
        yield model
    finally:
        for bn, mean, var in saved:
            bn.running_mean, bn.running_var = mean, var
        model.train(was_training)


def activations_per_example(model: nn.Module, in_shape: Sequence[int]) -> int:
    """Values one example's forward pass through ``model`` produces (the contract's count, else traced)."""
    if isinstance(model, Network):
        return model.activations_per_example()
    return traced_activations(model, tuple(in_shape))


def traced_activations(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """activations_per_example for any network: a forward pass on the meta device counting every leaf's output.

    The first meta forward pass imports torch's decompositions (about a second), so MLPs count theirs directly.
    """
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    # On the device the parameters live on: the meta device for a network laid out there, else one real example.
    first = next(model.parameters(), None)
    device, dtype = (first.device, first.dtype) if first is not None else (torch.device("meta"), torch.float32)
    was_training = model.training
    try:
        # In evaluation mode with the running statistics: BatchNorm in training (or batch) mode refuses a batch
        # of one example, and a real pass must not move the running statistics.
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *in_shape, device=device, dtype=dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total


def numel(shape: Sequence[int]) -> int:
    """The number of entries of a tensor of ``shape``."""
    n = 1
    for s in shape:
        n *= int(s)
    return n


def build_model(arch: str, in_shape: Sequence[int], num_classes: int, activation: nn.Module, **options: object) -> nn.Module:
    """The network called ``arch`` for inputs of ``in_shape`` and ``num_classes`` outputs."""
    return ARCHS.get(arch, "arch")(in_shape=in_shape, num_classes=num_classes, activation=activation, **options)
