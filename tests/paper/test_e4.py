"""E4 (claim C8): the five-method configs, the conv experiment's figure, table and verdicts, the paper-only runs."""

import numpy as np
import pytest

from sparseprop.paper import catalog, reproduce, tables
from sparseprop.paper.experiments import e4_modern
from sparseprop.paper.judge import FAILS, HOLDS, SKIPPED, UNSURE
from sparseprop.paper.plan import compose, make_plan
from sparseprop.paper.profiles import PROFILES
from sparseprop.runner.plots import plt
from tests.paper.synthetic import E4_ERRORS as ERRORS, E4_JSV as JSV, E4_METHODS as METHODS, e4 as synthetic_e4
from tests.paper.test_figures import assert_readable, bars


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_method_group_sets_init_and_isometry_together():
    for method, (init, iso) in METHODS.items():
        cfg = compose(["experiment=e4_conv", "arch=lenet5", f"method={method}"])
        assert (cfg.init.name, cfg.isometry.name, cfg.prune.name, cfg.prune.sparsity) == (init, iso, "snip", 0.9)


def test_e4_sweeps_run_exactly_the_five_methods_on_three_seeds():
    catalog.load()
    plan = make_plan(e4_modern.EXPERIMENTS["e4_resnet32"], PROFILES["paper"])
    assert len(plan.jobs) == 5 * 3
    assert {o for j in plan.jobs for o in j.overrides if o.startswith("method=")} == {f"method={m}" for m in METHODS}
    conv = make_plan(e4_modern.EXPERIMENTS["e4_conv"], PROFILES["quick"])
    assert len(conv.jobs) == 2 * 5 * 2  # LeNet-5 and ResNet-8, five methods, seeds 0 and 1


@pytest.mark.parametrize("net,dataset,arch", [("vgg_c", "cifar10", "vgg_c"), ("resnet32", "cifar10", "resnet32"),
                                              ("resnet56", "cifar10", "resnet56"), ("resnet110", "cifar10", "resnet110"),
                                              ("wrn16", "tiny_imagenet", "wrn16")])
def test_paper_configs_have_the_paper_training_protocol(net, dataset, arch):
    cfg = compose([f"experiment=e4_{net}", "method=ldi"])
    assert (cfg.dataset.name, cfg.arch.name, cfg.activation.name) == (dataset, arch, "relu")
    assert cfg.dataset.augment != "none" and cfg.prune.sparsity == 0.9
    t = cfg.train
    assert (t.optimizer, t.momentum, t.batch_size, t.lr, t.schedule) == ("momentum", 0.9, 128, 0.1, "piecewise")
    # x0.1 steps: each value a tenth of the one before, every boundary below the last step.
    values, boundaries = list(t["values"]), list(t.boundaries)
    assert np.allclose(np.array(values[1:]) / np.array(values[:-1]), 0.1) and values[0] == 0.1
    assert len(values) == len(boundaries) + 1 and max(boundaries) < t.iterations
    # Weight decay 5e-4: the L2 term l2*sum(w^2) has gradient 2*l2*w.
    assert 2 * t.l2 == pytest.approx(5e-4)


def test_paper_runs_only_under_the_paper_profile_and_need_their_data(tmp_path, monkeypatch):
    catalog.load()
    exp = e4_modern.EXPERIMENTS["e4_resnet32"]
    assert reproduce.skip_reason(exp, PROFILES["quick"]) == "runs only under PROFILE=paper"
    monkeypatch.setenv("SPARSEPROP_DATA", str(tmp_path))
    reason = reproduce.skip_reason(exp, PROFILES["paper"], dry_run=True)
    assert "cifar-10-python.tar.gz" in reason and str(tmp_path) in reason and "\n" not in reason
    reason = reproduce.skip_reason(e4_modern.EXPERIMENTS["e4_wrn16"], PROFILES["paper"], dry_run=True)
    assert "tiny-imagenet-200" in reason and "\n" not in reason


def test_e4_figure_draws_error_and_jsv_by_network_and_method():
    fig = e4_modern.e4_figure(synthetic_e4()["runs"])
    assert_readable(fig)
    err, jsv = fig.axes[0], fig.axes[1]
    assert [t.get_text() for t in err.get_xticklabels()] == ["LeNet-5", "ResNet-8"]
    for method, label in (("vs_l", "VS-L"), ("vs_g", "VS-G"), ("vs_h", "VS-H"), ("ldi", "LDI"), ("ldi_ai", "LDI-AI")):
        # Mean over the seeds (0, +0.1, -0.1): the method's error; ResNet-8 1 pp above.
        np.testing.assert_allclose(bars(err, label), [ERRORS[method], ERRORS[method] + 1], atol=1e-12)
        np.testing.assert_allclose(bars(jsv, label), [JSV[method]] * 2, atol=1e-12)
    assert jsv.get_yscale() == "log"


