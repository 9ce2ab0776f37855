"""The verdict rules: each claim holds, fails or is inconclusive exactly as its stated rule says."""

import math

import numpy as np
import pandas as pd
import pytest

from sparseprop.paper import catalog, claims, judge, report, tables
from sparseprop.paper.experiments import e1_masks as e1
from sparseprop.paper.experiments import e2_init as e2
from sparseprop.paper.experiments import e3_isometry as e3
from sparseprop.paper.experiments import e4_modern
from sparseprop.paper.experiments import e5_supervision as e5
from sparseprop.paper.experiments import e6_transfer as e6
from sparseprop.paper.judge import FAILS, HOLDS, SKIPPED, UNSURE
from tests.paper import synthetic

EXPERIMENTS = catalog.load()


@pytest.mark.parametrize("a, b, outcome", [
    ([1.0, 1.1], [2.0, 2.1], HOLDS),
    ([2.0, 2.1], [1.0, 1.1], FAILS),
    ([1.0, 2.0], [1.4, 2.4], UNSURE),  # intervals overlap
    ([1.0], [2.0, 2.1], UNSURE),       # one run: no spread
    ([1.0, math.nan, 1.1], [2.0, 2.1], HOLDS),  # NaN (a diverged measurement) is ignored
])
def test_less(a, b, outcome):
    check = judge.less("x", a, b)
    assert check.outcome == outcome
    assert f"(n={len([v for v in a if v == v])})" in check.numbers.split(" vs ")[0]


def test_at_most_and_between():
    assert judge.at_most("d", [0.2, 0.4], 1.0).outcome == HOLDS
    assert judge.at_most("d", [2.0, 2.2], 1.0).outcome == FAILS
    assert judge.at_most("d", [0.5, 1.5], 1.0).outcome == UNSURE
    assert judge.between("r", [0.9, 1.1], 2 / 3, 1.5).outcome == HOLDS
    assert judge.between("r", [0.2, 0.25], 2 / 3, 1.5).outcome == FAILS
    assert judge.between("r", [0.6, 0.8], 2 / 3, 1.5).outcome == UNSURE


def test_verdict_combines_checks():
    v = judge.Verdict("C0", "p", "s", "m", "r")
    assert v.outcome == UNSURE and "no completed runs" in v.why
    v.checks = [judge.Check("a", "", HOLDS), judge.Check("b", "", UNSURE, "overlap")]
    assert v.outcome == UNSURE and v.why == "b: overlap"
    v.checks.append(judge.Check("c", "", FAILS, "opposite"))
    assert v.outcome == FAILS


def test_c1_ratio_and_verdicts():
    ratios = e1.depth_ratio(synthetic.e1()["layers"], synthetic.e1()["runs"])
    assert set(ratios.sparsity) == {0.9} and set(ratios.reading) == {"VS-L: N(0, 1/fan_in)"}
    # Hidden kept fractions fall linearly from f to 0.3 f over five layers: (mean of the last two) / (first two).
    expected = (1 - 0.7 * 7 / 8) / (1 - 0.7 / 8)
    assert ratios[ratios.activation == "tanh"].ratio.tolist() == pytest.approx([expected, expected])
    tanh, linear, *normal = e1.c1(synthetic.e1(tanh_ratio=0.3, linear_ratio=1.0))
    assert (tanh.part, tanh.outcome, linear.outcome) == ("tanh, VS-L: N(0, 1/fan_in)", HOLDS, HOLDS)
    # Results without N(0, 1) runs say so instead of judging that reading.
    assert [v.part for v in normal] == ["tanh, N(0, 1)", "linear, N(0, 1)"]
    assert all(v.outcome == SKIPPED and "N(0, 1)" in v.why for v in normal)
    tanh, linear, *_ = e1.c1(synthetic.e1(tanh_ratio=0.9, linear_ratio=0.3))
    assert (tanh.outcome, linear.outcome) == (FAILS, FAILS)


