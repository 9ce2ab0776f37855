"""Every paper figure drawn from synthetic collected results: right data, labels, legends, PNG and PDF."""

import numpy as np
import pytest
from matplotlib.container import BarContainer

from sparseprop.paper import catalog, draw, layerfigures
from sparseprop.paper.experiments import e2_init, e3_isometry, e5_supervision, e6_transfer, sparsity_sweep
from sparseprop.runner.plots import plt
from tests.paper import synthetic


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def bars(ax, label):
    """Heights of the bar series called ``label`` in ``ax``."""
    found = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label() == label]
    assert found, f"no bars labelled {label!r}: {[c.get_label() for c in ax.containers]}"
    return np.array([p.get_height() for p in found[0].patches])


def line(ax, label):
    """(x, y) of the line called ``label`` in ``ax`` (plain lines and error-bar lines)."""
    for ln in ax.get_lines():
        if ln.get_label() == label:
            return np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
    for c in ax.containers:
        if c.get_label() == label and hasattr(c, "lines"):
            data = c.lines[0]
            return np.asarray(data.get_xdata(), float), np.asarray(data.get_ydata(), float)
    raise AssertionError(f"no line labelled {label!r}")


def assert_readable(fig, legends=True):
    """Every axes has both axis labels and a title, a legend where asked, and the figure has a title."""
    assert fig._suptitle is not None or all(ax.get_title() for ax in fig.axes)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title(), ax
        if legends:
            assert ax.get_legend() is not None or fig.legends, ax.get_title()


def test_e1_masks_show_the_hidden_masks_of_both_activations():
    res = synthetic.e1()
    fig = layerfigures.e1_masks(res["masks"], res["runs"])
    assert_readable(fig, legends=False)
    assert len(fig.axes) == 2 * 5  # linear and tanh x the five 100x100 hidden layers
    first = fig.axes[0]
    np.testing.assert_array_equal(first.get_images()[0].get_array(), res["masks"]["linear-0.9-0/layers.1.weight"])
    assert "linear, VS-L: N(0, 1/fan_in)\nlayer 2" in first.get_title() and "tanh" in fig.axes[5].get_title()
    assert "sparsity 90%" in fig._suptitle.get_text()


def test_e1_masks_one_row_per_init_and_activation():
    res = synthetic.e1(inits=("vs_l", "normal"))
    fig = layerfigures.e1_masks(res["masks"], res["runs"])
    assert len(fig.axes) == 4 * 5
    rows = [fig.axes[5 * i].get_title().split("\n")[0] for i in range(4)]
    assert rows == ["linear, VS-L: N(0, 1/fan_in)", "tanh, VS-L: N(0, 1/fan_in)", "linear, N(0, 1)", "tanh, N(0, 1)"]
    np.testing.assert_array_equal(fig.axes[15].get_images()[0].get_array(),
                                  res["masks"]["normal-tanh-0.9-0/layers.1.weight"])


def test_e1_kept_fraction_plots_seed_means_per_layer():
    res = synthetic.e1(tanh_ratio=0.3)
    fig = layerfigures.e1_kept_fraction(res["layers"], res["runs"])
    assert_readable(fig)
    linear, tanh = fig.axes
    x, y = line(tanh, "90%")
    np.testing.assert_array_equal(x, np.arange(1, 8))
    first = 0.2 + 0.0005  # mean over seeds 0 and 1 of the first hidden layer's kept fraction
    np.testing.assert_allclose(y[1:6], 100 * np.linspace(first, first * 0.3, 5))
    assert tanh.get_yscale() == "log" and "kept" in tanh.get_ylabel()


def test_e1_saliency_shows_mean_median_max_per_layer():
    fig = layerfigures.e1_saliency(*(synthetic.e1()[k] for k in ("layers", "runs")))
    assert_readable(fig)
    linear, tanh = fig.axes
    assert (linear.get_title(), tanh.get_title()) == ("linear, VS-L: N(0, 1/fan_in)", "tanh, VS-L: N(0, 1/fan_in)")
    assert linear.get_ylim() == tanh.get_ylim()
    _, y = line(tanh, "mean")
    np.testing.assert_allclose(y, 1e-5 * 0.5 ** np.arange(7))
    _, y = line(linear, "max")
    np.testing.assert_allclose(y, 2e-4)


def test_e1_kept_fraction_and_saliency_draw_each_reading_of_gamma_in_its_own_row():
    res = synthetic.e1(tanh_ratio={"vs_l": 1.0, "normal": 0.0}, inits=("vs_l", "normal"))
    fig = layerfigures.e1_kept_fraction(res["layers"], res["runs"])
    assert_readable(fig)
    assert [ax.get_title() for ax in fig.axes] == ["linear, VS-L: N(0, 1/fan_in)", "tanh, VS-L: N(0, 1/fan_in)",
                                                    "linear, N(0, 1)", "tanh, N(0, 1)"]
    tanh_vsl, tanh_normal = fig.axes[1], fig.axes[3]
    np.testing.assert_allclose(line(tanh_vsl, "90%")[1][1:6], 100 * (0.2 + 0.0005))
    # Under N(0, 1) the last hidden layer keeps nothing: a gap in the line and a marker on the bottom edge.
    y = line(tanh_normal, "90%")[1]
    assert np.isnan(y[5]) and np.isfinite(y[:5]).all()
    assert line(tanh_normal, "no weight kept (marked on the bottom edge)")[0].tolist() == [6.0]
    fig = layerfigures.e1_saliency(res["layers"], res["runs"])
    assert_readable(fig)
    assert len(fig.axes) == 4 and len({ax.get_ylim() for ax in fig.axes}) == 1
    # The synthetic N(0, 1) saliency per connection is twice VS-L's, layer by layer.
    np.testing.assert_allclose(line(fig.axes[3], "mean")[1], 2 * line(fig.axes[1], "mean")[1])


