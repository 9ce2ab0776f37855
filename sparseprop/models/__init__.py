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
from sparseprop.models.layers import BN_EPS, BN_MOMENTUM
from sparseprop.models.lenet5 import LeNet5
from sparseprop.models.mlp import MAX_DEPTH, MLP, LeNet300Options, MLPOptions
from sparseprop.models.resnet import ResNet
from sparseprop.models.vgg import VGG
from sparseprop.models.wrn import WideResNet

__all__ = ["ACTIVATIONS", "ARCHS", "BN_EPS", "BN_MOMENTUM", "MAX_DEPTH", "MLP", "VGG", "Activation", "LeNet300Options",
           "LeNet5", "LeakyReluOptions", "MLPOptions", "Network", "ResNet", "WideResNet", "activations_per_example", "build_activation", "build_model",
           "measuring", "prunable_parameters", "traced_activations", "weight_layers", "weight_parameters"]