def test_c1_is_judged_separately_under_each_reading_of_gamma():
    res = synthetic.e1(tanh_ratio={"vs_l": 0.9, "normal": 0.2}, inits=("vs_l", "normal"))
    out = {v.part: v for v in e1.c1(res)}
    assert list(out) == ["tanh, VS-L: N(0, 1/fan_in)", "linear, VS-L: N(0, 1/fan_in)", "tanh, N(0, 1)", "linear, N(0, 1)"]
    assert out["tanh, VS-L: N(0, 1/fan_in)"].outcome == FAILS and out["tanh, N(0, 1)"].outcome == HOLDS
    assert out["linear, N(0, 1)"].outcome == HOLDS
    # Each verdict's numbers are that reading's own R values only (2 seeds at 90%).
    r = (1 - 0.8 * 7 / 8) / (1 - 0.8 / 8)
    assert out["tanh, N(0, 1)"].checks[0].numbers.startswith(f"{r:.2f} ± 0.00 (n=2)")
    assert "N(0, 1) init" in out["tanh, N(0, 1)"].measurement and "R(tanh) + std <= 0.5" in out["tanh, N(0, 1)"].rule


def test_c1_explanation_reports_each_layers_saliency_share_and_s_from_the_runs():
    res = synthetic.e1(inits=("vs_l", "normal"))
    profile = e1.saliency_profile(res["layers"], res["runs"])
    assert len(profile) == 2 * 2 * 2  # init x activation x seed, at the one sparsity nearest 90%
    tanh = profile[profile.activation == "tanh"].iloc[0]
    # Per-connection saliency 0.5^i times the layer size, as a share of the sum over the seven layers.
    sizes = np.array([78400, 10000, 10000, 10000, 10000, 10000, 1000])
    sums = 0.5 ** np.arange(7) * sizes
    assert [tanh[f"share_{i + 1}"] for i in range(7)] == pytest.approx(sums / sums.sum())
    assert tanh.S == pytest.approx((0.5 ** 4 + 0.5 ** 5) / (0.5 + 0.5 ** 2))
    assert profile[profile.activation == "linear"].S.tolist() == pytest.approx([1.0] * 4)
    text = e1.c1_explanation(res)
    assert "| N(0, 1) | tanh | 2 |" in text and "| VS-L: N(0, 1/fan_in) | linear | 2 |" in text
    assert f"{100 * sums[0] / sums.sum():.2f}" in text and "0.125 ± 0.000 (n=2)" in text
    assert "tanh, N(0, 1): holds" in text and "0 of 2 masks leave a weight layer with no weight" in text
    assert claims.explanations({"e1_masks": res}, EXPERIMENTS)["C1"] == text and claims.explanations({}, EXPERIMENTS) == {}
    res["layers"].loc[(res["layers"].run == "normal-tanh-0.9-1") & (res["layers"].name == "layers.5.weight"),
                      "kept_fraction"] = 0.0
    assert "1 of 2 masks leave a weight layer with no weight" in e1.c1_explanation(res)


def test_c2_orthogonal_against_variance_scaling():
    per_run = e2.layerwise_init(synthetic.e2()["layers"], synthetic.e2()["runs"])
    orth = per_run[(per_run.init == "orthogonal") & per_run.run.str.contains("snip")]
    assert orth.log_condition.tolist() == pytest.approx(np.log10([1.0, 1.01, 1.02] * 2))
    assert [v.outcome for v in e2.c2(synthetic.e2())] == [HOLDS, HOLDS]
    # An orthogonal condition number worse than the VS inits' (50) contradicts the claim.
    assert [v.outcome for v in e2.c2(synthetic.e2(orth_condition=80.0))] == [FAILS, FAILS]


