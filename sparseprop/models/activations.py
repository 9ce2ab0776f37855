"""Element-wise activations, looked up by their registry names."""

from __future__ import annotations

from typing import Callable

from torch import nn

from sparseprop.registry import Registry

ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation")


@ACTIVATIONS.register("linear")
def _linear(**_: object) -> nn.Module:
    return nn.Identity()


@ACTIVATIONS.register("tanh")
def _tanh(**_: object) -> nn.Module:
    return nn.Tanh()


@ACTIVATIONS.register("relu")
def _relu(**_: object) -> nn.Module:
    return nn.ReLU()


@ACTIVATIONS.register("leaky_relu")
def _leaky_relu(negative_slope: float = 0.01, **_: object) -> nn.Module:
    return nn.LeakyReLU(negative_slope)


@ACTIVATIONS.register("hardtanh")
def _hardtanh(**_: object) -> nn.Module:
    return nn.Hardtanh()


@ACTIVATIONS.register("selu")
def _selu(**_: object) -> nn.Module:
    return nn.SELU()


def build_activation(name: str, **options: object) -> nn.Module:
    """The activation module called ``name``."""
    return ACTIVATIONS.get(name, "activation")(**options)
