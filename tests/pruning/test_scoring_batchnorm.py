"""SNIP's scores on a BatchNorm net under both BatchNorm modes, against a plain per-batch autograd loop in float64."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sparseprop import pruning
from sparseprop.models.base import set_norm_mode
from sparseprop.pruning.scoring import batch_indices, connection_sensitivity
from tests.conftest import tiny_conv_bn


def scoring_problem(n=230):
    net = tiny_conv_bn(dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, *net.in_shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, net.num_outputs, (n,), generator=g)
    # 100, 100 and 30 examples: a short last batch, as a split that batches do not divide leaves.
    batches = batch_indices(n, 100, None, torch.Generator().manual_seed(1))
    return net, x, y, batches


def reference_scores(net, x, y, batches, batch_statistics: bool):
    """w · Σ_b ∂(mean cross-entropy of batch b)/∂w, one batch at a time on a fresh copy of the net.

    Running statistics: the copy in evaluation mode. Batch statistics: the copy in training mode, where
    BatchNorm normalises with the batch's own mean and (biased) variance, as torch defines it.
    """
    total = None
    for b in batches:
        ref = copy.deepcopy(net).train(batch_statistics)
        params = pruning.prunable_parameters(ref)
        loss = F.cross_entropy(ref(x[b]), y[b])
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
        total = grads if total is None else {k: total[k] + grads[k] for k in grads}
    return {k: p.detach() * total[k] for k, p in pruning.prunable_parameters(net).items()}


def assert_close(ours, ref):
    for k in ref:
        # float64 sums of a few hundred terms of size <= max|ref|: rounding far below 1e-10 of it.
        assert torch.allclose(ours[k], ref[k], rtol=0, atol=1e-10 * float(ref[k].abs().max()) + 1e-300), k


@pytest.mark.parametrize("mode", ["running", "batch"])
@pytest.mark.parametrize("chunk", [10_000, 64, 7])
def test_scores_equal_per_batch_autograd_whatever_the_chunks(mode, chunk):
    net, x, y, batches = scoring_problem()
    set_norm_mode(net, mode)
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    ours = connection_sensitivity(net, pruning.prunable_parameters(net), x, y, batches, chunk=chunk)
    assert_close(ours, reference_scores(net, x, y, batches, batch_statistics=mode == "batch"))
    # Scoring never moves the running statistics, in either mode.
    assert all(torch.equal(v, buffers[k]) for k, v in net.named_buffers())
    assert net.training  # the mode the net was in is restored


def test_the_two_modes_score_differently_on_a_net_whose_running_statistics_are_not_the_batchs():
    net, x, y, batches = scoring_problem()
    params = pruning.prunable_parameters(net)
    running = connection_sensitivity(net, params, x, y, batches)
    set_norm_mode(net, "batch")
    batch = connection_sensitivity(net, params, x, y, batches)
    assert any((running[k] - batch[k]).abs().max() > 1e-3 * running[k].abs().max() for k in running)


def test_snip_masks_follow_the_batch_mode_scores():
    net, x, y, _ = scoring_problem()
    set_norm_mode(net, "batch")
    params = pruning.prunable_parameters(net)
    snip = pruning.make_pruner({"name": "snip", "sparsity": 0.5, "batch_size": 100})
    result = snip.prune(net, params, pruning.ScoringData(x, y), None, torch.Generator().manual_seed(1))
    batches = batch_indices(x.shape[0], 100, None, torch.Generator().manual_seed(1))
    ref = reference_scores(net, x, y, batches, batch_statistics=True)
    total = sum(float(s.abs().sum()) for s in ref.values())
    for k in ref:
        assert torch.allclose(result.scores[k], ref[k].abs() / total, rtol=0, atol=1e-12), k
