"""Network architectures and activations, looked up by their registry names; ``base`` holds the model contract."""

from sparseprop.models.activations import ACTIVATIONS, Activation, LeakyReluOptions, build_activation
from sparseprop.models.base import (
    ARCHS,
    Network,
    activations_per_example,
    build_model,
    measuring,
    prunable_parameters,
    traced_activations,
    weight_layers,
    weight_parameters,
)
from sparseprop.models.mlp import MAX_DEPTH, MLP, LeNet300Options, MLPOptions

__all__ = ["ACTIVATIONS", "ARCHS", "MAX_DEPTH", "MLP", "Activation", "LeNet300Options", "LeakyReluOptions", "MLPOptions",
           "Network", "activations_per_example", "build_activation", "build_model",
           "measuring", "prunable_parameters", "traced_activations", "weight_layers", "weight_parameters"]