def test_e4_table_values():
    numeric, text = tables.table(e4_modern.EXPERIMENTS["e4_conv"].tables[0], synthetic_e4()["runs"])
    row = numeric[(numeric.network == "ResNet-8") & (numeric.method == "LDI-AI")].iloc[0]
    assert row.n == 3 and row.best_val_test_error_pct_mean == pytest.approx(ERRORS["ldi_ai"] + 1)
    assert row.best_val_test_error_pct_std == pytest.approx(0.1)  # sample std of (0, 0.1, -0.1)
    assert row.jsv_isometry_mean_mean == pytest.approx(JSV["ldi_ai"])
    assert len(numeric) == 10


def test_c8_holds_when_ldi_and_ldi_ai_beat_the_best_vs_init():
    verdicts = e4_modern.c8(synthetic_e4())
    assert [v.part for v in verdicts] == ["LeNet-5", "ResNet-8"] and [v.outcome for v in verdicts] == [HOLDS, HOLDS]
    # The best VS init is VS-G (10%): both checks compare against it.
    assert all("VS-G (best VS)" in c.what for c in verdicts[0].checks)
    assert "8.00" in verdicts[0].checks[0].numbers and "10.00" in verdicts[0].checks[0].numbers


def test_c8_fails_or_stays_open_as_the_errors_say():
    worse = e4_modern.c8(synthetic_e4({**ERRORS, "ldi": 12.0}))
    assert [v.outcome for v in worse] == [FAILS, FAILS] and "LDI vs VS-G" in worse[0].why
    close = e4_modern.c8(synthetic_e4({**ERRORS, "ldi": 10.05, "ldi_ai": 10.0}))
    assert [v.outcome for v in close] == [UNSURE, UNSURE]
    one_seed = e4_modern.c8(synthetic_e4(seeds=(0,)))
    assert [v.outcome for v in one_seed] == [UNSURE, UNSURE]  # no spread to judge by
    assert [v.outcome for v in e4_modern.c8(None)] == [SKIPPED]


def test_c3_on_conv_nets_flips_with_the_spectra():
    verdicts = e4_modern.c3_conv(synthetic_e4())
    assert [v.claim for v in verdicts] == ["C3", "C3"]
    assert [v.part for v in verdicts] == ["pruning breaks isometry, LeNet-5", "pruning breaks isometry, ResNet-8"]
    assert [v.outcome for v in verdicts] == [HOLDS, HOLDS]
    # LDI: mean JSV 1.0 -> 0.5 (|log10| 0 -> 0.30) and condition number 3 -> 10.
    assert verdicts[0].checks[1].numbers == "3.00 ± 0.01 (n=3) vs 10.00 ± 0.01 (n=3)"
    # Pruning that leaves the mean at 1 and narrows the spectrum contradicts the claim.
    kept = e4_modern.c3_conv(synthetic_e4(jsv={**JSV, "ldi": 1.0}, pruned_condition=2.0))
    assert [v.outcome for v in kept] == [FAILS, FAILS]
    assert "the opposite holds" in kept[0].why
    # Only the VS-init runs' spectra change: the LDI runs decide.
    assert [v.outcome for v in e4_modern.c3_conv(synthetic_e4(jsv={**JSV, "vs_l": 1.0}))] == [HOLDS, HOLDS]
    assert [v.outcome for v in e4_modern.c3_conv(None)] == [SKIPPED]


def test_c4_on_conv_nets_flips_with_spectra_losses_and_errors():
    verdicts = e4_modern.c4_conv(synthetic_e4())
    assert [(v.claim, v.part, v.outcome) for v in verdicts] == [("C4", "LeNet-5", HOLDS), ("C4", "ResNet-8", HOLDS)]
    # The first quarter of 400 iterations: the loss recorded at step 100 (1.0 for LDI, 0.5 for LDI-AI).
    assert verdicts[0].checks[1].numbers == "0.500 ± 0.010 (n=3) vs 1.000 ± 0.010 (n=3)"
    away = e4_modern.c4_conv(synthetic_e4(jsv={**JSV, "ldi_ai": 0.05}))
    assert [v.outcome for v in away] == [FAILS, FAILS] and "after AI vs after pruning" in away[0].why
    slower = e4_modern.c4_conv(synthetic_e4(ai_loss=2.0))
    assert [v.outcome for v in slower] == [FAILS, FAILS] and "early training loss" in slower[0].why
    worse = e4_modern.c4_conv(synthetic_e4({**ERRORS, "ldi_ai": 9.0}))
    assert [v.outcome for v in worse] == [FAILS, FAILS] and "test error" in worse[0].why
    assert [v.outcome for v in e4_modern.c4_conv(synthetic_e4(seeds=(0,)))] == [UNSURE, UNSURE]
    assert [v.outcome for v in e4_modern.c4_conv(None)] == [SKIPPED]


def test_conv_claims_join_the_paper_e4_experiments_and_skip_without_runs():
    for exp in e4_modern.EXPERIMENTS.values():
        claims = [v.claim for rule in exp.rules for v in rule(None)]
        assert claims == ["C3", "C4", "C8"]
