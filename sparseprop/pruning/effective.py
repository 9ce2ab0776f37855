"""The effective architecture of a pruned network: which units and connections can still carry signal.

A kept weight carries signal from the input to the output when its input unit is reachable from the
input through kept weights and its output unit reaches the output through kept weights. A unit is a
feature of a linear layer or a channel of a convolution; a convolution connects input channel i to
output channel o when the kernel keeps at least one of its taps (o, i, ·, ·). What lies between the
weight layers (pooling, flattening, padding, BatchNorm, element-wise activations, residual sums) only
routes each channel's or feature's signal, so reachability is found by running the network itself:
a copy whose weights are the 0/1 masks, whose biases are zero, and whose normalisations and activations
pass their input through, on an input of ones. After every weight layer each unit is set to 1 if any of
its values is positive and 0 otherwise (and, on the way back, likewise for the gradient of the summed
logits), so values never overflow however deep the network and a channel is one node whatever the side
of its feature map. Every quantity is non-negative, so a positive value means a path and zero means none.

The effective masks are the reusable piece: the effective parameter count is their sum, and the
effective sparsity (Vysogorets and Kempe 2023) is one minus their sum over the number of weights.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from sparseprop.models.base import weight_layers

# Element-wise activations whose value and slope do not matter to reachability: the copy passes input
# through them, so a saturating one (tanh, hardtanh) cannot hide a path. A network that applies an
# activation as a function instead must map 0 to 0 and positive values to positive ones with a positive slope.
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Hardtanh, nn.SELU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                    nn.Softplus, nn.Identity)
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
# A run warns when the effective sparsity exceeds the nominal one by more than this (one point).
EFFECTIVE_GAP = 0.01


@dataclass
class LayerReach:
    """One weight layer's effective architecture."""

    name: str                # the module name (its weight is ``<name>.weight``)
    conv: bool               # a convolution (units are channels) or a linear layer (units are features)
    units: int               # output units: out_features or out_channels
    effective_units: int     # output units on at least one input-output path of kept weights
    weights: int             # entries of the weight
    kept: int                # kept entries of the weight
    effective: torch.Tensor  # bool, the weight's shape: kept entries that carry signal from the input to the output

    @property
    def param(self) -> str:
        """The weight's parameter name (the key of masks)."""
        return f"{self.name}.weight" if self.name else "weight"

    @property
    def effective_kept(self) -> int:
        """Kept weights that can carry signal from the input to the output."""
        return int(self.effective.sum())

    @property
    def collapsed(self) -> bool:
        """No kept weight of this layer lies on an input-output path: no signal passes it (layer collapse)."""
        return self.effective_kept == 0

    def record(self) -> dict[str, Any]:
        """The layer's scalars, as layers.csv records them beside its weight."""
        return {"units": self.units, "effective_units": self.effective_units, "effective_kept": self.effective_kept,
                "effective_sparsity": 1.0 - self.effective_kept / self.weights, "collapsed": self.collapsed}


@dataclass
class EffectiveArchitecture:
    """Every weight layer's effective architecture, in forward order."""

    layers: list[LayerReach]

    @property
    def effective_params(self) -> int:
        """Connections (kept weights) that can carry signal from the input to the output."""
        return sum(layer.effective_kept for layer in self.layers)

    @property
    def kept_weights(self) -> int:
        """Kept weights, whether or not they can carry signal."""
        return sum(layer.kept for layer in self.layers)

    @property
    def widths(self) -> list[int]:
        """The effective width of every weight layer's output, in order."""
        return [layer.effective_units for layer in self.layers]

    @property
    def weights(self) -> int:
        """Entries of all weights (biases are not connections)."""
        return sum(layer.weights for layer in self.layers)

    @property
    def nominal_sparsity(self) -> float:
        """The fraction of weights the masks remove."""
        return 1.0 - self.kept_weights / self.weights

    @property
    def effective_sparsity(self) -> float:
        """The fraction of weights that carry no signal from the input to the output (Vysogorets and Kempe 2023)."""
        return 1.0 - self.effective_params / self.weights

    @property
    def collapsed(self) -> list[str]:
        """The weights (parameter names) of the layers with no kept weight on an input-output path."""
        return [layer.param for layer in self.layers if layer.collapsed]

    @property
    def cut_units(self) -> int:
        """Output units of the weight layers cut off from the input or from the output."""
        return sum(layer.units - layer.effective_units for layer in self.layers)

    def masks(self) -> dict[str, torch.Tensor]:
        """The effective masks by weight name: kept entries that carry signal."""
        return {layer.param: layer.effective for layer in self.layers}

    def summary(self) -> dict[str, Any]:
        """The run-level scalars summary.json records."""
        return {"effective_params": self.effective_params, "kept_weights": self.kept_weights,
                "effective_widths": " ".join(str(w) for w in self.widths),
                "weight_sparsity": self.nominal_sparsity, "effective_sparsity": self.effective_sparsity,
                "collapsed_layers": len(self.collapsed), "cut_units": self.cut_units}

    def warnings(self, tolerance: float = EFFECTIVE_GAP) -> list[str]:
        """Plain-language warnings: collapsed layers, and an effective sparsity more than ``tolerance`` above the nominal."""
        out = []
        if self.collapsed:
            consequence = ("so the network's output does not depend on its input" if self.effective_params == 0 else
                           "so no signal passes through them (what reaches the output bypasses them)")
            out.append(f"layer collapse: {', '.join(self.collapsed)} keep no weight on any input-output path, {consequence}")
        gap = self.effective_sparsity - self.nominal_sparsity
        if gap > tolerance:
            out.append(f"effective sparsity {100 * self.effective_sparsity:.2f}% exceeds the nominal "
                       f"{100 * self.nominal_sparsity:.2f}% of the weights by {100 * gap:.2f} points: "
                       f"{self.kept_weights - self.effective_params:,} kept weights and {self.cut_units:,} units are "
                       "cut off from the input or the output")
        return out


