"""E7 (claim C7): the pairs' parameter budgets, the plans, the rule, the figure, the table and the note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparseprop import data, models
from sparseprop.paper import catalog, reproduce, tables
from sparseprop.paper.experiments import e7_sculpting as e7
from sparseprop.paper.judge import FAILS, HOLDS, SKIPPED, UNSURE
from sparseprop.paper.plan import compose, make_plan
from sparseprop.paper.profiles import PROFILES
from sparseprop.runner import setup
from sparseprop.runner.plots import plt
from tests.paper import synthetic
from tests.paper.test_figures import assert_readable, line


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _prunable(cfg) -> int:
    model = setup.meta_model(cfg, data.SHAPES[cfg.dataset.name])
    return sum(p.numel() for p in models.prunable_parameters(model, cfg.prune.include_bias).values())


@pytest.mark.parametrize("exp,reference,bulky", [
    ("e7_sculpting", "arch.width=100", "arch.width=400"),
    ("e7_sculpting_conv", "arch.widen=1", "arch.widen=2"),
    ("e7_sculpting_cifar", "arch=resnet32", "arch=vgg_c"),
])
def test_each_pair_prunes_the_bulky_network_to_exactly_the_references_count(exp, reference, bulky):
    ref_cfg, bulky_cfg = compose([f"experiment={exp}", reference]), compose([f"experiment={exp}", bulky])
    # The budget in the sweep file is the reference's own count of prunable parameters, counted here on the network.
    assert ref_cfg.prune.keep == bulky_cfg.prune.keep == _prunable(ref_cfg)
    assert _prunable(bulky_cfg) > 3 * ref_cfg.prune.keep
    # The same protocol for both: every setting but the network's is the same.
    for key in ("dataset", "init", "prune", "isometry", "train", "activation", "seed"):
        assert ref_cfg[key] == bulky_cfg[key], key
    assert (ref_cfg.init.name, ref_cfg.prune.name, ref_cfg.isometry.name) == ("orthogonal", "snip", "none")


def test_the_bulky_lenet5_is_the_formula_of_a_wider_lenet5():
    net = models.build_model("lenet5", (1, 28, 28), 10, models.build_activation("relu"), widen=2)
    # conv 1->40 (5x5), conv 40->100 (5x5), FC 100*4*4 -> 1000, FC 1000 -> 10, with biases.
    assert sum(p.numel() for p in net.parameters()) == (40 * 25 + 40) + (100 * 40 * 25 + 100) + (1600 * 1000 + 1000) \
        + (1000 * 10 + 10) == 1_712_150


def test_plans_run_both_networks_over_seeds_and_cifar_only_in_the_paper_profile():
    catalog.load()
    quick = make_plan(e7.MLP, PROFILES["quick"])
    assert sorted(tuple(sorted(o for o in j.overrides if o.startswith(("arch.width", "seed")))) for j in quick.jobs) == \
        [("arch.width=100", "seed=0"), ("arch.width=100", "seed=1"), ("arch.width=400", "seed=0"), ("arch.width=400", "seed=1")]
    assert len(make_plan(e7.CONV, PROFILES["quick"]).jobs) == 4 and len(make_plan(e7.CONV, PROFILES["paper"]).jobs) == 6
    assert reproduce.skip_reason(e7.CIFAR, PROFILES["quick"]) == "runs only under PROFILE=paper"


def test_roles_come_from_what_each_run_kept():
    runs = e7.with_roles(synthetic.e7()["runs"])
    assert set(runs[runs.width == 100].role) == {e7.REFERENCE} and set(runs[runs.width == 400].role) == {e7.SCULPTED}
    assert set(runs.network) == {"MLP-7-100", "MLP-7-400"}
    assert e7.network_name("lenet5", widen=2.0) == "LeNet-5 x2" and e7.network_name("lenet5", widen=1) == "LeNet-5"


@pytest.mark.parametrize("sculpted,reference,outcome", [
    (1.5, 2.5, HOLDS),     # 1.5 ± 0.2 vs 2.5 ± 0.2: apart
    (3.5, 2.5, FAILS),     # the reference is better beyond the spread
    (2.4, 2.5, UNSURE),    # the intervals overlap
])
def test_c7_compares_errors_beyond_the_seed_spread(sculpted, reference, outcome):
    [v] = e7.c7(synthetic.e7(sculpted, reference), "E7 (MLP)")
    assert v.claim == "C7" and v.outcome == outcome
    assert v.checks[0].outcome == HOLDS and "130,010 vs 130,010" in v.checks[0].numbers
    assert f"{sculpted:.2f} ± 0.20 (n=3) vs {reference:.2f} ± 0.20 (n=3)" in v.checks[1].numbers


def test_c7_fails_when_the_budget_is_not_the_references_and_skips_without_a_side():
    [v] = e7.c7(synthetic.e7(kept=150_000), "E7 (MLP)")
    assert v.outcome == FAILS and "150,000 vs 130,010" in v.checks[0].numbers
    res = synthetic.e7()
    res["runs"] = res["runs"][res["runs"].width == 100]
    [v] = e7.c7(res, "E7 (MLP)")
    assert v.outcome == SKIPPED and "no completed sculpted run" in v.why
    [v] = e7.c7(None, "E7 (MLP)")
    assert v.outcome == SKIPPED


def test_the_figure_draws_the_three_widths_and_the_errors_at_their_parameter_counts():
    res = synthetic.e7()
    fig = e7.e7_figure(res["runs"], res["layers"])
    assert_readable(fig)
    widths, errors = fig.axes[0], fig.axes[1]
    np.testing.assert_allclose(line(widths, "bulky (before pruning)")[1], [400] * 6 + [10])
    np.testing.assert_allclose(line(widths, e7.SCULPTED)[1], [310] * 6 + [10])  # seeds: 300, 310, 320
    np.testing.assert_allclose(line(widths, e7.REFERENCE)[1], [100] * 6 + [10])
    x, y = line(errors, f"{e7.REFERENCE}: MLP-7-100")
    np.testing.assert_allclose([x[0], y[0]], [130_010, 2.5])
    x, y = line(errors, f"{e7.SCULPTED}: MLP-7-400")
    np.testing.assert_allclose([x[0], y[0]], [130_010, 1.5])
    x, y = line(errors, "sculpted, at its effective connections")
    np.testing.assert_allclose([x[0], y[0]], [121_000, 1.5])


def test_the_note_and_the_table_record_the_sculpted_architecture(tmp_path):
    res = synthetic.e7()
    note = e7.architecture_note(res, "E7 (MLP)")
    assert "- sculpted (pruned bulky): 310, 310, 310, 310, 310, 310, 10" in note
    assert "121,000 of its 129,000 kept weights" in note
    assert e7.architecture_note(None, "E7 (MLP)") == ""
    tables.write_tables({"e7_sculpting": res}, tmp_path, [e7.MLP])
    table = pd.read_csv(tmp_path / "e7_sculpting.csv")
    row = table[table.width == 400].iloc[0]
    assert row.kept_parameters_mean == 130_010 and row.effective_params_mean == 121_000
    assert row.best_val_test_error_pct_mean == pytest.approx(1.5)
    assert table[table.width == 100].iloc[0].kept_parameters_mean == 130_010
    text = (tmp_path / "e7_sculpting.md").read_text()
    assert "| 1120010 ± 0 | 130010 ± 0 | 121000 ± 1000 |" in text  # prunable, kept, effective: whole counts


@pytest.mark.parametrize("widen", ["0", "101"])
def test_a_bad_widening_of_lenet5_is_one_line(widen):
    from sparseprop.cli import main as cli
    from sparseprop.errors import SparsepropError

    with pytest.raises(SparsepropError) as info:
        cli.check(["arch=lenet5", f"arch.widen={widen}"])
    assert "arch.widen" in str(info.value) and "[1, 100]" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SparsepropError, match="arch.widen=True is not valid"):  # the typed schema: an integer
        cli.check(["arch=lenet5", "arch.widen=true"])


def test_every_pair_explains_its_sculpted_architecture_in_the_report():
    from sparseprop.paper import claims

    res = synthetic.e7()
    notes = claims.explanations({"e7_sculpting": res, "e7_sculpting_conv": res}, [e7.MLP, e7.CONV, e7.CIFAR])
    assert notes["C7"].count("kept weights can carry signal") == 2
    assert notes["C7"].index("MNIST") < notes["C7"].index("Fashion-MNIST")
