"""The experiment registry: each experiment complete in its own module, and a new one picked up everywhere."""

import importlib
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import BarContainer

from sparseprop import config, records
from sparseprop.paper import catalog, draw, experiment, gather, plan
from sparseprop.paper.profiles import PROFILES
from sparseprop.runner.plots import plt

TOY = "tests.paper.toy_experiment"


@pytest.fixture
def toy(monkeypatch):
    """The toy experiment module imported (so registered) into a copy of the registry, which the test leaves behind."""
    catalog.load()
    monkeypatch.setattr(experiment, "_registry", dict(experiment._registry))
    sys.modules.pop(TOY, None)
    yield importlib.import_module(TOY)
    sys.modules.pop(TOY, None)
    plt.close("all")


def test_every_runnable_experiment_has_its_sweep_file_and_overrides_for_every_profile():
    loaded = catalog.load()
    runnable = [e.id for e in loaded if e.sweep]
    assert runnable == ["e1_masks", "e2_init", "e3_isometry", "e4_conv", "e4_vgg_c", "e4_resnet32", "e4_resnet56",
                        "e4_resnet110", "e4_wrn16", "e5_supervision", "e6_transfer", "e7_sculpting", "e7_sculpting_conv",
                        "e7_sculpting_cifar", "e8_criteria", "e8_criteria_conv", "sparsity_sweep"]
    for exp in experiment.runnable():
        assert (config.CONF_DIR / "experiment" / f"{exp.id}.yaml").is_file()
        # The paper's settings live in the sweep files; e4_conv's ResNet depth is given on the command line.
        extra = ["arch.depth=8"] if exp.id == "e4_conv" else []
        assert set(exp.profiles) == set(PROFILES) and exp.overrides("paper") == [f"experiment={exp.id}", *extra]
    # Every claim of the paper is tested: no experiment states one it leaves out.
    assert {c: e.id for e in loaded for c in e.not_tested} == {}


def test_registration_refuses_an_experiment_without_overrides_for_every_profile(monkeypatch):
    monkeypatch.setattr(experiment, "_registry", {})
    with pytest.raises(ValueError, match="'x' must declare overrides for exactly the profiles quick, paper"):
        experiment.register(experiment.Experiment("x", "x", 1, profiles={"quick": []}))
    experiment.register(experiment.Experiment("y", "y", 1, profiles={"quick": [], "paper": []}))
    with pytest.raises(ValueError, match="'y' registered twice"):
        experiment.register(experiment.Experiment("y", "y", 2, profiles={"quick": [], "paper": []}))


def test_a_new_experiment_module_is_drawn_tabled_judged_and_reported(toy, tmp_path):
    scores = {"linear": [1.0, 2.0], "tanh": [3.0, 4.0]}
    runs = pd.DataFrame([{"run": f"{a}-{s}", "status": "completed", "activation": a, "init": "vs_l", "prune": "snip",
                          "isometry": "none", "seed": s, "score": v}
                         for a, vs in scores.items() for s, v in enumerate(vs)])
    records.write_csv(plan.collected_dir(tmp_path, "quick", "toy") / gather.RUNS, runs)
    status = {"profile": "quick", "description": "d", "experiments": {}}
    verdicts = draw.draw(tmp_path, "quick", status, catalog.load())
    # The figure: one bar per activation at the mean score.
    fig = toy.toy_scores(runs)
    bars = [p.get_height() for c in fig.axes[0].containers if isinstance(c, BarContainer) for p in c.patches]
    np.testing.assert_allclose(bars, [1.5, 3.5])
    assert (tmp_path / "figures" / "toy_scores.png").is_file() and (tmp_path / "figures" / "toy_scores.pdf").is_file()
    # The table: mean and std over the two seeds.
    table = pd.read_csv(tmp_path / "tables" / "toy.csv")
    assert table.activation.tolist() == ["linear", "tanh"] and table.score_mean.tolist() == [1.5, 3.5]
    np.testing.assert_allclose(table.score_std, [np.sqrt(0.5)] * 2)
    # The rule: mean 2.5, std of the four scores 1.29: 3.79 <= 5 holds.
    assert "| C0 | toy part | **holds** | score: 2.50 ± 1.29 (n=4) (limit 5) |" in verdicts
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert verdicts in text and "### C0, toy part: holds" in text and "- `" + (tmp_path / "tables" / "toy.md").as_posix() in text
    # What it does not test is listed.
    assert "- C9: the toy claim C9 needs hardware nobody has." in text
    # Without runs its claim is skipped and its figure named as not drawn; the others are unaffected.
    (plan.collected_dir(tmp_path, "quick", "toy") / gather.RUNS).unlink()
    verdicts = draw.draw(tmp_path, "quick", status, catalog.load())
    assert "| C0 | toy part | **skipped** |" in verdicts
    assert "- toy_scores: not drawn: no completed runs of toy" in (tmp_path / "REPRODUCTION.md").read_text()


def test_the_plan_prints_a_new_experiments_overrides_with_the_profile(toy, capsys, tmp_path):
    from sparseprop.paper.costs import Costs

    plans = [plan.Plan("toy", "quick", toy.EXPERIMENT.overrides("quick"), tmp_path, tmp_path, [plan.Job([], "a")])]
    plan.print_plan(plans, PROFILES["quick"], Costs(0, 0, 0, 0, 0, 0), 1)
    out = capsys.readouterr().out
    assert PROFILES["quick"].description in out and "experiment=toy seed=0,1" in out
