"""E8 (claim C9): the criteria's labels, the sweep files, the rank correlation and its rule, the figures and the table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sparseprop.paper import catalog, claims, reproduce, tables
from sparseprop.paper.experiments import e8_criteria as e8
from sparseprop.paper.judge import FAILS, HOLDS, SKIPPED, UNSURE
from sparseprop.paper.labels import CRITERIA, criterion_label
from sparseprop.paper.plan import compose, make_plan
from sparseprop.paper.profiles import PROFILES
from sparseprop.runner.plots import plt
from tests.paper import synthetic
from tests.paper.test_figures import assert_readable, line


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_each_criterion_has_its_published_name():
    assert [criterion_label(*synthetic.E8_CRITERIA[c]) for c in CRITERIA] == list(CRITERIA)
    assert criterion_label("random", None, "global") == "random" and criterion_label("random", None, "uniform") == \
        "random (uniform)"
    assert criterion_label("snip", float("nan"), None) == "SNIP"  # a column the run does not have reads as NaN


@pytest.mark.parametrize("option,name,variant,budget", [
    ("snip", "snip", None, "global"), ("grasp", "grasp", None, "global"), ("synflow", "synflow", None, "global"),
    ("magnitude", "magnitude", None, "global"), ("iterative_snip", "iterative_snip", "iterative", "global"),
    ("force", "iterative_snip", "force", "global"), ("random_erk", "random", None, "erk"),
])
def test_every_criterion_of_the_sweep_composes_with_its_own_defaults(option, name, variant, budget):
    for exp in ("e8_criteria", "e8_criteria_conv"):
        cfg = compose([f"experiment={exp}", f"criterion={option}", "prune.sparsity=0.995"])
        assert cfg.prune.name == name and cfg.prune.get("variant") == variant and cfg.prune.budget == budget
        assert cfg.prune.sparsity == 0.995 and cfg.isometry.name == "none" and list(cfg.signal.stages) == ["pruned"]
    # FORCE is iterative SNIP in every setting but its variant: 100 rounds, one batch each.
    force, iterative = compose(["criterion=force"]).prune, compose(["prune=iterative_snip"]).prune
    assert {k: v for k, v in force.items() if k != "variant"} == {k: v for k, v in iterative.items() if k != "variant"}


def test_plans_cover_the_grid_and_the_conv_net_only_in_the_paper_profile():
    catalog.load()
    quick = make_plan(e8.MLP, PROFILES["quick"])
    assert len(quick.jobs) == 7 * 2 * 2 * 2  # criteria x inits x {90, 99}% x 2 seeds, tanh only
    assert {o for j in quick.jobs for o in j.overrides if o.startswith("criterion=")} == \
        {f"criterion={p}" for p in ("snip", "grasp", "synflow", "magnitude", "iterative_snip", "force", "random_erk")}
    paper = make_plan(e8.MLP, PROFILES["paper"])
    assert len(paper.jobs) == 2 * 2 * 7 * 5 * 3  # activations x inits x criteria x sparsities x seeds
    assert reproduce.skip_reason(e8.CONV, PROFILES["quick"]) == "runs only under PROFILE=paper"
    assert "prune.rounds" not in " ".join(e8.MLP.overrides("quick"))  # it would make SNIP iterative too


def test_a_criterion_beside_a_prune_option_is_refused_in_one_line():
    from sparseprop.cli import main as cli
    from sparseprop.errors import SparsepropError

    with pytest.raises(SparsepropError) as info:
        cli.check(["criterion=force", "prune=snip"])
    assert "criterion=force sets prune itself, so prune=snip" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SparsepropError, match="criterion='forces' is not valid: choose one of force, grasp"):
        cli.check(["criterion=forces"])
    cli.check(["dataset=digits", "criterion=force", "prune.rounds=10"])  # a setting of the prune option it chose is fine


def test_spearman_matches_hand_computed_values():
    assert e8.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6 * (0 + 1 + 1) / (3 * 8)
    assert e8.spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    # Two collapsed runs tie at +inf: ranks (1, 2.5, 2.5) against (1, 2, 3): 1.5 / sqrt(1.5 * 2).
    assert e8.spearman([0.1, math.inf, math.inf], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert math.isnan(e8.spearman([1, 1, 1], [1, 2, 3])) and math.isnan(e8.spearman([1], [2]))


def test_collapsed_runs_are_farthest_from_isometry_and_keep_their_error():
    res = synthetic.e8(collapsed={("magnitude", 0.99)})
    runs = e8.with_criteria(res["runs"])
    mag = runs[(runs.criterion == "magnitude") & (runs.sparsity_target == 0.99)]
    assert (mag[e8.DISTANCE] == np.inf).all() and (mag[e8.COLLAPSED] == 1).all()
    snip = runs[(runs.criterion == "SNIP") & (runs.sparsity_target == 0.9)]
    np.testing.assert_allclose(snip[e8.DISTANCE], 0.2)  # |log10 10^-0.2|
    assert set(runs.network) == {"MLP-7 tanh"}
    # Every criterion is ranked in every condition, the collapsed one included.
    per = e8.condition_correlations(runs)
    assert len(per) == 2 * 2 * 3 and (per.criteria == 7).all()


@pytest.mark.parametrize("errors,outcome,rho", [
    (None, HOLDS, 1.0),                                                          # error rises with the distance
    ({c: 10.0 - i for i, c in enumerate(CRITERIA)}, FAILS, -1.0),               # error falls with the distance
    ({c: 5.0 for c in CRITERIA}, UNSURE, math.nan),                               # every error tied: no correlation
])
def test_c9_judges_the_rank_correlation_beyond_the_seed_spread(errors, outcome, rho):
    [v] = e8.c9(synthetic.e8(errors=errors), "E8 (MLP)", "MLP-7")
    assert v.claim == "C9" and v.part == "criteria, MLP-7 tanh" and v.outcome == outcome
    if not math.isnan(rho):
        assert f"ρ = {rho:+.2f} ± 0.00 (n=3 seeds" in v.checks[0].numbers
        assert "over 4 init x sparsity conditions" in v.checks[0].numbers


def test_c9_is_inconclusive_when_the_seeds_disagree():
    # Seed 0 and 2: error rises with the distance; seed 1: it falls. Per-seed ρ: +1, -1, +1: 0.33 ± 1.15.
    errors = {c: (lambda s, i=i: 2.0 + i if s != 1 else 10.0 - i) for i, c in enumerate(CRITERIA)}
    [v] = e8.c9(synthetic.e8(errors=errors), "E8 (MLP)", "MLP-7")
    assert v.outcome == UNSURE and "+0.33 ± 1.15" in v.checks[0].numbers and "contains 0" in v.why


def test_c9_needs_two_seeds():
    [v] = e8.c9(synthetic.e8(seeds=(0,)), "E8 (MLP)", "MLP-7")
    assert v.outcome == UNSURE and "fewer than 2 seeds" in v.why
    assert v.checks[0].numbers.startswith("ρ = +1.00 (n=1 seeds; seed 0: +1.00)")


def test_collapsed_runs_enter_the_ranking_farthest_from_isometry_with_their_own_error():
    # GraSP and magnitude collapse at 99% (error 90, distance inf): still the worst on both counts, so ρ stays 1.
    [v] = e8.c9(synthetic.e8(collapsed={("GraSP", 0.99), ("magnitude", 0.99)}), "E8 (MLP)", "MLP-7")
    assert v.outcome == HOLDS and "12 collapsed runs ranked farthest from isometry" in v.checks[0].numbers
    # Errors that fall with the distance (ρ = -1), but at 99% the four closest criteria collapse: tied last on
    # both (rank 5.5), above the three others, whose order is reversed: distance ranks (1, 2, 3, 5.5 x4) against
    # error ranks (3, 2, 1, 5.5 x4), ρ = 19 / 23. Per seed: (-1 - 1 + 19/23 + 19/23) / 4 < 0, the same every seed.
    errors = {c: 10.0 - i for i, c in enumerate(CRITERIA)}
    res = synthetic.e8(errors=errors, collapsed={(c, 0.99) for c in CRITERIA[:4]})
    per = e8.condition_correlations(e8.with_criteria(res["runs"]))
    np.testing.assert_allclose(per[per.sparsity == 0.9].rho, -1.0)
    np.testing.assert_allclose(per[per.sparsity == 0.99].rho, 19 / 23)
    [v] = e8.c9(res, "E8 (MLP)", "MLP-7")
    assert v.outcome == FAILS and f"ρ = {(19 / 23 - 1) / 2:+.2f} ± 0.00" in v.checks[0].numbers


def test_diverged_runs_are_left_out_and_counted():
    res = synthetic.e8(diverged={("SNIP", 0.9, 0), ("FORCE", 0.99, 1)})
    [v] = e8.c9(res, "E8 (MLP)", "MLP-7")
    assert v.outcome == HOLDS and "4 diverged or unmeasured runs left out" in v.checks[0].numbers
    per = e8.condition_correlations(e8.with_criteria(res["runs"]))
    assert sorted(per.criteria.unique()) == [6, 7]



def test_failed_and_never_started_runs_cost_nothing_but_themselves(tmp_path):
    res = synthetic.e8()
    extra = pd.DataFrame([{"run": "gone", "status": "missing", "criterion": "force", "seed": 0},
                          {**res["runs"].iloc[0].to_dict(), "run": "broke", "status": "failed",
                           "best_val_test_error_pct": np.nan}])
    res["runs"] = pd.concat([res["runs"], extra], ignore_index=True)
    [v] = e8.c9(res, "E8 (MLP)", "MLP-7")
    assert v.outcome == HOLDS
    assert_readable(e8.error_figure(res["runs"]))
    assert_readable(e8.isometry_figure(res["runs"]))
    tables.write_tables({"e8_criteria": res}, tmp_path, [e8.MLP])
    assert len(pd.read_csv(tmp_path / "e8_criteria.csv")) == 7 * 2 * 2


def test_c9_skips_without_runs_and_the_note_ranks_the_criteria():
    [v] = e8.c9(None, "E8 (MLP)", "MLP-7")
    assert v.outcome == SKIPPED and v.part == "criteria, MLP-7"
    res = synthetic.e8(collapsed={("magnitude", 0.99)})
    note = e8.ranking_note(res, "E8 (MLP)")
    lines = [ln for ln in note.splitlines() if ln.startswith("| MLP-7 tanh")]
    assert [ln.split(" | ")[1] for ln in lines] == ["SNIP", "GraSP", "SynFlow", "Iterative SNIP", "FORCE",
                                                   "random (ERK)", "magnitude"]  # magnitude's median: inf
    assert "| MLP-7 tanh | SNIP | 12 | 0.20 | 2.10 | 0 | 0 | 1.00 | 1.00 |" in note
    assert claims.explanations({"e8_criteria": res}, [e8.MLP])["C9"] == e8.ranking_note(res, "E8 (MLP-7, MNIST)")
    assert e8.ranking_note(None, "E8 (MLP)") == ""


def test_the_error_figure_has_a_line_per_criterion_and_marks_collapse():
    res = synthetic.e8(collapsed={("magnitude", 0.99)}, diverged={("SNIP", 0.9, 2)})
    fig = e8.error_figure(res["runs"])
    assert_readable(fig)
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "MLP-7 tanh, VS-L init"
    x, y = line(fig.axes[0], "SNIP")
    np.testing.assert_allclose(x, [0.9, 0.99])
    np.testing.assert_allclose(y, [2.05, 2.1])  # 90%: seeds 0 and 1 (seed 2 diverged); 99%: seeds 0, 1, 2
    x, y = line(fig.axes[0], "at least one run with a collapsed layer")
    np.testing.assert_allclose([x[0], y[0]], [0.99, 90.0])


def test_the_isometry_figure_has_a_point_per_run_and_draws_collapsed_ones_at_the_left():
    res = synthetic.e8(collapsed={("magnitude", 0.99)}, diverged={("SNIP", 0.9, 2)})
    fig = e8.isometry_figure(res["runs"])
    assert_readable(fig)
    [ax] = fig.axes
    points = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert len(points["SNIP, VS-L"]) == 5  # 2 sparsities x 3 seeds, one diverged
    np.testing.assert_allclose(points["SNIP, VS-L"][:, 0], 10 ** -0.2)
    zero = points["magnitude: JSV 0 (collapsed), drawn at left"]
    assert len(zero) == 3 and (zero[:, 0] < 10 ** -1.4).all() and (zero[:, 1] == 90.0).all()
    assert ax.get_title().startswith("MLP-7 tanh: ρ = +1.00 ± 0.00")


def test_figures_survive_runs_without_a_measured_spectrum():
    runs = synthetic.e8()["runs"].drop(columns=["jsv_pruned_mean", "collapsed_layers"])
    assert_readable(e8.error_figure(runs))
    assert_readable(e8.isometry_figure(runs))
    [v] = e8.c9({"runs": runs}, "E8 (MLP)", "MLP-7")
    assert v.outcome == UNSURE and "no condition with 3 or more ranked criteria" in v.checks[0].numbers


def test_the_table_gives_error_jsv_effective_sparsity_and_collapse_per_criterion_and_sparsity(tmp_path):
    res = synthetic.e8(collapsed={("magnitude", 0.99)})
    tables.write_tables({"e8_criteria": res}, tmp_path, [e8.MLP])
    table = pd.read_csv(tmp_path / "e8_criteria.csv")
    assert len(table) == 7 * 2 * 2
    row = table[(table.criterion == "magnitude") & (table.sparsity_target == 0.99) & (table.init_label == "VS-L")].iloc[0]
    assert row.collapsed_mean == 1 and row.effective_sparsity_mean == 1 and row.jsv_pruned_mean_mean == 0
    assert row.best_val_test_error_pct_mean == 90
    row = table[(table.criterion == "GraSP") & (table.sparsity_target == 0.9) & (table.init_label == "orthogonal")].iloc[0]
    assert row.collapsed_mean == 0 and row.effective_sparsity_mean == pytest.approx(0.901)
    assert row.jsv_pruned_mean_mean == pytest.approx(10 ** -0.4)
    text = (tmp_path / "e8_criteria.md").read_text()
    assert "collapsed (fraction of runs)" in text
    assert "| MLP-7 tanh | orthogonal | GraSP | 0.9 | 3 | 0 | 3.10 ± 0.10 |" in text
    assert "| 0.9010 ± 0.0000 | 0.00 ± 0.00 |" in text  # effective sparsity to 4 digits: 0.99 vs 0.996 shows


def test_c9_gives_a_verdict_per_network():
    tanh = synthetic.e8()["runs"]
    relu = synthetic.e8(errors={c: 10.0 - i for i, c in enumerate(CRITERIA)})["runs"].assign(activation="relu")
    relu["run"] = "relu-" + relu["run"]
    verdicts = e8.c9({"runs": pd.concat([tanh, relu], ignore_index=True)}, "E8 (MLP)", "MLP-7")
    assert [(v.part, v.outcome) for v in verdicts] == [("criteria, MLP-7 ReLU", FAILS), ("criteria, MLP-7 tanh", HOLDS)]
    both = pd.concat([tanh, relu], ignore_index=True)
    fig = e8.error_figure(both)
    assert [ax.get_title() for ax in fig.axes] == ["MLP-7 ReLU, VS-L init", "MLP-7 ReLU, orthogonal init",
                                                   "MLP-7 tanh, VS-L init", "MLP-7 tanh, orthogonal init"]
    fig = e8.isometry_figure(both)
    assert [ax.get_title() for ax in fig.axes] == ["MLP-7 ReLU: ρ = -1.00 ± 0.00", "MLP-7 tanh: ρ = +1.00 ± 0.00"]
