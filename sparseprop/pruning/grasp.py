"""GraSP (Wang, Zhang and Grosse 2020): keep the entries whose removal least reduces the gradient flow.

With g = ∇_θ L the gradient of the scoring loss and H its Hessian, the paper scores every entry by

    S(−θ) = −θ ⊙ H g

(the first-order change of the gradient norm ‖g‖² when the entry is removed, up to a factor) and
removes the entries of *largest* S: the mask keeps the κ lowest scores, so a large negative score
(removing the entry would reduce the gradient flow most) is kept first. Here the ranking key is −S
and the recorded score is S itself, in the paper's sign.

L is the cross-entropy of the logits divided by the temperature T (200 in the paper, which flattens
the softmax of an untrained network so the Hessian is not dominated by a few saturated examples).
H g is one Hessian–vector product by double back-propagation: a first pass gives g (detached), a
second gives ∇L with its graph, and the gradient of ∇L · g is H g. Both sums run over the same
scoring batches, each batch's mean loss counted once, so g and H are those of Σ_b L_b. The authors
score one batch of 10 examples per class (``balanced``). The computation runs in float64 by default
(``double``): the Hessian-vector product cancels terms of different signs, and float32 keeps only
about five digits of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparseprop.errors import ConfigError
from sparseprop.models.base import measuring
from sparseprop.pruning.base import PRUNERS, ScoringData
from sparseprop.pruning.scored import Float64Twin, ScoredDataOptions, ScoredDataPruner, Scores
from sparseprop.pruning.scoring import batch_indices, parse_batches


def grasp_scores(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 batches: list[torch.Tensor], temperature: float = 200.0) -> dict[str, torch.Tensor]:
    """S = −θ ⊙ H g for the loss Σ_b CE(f(x_b)/T, y_b) (mean over each batch b), in ``model``'s dtype.

    BatchNorm is treated as the model's ``NORM_MODE`` says; each scoring batch is one pass.
    """
    names, tensors = list(params), list(params.values())
    dtype = tensors[0].dtype
    with measuring(model):
        def loss(b: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(model(x[b].to(dtype)) / temperature, y[b])

        g = [torch.zeros_like(t) for t in tensors]
        for b in batches:
            for acc, gb in zip(g, torch.autograd.grad(loss(b), tensors, allow_unused=True)):
                if gb is not None:
                    acc += gb
        hg = [torch.zeros_like(t) for t in tensors]
        for b in batches:
            grads = torch.autograd.grad(loss(b), tensors, create_graph=True, allow_unused=True)
            z = sum((gb * gd).sum() for gb, gd in zip(grads, g) if gb is not None)
            if not torch.is_tensor(z) or not z.requires_grad:
                continue  # the loss is linear in every tensor on this batch: H g = 0
            for acc, h in zip(hg, torch.autograd.grad(z, tensors, allow_unused=True)):
                if h is not None:
                    acc += h
    return {k: -(t.detach() * h) for k, t, h in zip(names, tensors, hg)}


def balanced_batches(y: torch.Tensor, batch_size: int, batches: int | None, classes: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """Scoring batches holding batch_size / classes examples of every class each, drawn without replacement."""
    per = batch_size // classes
    by_class = [torch.nonzero(y.cpu() == c).flatten() for c in range(classes)]
    fit = min(len(ix) for ix in by_class) // per
    n = fit if batches is None else batches
    if n > fit or n < 1:
        raise ConfigError("prune.batches", batches, f"at most {fit} balanced batches of {per} examples per class fit: "
                                                    f"the rarest class has {min(len(ix) for ix in by_class)} examples")
    shuffled = [ix[torch.randperm(len(ix), generator=generator)] for ix in by_class]
    return [torch.cat([ix[i * per:(i + 1) * per] for ix in shuffled])[torch.randperm(per * classes, generator=generator)]
            for i in range(n)]


@dataclass
class GraspOptions(ScoredDataOptions):
    """The authors' protocol by default: one batch of 10 examples per class (100 on 10 classes), T = 200."""

    batches: Any = 1
    batch_size: int = 100
    temperature: float = 200.0
    balanced: bool = True
    double: bool = True

    def check(self) -> None:
        super().check()
        if not (self.temperature > 0 and self.temperature != float("inf")):
            self.refuse("temperature", "a positive number (the paper's T = 200)")

    def check_split(self, n_train: int, dataset: str) -> None:
        super().check_split(n_train, dataset)
        if self.balanced:
            from sparseprop.data import SHAPES

            if dataset in SHAPES:
                self.check_classes(SHAPES[dataset].num_classes, f"dataset={dataset}'s")

    def check_classes(self, classes: int, whose: str = "the") -> None:
        """Refuse a balanced batch that cannot hold the same number of examples of each of ``classes``."""
        if self.balanced and self.batch_size % classes:
            self.refuse("batch_size", f"a multiple of {whose} {classes} classes with prune.balanced=true "
                                      "(the same number of examples of every class), or set prune.balanced=false")


@PRUNERS.register("grasp", schema=GraspOptions)
class Grasp(ScoredDataPruner):
    """Keeps the κ entries of lowest S = −θ ⊙ H g (Wang et al. 2020, their sign)."""

    options: GraspOptions

    def score(self, model: nn.Module, params: dict[str, nn.Parameter], data: ScoringData | None,
              initial: dict[str, torch.Tensor], generator: torch.Generator) -> Scores:
        o = self.options
        if o.balanced:
            classes = int(getattr(model, "num_outputs", 0) or int(data.y.max()) + 1)
            o.check_classes(classes)
            chosen = balanced_batches(data.y, o.batch_size, parse_batches(o.batches), classes, generator)
        else:
            chosen = batch_indices(data.x.shape[0], o.batch_size, parse_batches(o.batches), generator)
        chosen = [b.to(data.x.device) for b in chosen]
        net, tensors = model, dict(params)
        if o.double:
            if "twin" not in self.cache:
                self.cache["twin"] = Float64Twin(model)
            net, tensors = self.cache["twin"].refreshed(params)
        scores = grasp_scores(net, tensors, data.x, data.y, chosen, o.temperature)
        return Scores(scores, {k: -s for k, s in scores.items()})
