"""The model contract: what every architecture states about itself, and the ARCHS registry.

Pruning, inits, signal measurements, approximate isometry and the records act on a network only
through this contract, never by scanning for layer types of their own:

- ``weight_layers()``: the layers whose weights are the matrices C^l⊙W^l, in forward order, as
  (module name, module with ``.weight`` and possibly ``.bias``). Pruning masks them, inits draw
  them, signal measures their spectra and approximate isometry orthogonalises them.
- ``prunable_parameters(include_bias)``: the tensors a mask may cover: every weight layer's weight
  and, if asked, its bias, by parameter name, in that order. Normalisation parameters never are.
- ``NORM_MODE``: how BatchNorm (and any layer that behaves differently while training) is treated
  while scoring for pruning and measuring signal: ``"running"``, evaluation mode with the running
  statistics, so each example's result depends on that example alone. ``measuring(model)`` applies it.
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
NORM_MODES = ("running",)


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


@contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """The model as it is scored and measured (``NORM_MODE`` ``running``: evaluation mode); its mode restored after."""
    mode = getattr(model, "NORM_MODE", "running")
    if mode not in NORM_MODES:
        raise ValueError(f"{type(model).__name__}.NORM_MODE={mode!r}: choose one of {', '.join(NORM_MODES)}")
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
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
    try:
        # In the measuring mode: BatchNorm in training mode refuses a batch of one example.
        with torch.no_grad(), measuring(model):
            model(torch.empty(1, *in_shape, device="meta"))
    finally:
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
