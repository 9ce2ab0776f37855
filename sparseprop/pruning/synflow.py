"""SynFlow (Tanaka, Kunin, Yamins and Ganguli 2020): data-free iterative conservation of synaptic flow.

Every entry is scored by |θ ⊙ ∂R/∂θ| with R = 1ᵀ (Π_l |W^l|) 1, the synaptic flow: the sum of the
outputs of the network whose every parameter is replaced by its absolute value, on an all-ones input.
R is the linear path sum of the paper's definition, so the network is evaluated with its element-wise
activations passed through (for ReLU on non-negative values this changes nothing; a saturating tanh
would otherwise turn every gradient into zero). BatchNorm runs in evaluation mode on its running
statistics with every parameter and buffer made non-negative, as the authors' code does (at
initialisation it scales by 1/√(1 + ε)). The computation runs in float64 (R is a product of as many
factors as there are layers), and the mask is reached over ``rounds`` rounds (100 by default) on the
exponential schedule, each rescoring the network with the entries pruned so far at zero: the
iteration is what avoids layer collapse in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from sparseprop.errors import SparsepropError
from sparseprop.pruning.base import PRUNERS, ScoringData
from sparseprop.pruning.effective import ACTIVATION_TYPES
from sparseprop.pruning.scored import Float64Twin, ScoredOptions, ScoredPruner, Scores


class SynapticFlow:
    """A float64 non-negative copy of a network with its activations passed through; made once, rescored per round."""

    def __init__(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        self.in_shape = tuple(in_shape if in_shape is not None else model.in_shape)
        self.copy = Float64Twin(model)
        self.copy.twin.eval()
        for m in self.copy.twin.modules():
            if isinstance(m, ACTIVATION_TYPES):
                m.register_forward_hook(lambda _m, args, _out: args[0])

    def scores(self, model: nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """|θ ⊙ ∂R/∂θ| for every tensor of ``params``, with every parameter and buffer of ``model`` at its current |value|."""
        if model is not self.copy.of:
            raise ValueError("SynapticFlow.scores: a network other than the one this copy was made of")
        twin, named = self.copy.refreshed(params)
        with torch.no_grad():
            for t in [*twin.parameters(), *twin.buffers()]:
                if t.is_floating_point():
                    t.abs_()
        tensors = list(named.values())
        x = torch.ones(1, *self.in_shape, dtype=torch.float64, device=tensors[0].device)
        r = twin(x).sum()
        if not math.isfinite(float(r.detach())):
            raise SparsepropError(f"prune=synflow: the synaptic flow R = {float(r.detach())} overflows float64 on this network; "
                                  "choose another criterion or a shallower network")
        grads = torch.autograd.grad(r, tensors, allow_unused=True)
        return {k: (t.detach() * g).abs() if g is not None else torch.zeros_like(t.detach())
                for k, t, g in zip(params, tensors, grads)}


def synflow_scores(model: nn.Module, params: dict[str, torch.Tensor],
                   in_shape: tuple[int, ...] | None = None) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ| in float64 for every tensor of ``params`` (by the model's parameter names); ``model`` is not changed."""
    return SynapticFlow(model, in_shape).scores(model, params)


@dataclass
class SynflowOptions(ScoredOptions):
    """The paper's defaults: 100 rounds on the exponential schedule."""

    rounds: int = 100


@PRUNERS.register("synflow", schema=SynflowOptions)
class Synflow(ScoredPruner):
    """Keeps the entries of largest synaptic saliency |θ ⊙ ∂R/∂θ|, pruning in rounds."""

    options: SynflowOptions

    def score(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              initial: dict[str, torch.Tensor], generator: torch.Generator) -> Scores:
        if "flow" not in self.cache:
            self.cache["flow"] = SynapticFlow(model)
        return Scores(self.cache["flow"].scores(model, params))