def test_e1_saliency_bands_are_the_quantiles_per_layer():
    fig = layerfigures.e1_saliency(*(synthetic.e1()[k] for k in ("layers", "runs")))
    ax = fig.axes[1]
    bands = {c.get_label(): c.get_paths()[0].vertices for c in ax.collections}
    for label, lo, hi in (("25-75%", 0.1, 1.0), ("5-95% of connections", 0.01, 5.0)):
        v = bands[label]
        for layer in range(1, 8):
            ys = v[np.isclose(v[:, 0], layer), 1]
            sal = 1e-5 * 0.5 ** (layer - 1)
            np.testing.assert_allclose([ys.min(), ys.max()], [lo * sal, hi * sal])
    # Without the quantile columns (older records) the figure still draws mean, median and max.
    layers = synthetic.e1()["layers"].drop(columns=["saliency_q05", "saliency_q25", "saliency_q75", "saliency_q95"])
    fig = layerfigures.e1_saliency(layers, synthetic.e1()["runs"])
    assert not fig.axes[0].collections and line(fig.axes[0], "median")[1][0] == pytest.approx(5e-6)


def test_e2_jsv_bars_are_stage_means_by_init():
    fig = e2_init.e2_jsv(synthetic.e2()["runs"])
    assert_readable(fig)
    mean_linear = fig.axes[0]
    # inits on the x axis in the paper's order; orthogonal's JSV after init is 1 + mean jitter 0.01.
    assert [t.get_text() for t in mean_linear.get_xticklabels()] == ["VS-L", "VS-G", "VS-H", "orthogonal"]
    np.testing.assert_allclose(bars(mean_linear, "after init"), [0.21, 0.21, 0.21, 1.01])
    np.testing.assert_allclose(bars(mean_linear, "after random pruning"), [1.01e-3] * 4)
    assert mean_linear.get_yscale() == "log"


def test_e2_error_bars_snip_against_random():
    fig = e2_init.e2_error(synthetic.e2()["runs"])
    assert_readable(fig)
    np.testing.assert_allclose(bars(fig.axes[1], "SNIP"), [4.0] * 4)  # 3 + mean seed 1
    np.testing.assert_allclose(bars(fig.axes[1], "random"), [61.0] * 4)
    assert "error" in fig.axes[0].get_ylabel() and "%" in fig.axes[0].get_ylabel()


def test_e3_jsv_shows_the_after_ai_stage_only_for_ai_methods():
    fig = e3_isometry.e3_jsv(synthetic.e3()["runs"])
    assert_readable(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["VS-L", "VS-L + AI", "LDI", "LDI-AI"]
    after_ai = bars(ax, "after AI")
    assert np.isnan(after_ai[0]) and np.isnan(after_ai[2])
    np.testing.assert_allclose(after_ai[[1, 3]], [0.91, 0.91])


def test_e3_training_curves_are_seed_means_per_method():
    res = synthetic.e3()
    fig = e3_isometry.e3_training(res["metrics"], res["runs"])
    assert_readable(fig)
    x, y = line(fig.axes[0], "LDI-AI")
    np.testing.assert_allclose(x, np.arange(100, 1001, 100))
    np.testing.assert_allclose(y, 500 / x + 0.01)
    assert fig.axes[0].get_xlabel() == "iteration"


def test_sparsity_sweep_plots_error_and_the_trained_networks_jsv():
    fig = sparsity_sweep.sparsity_sweep(synthetic.sweep()["runs"])
    assert_readable(fig)
    error_linear, error_tanh, jsv_linear, jsv_tanh = fig.axes
    x, y = line(jsv_linear, "LDI")
    np.testing.assert_allclose(x, [0.5, 0.9, 0.99])
    np.testing.assert_allclose(y, [0.5, 0.1, 0.01])
    _, y = line(jsv_linear, "LDI-AI")
    np.testing.assert_allclose(y, [0.9] * 3)
    _, y = line(error_tanh, "VS-L")
    np.testing.assert_allclose(y, [5.0, 9.0, 9.9])
    assert error_linear.get_xscale() == "logit" and "sparsity" in error_linear.get_xlabel()


def test_e5_and_e6_bars():
    fig = e5_supervision.e5_supervision(synthetic.e5(gap=0.5)["runs"])
    assert_readable(fig)
    np.testing.assert_allclose(bars(fig.axes[0], "uniform 1/C"), [2.8, 3.0, 3.2])
    np.testing.assert_allclose(bars(fig.axes[0], "labels"), [2.325, 2.525, 2.725])
    fig = e6_transfer.e6_transfer(synthetic.e6(gap=0.3)["runs"])
    assert_readable(fig)
    np.testing.assert_allclose(bars(fig.axes[0], "transferred mask"), [11.3, 2.3])  # Fashion-MNIST sorts first
    np.testing.assert_allclose(bars(fig.axes[0], "in-domain mask"), [11.025, 2.025])


def test_draw_figures_writes_png_and_pdf_and_names_what_it_could_not_draw(tmp_path):
    # Two experiments keep the test quick; every figure function is drawn on its own above.
    results = {k: v for k, v in synthetic.results().items() if k in ("e2_init", "e6_transfer")}
    written, missing = draw.draw_figures(results, tmp_path, catalog.load())
    drawn = {"e2_jsv", "e2_error", "e6_transfer"}
    assert set(missing) == {f.stem for e in catalog.load() for f in e.figures} - drawn
    assert missing["e3_training"] == "no completed runs of e3_isometry"
    for stem in drawn:
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 1000, stem
    assert len(written) == 2 * len(drawn)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
