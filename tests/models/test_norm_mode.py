"""The contract's BatchNorm modes while scoring and measuring: running statistics, or the batch's own without updates."""

import copy

import pytest
import torch

from sparseprop import models
from sparseprop.models.base import batch_norms, norm_mode, set_norm_mode
from tests.conftest import example_inputs, tiny_conv_bn


def test_batch_mode_normalises_with_the_batchs_statistics_and_moves_nothing():
    net = tiny_conv_bn(dtype=torch.float64)
    x = example_inputs(net, 9)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    set_norm_mode(net, "batch")
    with models.measuring(net):
        out = net(x)
        assert not any(m.training for m in net.modules())  # anything else (dropout) stays in evaluation mode
    # torch's training mode is the definition of batch statistics (mean and biased variance of the batch).
    ref = copy.deepcopy(net).train()(x)
    assert torch.allclose(out, ref, rtol=0, atol=1e-12)
    # Running means, variances and num_batches_tracked exactly as they were, buffers back in place.
    after = net.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(bn.running_mean is not None and bn.running_var is not None for bn in batch_norms(net))


def test_running_mode_uses_the_running_statistics():
    net = tiny_conv_bn(dtype=torch.float64)
    x = example_inputs(net, 9)
    with models.measuring(net):
        out = net(x)
    assert torch.allclose(out, copy.deepcopy(net).eval()(x), rtol=0, atol=1e-12)
    assert not torch.allclose(out, copy.deepcopy(net).train()(x), atol=1e-3)  # the two modes differ on this net


def test_modes_are_checked_and_restored_on_error():
    net = tiny_conv_bn()
    assert norm_mode(net) == "running"
    with pytest.raises(ValueError):
        set_norm_mode(net, "moving")
    set_norm_mode(net, "batch")
    net.train()
    with pytest.raises(RuntimeError), models.measuring(net):
        raise RuntimeError("boom")
    assert net.training and all(bn.running_mean is not None for bn in batch_norms(net))
    assert norm_mode(net) == "batch" and norm_mode(tiny_conv_bn()) == "running"  # an instance's choice, not the class's
