"""Criteria that keep a float64 copy of the network between rounds give what a fresh copy per round gives."""

import pytest
import torch

from sparseprop import pruning
from sparseprop.models.base import set_norm_mode
from tests.conftest import tiny_conv_bn, tiny_mlp


def fresh_copy_every_round(pruner):
    """Make ``pruner`` drop its float64 copy before every round, as if it deep-copied the network each time."""
    score = pruner.score

    def score_afresh(*args, **kwargs):
        pruner.cache.clear()
        return score(*args, **kwargs)
    pruner.score = score_afresh
    return pruner


@pytest.mark.parametrize("make_net,shape,mode", [(tiny_mlp, (12,), "running"), (tiny_conv_bn, (1, 8, 8), "running"),
                                                 (tiny_conv_bn, (1, 8, 8), "batch")])
def test_iterative_grasp_reusing_its_float64_copy_equals_a_fresh_copy_per_round(make_net, shape, mode):
    g = torch.Generator().manual_seed(1)
    data = pruning.ScoringData(torch.randn(60, *shape, generator=g), torch.arange(60) % 5)
    results = []
    for fresh in (False, True):
        net = make_net()
        set_norm_mode(net, mode)
        params = pruning.prunable_parameters(net)
        pruner = pruning.make_pruner({"name": "grasp", "sparsity": 0.8, "rounds": 4, "batch_size": 10})
        if fresh:
            fresh_copy_every_round(pruner)
        results.append(pruner.prune(net, params, data, None, torch.Generator().manual_seed(0)))
        assert pruner.cache == {}  # nothing held after prune()
    reused, afresh = results
    for k in reused.masks:
        assert torch.equal(reused.masks[k], afresh.masks[k]), k
        assert torch.equal(reused.scores[k], afresh.scores[k]), k


def test_iterative_synflow_reusing_its_float64_copy_equals_a_fresh_copy_per_round():
    results = []
    for fresh in (False, True):
        net = tiny_conv_bn()
        params = pruning.prunable_parameters(net)
        pruner = pruning.make_pruner({"name": "synflow", "sparsity": 0.8, "rounds": 5})
        if fresh:
            fresh_copy_every_round(pruner)
        results.append(pruner.prune(net, params, None, None, torch.Generator().manual_seed(0)))
        assert pruner.cache == {}
    reused, afresh = results
    for k in reused.masks:
        assert torch.equal(reused.masks[k], afresh.masks[k]), k
        assert torch.equal(reused.scores[k], afresh.scores[k]), k