def test_c3_pruning_breaks_isometry_and_random_is_worse():
    breaks, random = e2.c3(synthetic.e2())
    assert (breaks.outcome, random.outcome) == (HOLDS, HOLDS)
    assert len(random.checks) == 8  # two activations x four inits
    breaks, random = e2.c3(synthetic.e2(snip_pruned=1e-4, random_pruned=0.3))
    assert random.outcome == FAILS


def test_c4_ai_against_ldi():
    assert [v.outcome for v in e3.c4(synthetic.e3())] == [HOLDS, HOLDS]
    worse = e3.c4(synthetic.e3(ai_error=6.0, ldi_error=4.0))
    assert [v.outcome for v in worse] == [FAILS, FAILS]
    assert "test error" in worse[0].why
    # Errors within each other's spread leave the claim open.
    res = synthetic.e3(ai_error=4.0, ldi_error=4.05)
    assert e3.c4(res)[0].outcome == UNSURE


def test_early_loss_uses_the_first_fifth_of_training():
    res = synthetic.e3()
    early = e3.early_loss(res["metrics"], res["runs"].iloc[:1])
    assert early.iloc[0] == pytest.approx((1000 / 100 + 1000 / 200) / 2)


def test_c5_and_c6_paired_differences_against_the_threshold():
    assert all(v.outcome == HOLDS for v in e5.c5(synthetic.e5(gap=0.2)))
    assert all(v.outcome == FAILS for v in e5.c5(synthetic.e5(gap=3.0)))
    diffs = judge.paired_differences(synthetic.e5(gap=0.2)["runs"], "target", "uniform", "labels",
                                      ["depth", "activation", "seed"])
    assert len(diffs) == 12 and diffs.mean() == pytest.approx(0.2 - 0.025)
    assert all(v.outcome == HOLDS for v in e6.c6(synthetic.e6(gap=0.3)))
    assert all(v.outcome == FAILS for v in e6.c6(synthetic.e6(gap=5.0)))


def test_failed_runs_are_left_out():
    res = synthetic.e6(gap=0.3)
    res["runs"].loc[res["runs"].prune_dataset != res["runs"].dataset, "best_val_test_error_pct"] = 90.0
    res["runs"].loc[res["runs"].prune_dataset != res["runs"].dataset, "status"] = "failed"
    assert all(v.outcome == UNSURE and "fewer than 2" in v.why for v in e6.c6(res))


def test_verdicts_skip_missing_experiments_with_the_reason():
    results = synthetic.results()
    del results["e6_transfer"]
    out = claims.verdicts(results, EXPERIMENTS, {"e6_transfer": "Fashion-MNIST not found"})
    c6 = [v for v in out if v.claim == "C6"]
    assert len(c6) == 2 and all(v.outcome == SKIPPED and "Fashion-MNIST not found" in v.why for v in c6)
    assert {v.claim for v in out} == {"C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"}
    # C3, C4 and C8 hold on the CPU-sized E4; the paper's E4 runs have no results, so their verdicts are skipped (as
    # E7's and E8's on LeNet-5).
    assert all(v.outcome == HOLDS for v in out
               if v.claim != "C6" and not (v.claim in ("C3", "C4", "C7", "C8", "C9") and v.skipped))
    assert [(v.part, v.outcome) for v in out if v.claim == "C9"] == [("criteria, MLP-7 tanh", HOLDS),
                                                                     ("criteria, LeNet-5 ReLU", SKIPPED)]
    assert [v.part for v in out if v.claim == "C8" and not v.skipped] == ["LeNet-5", "ResNet-8"]
    assert [v.part for v in out if v.claim == "C4" and not v.skipped] == ["linear", "tanh", "LeNet-5", "ResNet-8"]
    assert sum(v.claim == "C3" and v.skipped != "" for v in out) == len(e4_modern.PAPER_NETS)