class _AnyPerUnit(torch.autograd.Function):
    """Forward: 1 on every value of a unit with a positive value, else 0; backward: the same of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: bool) -> torch.Tensor:  # noqa: D102
        ctx.conv = conv
        return _spread(x, conv)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return _spread(grad, ctx.conv), None


def _unit_any(x: torch.Tensor, conv: bool) -> torch.Tensor:
    """Per unit of one example's tensor (channel dim 1 for conv, last dim for linear): whether any value is positive."""
    positive = x.detach() > 0
    if conv:
        return positive.transpose(0, 1).reshape(x.shape[1], -1).any(1)
    return positive.reshape(-1, x.shape[-1]).any(0)


def _spread(x: torch.Tensor, conv: bool) -> torch.Tensor:
    """``_unit_any`` broadcast back to ``x``'s shape, as 0/1 values of its dtype."""
    unit = _unit_any(x, conv).to(x.dtype)
    shape = [1] * x.dim()
    shape[1 if conv else -1] = unit.numel()
    return unit.view(shape).expand_as(x).contiguous()


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd)


def effective_architecture(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None,
                           in_shape: tuple[int, ...] | None = None) -> EffectiveArchitecture:
    """The effective widths and connections of ``model`` under ``masks`` (by parameter name; None or absent: all kept)."""
    masks = masks or {}
    in_shape = tuple(in_shape if in_shape is not None else model.in_shape)
    layers = weight_layers(model)
    twin = copy.deepcopy(model).double().eval()
    twin_layers = dict(weight_layers(twin))
    hooks = []
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}
    with torch.no_grad():
        for p in twin.parameters():
            p.requires_grad_(False)
        for name, module in layers:
            twin_module = twin_layers[name]
            mask = masks.get(f"{name}.weight" if name else "weight")
            twin_module.weight.copy_(mask.to(twin_module.weight) if mask is not None else 1.0)
            if getattr(twin_module, "bias", None) is not None:
                twin_module.bias.zero_()
    for module in twin.modules():
        if isinstance(module, NORM_TYPES + ACTIVATION_TYPES):
            hooks.append(module.register_forward_hook(lambda _m, args, _out: args[0]))
    for name, _ in layers:
        conv = _is_conv(twin_layers[name])

        def before(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            inputs[name].append(args[0].detach())

        def after(_m: nn.Module, _args: Any, out: torch.Tensor, name: str = name, conv: bool = conv) -> torch.Tensor:
            out = _AnyPerUnit.apply(out, conv)
            if out.requires_grad:  # a layer fed by no path from the input has no gradient to keep
                out.retain_grad()
            outputs[name].append(out)
            return out

        hooks += [twin_layers[name].register_forward_pre_hook(before), twin_layers[name].register_forward_hook(after)]
    try:
        first = next(twin.parameters(), None)
        x = torch.ones(1, *in_shape, dtype=torch.float64, device=first.device if first is not None else None,
                       requires_grad=True)
        logits = twin(x)
        logits.sum().backward()
    finally:
        for h in hooks:
            h.remove()
    out = []
    for name, module in layers:
        conv = _is_conv(module)
        calls = list(zip(inputs[name], outputs[name]))
        if not calls:
            raise ValueError(f"weight layer {name!r} is not used by the network's forward pass")
        fwd_in = torch.stack([_unit_any(i, conv) for i, _ in calls]).any(0)
        fwd_out = torch.stack([_unit_any(o, conv) for _, o in calls]).any(0)
        bwd_out = torch.stack([_unit_any(o.grad if o.grad is not None else torch.zeros_like(o), conv)
                               for _, o in calls]).any(0)
        weight = module.weight
        mask = masks.get(f"{name}.weight" if name else "weight")
        kept = (mask.to(weight.device).bool() if mask is not None else torch.ones_like(weight, dtype=torch.bool))
        if conv:
            groups = module.groups
            cout, cin_g = weight.shape[0], weight.shape[1]
            # Output channel o of group g = o // (cout / groups) reads input channels g * cin_g ... (g + 1) * cin_g - 1.
            reads = fwd_in.view(groups, cin_g).repeat_interleave(cout // groups, dim=0)
            effective = kept & reads.view(cout, cin_g, *[1] * (weight.dim() - 2)) \
                & bwd_out.view(cout, *[1] * (weight.dim() - 1))
        else:
            effective = kept & fwd_in.view(1, -1) & bwd_out.view(-1, 1)
        out.append(LayerReach(name=name, conv=conv, units=int(weight.shape[0]),
                              effective_units=int((fwd_out & bwd_out).sum()), weights=weight.numel(),
                              kept=int(kept.sum()), effective=effective.cpu()))
    return EffectiveArchitecture(out)
