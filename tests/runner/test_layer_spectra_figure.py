"""The per-layer spectra figure: heat strips drawn from spectra.npz, one panel per stage and scope."""

import numpy as np
import pandas as pd
import pytest

from sparseprop import records
from sparseprop.runner import plots


def strips(fig):
    """(panel title or stage label, shares as a (bins + 1, layers) array) of every panel, in order."""
    out = []
    for ax in fig.axes[:-1]:  # the last axes is the colour bar
        (mesh,) = ax.collections
        share = np.ma.filled(mesh.get_array(), 0.0)
        coords = mesh.get_coordinates()  # (rows + 1, columns + 1, 2)
        out.append((share.reshape(coords.shape[0] - 1, coords.shape[1] - 1), coords[:, 0, 1]))
    return out


def bin_of(value, y_edges):
    return int(np.searchsorted(y_edges, np.log10(value), side="right")) - 1


def test_each_layer_is_a_column_of_the_shares_of_its_values():
    spectra = {
        "init/weights0": np.array([1.0, 1.0, 1.0, 0.01]),
        "init/weights1": np.array([0.0, 0.1, 0.1, 0.1, 0.1]),
        "init/operator0": np.array([1.0, 0.5]),
        "init/operator1": np.array([np.nan, 2.0, 2.0]),  # a non-finite value is left out of the shares
        "pruned/weights0": np.zeros(3),
        "pruned/weights1": np.array([0.5]),
        "pruned/layer1": np.array([[0.2, 0.2], [0.2, 0.4]]),  # per-example layerwise values are pooled
        "examples/layer": np.arange(4),  # not a spectrum
        "init/io": np.ones((2, 10)),  # drawn elsewhere
    }
    fig = plots.layer_spectra(spectra, bins=30)
    panels = strips(fig)
    # Rows: init, pruned; columns: weights, operator, layer (the order of SPECTRUM_SCOPES).
    assert [ax.get_title() for ax in fig.axes[:3]] == [plots.SPECTRUM_SCOPES[s] for s in ("weights", "operator", "layer")]
    assert len(panels) == 6
    (w_init, y), (op_init, _), (layer_init, _), (w_pruned, _), (op_pruned, _), (layer_pruned, _) = panels
    assert w_init.shape == (31, 2)
    # The figure's range runs from its smallest positive value to its largest; the bottom row holds the zeros.
    assert y[1] == pytest.approx(np.log10(0.01)) and y[-1] == pytest.approx(np.log10(2.0))
    assert w_init[bin_of(1.0, y), 0] == pytest.approx(0.75) and w_init[bin_of(0.01, y), 0] == pytest.approx(0.25)
    assert w_init[0, 1] == pytest.approx(0.2) and w_init[bin_of(0.1, y), 1] == pytest.approx(0.8)
    assert op_init[bin_of(0.5, y), 0] == pytest.approx(0.5) and op_init[bin_of(2.0 - 1e-9, y), 1] == pytest.approx(1.0)
    assert not layer_init.any() and not op_pruned.any()  # nothing recorded there: blank
    assert w_pruned[0, 0] == 1.0 and w_pruned[bin_of(0.5, y), 1] == 1.0
    assert layer_pruned[:, 0].sum() == 0 and layer_pruned[bin_of(0.2, y), 1] == pytest.approx(0.75)
    for share in (w_init, op_init, w_pruned):
        assert np.allclose(share.sum(axis=0)[share.sum(axis=0) > 0], 1.0)
    plots.plt.close(fig)


def test_a_run_directory_with_layer_spectra_gets_the_figure_and_one_without_does_not(tmp_path):
    with_layers, without = tmp_path / "a", tmp_path / "b"
    for d in (with_layers, without):
        d.mkdir()
    records.write_npz(with_layers / records.SPECTRA, {"init/io": np.ones((3, 10)),
                                                      **{f"init/operator{i}": np.full(4, 0.5 + i) for i in range(110)}})
    records.write_npz(without / records.SPECTRA, {"init/io": np.ones((3, 10))})
    written = plots.run_figures(with_layers)
    assert {p.name for p in written} >= {"layer_spectra.png", "layer_spectra.pdf"}
    assert not any(p.stem == "layer_spectra" for p in plots.run_figures(without))


def test_a_conv_run_records_operator_spectra_and_draws_them(tmp_path, monkeypatch):
    from tests.runner.test_conv_run import SMALL, conv_run

    monkeypatch.setattr("tests.runner.test_conv_run.SMALL",
                        [o for o in SMALL if not o.startswith(("figures=", "signal.stages=", "train.iterations="))]
                        + ["figures=true", "signal.stages=[init,pruned,final]", "train.iterations=2"])
    summary = conv_run(tmp_path, monkeypatch, ["batchnorm=running"])
    assert summary["status"] == "completed"
    sig = pd.read_csv(tmp_path / records.SIGNAL)
    op = sig[sig.scope == "operator"]
    # TinyConvBN on 8x8 digits: min(c_out, c_in·s²) values per frequency of the coarse grid; fc (10 x 36): 10.
    assert sorted(op.stage.unique()) == ["final", "init", "pruned"]
    assert op[op.stage == "pruned"].name.tolist() == ["conv1.weight", "conv2.weight", "fc.weight"]
    assert op[op.stage == "pruned"]["count"].tolist() == [64, 4 * 9, 10]
    spectra = records.read_npz(tmp_path / records.SPECTRA)
    assert {f"pruned/operator{i}" for i in range(3)} <= set(spectra)
    assert (tmp_path / "layer_spectra.png").is_file()
    # Recomputed independently from the checkpoint: the explicit operator matrix of the stride-2 conv, float64.
    import torch

    from tests.signal.test_operator import reference

    weight = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]["conv2.weight"]
    grid = tuple(spectra["grids/operator1"].tolist())
    want = reference(weight, grid, (2, 2))
    assert grid == (6, 6)
    np.testing.assert_allclose(spectra["final/operator1"], want.numpy(), rtol=1e-6, atol=1e-7 * float(want.max()))


def test_estimated_layer_spectra_are_weighted_by_their_quadrature_weights():
    # Two examples' Ritz values of one layer with their quadrature weights (each example's sum to one).
    spectra = {"pruned/weights0": np.array([1.0, 0.01]),
               "pruned/layer0": np.array([[1.0, 0.1], [1.0, 0.01]]),
               "pruned/layer0_weights": np.array([[0.9, 0.1], [0.5, 0.5]]),
               "pruned/layer0_bounds": np.array([[0.1, 0.1], [0.1, 0.1]])}  # not a spectrum
    fig = plots.layer_spectra(spectra, bins=30)
    (_, y), (layer, _) = strips(fig)
    assert layer[bin_of(1.0 - 1e-9, y), 0] == pytest.approx((0.9 + 0.5) / 2)
    assert layer[bin_of(0.1, y), 0] == pytest.approx(0.1 / 2)
    assert layer[bin_of(0.01, y), 0] == pytest.approx(0.5 / 2)
    plots.plt.close(fig)
