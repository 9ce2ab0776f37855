"""scope=operator rows of a stage's measurement: every weight layer of a conv net, from its own input grid."""

import pytest
import torch

from sparseprop.signal import measure as propagation
from sparseprop.signal import spectrum_stats
from tests.conftest import TinyConvBN
from tests.signal.test_operator import reference


def test_a_conv_net_gets_an_operator_row_and_raw_values_per_weight_layer():
    torch.manual_seed(0)
    net = TinyConvBN(in_shape=(1, 8, 8))
    with torch.no_grad():
        net.conv1.weight[0, 0] = 0.0  # a pruned kernel slice
    m = propagation.measure(net, None, None, "pruned", step=3)
    rows = [r for r in m.rows if r["scope"] == "operator"]
    assert [(r["layer"], r["name"]) for r in rows] == [(0, "conv1.weight"), (1, "conv2.weight"), (2, "fc.weight")]
    expected = [reference(net.conv1.weight, (8, 8), (1, 1)), reference(net.conv2.weight, (6, 6), (2, 2)),
                torch.linalg.svdvals(net.fc.weight.detach().double())]
    for row, want in zip(rows, expected):
        assert row["stage"] == "pruned" and row["step"] == 3 and row["examples"] == 0
        assert row["count"] == want.numel()
        stats = spectrum_stats(want)
        for key in ("mean", "std", "min", "max", "q50"):
            assert row[key] == pytest.approx(stats[key], rel=1e-9, abs=1e-12), key
        raw = m.raw[f"pruned/operator{row['layer']}"]
        assert raw.shape == want.shape
        assert torch.allclose(torch.from_numpy(raw).double(), want, rtol=1e-6, atol=1e-7)  # stored as float32
    assert not m.warnings
    assert m.raw["grids/operator0"].tolist() == [8, 8] and m.raw["grids/operator1"].tolist() == [6, 6]
    assert "grids/operator2" not in m.raw  # a dense layer has no grid


def test_a_layer_that_cannot_be_measured_is_skipped_with_its_reason_and_the_others_are_not():
    net = TinyConvBN(in_shape=(1, 7, 7))  # conv2 (stride 2) sees a 5x5 grid
    m = propagation.measure(net, None, None, "init")
    assert [r["name"] for r in m.rows if r["scope"] == "operator"] == ["conv1.weight", "fc.weight"]
    assert [w for w in m.warnings if "operator" in w] == [
        "layer 1 (conv2.weight) operator spectrum skipped: input grid (5, 5) is not a multiple of the stride (2, 2)"]


def test_an_mlp_has_no_operator_rows_and_they_can_be_left_out():
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    assert not [r for r in propagation.measure(mlp, None, None, "init").rows if r["scope"] == "operator"]
    net = TinyConvBN(in_shape=(1, 8, 8))
    m = propagation.measure(net, None, None, "train", operators=False)
    assert not [r for r in m.rows if r["scope"] == "operator"] and not any("operator" in k for k in m.raw)


def test_a_network_without_a_stated_input_shape_takes_it_from_the_examples():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(3 * 16, 4))
    m = propagation.measure(net, torch.randn(2, 2, 4, 4), None, "init")
    got = [r for r in m.rows if r["scope"] == "operator"]
    assert len(got) == 2 and got[0]["count"] == 2 * 16  # min(c_out, c_in) per frequency
    assert got[0]["max"] == pytest.approx(float(reference(net[0].weight, (4, 4), (1, 1)).max()), rel=1e-9)
    m = propagation.measure(net, None, None, "init")
    assert not [r for r in m.rows if r["scope"] == "operator"]
    assert any("input shape" in w for w in m.warnings)


def test_a_non_finite_kernel_gives_a_row_of_non_finite_values_and_a_warning():
    net = TinyConvBN(in_shape=(1, 8, 8))
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("nan")
    m = propagation.measure(net, None, None, "init")
    row = [r for r in m.rows if r["scope"] == "operator" and r["layer"] == 1][0]
    assert row["nonfinite"] == 4 * 9 and row["count"] == 0  # every value of the operator, none of them finite
    assert any("layer 1 operator" in w and "not finite" in w for w in m.warnings)


def test_grids_are_found_with_batchnorm_on_batch_statistics_and_the_running_ones_untouched():
    from sparseprop.models.base import set_norm_mode

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 16, 4),
                              torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    set_norm_mode(net, "batch")
    net.in_shape = (1, 4, 4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    m = propagation.measure(net, None, None, "init")  # one example alone could not be normalised on its own statistics
    assert [r["name"] for r in m.rows if r["scope"] == "operator"] == ["0.weight", "2.weight", "4.weight"]
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
