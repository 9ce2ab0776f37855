"""Signal measurements of whole runs, checked against independent float64 computations on saved checkpoints."""

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from sparseprop import config, data, records
from sparseprop.signal import measure as propagation
from sparseprop.runner.checkpoint import load_run
from sparseprop.runner.run import Run

SMALL = ["dataset=digits", "arch.depth=3", "arch.width=16", "progress=false", "signal.examples=40", "signal.layer_examples=15"]


def run(tmp_path, overrides):
    with initialize_config_dir(config_dir=str(config.CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*SMALL, *overrides])
    Run(cfg, tmp_path).execute()
    return tmp_path


def float64_jacobians(model, x):
    model = model.double()
    return [torch.autograd.functional.jacobian(lambda v: model(v[None]).squeeze(0), xi.double()).reshape(10, -1) for xi in x]


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_signal_csv_matches_float64_autograd_on_checkpoint(tmp_path, activation):
    out = run(tmp_path, [f"activation={activation}", "train.iterations=0", "signal.stages=[pruned]"])
    loaded = load_run(out)
    spectra = records.read_npz(out / "spectra.npz")
    x = data.load("digits", "unused").x_train[torch.as_tensor(spectra["examples/io"])]
    sv = torch.stack([torch.linalg.svdvals(j) for j in float64_jacobians(loaded.model, x)]).numpy()
    sig = pd.read_csv(out / "signal.csv")
    row = sig[(sig.stage == "pruned") & (sig.scope == "network")].iloc[0]
    assert row.examples == 40
    for name, ref in [("mean", sv.mean()), ("std", sv.std()), ("min", sv.min()), ("max", sv.max()),
                      ("q50", np.quantile(sv, 0.5))]:
        assert row[name] == pytest.approx(ref, rel=2e-4, abs=1e-6), name
    assert np.allclose(spectra["pruned/io"], sv, rtol=2e-4, atol=1e-6)
    summary = records.read_json(out / "summary.json")
    assert summary["jsv_pruned_mean"] == pytest.approx(sv.mean(), rel=2e-4)


def test_layerwise_and_weight_rows_match_float64(tmp_path):
    out = run(tmp_path, ["train.iterations=0", "signal.stages=[pruned]"])
    loaded = load_run(out)
    model = loaded.model.double()
    spectra = records.read_npz(out / "spectra.npz")
    x = data.load("digits", "unused").x_train[torch.as_tensor(spectra["examples/layer"])].double()
    sig = pd.read_csv(out / "signal.csv")
    with torch.no_grad():
        hs = model.preactivations(x)
    for layer, lin in enumerate(model.layers):
        w = lin.weight.detach()
        if layer < len(model.layers) - 1:
            slopes = 1 - torch.tanh(hs[layer]) ** 2
            ref = torch.stack([torch.linalg.svdvals(torch.diag(s) @ w) for s in slopes]).numpy()
        else:
            ref = torch.linalg.svdvals(w).expand(len(x), -1).numpy()
        row = sig[(sig.stage == "pruned") & (sig.scope == "layer") & (sig.layer == layer)].iloc[0]
        assert row["mean"] == pytest.approx(ref.mean(), rel=2e-4) and row["max"] == pytest.approx(ref.max(), rel=2e-4)
        wrow = sig[(sig.stage == "pruned") & (sig.scope == "weights") & (sig.layer == layer)].iloc[0]
        resid = torch.linalg.matrix_norm(w @ w.T - torch.eye(w.shape[0], dtype=w.dtype)).item()
        assert wrow["residual"] == pytest.approx(resid, rel=1e-5)
        assert wrow["mean"] == pytest.approx(torch.linalg.svdvals(w).mean().item(), rel=1e-5)


def test_isometry_run_records_objective_and_moves_spectra_towards_one(tmp_path):
    out = run(tmp_path, ["init=orthogonal", "isometry=ai", "isometry.steps=500", "train.iterations=0",
                         "prune.sparsity=0.8", "signal.stages=[init,pruned,isometry]"])
    summary = records.read_json(out / "summary.json")
    # Two layers keep a fully pruned row (residual at least 1, about 1.0001 here); the settling band of a
    # fixed AI step (tests/test_isometry.py) bounds the rest, about 2.8 in all against 0.5 × 6.7.
    assert summary["ai_objective_after"] < 0.5 * summary["ai_objective_before"]
    assert summary["ldi_residual_isometry"] == pytest.approx(summary["ai_objective_after"], rel=1e-4)
    curve = pd.read_csv(out / "isometry.csv")
    assert curve.objective.iloc[0] == pytest.approx(summary["ai_objective_before"], rel=1e-6)
    layers = pd.read_csv(out / "layers.csv")
    assert {"ai_objective_before", "ai_objective_after"} <= set(layers.columns)
    # The pruned spectrum shrank; approximate isometry brings its mean back towards 1.
    assert abs(summary["jsv_isometry_mean"] - 1) < abs(summary["jsv_pruned_mean"] - 1)
    loaded = load_run(out)
    for name, p in loaded.model.named_parameters():
        if name in loaded.masks:
            assert torch.count_nonzero(p[~loaded.masks[name]]) == 0