def test_report_states_rules_numbers_and_verdicts(tmp_path):
    results = synthetic.results()
    verdicts = claims.verdicts(results, EXPERIMENTS)
    status = {"profile": "quick", "description": "test", "n_jobs": 2, "wall_time_s": 600.0, "estimate_s": 540.0,
              "experiments": {"e2_init": {"counts": {"completed": 47, "failed": 1},
                                          "problems": [{"run": "x", "status": "failed", "reason": "boom"}]}}}
    not_tested = {c: why for e in EXPERIMENTS for c, why in e.not_tested.items()}
    text = report.write(tmp_path / "REPRODUCTION.md", verdicts, status, [tmp_path / "e2_jsv.png"], {"e6": "why"}, [],
                        claims.explanations(results, EXPERIMENTS), not_tested)
    # The explanation of C1 from the measured saliencies follows C1's verdicts, before C2.
    assert text.index("### C1, linear, N(0, 1)") < text.index("### C1: why one reading shows the effect") < text.index("## C2")
    assert (tmp_path / "REPRODUCTION.md").read_text() == text
    for v in verdicts:
        assert f"### {v.claim}, {v.part}: {v.outcome}" in text and v.rule in text
    assert "10.0 min" in text and "`e2_init/x`: failed: boom" in text and "C7" in text
    # C3's condition numbers after init (1 + 0.01 seed) and after SNIP (5 + 0.01 seed), beside the verdict.
    assert "linear: condition number init vs pruned: 1.01 ± 0.01 (n=3) vs 5.01 ± 0.01 (n=3)" in text


def test_tables_mean_and_std_over_seeds(tmp_path):
    numeric, text = tables.table(e2.EXPERIMENT.tables[0], synthetic.e2()["runs"])
    row = numeric[(numeric.activation == "tanh") & (numeric.init == "vs_h") & (numeric.prune == "random")].iloc[0]
    assert row.n == 3 and row.best_val_test_error_pct_mean == pytest.approx(61.0)
    assert row.best_val_test_error_pct_std == pytest.approx(1.0)
    assert "61.00 ± 1.00" in text["test error % (best val)"].tolist()
    written = tables.write_tables(synthetic.results(), tmp_path, EXPERIMENTS)
    names = [t.name for exp in EXPERIMENTS for t in exp.tables]
    assert names == ["e2_init", "e3_isometry", "e4_conv", "e4_vgg_c", "e4_resnet32", "e4_resnet56", "e4_resnet110",
                     "e4_wrn16", "e5_supervision", "e6_transfer", "e7_sculpting", "e7_sculpting_conv", "e7_sculpting_cifar",
                     "e8_criteria", "e8_criteria_conv"]
    # Tables are written for experiments with results: the paper's E4 runs, E7 and E8 on LeNet-5 have none here.
    names = [n for n in names if n == "e4_conv" or not n.startswith(("e4_", "e7_", "e8_criteria_conv"))]
    assert {p.name for p in written} == {f"{n}.{e}" for n in names for e in ("csv", "md")}
    assert pd.read_csv(tmp_path / "e3_isometry.csv").method.tolist()[:4] == ["LDI", "LDI-AI", "VS-L", "VS-L + AI"]
    assert "| linear | LDI |" in (tmp_path / "e3_isometry.md").read_text()


def test_an_infinite_measurement_counts_as_infinitely_bad_not_as_missing():
    # Random pruning can cut every path: mean JSV 0 (|log10| = inf) and condition number inf.
    assert judge.less("x", [0.5, 0.6], [math.inf, math.inf]).outcome == HOLDS
    assert judge.less("x", [math.inf, 1.0], [0.5, 0.6]).outcome == FAILS
    assert judge.distance_from_one([0.0, 10.0, 0.1]).tolist() == [math.inf, 1.0, 1.0]
    agg = tables.aggregate(pd.DataFrame({"status": ["completed"] * 2, "g": [1, 1], "c": [3.0, math.inf]}), ["g"], ["c"])
    assert agg.c_mean.iloc[0] == math.inf and tables.pm(agg.c_mean.iloc[0], agg.c_std.iloc[0]) == "inf"