def test_tracking_during_training(tmp_path):
    out = run(tmp_path, ["train.iterations=40", "train.eval_interval=20", "signal.every=10", "signal.stages=[final]"])
    sig = pd.read_csv(out / "signal.csv")
    net = sig[(sig.stage == "train") & (sig.scope == "network")]
    assert net.step.tolist() == [10, 20, 30, 40]
    assert (out / "jsv_training.png").is_file()


def test_unsupported_layerwise_is_a_warning_not_a_crash():
    class Shared(torch.nn.Module):  # one weight used twice: no single layer Jacobian J^l
        def __init__(self):
            super().__init__()
            self.hidden, self.out = torch.nn.Linear(12, 12), torch.nn.Linear(12, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(torch.tanh(self.hidden(x)))))

    m = propagation.measure(Shared(), torch.randn(5, 12), torch.randn(5, 12), "init")
    assert any("layerwise" in w and "used 2 times" in w for w in m.warnings)
    assert [r["scope"] for r in m.rows].count("weights") == 2 and [r["scope"] for r in m.rows].count("layer") == 0


def test_nonfinite_spectrum_is_warned_and_run_goes_on():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8))
    with torch.no_grad():
        model[1].weight[0, 0] = float("nan")
    m = propagation.measure(model, None, None, "init")
    assert any("not finite" in w for w in m.warnings)
    assert m.rows[0]["nonfinite"] > 0


def test_a_conv_batchnorm_net_is_measured_on_running_statistics_and_keeps_its_mode():
    from sparseprop.signal import spectrum_stats
    from tests.conftest import contract_net, example_inputs

    model = contract_net("conv_bn", seed=9).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = example_inputs(model, 6, seed=9)
    m = propagation.measure(model, x, x, "init")
    assert model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # Input-output row: the statistics of float64 autograd Jacobians in evaluation mode (running statistics).
    model.eval()
    reference = torch.stack([torch.linalg.svdvals(torch.autograd.functional.jacobian(
        lambda v: model(v[None])[0], xi).reshape(model.num_outputs, -1)) for xi in x])
    io = [r for r in m.rows if r["scope"] == "network"]
    assert len(io) == 1 and io[0]["examples"] == 6
    expected = spectrum_stats(reference)
    for key in ("mean", "min", "max", "q50", "median_example_condition"):
        assert io[0][key] == pytest.approx(expected[key], rel=1e-8), key
    # Layerwise rows: Lanczos estimates of J^l = D^l·BN^l·W^l (conv1 49 -> 75, conv2 75 -> 16, fc 16 -> 5).
    # (The stride-2 conv's operator spectrum is skipped on this 5x5 grid, with its own warning.)
    assert [w for w in m.warnings if "operator spectrum skipped" not in w] == []
    layer = [r for r in m.rows if r["scope"] == "layer"]
    assert [(r["name"], r["examples"], r["count"]) for r in layer] == [
        ("conv1.weight", 6, 6 * 49), ("conv2.weight", 6, 6 * 16), ("fc.weight", 6, 6 * 5)]
    a1 = torch.tanh(model.bn1(model.conv1(x))).detach()
    maps = [(lambda v: torch.tanh(model.bn1(model.conv1(v[None])))[0], x),
            (lambda v: torch.tanh(model.bn2(model.conv2(v[None])))[0], a1),
            (lambda v: model.fc(v[None])[0], torch.tanh(model.bn2(model.conv2(a1))).detach().flatten(1))]
    for row, (f, inputs) in zip(layer, maps):
        dense = torch.stack([torch.linalg.svdvals(torch.autograd.functional.jacobian(f, xi).reshape(-1, xi.numel()))
                             for xi in inputs])
        bounds = torch.as_tensor(m.raw[f"init/layer{row['layer']}_bounds"], dtype=torch.float64)
        # The largest Ritz value is a lower bound within its residual bound; raw values are stored in float32.
        assert dense.max() - bounds[:, 0].max() - 1e-6 * dense.max() <= row["max"] <= dense.max() * (1 + 1e-12)
        assert row["min"] >= dense.min() * (1 - 1e-12)
        assert m.raw[f"init/layer{row['layer']}"].shape == (6, min(32, dense.shape[1]))
        if dense.shape[1] <= 32:  # the whole space is spanned: the extremes are exact
            assert row["max"] == pytest.approx(float(dense.max()), rel=1e-10)
            assert row["min"] == pytest.approx(float(dense.min()), rel=1e-8)
    assert [r["name"] for r in m.rows if r["scope"] == "weights"] == ["conv1.weight", "conv2.weight", "fc.weight"]


def test_signal_examples_auto_is_every_training_example_for_an_mlp(tmp_path):
    summary = records.read_json(run(tmp_path, ["signal.examples=auto", "signal.stages=[init]", "train.iterations=0",
                                               "signal.layer_examples=auto"]) / "summary.json")
    n_train = data.load("digits").x_train.shape[0]
    raw = records.read_npz(tmp_path / "spectra.npz")
    assert summary["signal_io_examples"] == n_train
    assert summary["signal_batchnorm"] == "running"  # the mode the spectra were measured in
    assert summary["signal_layer_examples"] == len(raw["examples/layer"]) == 200  # auto: the exact path's count
    assert raw["examples/io"].tolist() == list(range(n_train))  # all, in order
